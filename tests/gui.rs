//! The window, driven by egui_kittest: widgets found by their labels, clicked, and checked.
#![cfg(feature = "gui")]

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

/// Once the app scores faces, open `bad` as weights: the app must show an error and keep its
/// model. Returns the error shown.
fn refused(h: &mut Harness<'static, Option<EmocamApp>>, bad: PathBuf) -> String {
    step_until(h, |a| !a.faces.is_empty());
    let model = h.state().as_ref().unwrap().model_name().to_string();
    h.state_mut().as_mut().unwrap().open_weights(bad);
    step_until(h, |a| a.weights_error.is_some());
    h.step();
    let app = h.state().as_ref().unwrap();
    assert_eq!(app.model_name(), model, "the old model keeps running");
    app.weights_error.clone().unwrap()
}

#[test]
fn a_bad_weights_file_shows_an_error_and_keeps_the_old_model() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("garbage.safetensors");
    std::fs::write(&bad, [0u8; 4]).unwrap();
    let mut h = app_harness(demo_options(dir.path().to_path_buf()));
    let err = refused(&mut h, bad.clone());
    assert!(
        err.contains("garbage.safetensors") && err.contains("not a safetensors file"),
        "{err}"
    );
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

fn video_options(record_dir: PathBuf) -> AppOptions {
    AppOptions {
        source: Some(SourceSpec::Path(common::fixture("video/high_bframes.mp4"))),
        // The video's own rate, as the app plays it by default.
        source_options: SourceOptions::default(),
        record_dir,
        ..AppOptions::default()
    }
}

fn position(h: &Harness<'static, Option<EmocamApp>>) -> f64 {
    h.state()
        .as_ref()
        .unwrap()
        .session
        .position_ms()
        .unwrap_or(-1.0)
}

#[test]
fn a_video_plays_pauses_and_seeks_in_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = app_harness(video_options(dir.path().to_path_buf()));
    step_until(&mut h, |a| !a.faces.is_empty());
    h.step();
    // The playback bar: the position as time, out of the clip's 2 s.
    h.get_by_label_contains("/ 0:02.0");
    h.get_by_label("Pause").click();
    h.step();
    assert!(h.state().as_ref().unwrap().session.is_paused());
    // Frames in flight may still land; then the position holds.
    std::thread::sleep(Duration::from_millis(200));
    h.run_steps(3);
    let held = position(&h);
    std::thread::sleep(Duration::from_millis(300));
    h.run_steps(3);
    assert_eq!(position(&h), held, "paused");
    // Seeking while paused shows the frame there: the key frame at 1.5 s.
    h.state_mut().as_mut().unwrap().session.seek(1600.0);
    step_until(&mut h, |a| a.session.position_ms() == Some(1500.0));
    assert_eq!(position(&h), 1500.0);
    h.step();
    h.get_by_label("Play").click();
    step_until(&mut h, |a| {
        a.session.position_ms().is_some_and(|ms| ms > 1700.0)
    });
    assert!(position(&h) > 1700.0, "plays on from there");
}

#[test]
fn a_video_opens_from_the_file_menu_by_path() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = app_harness(demo_options(dir.path().to_path_buf()));
    step_until(&mut h, |a| !a.faces.is_empty());
    h.get_by_label("File").click();
    h.run_steps(3);
    h.get_by_label("Open video or images by path...").click();
    h.step();
    h.step();
    let field = h.get_by_role(egui::accesskit::Role::TextInput);
    field.focus();
    h.step();
    let clip = common::fixture("video/high_bframes.mp4");
    h.get_by_role(egui::accesskit::Role::TextInput)
        .type_text(&clip.display().to_string());
    h.step();
    h.get_by_label("Open").click();
    step_until(&mut h, |a| {
        a.session.source_description().contains("high_bframes.mp4") && !a.faces.is_empty()
    });
    h.step();
    h.get_by_label_contains("source: ");
    h.get_by_label_contains("openh264");
}

