//! The application state and its window: menus, video, bars, chart, status bar.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, bounded};
use egui::{Color32, Key, KeyboardShortcut, Modifiers, RichText, TextureOptions, Ui};

use super::chart::History;
use super::{bars, video};
use crate::capture::{self, SourceOptions, SourceSpec, camera::CameraInfo};
use crate::model::{BUILTIN_LABEL, Classifier};
use crate::pipeline::{Notice, Pipeline, PipelineConfig, Scored, Stats, Waker};
use crate::record::{self, Recorder, Row};
use crate::track::{TrackedFace, Tracker};

/// Start/stop recording.
pub const RECORD_SHORTCUT: KeyboardShortcut = KeyboardShortcut::new(Modifiers::COMMAND, Key::R);
/// Open a weights file.
pub const OPEN_SHORTCUT: KeyboardShortcut = KeyboardShortcut::new(Modifiers::COMMAND, Key::O);

/// Most entries kept in File > Recent weights.
const MAX_RECENT: usize = 8;

const RECENT_KEY: &str = "recent_weights";

/// How the app starts.
#[derive(Debug, Clone)]
pub struct AppOptions {
    /// The source; `None` picks the first camera, or the demo when there is none.
    pub source: Option<SourceSpec>,
    pub source_options: SourceOptions,
    /// Weights to start with; `None` for the built-in model.
    pub weights: Option<PathBuf>,
    /// Where recordings go.
    pub record_dir: PathBuf,
    /// Save a screenshot of the window here, then close (with `quit_after`).
    pub screenshot: Option<PathBuf>,
    /// Close the window after this long (for scripted runs and CI).
    pub quit_after: Option<Duration>,
}

impl Default for AppOptions {
    fn default() -> Self {
        Self {
            source: None,
            source_options: SourceOptions::default(),
            weights: None,
            record_dir: record::default_dir(),
            screenshot: None,
            quit_after: None,
        }
    }
}

/// Frame-rate meter over one-second windows.
#[derive(Default)]
struct Rates {
    last: Option<(Instant, Stats)>,
    capture: f64,
    detect: f64,
    infer: f64,
}

impl Rates {
    fn update(&mut self, now: Instant, s: Stats) {
        match self.last {
            Some((t, prev)) if now.duration_since(t) >= Duration::from_secs(1) => {
                let dt = now.duration_since(t).as_secs_f64();
                self.capture = s.captured.saturating_sub(prev.captured) as f64 / dt;
                self.detect = s.detected.saturating_sub(prev.detected) as f64 / dt;
                self.infer = s.scored.saturating_sub(prev.scored) as f64 / dt;
                self.last = Some((now, s));
            }
            None => self.last = Some((now, s)),
            _ => {}
        }
    }
}

/// Everything the window shows and controls.
pub struct EmocamApp {
    ctx: egui::Context,
    opts: AppOptions,
    pipeline: Option<Pipeline>,
    source: SourceSpec,
    cameras: Vec<CameraInfo>,
    /// Shown at the top, e.g. "no camera found".
    pub banner: Option<String>,
    /// The source failed; offered a retry.
    pub source_error: Option<String>,
    /// Name of the running model.
    pub model_name: String,
    /// File of the running model (`None`: built-in).
    pub weights_path: Option<PathBuf>,
    /// Why the last weights file was rejected.
    pub weights_error: Option<String>,
    /// A file being validated by the inference thread.
    pub weights_pending: Option<PathBuf>,
    /// Recently loaded weights, newest first (persisted).
    pub recent_weights: Vec<PathBuf>,
    /// In-app path entry, used when no native file dialog answers.
    path_dialog: Option<String>,
    dialog_rx: Option<(Instant, Receiver<Option<PathBuf>>)>,
    latest: Option<Scored>,
    /// Faces of the latest frame, with stable ids and smoothed scores.
    pub faces: Vec<TrackedFace>,
    tracker: Tracker,
    /// Weight of the past in the moving average (0 = raw scores).
    pub smoothing: f32,
    history: History,
    texture: Option<egui::TextureHandle>,
    recorder: Option<Recorder>,
    /// Last message about recording (saved file, or the error that stopped it).
    pub record_message: Option<String>,
    rates: Rates,
    latencies_ms: Vec<f64>,
    started: Instant,
    screenshot_taken: bool,
}

