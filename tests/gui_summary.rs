//! The "Session summary" window, driven by egui_kittest: a summary of a generated recording is
//! shown, its labels found, and its buttons clicked.

use std::path::Path;

use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use emocam::Emotion;
use emocam::gui::summary::{SummaryAction, show_summary};
use emocam::report::{Recording, Summary, palette};

/// Two faces at 30 fps: face 0 happy for 4 s then sad for 2 s, face 1 neutral for 3 s; and a
/// face seen for five frames.
fn recording() -> String {
    let mut text = String::from(
        "elapsed_ms,source_ms,frame,face_id,detected,x,y,w,h,angry,disgust,fear,happy,sad,surprise,neutral,top_emotion,model,source\n",
    );
    let mut row = |frame: u64, face: u64, top: Emotion| {
        let mut s = [0.05f32; 7];
        s[top.index()] = 0.7;
        let scores: Vec<String> = s.iter().map(|p| format!("{p:.6}")).collect();
        let t = frame as f64 * 1000.0 / 30.0;
        text += &format!(
            "{t:.1},{t:.1},{frame},{face},1,0,0,50,50,{},{},emocam,demo\n",
            scores.join(","),
            top.name()
        );
    };
    for frame in 0..180 {
        row(
            frame,
            0,
            if frame < 120 {
                Emotion::Happy
            } else {
                Emotion::Sad
            },
        );
        if frame < 90 {
            row(frame, 1, Emotion::Neutral);
        }
        if frame < 5 {
            row(frame, 2, Emotion::Fear);
        }
    }
    text
}

struct State {
    summary: Summary,
    actions: Vec<SummaryAction>,
}

#[test]
fn the_summary_window_shows_each_face_and_asks_to_save_the_report() {
    let text = recording();
    let rec = Recording::from_reader(Path::new("session.csv"), text.as_bytes()).unwrap();
    let state = State {
        summary: Summary::from(&rec),
        actions: Vec::new(),
    };
    let mut h = Harness::builder()
        .with_size(egui::vec2(1000.0, 1400.0))
        .build_ui_state(
            |ui, s: &mut State| {
                if let Some(a) = show_summary(ui.ctx(), &s.summary) {
                    s.actions.push(a);
                }
            },
            state,
        );
    h.run();
    h.get_by_label("Session summary");
    h.get_by_label("session.csv");
    h.get_by_label_contains("Face #0: mostly happy (66.7%)");
    h.get_by_label_contains("Face #1: mostly neutral (100.0%)");
    h.get_by_label_contains("Seen for 6.0 s, from 0:00.0 to 0:06.0");
    h.get_by_label_contains("1 face was seen for less than a second (5 rows in all)");
    for e in Emotion::ALL {
        assert!(
            h.query_all_by_label(e.name()).next().is_some(),
            "{e} in the tables"
        );
    }
    // Shares and strongest moments are in the tables.
    h.get_by_label("happy 66.7%");
    h.get_by_label("0:00.0 (70.0%)   0:03.0 (70.0%)");
    assert!(h.state().actions.is_empty());
    h.get_by_label("Save report...").click();
    h.run();
    assert_eq!(h.state().actions, [SummaryAction::SaveReport]);
    h.get_by_label("Close").click();
    h.run();
    assert_eq!(
        h.state().actions,
        [SummaryAction::SaveReport, SummaryAction::Close]
    );
    // The window's own close button says the same.
    h.get_by_label("Close window").click();
    h.run();
    assert_eq!(h.state().actions.last(), Some(&SummaryAction::Close));
}

#[test]
fn reports_colour_the_seven_classes_as_the_app_does() {
    for e in Emotion::ALL {
        let app = emocam::gui::bars::color(e);
        let report = palette::fixed_color(e.name()).unwrap();
        assert_eq!([app.r(), app.g(), app.b()], report, "{e}");
    }
}
