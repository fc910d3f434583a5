//! Seven labelled bars, one per emotion, for one face.

use egui::{Color32, ProgressBar, RichText, Ui};

use crate::emotion::{Emotion, Scores};

/// A colour per emotion, shared by the bars, the boxes and the chart.
pub fn color(e: Emotion) -> Color32 {
    match e {
        Emotion::Angry => Color32::from_rgb(220, 60, 50),
        Emotion::Disgust => Color32::from_rgb(120, 160, 40),
        Emotion::Fear => Color32::from_rgb(150, 90, 200),
        Emotion::Happy => Color32::from_rgb(250, 190, 40),
        Emotion::Sad => Color32::from_rgb(60, 120, 220),
        Emotion::Surprise => Color32::from_rgb(240, 120, 200),
        Emotion::Neutral => Color32::from_rgb(150, 150, 150),
    }
}

/// The text on a bar, e.g. `83.0%`.
pub fn percent(p: f32) -> String {
    format!("{:.1}%", 100.0 * p)
}

/// Draw the seven bars in FER order; the top emotion's name is bold.
pub fn emotion_bars(ui: &mut Ui, scores: &Scores) {
    let top = scores.top().0;
    egui::Grid::new(ui.next_auto_id())
        .num_columns(2)
        .spacing([8.0, 4.0])
        .show(ui, |ui| {
            for (e, p) in scores.iter() {
                let name = RichText::new(e.name());
                ui.label(if e == top { name.strong() } else { name });
                ui.add(
                    ProgressBar::new(p.clamp(0.0, 1.0))
                        .desired_width(180.0)
                        .fill(color(e))
                        .text(percent(p)),
                );
                ui.end_row();
            }
        });
}