impl EmocamApp {
    /// Build the app and start the pipeline. `storage` restores the recent-weights list.
    pub fn new(
        ctx: &egui::Context,
        storage: Option<&dyn eframe::Storage>,
        opts: AppOptions,
    ) -> Self {
        let recent_weights: Vec<PathBuf> = storage
            .and_then(|s| eframe::get_value(s, RECENT_KEY))
            .unwrap_or_default();
        let cameras = capture::camera::list().unwrap_or_default();
        let mut banner = None;
        let source = match &opts.source {
            Some(s) => s.clone(),
            None if !cameras.is_empty() => SourceSpec::Camera(cameras[0].index),
            None => {
                banner = Some(
                    "No camera found: showing the built-in demo. Connect a camera and pick it in the \
                     Camera menu, or start with --camera N or --source PATH."
                        .to_string(),
                );
                SourceSpec::Demo(None)
            }
        };
        let mut app = Self {
            ctx: ctx.clone(),
            pipeline: None,
            source,
            cameras,
            banner,
            source_error: None,
            model_name: String::new(),
            weights_path: opts.weights.clone(),
            weights_error: None,
            weights_pending: None,
            recent_weights,
            path_dialog: None,
            dialog_rx: None,
            latest: None,
            faces: Vec::new(),
            tracker: Tracker::new(),
            smoothing: 0.6,
            history: History::default(),
            texture: None,
            recorder: None,
            record_message: None,
            rates: Rates::default(),
            latencies_ms: Vec::new(),
            started: Instant::now(),
            screenshot_taken: false,
            opts,
        };
        app.start_pipeline();
        app
    }

    /// (Re)start the pipeline on the current source and weights.
    pub fn start_pipeline(&mut self) {
        if let Some(p) = self.pipeline.take() {
            p.shutdown();
        }
        // Frame numbers and face ids start again with a new pipeline: a recording ends here so
        // that one file never mixes two numberings.
        self.stop_recording();
        // A swap the old pipeline did not answer is taken up by the new one (validated below).
        if let Some(p) = self.weights_pending.take() {
            self.weights_path = Some(p);
        }
        self.source_error = None;
        self.tracker = Tracker::new();
        self.rates = Rates::default();
        self.latencies_ms.clear();
        let classifier = match Classifier::load_or_builtin(self.weights_path.as_deref()) {
            Ok(c) => c,
            Err(e) => {
                self.weights_error = Some(format!("{e}; using the built-in model"));
                self.weights_path = None;
                match Classifier::builtin() {
                    Ok(c) => c,
                    Err(e) => {
                        self.source_error = Some(e.to_string());
                        return;
                    }
                }
            }
        };
        self.model_name = classifier.name().to_string();
        let source = match capture::open(&self.source, self.opts.source_options) {
            Ok(s) => s,
            Err(e) => {
                self.source_error = Some(e.to_string());
                return;
            }
        };
        let ctx = self.ctx.clone();
        let waker: Waker = Arc::new(move || ctx.request_repaint());
        match Pipeline::start(source, classifier, PipelineConfig::default(), waker) {
            Ok(p) => self.pipeline = Some(p),
            Err(e) => self.source_error = Some(e.to_string()),
        }
    }

    /// Switch to another source.
    pub fn set_source(&mut self, source: SourceSpec) {
        self.source = source;
        self.banner = None;
        self.start_pipeline();
    }

    /// Ask the inference thread to validate and load `path`; the running model stays until it answers.
    pub fn open_weights(&mut self, path: PathBuf) {
        self.weights_error = None;
        // A running pipeline validates the file while frames keep flowing; one that has ended
        // (a finished file source, a failed camera) cannot, so the app restarts with the file.
        match &self.pipeline {
            Some(p) if p.swap_weights(path.clone()) => self.weights_pending = Some(path),
            _ => {
                self.weights_pending = Some(path);
                self.start_pipeline();
            }
        }
    }

    /// Start recording to a new timestamped file, or stop the recording in progress.
    pub fn toggle_recording(&mut self) {
        if self.recorder.is_some() {
            self.stop_recording();
        } else {
            self.start_recording(record::timestamped_path(&self.opts.record_dir));
        }
    }

