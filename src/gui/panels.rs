//! The panels around the video: messages, the status bar, the playback bar of file sources,
//! and the side panel with every face and the chart.

use egui::{Color32, RichText, Ui};

use super::app::EmocamApp;
use super::bars;
use crate::capture::{Pacing, SourceSpec};

/// The messages under the menu: the banner, source and weights problems, recording news.
pub fn messages(app: &mut EmocamApp, ui: &mut Ui) {
    if let Some(b) = &app.banner {
        ui.colored_label(Color32::from_rgb(230, 180, 40), b);
    }
    if let Some(e) = app
        .source_error()
        .map(crate::text::printable)
        .map(|e| e.into_owned())
    {
        ui.horizontal(|ui| {
            ui.colored_label(
                Color32::from_rgb(230, 80, 60),
                format!("Source problem: {e}"),
            );
            if ui.button("Retry").clicked() {
                app.restart();
            }
            if ui.button("Use demo").clicked() {
                app.set_source(SourceSpec::Demo(None));
            }
        });
    }
    if let Some(e) = app.weights_error.clone() {
        ui.horizontal(|ui| {
            ui.colored_label(
                Color32::from_rgb(230, 80, 60),
                format!("Weights not loaded: {}", crate::text::printable(&e)),
            );
            if ui.small_button("dismiss").clicked() {
                app.weights_error = None;
            }
        });
    }
    if let Some(p) = app.weights_pending() {
        ui.label(format!("checking {} ...", p.display()));
    }
    if let Some(m) = app.record_message.clone() {
        ui.horizontal(|ui| {
            ui.label(m);
            if ui.small_button("dismiss").clicked() {
                app.record_message = None;
            }
        });
    }
}

/// The status bar: source, model, rates, latency, drops, recording.
pub fn status_bar(app: &mut EmocamApp, ui: &mut Ui) {
    ui.horizontal_wrapped(|ui| {
        ui.label(format!(
            "source: {}",
            crate::text::printable(app.session.source_description())
        ));
        ui.separator();
        ui.label(format!(
            "model: {}",
            crate::text::printable(app.model_name())
        ));
        ui.separator();
        // Short figures move to the next row whole rather than break mid-item.
        let whole = |ui: &mut Ui, text: String| {
            ui.add(egui::Label::new(text).wrap_mode(egui::TextWrapMode::Extend));
        };
        whole(
            ui,
            format!(
                "fps capture {:.0} / detect {:.0} / infer {:.0}",
                app.rates.capture, app.rates.detect, app.rates.infer
            ),
        );
        ui.separator();
        whole(ui, format!("latency {:.0} ms", app.median_latency_ms()));
        ui.separator();
        whole(ui, format!("dropped {}", app.session.stats().dropped()));
        if let Some((_, rows)) = app.session.recording() {
            ui.separator();
            red_dot(ui);
            ui.label(
                RichText::new(format!("REC {rows} rows"))
                    .color(Color32::RED)
                    .strong(),
            );
        }
    });
}

/// True when the source has a timeline to show (a video or an animation played from a file).
pub fn has_timeline(app: &EmocamApp) -> bool {
    app.session
        .source_info()
        .is_some_and(|i| i.duration_ms.is_some() && i.pacing != Pacing::Live)
}

/// `m:ss.s`
fn clock(ms: f64) -> String {
    let s = (ms / 1e3).max(0.0);
    format!("{}:{:04.1}", (s / 60.0).floor() as u64, s % 60.0)
}

