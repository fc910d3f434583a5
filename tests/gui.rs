//! The window, driven by egui_kittest: widgets found by their labels, clicked, and checked.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use emocam::capture::{SourceOptions, SourceSpec};
use emocam::gui::bars::emotion_bars;
use emocam::gui::{AppOptions, EmocamApp};
use emocam::{Emotion, Scores};

#[test]
fn seven_labelled_bars_follow_the_scores() {
    let mut harness = Harness::new_ui_state(
        |ui, s: &mut Scores| emotion_bars(ui, s),
        Scores::fer([0.05, 0.0, 0.02, 0.83, 0.04, 0.01, 0.05]),
    );
    harness.run();
    for e in Emotion::ALL {
        harness.get_by_label(e.name());
    }
    harness.get_by_label("83.0%");
    harness.get_by_label("1.0%");
    // New scores: the bars follow.
    *harness.state_mut() = Scores::fer([0.0, 0.0, 0.0, 0.1, 0.7, 0.0, 0.2]);
    harness.run();
    harness.get_by_label("70.0%");
    assert!(harness.query_by_label("83.0%").is_none());
}

fn app_harness(opts: AppOptions) -> Harness<'static, Option<EmocamApp>> {
    let mut harness = Harness::builder()
        .with_size(egui::vec2(1180.0, 720.0))
        .build_ui_state(
            |ui, app: &mut Option<EmocamApp>| {
                if let Some(app) = app {
                    app.show(ui);
                }
            },
            None,
        );
    let app = EmocamApp::new(&harness.ctx, None, opts);
    *harness.state_mut() = Some(app);
    harness
}

/// Step the UI until `done` or 20 s pass.
fn step_until(
    h: &mut Harness<'static, Option<EmocamApp>>,
    mut done: impl FnMut(&EmocamApp) -> bool,
) {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(20) {
        h.step();
        if done(h.state().as_ref().unwrap()) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("condition not reached in 20 s");
}

fn demo_options(record_dir: PathBuf) -> AppOptions {
    AppOptions {
        source: Some(SourceSpec::Demo(Some("astronaut".into()))),
        source_options: SourceOptions {
            fps: Some(30.0),
            looping: false,
        },
        record_dir,
        ..AppOptions::default()
    }
}

#[test]
fn the_app_shows_faces_with_bars_and_a_status_bar() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = app_harness(demo_options(dir.path().to_path_buf()));
    step_until(&mut h, |a| !a.faces.is_empty());
    h.step();
    h.get_by_label_contains("Face #0: happy");
    for e in Emotion::ALL {
        assert!(
            !h.query_all_by_label(e.name())
                .collect::<Vec<_>>()
                .is_empty(),
            "{e} bar"
        );
    }
    h.get_by_label_contains("model: emocam");
    h.get_by_label_contains("fps capture");
    h.get_by_label_contains("latency");
}

#[test]
fn a_bad_weights_file_shows_an_error_and_keeps_the_old_model() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("garbage.safetensors");
    std::fs::write(&bad, [0u8; 4]).unwrap();
    let mut h = app_harness(demo_options(dir.path().to_path_buf()));
    step_until(&mut h, |a| !a.faces.is_empty());
    let model = h.state().as_ref().unwrap().model_name().to_string();
    h.state_mut().as_mut().unwrap().open_weights(bad.clone());
    step_until(&mut h, |a| a.weights_error.is_some());
    h.step();
    let app = h.state().as_ref().unwrap();
    let err = app.weights_error.clone().unwrap();
    assert!(
        err.contains("garbage.safetensors") && err.contains("not a safetensors file"),
        "{err}"
    );
    assert_eq!(app.model_name(), model, "the old model keeps running");
    h.get_by_label_contains("Weights not loaded");
    h.get_by_label_contains("garbage.safetensors");
    // Frames are still scored after the rejection.
    let before = h.state().as_ref().unwrap().faces.len();
    step_until(&mut h, |a| !a.faces.is_empty());
    assert!(before <= 1);
    // A good file from the menu's path entry replaces the model and is remembered.
    h.state_mut()
        .as_mut()
        .unwrap()
        .open_weights(common::default_weights());
    step_until(&mut h, |a| {
        a.weights_pending().is_none()
            && a.recent_weights.first() == Some(&common::default_weights())
    });
    assert!(h.state().as_ref().unwrap().weights_error.is_none());
}

#[test]
fn record_button_writes_a_csv_with_header_and_rows() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = app_harness(demo_options(dir.path().join("recordings")));
    step_until(&mut h, |a| !a.faces.is_empty());
    h.get_by_label("Record").click();
    h.step();
    assert!(h.state().as_ref().unwrap().is_recording());
    h.step();
    h.get_by_label_contains("REC");
    step_until(&mut h, |a| a.recorded_rows() >= 10);
    h.get_by_label("Stop recording").click();
    h.step();
    let app = h.state().as_ref().unwrap();
    assert!(!app.is_recording());
    let msg = app.record_message.clone().unwrap();
    assert!(msg.starts_with("saved "), "{msg}");
    let files: Vec<_> = std::fs::read_dir(dir.path().join("recordings"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1);
    let name = files[0].file_name().unwrap().to_string_lossy().to_string();
    assert!(
        name.starts_with("emocam-") && name.ends_with(".csv"),
        "{name}"
    );
    let (header, rows) = common::read_csv(&files[0]);
    let classes = emocam::Classifier::builtin().unwrap().classes().clone();
    assert_eq!(header, emocam::record::csv_header(&classes));
    assert!(rows.len() >= 10, "{} rows", rows.len());
    assert!(rows.iter().all(|r| r.len() == header.len()));
    // The keyboard shortcut starts a new recording too.
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::R);
    h.step();
    h.step();
    assert!(h.state().as_ref().unwrap().is_recording());
}

#[test]
fn a_recording_on_a_full_disk_stops_with_a_message_and_the_app_goes_on() {
    if !std::path::Path::new("/dev/full").exists() {
        println!("SKIPPED: no /dev/full on this system");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut h = app_harness(demo_options(dir.path().to_path_buf()));
    step_until(&mut h, |a| !a.faces.is_empty());
    h.state_mut()
        .as_mut()
        .unwrap()
        .start_recording(PathBuf::from("/dev/full"));
    h.step();
    let app = h.state().as_ref().unwrap();
    assert!(!app.is_recording());
    let msg = app.record_message.clone().unwrap();
    assert!(msg.contains("/dev/full"), "{msg}");
    // Still running.
    step_until(&mut h, |a| !a.faces.is_empty());
}

#[test]
fn weights_open_from_the_file_menu_by_path() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = app_harness(demo_options(dir.path().to_path_buf()));
    step_until(&mut h, |a| !a.faces.is_empty());
    h.get_by_label("File").click();
    h.run_steps(3);
    h.get_by_label("Open weights by path...").click();
    h.step();
    h.step();
    let field = h.get_by_role(egui::accesskit::Role::TextInput);
    field.focus();
    h.step();
    h.get_by_role(egui::accesskit::Role::TextInput)
        .type_text(&common::default_weights().display().to_string());
    h.step();
    h.get_by_label("Open").click();
    step_until(&mut h, |a| {
        a.recent_weights.first() == Some(&common::default_weights())
    });
    let app = h.state().as_ref().unwrap();
    assert_eq!(
        app.weights_path(),
        Some(common::default_weights().as_path())
    );
    assert!(app.weights_error.is_none());
}