    /// Start recording to `path`.
    pub fn start_recording(&mut self, path: PathBuf) {
        match Recorder::start(&path) {
            Ok(r) => {
                self.record_message = None;
                self.recorder = Some(r);
            }
            Err(e) => self.record_message = Some(format!("cannot start recording: {e}")),
        }
    }

    /// Stop recording and say where the rows went.
    pub fn stop_recording(&mut self) {
        if let Some(r) = self.recorder.take() {
            let path = r.path().display().to_string();
            self.record_message = Some(match r.finish() {
                Ok(s) if s.lost > 0 => format!(
                    "saved {} rows to {path}; {} rows were lost because the disk fell behind",
                    s.rows, s.lost
                ),
                Ok(s) => format!("saved {} rows to {path}", s.rows),
                Err(e) => e.to_string(),
            });
        }
    }

    /// True while a recording is running.
    pub fn is_recording(&self) -> bool {
        self.recorder.is_some()
    }

    /// Rows written by the running recording.
    pub fn recorded_rows(&self) -> u64 {
        self.recorder.as_ref().map_or(0, |r| r.rows())
    }

    /// Stop the pipeline and finish any recording (window closing).
    pub fn shutdown(&mut self) {
        self.stop_recording();
        if let Some(p) = self.pipeline.take() {
            p.shutdown();
        }
    }

    /// Take what the pipeline produced since the last frame.
    pub fn poll(&mut self) {
        let Some(p) = &self.pipeline else { return };
        let notices: Vec<Notice> = p.notices().try_iter().collect();
        let results: Vec<Scored> = p.results().try_iter().collect();
        let stats = p.stats();
        for n in notices {
            match n {
                Notice::ModelLoaded { name, source } => {
                    self.model_name = name;
                    self.weights_error = None;
                    self.weights_pending = None;
                    self.recent_weights.retain(|r| r != &source);
                    self.recent_weights.insert(0, source.clone());
                    self.recent_weights.truncate(MAX_RECENT);
                    self.weights_path = Some(source);
                }
                Notice::SwapFailed { error, .. } => {
                    self.weights_pending = None;
                    self.weights_error = Some(error);
                }
                Notice::SourceFailed(e) | Notice::StageFailed(e) => self.source_error = Some(e),
                Notice::SourceEnded => {}
            }
        }
        for s in results {
            self.accept(s);
        }
        self.rates.update(Instant::now(), stats);
        if let Some(r) = &self.recorder
            && let Some(e) = r.error()
        {
            self.recorder = None;
            self.record_message = Some(e);
        }
    }

    /// Take one processed frame: track faces, record rows, extend the chart.
    pub fn accept(&mut self, s: Scored) {
        self.faces = self.tracker.update(s.frame.index, &s.faces, self.smoothing);
        // The chart follows the face seen longest (lowest id), not whichever is leftmost.
        if let Some(f) = self.faces.iter().min_by_key(|f| f.id) {
            self.history
                .push(self.started.elapsed().as_secs_f64(), f.smoothed.clone());
        }
        if let Some(r) = &self.recorder {
            for f in &self.faces {
                r.push(Row {
                    timestamp: s.frame.captured_at,
                    elapsed_ms: r.elapsed().as_secs_f64() * 1e3,
                    frame: s.frame.index,
                    face_id: f.id,
                    bbox: f.bbox,
                    scores: f.raw.clone(),
                    model: s.model.clone(),
                });
            }
        }
        self.latencies_ms.push(s.latency().as_secs_f64() * 1e3);
        if self.latencies_ms.len() > 60 {
            self.latencies_ms.remove(0);
        }
        let img = egui::ColorImage::from_rgb(
            [s.frame.rgb.width() as usize, s.frame.rgb.height() as usize],
            s.frame.rgb.as_raw(),
        );
        match &mut self.texture {
            Some(t) => t.set(img, TextureOptions::LINEAR),
            None => {
                self.texture = Some(self.ctx.load_texture("video", img, TextureOptions::LINEAR))
            }
        }
        self.latest = Some(s);
    }