/// The playback bar of a file source: Play/Pause, Restart, the position and a seek bar.
pub fn playback(app: &mut EmocamApp, ui: &mut Ui) {
    let Some(duration) = app.session.source_info().and_then(|i| i.duration_ms) else {
        return;
    };
    ui.horizontal(|ui| {
        let paused = app.session.is_paused();
        let ended = app.session.source_ended();
        let label = if paused { "Play" } else { "Pause" };
        if ui
            .add_enabled(!ended, egui::Button::new(label))
            .on_hover_text("Space")
            .clicked()
        {
            app.session.set_paused(!paused);
        }
        if ui.button("Restart").clicked() {
            app.restart();
        }
        let pos = app.session.position_ms().unwrap_or(0.0);
        ui.label(format!("{} / {}", clock(pos), clock(duration)));
        let mut at = pos.min(duration);
        let width = (ui.available_width() - 16.0).max(80.0);
        ui.spacing_mut().slider_width = width;
        let r = ui.add(
            egui::Slider::new(&mut at, 0.0..=duration.max(1.0))
                .show_value(false)
                .text("position"),
        );
        if r.drag_stopped() || (r.changed() && !r.dragged()) {
            if ended {
                // A finished source has no pipeline to seek: start over, then go there.
                app.restart();
            }
            app.session.seek(at);
        }
    });
}

/// The side panel: the Record button, the smoothing slider, every face, and the chart.
pub fn side_panel(app: &mut EmocamApp, ui: &mut Ui) {
    ui.horizontal(|ui| {
        let text = if app.is_recording() {
            "Stop recording"
        } else {
            "Record"
        };
        let red = Color32::from_rgb(210, 40, 40);
        if ui.button(RichText::new(text).color(red)).clicked() {
            app.toggle_recording();
        }
        if app.is_recording() {
            red_dot(ui);
            ui.label(RichText::new(format!("{} rows", app.recorded_rows())).color(Color32::RED));
        }
    });
    let mut k = app.session.smoothing();
    if ui
        .add(egui::Slider::new(&mut k, 0.0..=0.95).text("smoothing"))
        .changed()
    {
        app.session.set_smoothing(k);
    }
    ui.separator();
    if app.faces.is_empty() {
        ui.label("No face in view.");
    }
    // Several faces: one line each (click to follow one), then the bars of the face the chart
    // follows; one face: its bars.
    let several = app.faces.len() > 1;
    let followed = app.followed_face();
    let mut picked = None;
    egui::ScrollArea::vertical()
        .max_height(ui.available_height() * if several { 0.25 } else { 0.55 })
        .show(ui, |ui| {
            for f in &app.faces {
                let (top, p) = f.smoothed.top();
                let carried = if f.detected { "" } else { " (carried)" };
                let text = format!("Face #{}: {} {}{carried}", f.id, top, bars::percent(p));
                if several {
                    ui.horizontal(|ui| {
                        let (rect, _) =
                            ui.allocate_exact_size(egui::vec2(10.0, 10.0), egui::Sense::hover());
                        ui.painter().rect_filled(
                            rect,
                            2.0,
                            bars::class_color(f.smoothed.classes(), f.smoothed.top_index()),
                        );
                        if ui.selectable_label(followed == Some(f.id), text).clicked() {
                            picked = Some(f.id);
                        }
                    });
                } else {
                    if ui
                        .selectable_label(
                            app.chart_face == Some(f.id),
                            RichText::new(text).strong(),
                        )
                        .clicked()
                    {
                        picked = Some(f.id);
                    }
                    bars::emotion_bars(ui, &f.smoothed);
                }
            }
        });
    if several && let Some(f) = app.faces.iter().find(|f| Some(f.id) == followed) {
        ui.separator();
        ui.label(RichText::new(format!("Face #{}", f.id)).strong());
        bars::emotion_bars(ui, &f.smoothed);
    }
    if picked.is_some() {
        app.chart_face = picked;
    }
    ui.separator();
    match (app.chart_face, app.followed_face()) {
        (Some(id), Some(f)) if id == f => ui.label(format!(
            "Last 30 s of face #{id} (click a box or a line to pick another)"
        )),
        (_, Some(f)) => ui.label(format!(
            "Last 30 s of face #{f}, the face seen longest (click a box or a line to pick another)"
        )),
        (_, None) => ui.label("Last 30 s of the face seen longest"),
    };
    let now = app.started.elapsed().as_secs_f64();
    app.history.show(ui, now);
}

/// The recording indicator (drawn, since the default fonts have no filled circle).
fn red_dot(ui: &mut Ui) {
    let (rect, _) = ui.allocate_exact_size(egui::vec2(12.0, 12.0), egui::Sense::hover());
    ui.painter().circle_filled(rect.center(), 5.0, Color32::RED);
}
