//! Labelled bars, one per class of the model, for one face.

use egui::{Color32, ProgressBar, RichText, Ui};

use crate::emotion::{Classes, Emotion, Scores};

/// The colour of class `i` of a model's classes, shared by the bars, the boxes and the chart
/// (see [`crate::palette`]).
pub fn class_color(classes: &Classes, i: usize) -> Color32 {
    let [r, g, b] = classes.color(i);
    Color32::from_rgb(r, g, b)
}

/// The colour of a FER class.
pub fn color(e: Emotion) -> Color32 {
    class_color(&Classes::fer(), e.index())
}

/// The text on a bar, e.g. `83.0%`.
pub fn percent(p: f32) -> String {
    format!("{:.1}%", 100.0 * p)
}

/// Draw one bar per class, in the scores' order, with its percentage beside it (inside the
/// bar, a small share's text ran over the end of its fill onto the dark track); the top
/// class's name is bold.
pub fn emotion_bars(ui: &mut Ui, scores: &Scores) {
    let top = scores.top().0;
    egui::Grid::new(ui.next_auto_id())
        .num_columns(3)
        .spacing([8.0, 4.0])
        .show(ui, |ui| {
            for (i, (e, p)) in scores.iter().enumerate() {
                let name = RichText::new(e);
                ui.label(if e == top { name.strong() } else { name });
                ui.add(
                    ProgressBar::new(p.clamp(0.0, 1.0))
                        .desired_width(150.0)
                        .desired_height(14.0)
                        .fill(class_color(scores.classes(), i)),
                );
                ui.label(percent(p));
                ui.end_row();
            }
        });
}