    fn median_latency_ms(&self) -> f64 {
        let mut v = self.latencies_ms.clone();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    }

    /// Open the native file dialog on a helper thread (it blocks); see [`Self::poll_dialog`].
    fn pick_weights(&mut self) {
        let (tx, rx) = bounded(1);
        let start_dir = self
            .weights_path
            .as_ref()
            .and_then(|p| p.parent().map(Path::to_path_buf));
        let spawned = std::thread::Builder::new()
            .name("emocam-file-dialog".into())
            .spawn(move || {
                let mut d =
                    rfd::FileDialog::new().add_filter("safetensors weights", &["safetensors"]);
                if let Some(dir) = start_dir {
                    d = d.set_directory(dir);
                }
                let _ = tx.send(d.pick_file());
            });
        match spawned {
            Ok(_) => self.dialog_rx = Some((Instant::now(), rx)),
            Err(_) => self.path_dialog = Some(String::new()),
        }
    }

    /// A dialog that answers "nothing" at once never showed: rfd found no XDG portal and no
    /// zenity. Fall back to the in-app path field then.
    fn poll_dialog(&mut self) {
        let Some((t0, rx)) = &self.dialog_rx else {
            return;
        };
        if let Ok(answer) = rx.try_recv() {
            let instant = t0.elapsed() < Duration::from_millis(700);
            self.dialog_rx = None;
            match answer {
                Some(p) => self.open_weights(p),
                None if instant => self.path_dialog = Some(String::new()),
                None => {}
            }
        } else {
            self.ctx.request_repaint_after(Duration::from_millis(100));
        }
    }

    fn menus(&mut self, ui: &mut Ui) {
        egui::MenuBar::new().ui(ui, |ui| {
            ui.menu_button("File", |ui| {
                if ui
                    .add(
                        egui::Button::new("Open weights...")
                            .shortcut_text(ui.ctx().format_shortcut(&OPEN_SHORTCUT)),
                    )
                    .clicked()
                {
                    self.pick_weights();
                }
                if ui.button("Open weights by path...").clicked() {
                    self.path_dialog = Some(String::new());
                }
                ui.menu_button("Recent weights", |ui| {
                    if ui.button(BUILTIN_LABEL).clicked() {
                        self.weights_path = None;
                        self.start_pipeline();
                    }
                    for p in self.recent_weights.clone() {
                        if ui.button(p.display().to_string()).clicked() {
                            self.open_weights(p);
                        }
                    }
                });
                ui.separator();
                let label = if self.is_recording() {
                    "Stop recording"
                } else {
                    "Start recording"
                };
                if ui
                    .add(
                        egui::Button::new(label)
                            .shortcut_text(ui.ctx().format_shortcut(&RECORD_SHORTCUT)),
                    )
                    .clicked()
                {
                    self.toggle_recording();
                }
                ui.separator();
                if ui.button("Quit").clicked() {
                    ui.ctx().send_viewport_cmd(egui::ViewportCommand::Close);
                }
            });
            ui.menu_button("Camera", |ui| {
                if self.cameras.is_empty() {
                    ui.label("No camera found");
                }
                for c in self.cameras.clone() {
                    if ui.button(format!("{}: {}", c.index, c.name)).clicked() {
                        self.set_source(SourceSpec::Camera(c.index));
                    }
                }
                if ui.button("Refresh list").clicked() {
                    self.cameras = capture::camera::list().unwrap_or_default();
                }
                ui.separator();
                if ui.button("Built-in demo").clicked() {
                    self.set_source(SourceSpec::Demo(None));
                }
            });
            ui.menu_button("View", |ui| {
                ui.add(egui::Slider::new(&mut self.smoothing, 0.0..=0.95).text("smoothing"));
            });
        });
    }

