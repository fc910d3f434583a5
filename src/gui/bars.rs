//! Labelled bars, one per class of the model, for one face.

use egui::{Color32, ProgressBar, RichText, Ui};

use crate::emotion::{Scores, class_rgb};

/// A colour per class, shared by the bars, the boxes and the chart (see [`class_rgb`]).
pub fn color(class: &str) -> Color32 {
    let [r, g, b] = class_rgb(class);
    Color32::from_rgb(r, g, b)
}

/// The text on a bar, e.g. `83.0%`.
pub fn percent(p: f32) -> String {
    format!("{:.1}%", 100.0 * p)
}

/// Draw one bar per class, in the scores' order; the top class's name is bold.
pub fn emotion_bars(ui: &mut Ui, scores: &Scores) {
    let top = scores.top().0;
    egui::Grid::new(ui.next_auto_id())
        .num_columns(2)
        .spacing([8.0, 4.0])
        .show(ui, |ui| {
            for (e, p) in scores.iter() {
                let name = RichText::new(e);
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
