//! The menu bar: File (sources, weights, recording), Camera, View.

use egui::Ui;

use super::app::{EmocamApp, OPEN_SHORTCUT, RECORD_SHORTCUT, SNAPSHOT_SHORTCUT};
use super::dialogs::Purpose;
use crate::capture::{self, SourceSpec};
use crate::model::BUILTIN_LABEL;

/// Draw the menu bar.
pub fn menu_bar(app: &mut EmocamApp, ui: &mut Ui) {
    egui::MenuBar::new().ui(ui, |ui| {
        ui.menu_button("File", |ui| file_menu(app, ui));
        ui.menu_button("Camera", |ui| camera_menu(app, ui));
        ui.menu_button("View", |ui| {
            let mut k = app.session.smoothing();
            if ui
                .add(egui::Slider::new(&mut k, 0.0..=0.95).text("smoothing"))
                .changed()
            {
                app.session.set_smoothing(k);
            }
        });
    });
}

fn file_menu(app: &mut EmocamApp, ui: &mut Ui) {
    if ui.button("Open video or images...").clicked() {
        app.dialogs.pick(Purpose::Source, None);
    }
    if ui.button("Open video or images by path...").clicked() {
        app.dialogs.ask_path(Purpose::Source);
    }
    ui.separator();
    if ui
        .add(
            egui::Button::new("Open weights...")
                .shortcut_text(ui.ctx().format_shortcut(&OPEN_SHORTCUT)),
        )
        .clicked()
    {
        app.pick_weights();
    }
    if ui.button("Open weights by path...").clicked() {
        app.dialogs.ask_path(Purpose::Weights);
    }
    ui.menu_button("Recent weights", |ui| {
        if ui.button(BUILTIN_LABEL).clicked() {
            app.use_builtin_model();
        }
        for p in app.recent_weights.clone() {
            if ui.button(p.display().to_string()).clicked() {
                app.open_weights(p);
            }
        }
    });
    ui.separator();
    if ui
        .add(
            egui::Button::new("Save snapshot")
                .shortcut_text(ui.ctx().format_shortcut(&SNAPSHOT_SHORTCUT)),
        )
        .clicked()
    {
        app.save_snapshot();
    }
    let label = if app.is_recording() {
        "Stop recording"
    } else {
        "Start recording"
    };
    if ui
        .add(egui::Button::new(label).shortcut_text(ui.ctx().format_shortcut(&RECORD_SHORTCUT)))
        .clicked()
    {
        app.toggle_recording();
    }
    if ui.button("Open recording...").clicked() {
        app.dialogs
            .pick(Purpose::Recording, Some(&app.opts.record_dir));
    }
    if ui.button("Open recording by path...").clicked() {
        app.dialogs.ask_path(Purpose::Recording);
    }
    ui.separator();
    if ui.button("Quit").clicked() {
        ui.ctx().send_viewport_cmd(egui::ViewportCommand::Close);
    }
}

fn camera_menu(app: &mut EmocamApp, ui: &mut Ui) {
    if app.cameras.is_empty() {
        ui.label("No camera found");
    }
    for c in app.cameras.clone() {
        if ui.button(format!("{}: {}", c.index, c.name)).clicked() {
            app.set_source(SourceSpec::Camera(c.index));
        }
    }
    if ui.button("Refresh list").clicked() {
        app.cameras = capture::camera::list().unwrap_or_default();
    }
    ui.separator();
    if ui.button("Built-in demo").clicked() {
        app.set_source(SourceSpec::Demo(None));
    }
}