#[test]
fn stopping_a_recording_opens_its_summary_and_saves_its_report() {
    let dir = tempfile::tempdir().unwrap();
    let rec_dir = dir.path().join("recordings");
    let mut h = app_harness(demo_options(rec_dir.clone()));
    step_until(&mut h, |a| !a.faces.is_empty());
    h.get_by_label("Record").click();
    h.step();
    // A face must be seen for a second to get its own section.
    step_until(&mut h, |a| a.recorded_rows() >= 45);
    h.get_by_label("Stop recording").click();
    step_until(&mut h, |a| a.summaries.shown.is_some());
    h.run_steps(2);
    h.get_by_label("Session summary");
    h.get_by_label_contains("Face #0: mostly");
    h.get_by_label("Save report...").click();
    h.run_steps(3);
    // No file dialog here: the path field opens with the suggested name beside the CSV.
    let t0 = Instant::now();
    while h.query_by_label("Save").is_none() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "no path field for the report"
        );
        std::thread::sleep(Duration::from_millis(20));
        h.step();
    }
    h.get_by_label("Save").click();
    h.run_steps(2);
    let msg = h.state().as_ref().unwrap().record_message.clone().unwrap();
    assert!(msg.starts_with("saved report to "), "{msg}");
    let html: Vec<_> = std::fs::read_dir(&rec_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "html"))
        .collect();
    assert_eq!(html.len(), 1);
    let page = std::fs::read_to_string(&html[0]).unwrap();
    assert!(page.contains("id=\"face-0\""));
}

#[test]
fn a_snapshot_saves_the_frame_with_its_boxes() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let mut h = app_harness(demo_options(dir.path().to_path_buf()));
    step_until(&mut h, |a| !a.faces.is_empty());
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::S);
    h.run_steps(2);
    let msg = h.state().as_ref().unwrap().record_message.clone().unwrap();
    assert!(msg.starts_with("saved snapshot to "), "{msg}");
    let path = PathBuf::from(msg.trim_start_matches("saved snapshot to "));
    let img = image::open(&path).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (640, 480));
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "snapshots show people: owner only");
    // The box is drawn in the top class's colour somewhere on it.
    let f = &h.state().as_ref().unwrap().faces[0];
    let [r, g, b] = f.smoothed.classes().color(f.smoothed.top_index());
    assert!(img.pixels().any(|p| p.0 == [r, g, b]));
}

#[test]
fn a_bad_onnx_model_keeps_the_old_one_and_an_eight_class_model_shows_eight_bars() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = app_harness(demo_options(dir.path().to_path_buf()));
    let err = refused(&mut h, common::fixture("onnx/two_inputs.onnx"));
    assert!(
        err.contains("two_inputs.onnx") && err.contains("2 inputs"),
        "{err}"
    );
    step_until(&mut h, |a| !a.faces.is_empty());

    // FER+'s eight classes, contempt among them: the bars follow the loaded model.
    let eight = common::fixture("onnx/torch_cnn8.onnx");
    h.state_mut().as_mut().unwrap().open_weights(eight.clone());
    step_until(&mut h, |a| {
        a.weights_pending().is_none()
            && a.recent_weights.first() == Some(&eight)
            && a.faces
                .first()
                .is_some_and(|f| f.smoothed.probs().len() == 8)
    });
    h.run_steps(2);
    assert!(h.state().as_ref().unwrap().weights_error.is_none());
    // Each class has its bar (and its line in the chart's legend).
    let names = Emotion::ALL.map(|e| e.name());
    for name in names.iter().chain(&["contempt"]) {
        assert!(
            h.query_all_by_label(name).next().is_some(),
            "no bar for {name}"
        );
    }
}

#[test]
fn a_covered_face_is_listed_as_carried_under_its_id() {
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("frames");
    std::fs::create_dir(&frames).unwrap();
    let face = emocam::imaging::load_rgb(&common::fixture("astronaut.png")).unwrap();
    let face = image::imageops::resize(&face, 300, 300, image::imageops::FilterType::Triangle);
    for i in 0..40 {
        let mut frame = image::RgbImage::from_pixel(640, 480, image::Rgb([90, 90, 90]));
        image::imageops::overlay(&mut frame, &face, 170, 90);
        if i >= 10 {
            // A grey card over the face: the detector no longer finds it.
            let card = image::RgbImage::from_pixel(240, 260, image::Rgb([128, 128, 128]));
            image::imageops::overlay(&mut frame, &card, 200, 100);
        }
        frame.save(frames.join(format!("f{i:03}.png"))).unwrap();
    }
    let mut h = app_harness(AppOptions {
        source: Some(SourceSpec::Path(frames)),
        source_options: SourceOptions {
            fps: Some(15.0),
            looping: false,
        },
        record_dir: dir.path().to_path_buf(),
        ..AppOptions::default()
    });
    step_until(&mut h, |a| a.faces.iter().any(|f| f.detected));
    let id = h.state().as_ref().unwrap().faces[0].id;
    step_until(&mut h, |a| a.faces.iter().any(|f| !f.detected));
    let carried = h.state().as_ref().unwrap().faces.clone();
    assert_eq!(carried.len(), 1);
    assert_eq!(carried[0].id, id, "the carried face keeps its id");
    h.step();
    h.get_by_label_contains(&format!("Face #{id}:"));
    h.get_by_label_contains("(carried)");
}
