//! Picking files: the native dialog on a helper thread (it blocks), with an in-app path field
//! where no dialog is available (no XDG portal and no zenity).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, bounded};
use egui::{Key, Ui};

/// What a picked file is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A model: safetensors or ONNX.
    Weights,
    /// A video, an image, a GIF or a folder's first image.
    Source,
    /// A recording (CSV) to summarise.
    Recording,
    /// Where to save a recording's HTML report.
    Report,
}

impl Purpose {
    fn title(self) -> &'static str {
        match self {
            Purpose::Weights => "Open weights",
            Purpose::Source => "Open video or images",
            Purpose::Recording => "Open recording",
            Purpose::Report => "Save report",
        }
    }

    fn hint(self) -> &'static str {
        match self {
            Purpose::Weights => "weights/model.safetensors or model.onnx",
            Purpose::Source => "clip.mp4, a folder of images, or photo.jpg",
            Purpose::Recording => "emocam-recordings/emocam-20261201-101500.csv",
            Purpose::Report => "session.html",
        }
    }

    fn dialog(self, start_dir: Option<PathBuf>) -> rfd::FileDialog {
        let mut d = rfd::FileDialog::new();
        d = match self {
            Purpose::Weights => d
                .add_filter("weights", &["safetensors", "onnx"])
                .add_filter("safetensors", &["safetensors"])
                .add_filter("ONNX", &["onnx"]),
            Purpose::Source => d
                .add_filter(
                    "video or images",
                    &[
                        "mp4", "m4v", "mov", "mkv", "webm", "avi", "gif", "png", "jpg", "jpeg",
                        "bmp",
                    ],
                )
                .add_filter("any file", &["*"]),
            Purpose::Recording => d.add_filter("recordings (CSV)", &["csv"]),
            Purpose::Report => d.add_filter("HTML report", &["html"]),
        };
        if let Some(dir) = start_dir {
            d = d.set_directory(dir);
        }
        d
    }
}

/// The dialogs in progress.
#[derive(Default)]
pub struct Dialogs {
    /// A native dialog running on its thread, asked for at the given time.
    pending: Option<(Instant, Purpose, Receiver<Option<PathBuf>>)>,
    /// The in-app path field, shown when no native dialog answers.
    path_field: Option<(Purpose, String)>,
    /// What the path field starts with when a save dialog falls back to it.
    suggested: Option<String>,
}

impl Dialogs {
    /// Open the native dialog for `purpose`, starting in `start_dir`.
    pub fn pick(&mut self, purpose: Purpose, start_dir: Option<&Path>) {
        let (tx, rx) = bounded(1);
        let dir = start_dir.map(Path::to_path_buf);
        let spawned = std::thread::Builder::new()
            .name("emocam-file-dialog".into())
            .spawn(move || {
                let _ = tx.send(purpose.dialog(dir).pick_file());
            });
        match spawned {
            Ok(_) => self.pending = Some((Instant::now(), purpose, rx)),
            Err(_) => self.path_field = Some((purpose, String::new())),
        }
    }

    /// Show the in-app path field for `purpose`.
    pub fn ask_path(&mut self, purpose: Purpose) {
        self.path_field = Some((purpose, String::new()));
    }

    /// Ask where to save, starting at `suggested` (the native save dialog asks before
    /// replacing a file; the path field, its fallback, starts with the suggestion).
    pub fn save(&mut self, purpose: Purpose, suggested: &Path) {
        let (tx, rx) = bounded(1);
        let dir = suggested.parent().map(Path::to_path_buf);
        let name = suggested
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let spawned = std::thread::Builder::new()
            .name("emocam-file-dialog".into())
            .spawn(move || {
                let _ = tx.send(purpose.dialog(dir).set_file_name(name).save_file());
            });
        match spawned {
            Ok(_) => self.pending = Some((Instant::now(), purpose, rx)),
            Err(_) => {
                self.path_field = Some((purpose, suggested.display().to_string()));
            }
        }
        self.suggested = Some(suggested.display().to_string());
    }

    /// A file the user picked since the last call. A native dialog that answers "nothing" at
    /// once never showed (rfd found no portal and no zenity): the path field opens instead.
    pub fn poll(&mut self, ctx: &egui::Context) -> Option<(Purpose, PathBuf)> {
        let (t0, purpose, rx) = self.pending.as_ref()?;
        match rx.try_recv() {
            Ok(answer) => {
                let (instant, purpose) = (t0.elapsed() < Duration::from_millis(700), *purpose);
                self.pending = None;
                match answer {
                    Some(p) => return Some((purpose, p)),
                    None if instant => {
                        let start = self.suggested.take().unwrap_or_default();
                        self.path_field = Some((purpose, start));
                    }
                    None => {}
                }
            }
            Err(_) => ctx.request_repaint_after(Duration::from_millis(100)),
        }
        None
    }

    /// Draw the path field if it is open; the path typed when the user confirms.
    pub fn show(&mut self, ui: &mut Ui) -> Option<(Purpose, PathBuf)> {
        let (purpose, mut text) = self.path_field.take()?;
        let mut keep = true;
        let mut chosen = None;
        egui::Window::new(purpose.title())
            .collapsible(false)
            .show(ui.ctx(), |ui| {
                ui.label("No file dialog is available here; type the path:");
                let r = ui.add(
                    egui::TextEdit::singleline(&mut text)
                        .desired_width(420.0)
                        .hint_text(purpose.hint()),
                );
                ui.horizontal(|ui| {
                    let enter = r.lost_focus() && ui.input(|i| i.key_pressed(Key::Enter));
                    let verb = if purpose == Purpose::Report {
                        "Save"
                    } else {
                        "Open"
                    };
                    if (ui.button(verb).clicked() || enter) && !text.trim().is_empty() {
                        chosen = Some((purpose, PathBuf::from(text.trim())));
                        keep = false;
                    }
                    if ui.button("Cancel").clicked() {
                        keep = false;
                    }
                });
            });
        if keep {
            self.path_field = Some((purpose, text));
        }
        chosen
    }
}