    fn status_bar(&mut self, ui: &mut Ui) {
        ui.horizontal_wrapped(|ui| {
            let source = self
                .pipeline
                .as_ref()
                .map(|p| p.source().to_string())
                .unwrap_or_else(|| self.source.to_string());
            ui.label(format!("source: {source}"));
            ui.separator();
            ui.label(format!("model: {}", self.model_name));
            ui.separator();
            // Short figures move to the next row whole rather than break mid-item.
            let whole = |ui: &mut Ui, text: String| {
                ui.add(egui::Label::new(text).wrap_mode(egui::TextWrapMode::Extend));
            };
            whole(
                ui,
                format!(
                    "fps capture {:.0} / detect {:.0} / infer {:.0}",
                    self.rates.capture, self.rates.detect, self.rates.infer
                ),
            );
            ui.separator();
            whole(ui, format!("latency {:.0} ms", self.median_latency_ms()));
            ui.separator();
            let dropped = self
                .pipeline
                .as_ref()
                .map(|p| p.stats().dropped())
                .unwrap_or(0);
            whole(ui, format!("dropped {dropped}"));
            if let Some(r) = &self.recorder {
                ui.separator();
                red_dot(ui);
                ui.label(
                    RichText::new(format!("REC {} rows", r.rows()))
                        .color(Color32::RED)
                        .strong(),
                );
            }
        });
    }

    fn messages(&mut self, ui: &mut Ui) {
        if let Some(b) = &self.banner {
            ui.colored_label(Color32::from_rgb(230, 180, 40), b);
        }
        if let Some(e) = self.source_error.clone() {
            ui.horizontal(|ui| {
                ui.colored_label(
                    Color32::from_rgb(230, 80, 60),
                    format!("Source problem: {e}"),
                );
                if ui.button("Retry").clicked() {
                    self.start_pipeline();
                }
                if ui.button("Use demo").clicked() {
                    self.set_source(SourceSpec::Demo(None));
                }
            });
        }
        if let Some(e) = self.weights_error.clone() {
            ui.horizontal(|ui| {
                ui.colored_label(
                    Color32::from_rgb(230, 80, 60),
                    format!("Weights not loaded: {e}"),
                );
                if ui.small_button("dismiss").clicked() {
                    self.weights_error = None;
                }
            });
        }
        if let Some(p) = &self.weights_pending {
            ui.label(format!("checking {} ...", p.display()));
        }
        if let Some(m) = self.record_message.clone() {
            ui.horizontal(|ui| {
                ui.label(m);
                if ui.small_button("dismiss").clicked() {
                    self.record_message = None;
                }
            });
        }
    }

    fn side_panel(&mut self, ui: &mut Ui) {
        ui.horizontal(|ui| {
            let text = if self.is_recording() {
                "Stop recording"
            } else {
                "Record"
            };
            let red = Color32::from_rgb(210, 40, 40);
            if ui.button(RichText::new(text).color(red)).clicked() {
                self.toggle_recording();
            }
            if self.is_recording() {
                red_dot(ui);
                ui.label(
                    RichText::new(format!("{} rows", self.recorded_rows())).color(Color32::RED),
                );
            }
        });
        ui.add(egui::Slider::new(&mut self.smoothing, 0.0..=0.95).text("smoothing"));
        ui.separator();
        if self.faces.is_empty() {
            ui.label("No face in view.");
        }
        egui::ScrollArea::vertical()
            .max_height(ui.available_height() * 0.55)
            .show(ui, |ui| {
                for f in &self.faces {
                    let (top, p) = f.smoothed.top();
                    ui.label(
                        RichText::new(format!("Face #{}: {} {}", f.id, top, bars::percent(p)))
                            .strong(),
                    );
                    bars::emotion_bars(ui, &f.smoothed);
                    ui.add_space(6.0);
                }
            });
        ui.separator();
        ui.label("Last 30 s (the face seen longest)");
        self.history.show(ui, self.started.elapsed().as_secs_f64());
    }

    fn path_dialog(&mut self, ui: &mut Ui) {
        let Some(mut text) = self.path_dialog.take() else {
            return;
        };
        let mut keep = true;
        egui::Window::new("Open weights")
            .collapsible(false)
            .show(ui.ctx(), |ui| {
                ui.label("No file dialog is available here; type the path of a .safetensors file:");
                let r = ui.add(
                    egui::TextEdit::singleline(&mut text)
                        .desired_width(420.0)
                        .hint_text("weights/model.safetensors"),
                );
                ui.horizontal(|ui| {
                    let enter = r.lost_focus() && ui.input(|i| i.key_pressed(Key::Enter));
                    if (ui.button("Open").clicked() || enter) && !text.trim().is_empty() {
                        self.open_weights(PathBuf::from(text.trim()));
                        keep = false;
                    }
                    if ui.button("Cancel").clicked() {
                        keep = false;
                    }
                });
            });
        if keep {
            self.path_dialog = Some(text);
        }
    }

    fn shortcuts_and_drops(&mut self, ui: &mut Ui) {
        if ui.input_mut(|i| i.consume_shortcut(&RECORD_SHORTCUT)) {
            self.toggle_recording();
        }
        if ui.input_mut(|i| i.consume_shortcut(&OPEN_SHORTCUT)) {
            self.pick_weights();
        }
        let dropped: Vec<PathBuf> = ui.input(|i| {
            i.raw
                .dropped_files
                .iter()
                .map(|f| f.path().to_path_buf())
                .collect()
        });
        if let Some(p) = dropped.into_iter().next() {
            self.open_weights(p);
        }
    }

    fn scripted_exit(&mut self, ui: &mut Ui) {
        let Some(after) = self.opts.quit_after else {
            return;
        };
        if self.started.elapsed() < after {
            ui.ctx().request_repaint_after(Duration::from_millis(100));
            return;
        }
        match (&self.opts.screenshot, self.screenshot_taken) {
            (Some(path), false) => {
                self.screenshot_taken = true;
                let (path, ctx) = (path.clone(), ui.ctx().clone());
                ui.ctx()
                    .send_viewport_cmd(egui::ViewportCommand::Screenshot(
                        egui::ScreenshotCallback::new(move |img| {
                            let rgba: Vec<u8> =
                                img.pixels.iter().flat_map(|c| c.to_array()).collect();
                            match image::RgbaImage::from_raw(
                                img.size[0] as u32,
                                img.size[1] as u32,
                                rgba,
                            )
                            .map(|i| i.save(&path))
                            {
                                Some(Ok(())) => {
                                    eprintln!("emocam: screenshot saved to {}", path.display())
                                }
                                _ => eprintln!(
                                    "emocam: cannot save screenshot to {}",
                                    path.display()
                                ),
                            }
                            ctx.send_viewport_cmd(egui::ViewportCommand::Close);
                            ctx.request_repaint();
                        }),
                    ));
            }
            (Some(_), true) => {}
            (None, _) => ui.ctx().send_viewport_cmd(egui::ViewportCommand::Close),
        }
    }

    /// Draw the whole window into `ui` (also used by the GUI tests).
    pub fn show(&mut self, ui: &mut Ui) {
        self.poll();
        self.poll_dialog();
        self.shortcuts_and_drops(ui);
        egui::Panel::top("menu").show(ui, |ui| {
            self.menus(ui);
            self.messages(ui);
        });
        egui::Panel::bottom("status").show(ui, |ui| self.status_bar(ui));
        egui::Panel::right("faces")
            .min_size(320.0)
            .show(ui, |ui| self.side_panel(ui));
        egui::CentralPanel::default().show(ui, |ui| match (&self.texture, &self.latest) {
            (Some(t), Some(s)) => {
                let size = [s.frame.rgb.width() as usize, s.frame.rgb.height() as usize];
                video::show(ui, t, size, &self.faces);
            }
            _ => {
                ui.centered_and_justified(|ui| ui.label("Waiting for the first frame..."));
            }
        });
        self.path_dialog(ui);
        self.scripted_exit(ui);
    }
}

/// The recording indicator (drawn, since the default fonts have no filled circle).
fn red_dot(ui: &mut Ui) {
    let (rect, _) = ui.allocate_exact_size(egui::vec2(12.0, 12.0), egui::Sense::hover());
    ui.painter().circle_filled(rect.center(), 5.0, Color32::RED);
}

impl eframe::App for EmocamApp {
    fn ui(&mut self, ui: &mut Ui, _frame: &mut eframe::Frame) {
        self.show(ui);
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        eframe::set_value(storage, RECENT_KEY, &self.recent_weights);
    }

    fn on_exit(&mut self, _gl: Option<&eframe::glow::Context>) {
        self.shutdown();
    }
}

impl Drop for EmocamApp {
    fn drop(&mut self) {
        self.shutdown();
    }
}
