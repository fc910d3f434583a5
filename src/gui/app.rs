//! The application: a [`Session`] and what the window adds to it (the texture, the chart, the
//! messages, the dialogs). Drawing lives in [`super::menus`] and [`super::panels`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use egui::{Key, KeyboardShortcut, Modifiers, TextureOptions, Ui};

use super::afterwards::{self, Summaries};
use super::chart::History;
use super::dialogs::{Dialogs, Purpose};
use super::summary::{self, SummaryAction};
use super::{menus, panels, video};
use crate::capture::{self, SourceOptions, SourceSpec, camera::CameraInfo};
use crate::pipeline::{Scored, Stats, Waker};
use crate::record;
use crate::session::{Event, Session, SessionConfig};
use crate::track::TrackedFace;

/// Start/stop recording.
pub const RECORD_SHORTCUT: KeyboardShortcut = KeyboardShortcut::new(Modifiers::COMMAND, Key::R);
/// Open a weights file.
pub const OPEN_SHORTCUT: KeyboardShortcut = KeyboardShortcut::new(Modifiers::COMMAND, Key::O);
/// Play or pause a file source.
pub const PLAY_SHORTCUT: KeyboardShortcut = KeyboardShortcut::new(Modifiers::NONE, Key::Space);
/// Save a snapshot of the current frame with its overlays.
pub const SNAPSHOT_SHORTCUT: KeyboardShortcut = KeyboardShortcut::new(Modifiers::COMMAND, Key::S);

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
    /// Start recording as soon as the window opens.
    pub record: bool,
    /// Smallest face to find, in frame pixels (`None`: 5% of the frame height, at least 40).
    pub min_face: Option<u32>,
    /// Run every pass of the model on every frame (see [`crate::pipeline::PipelineConfig::every_pass`]).
    pub every_pass: bool,
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
            record: false,
            min_face: None,
            every_pass: false,
        }
    }
}

/// Frame-rate meter over one-second windows.
#[derive(Default)]
pub(super) struct Rates {
    last: Option<(Instant, Stats)>,
    pub capture: f64,
    pub detect: f64,
    pub infer: f64,
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
    pub(super) opts: AppOptions,
    /// The pipeline, tracking and recording (shared with `emocam run`).
    pub session: Session,
    pub(super) cameras: Vec<CameraInfo>,
    /// Shown at the top, e.g. "no camera found".
    pub banner: Option<String>,
    /// Why the last weights file was rejected.
    pub weights_error: Option<String>,
    /// Recently loaded weights, newest first (persisted).
    pub recent_weights: Vec<PathBuf>,
    /// Last message about recording (saved file, or the error that stopped it).
    pub record_message: Option<String>,
    /// Faces of the latest frame, with stable ids and smoothed scores.
    pub faces: Vec<TrackedFace>,
    /// The face the chart follows (clicked in the video); `None`: the one seen longest.
    pub chart_face: Option<u64>,
    pub(super) latest: Option<Scored>,
    pub(super) history: History,
    history_face: Option<u64>,
    texture: Option<egui::TextureHandle>,
    pub(super) rates: Rates,
    latencies_ms: Vec<f64>,
    pub(super) started: Instant,
    pub(super) dialogs: Dialogs,
    /// The "Session summary" window's recording, being read or shown.
    pub summaries: Summaries,
    screenshot_taken: bool,
    /// The signal thread that closes the window on SIGTERM, ended when the app shuts down.
    signals: Option<signal_hook::iterator::Handle>,
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
                     Camera menu, or open a video with File > Open video or images."
                        .to_string(),
                );
                SourceSpec::Demo(None)
            }
        };
        let repaint = ctx.clone();
        let waker: Waker = Arc::new(move || repaint.request_repaint());
        let config = SessionConfig {
            source,
            source_options: opts.source_options,
            weights: opts.weights.clone(),
            pipeline: crate::pipeline::PipelineConfig {
                min_face: opts.min_face,
                every_pass: opts.every_pass,
                ..Default::default()
            },
            ..SessionConfig::default()
        };
        let (session, weights_error) = Session::start_lenient(config, waker);
        let mut app = Self {
            ctx: ctx.clone(),
            session,
            cameras,
            banner,
            weights_error,
            recent_weights,
            record_message: None,
            faces: Vec::new(),
            chart_face: None,
            latest: None,
            history: History::default(),
            history_face: None,
            texture: None,
            rates: Rates::default(),
            latencies_ms: Vec::new(),
            started: Instant::now(),
            dialogs: Dialogs::default(),
            summaries: Summaries::default(),
            screenshot_taken: false,
            signals: None,
            opts,
        };
        if app.opts.record {
            app.toggle_recording();
        }
        app
    }

    /// Name of the running model.
    pub fn model_name(&self) -> &str {
        &self.session.model().name
    }

    /// File of the running model (`None`: built-in).
    pub fn weights_path(&self) -> Option<&Path> {
        self.session.model().path.as_deref()
    }

    /// A weights file being validated by the inference thread.
    pub fn weights_pending(&self) -> Option<&Path> {
        self.session.model().pending.as_deref()
    }

    /// Why the source is not delivering, if it is not.
    pub fn source_error(&self) -> Option<&str> {
        self.session.source_error()
    }

    fn reset_view(&mut self) {
        self.faces.clear();
        self.latest = None;
        self.history = History::default();
        self.history_face = None;
        self.chart_face = None;
        self.rates = Rates::default();
        self.latencies_ms.clear();
    }

    /// The outcome of a restart: why the weights were not used, if they were not.
    fn after_restart(&mut self, weights_error: Option<String>) {
        if weights_error.is_some() {
            self.weights_error = weights_error;
        }
        self.reset_view();
    }

    /// Start again on the current source and weights.
    pub fn restart(&mut self) {
        let stopped = self.session.stop_recording();
        self.note_recording(stopped);
        let e = self.session.restart();
        self.after_restart(e);
    }

    /// Switch to another source.
    pub fn set_source(&mut self, source: SourceSpec) {
        self.banner = None;
        let stopped = self.session.stop_recording();
        self.note_recording(stopped);
        let e = self.session.set_source(source);
        self.after_restart(e);
    }

    /// Open a file as the source: a video, an animated GIF, an image or a folder.
    pub fn open_source(&mut self, path: PathBuf) {
        self.set_source(SourceSpec::Path(path));
    }

    /// Use the built-in model.
    pub fn use_builtin_model(&mut self) {
        self.weights_error = None;
        let stopped = self.session.stop_recording();
        self.note_recording(stopped);
        let e = self.session.use_builtin_model();
        self.after_restart(e);
    }

    /// Ask the inference thread to validate and load `path`; the running model stays until it answers.
    pub fn open_weights(&mut self, path: PathBuf) {
        self.weights_error = None;
        if let Some(e) = self.session.swap_weights(path) {
            self.weights_error = Some(e);
        }
    }

    /// A dropped or picked file: weights by their extension, anything else as a source.
    pub fn open_file(&mut self, path: PathBuf) {
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase());
        match ext.as_deref() {
            Some("safetensors" | "onnx") => self.open_weights(path),
            _ => self.open_source(path),
        }
    }

    /// Start recording to a new timestamped file, or stop the recording in progress.
    pub fn toggle_recording(&mut self) {
        if self.session.is_recording() {
            self.stop_recording();
        } else {
            self.start_recording(record::timestamped_path(&self.opts.record_dir));
        }
    }

    /// Start recording to `path` (never over an existing file).
    pub fn start_recording(&mut self, path: PathBuf) {
        self.record_message = match self.session.start_recording(&path, false) {
            Ok(()) => None,
            Err(e) => Some(format!("cannot start recording: {e}")),
        };
    }

    /// Stop recording, say where the rows went, and open its summary.
    pub fn stop_recording(&mut self) {
        let r = self.session.stop_recording();
        if let Some(Ok(s)) = &r
            && s.rows > 0
        {
            self.summaries.open(s.path.clone());
        }
        self.note_recording(r);
    }

    /// Open the summary of a recording made earlier.
    pub fn open_recording(&mut self, path: PathBuf) {
        self.summaries.open(path);
    }

    /// Save the current frame with its boxes and labels as a PNG in the recordings folder.
    pub fn save_snapshot(&mut self) {
        let Some(s) = &self.latest else {
            self.record_message = Some("no frame to save yet".into());
            return;
        };
        let path = afterwards::snapshot_path(&self.opts.record_dir);
        self.record_message = Some(
            match afterwards::save_snapshot(&s.frame.rgb, &self.faces, &path) {
                Ok(()) => format!("saved snapshot to {}", path.display()),
                Err(e) => format!("cannot save snapshot: {e}"),
            },
        );
    }

    fn note_recording(&mut self, r: Option<crate::error::Result<record::RecordSummary>>) {
        if let Some(r) = r {
            self.record_message = Some(match r {
                Ok(s) if s.lost > 0 => format!(
                    "saved {} rows to {}; {} rows were lost because the disk fell behind",
                    s.rows,
                    s.path.display(),
                    s.lost
                ),
                Ok(s) => format!("saved {} rows to {}", s.rows, s.path.display()),
                Err(e) => e.to_string(),
            });
        }
    }

    /// True while a recording is running.
    pub fn is_recording(&self) -> bool {
        self.session.is_recording()
    }

    /// Rows written by the running recording.
    pub fn recorded_rows(&self) -> u64 {
        self.session.recording().map_or(0, |(_, rows)| rows)
    }

    /// Stop the pipeline and finish any recording (window closing).
    pub fn shutdown(&mut self) {
        let r = self.session.shutdown();
        self.note_recording(r);
        if let Some(h) = self.signals.take() {
            h.close();
        }
    }

    /// Keep the handle of the signal thread that closes the window, to end it on shutdown.
    pub fn close_on_signals(&mut self, handle: Option<signal_hook::iterator::Handle>) {
        self.signals = handle;
    }

    /// Take what the pipeline produced since the last frame.
    pub fn poll(&mut self) {
        for e in self.session.poll() {
            match e {
                Event::Frame(p) => self.accept(p.scored, p.faces),
                Event::ModelLoaded { source, .. } => {
                    self.weights_error = None;
                    self.recent_weights.retain(|r| r != &source);
                    self.recent_weights.insert(0, source);
                    self.recent_weights.truncate(MAX_RECENT);
                }
                Event::SwapFailed { error, .. } => self.weights_error = Some(error),
                Event::RecordingStopped(r) => {
                    self.record_message = Some(match r {
                        Ok(s) => format!(
                            "the model's classes changed: recording stopped, {} rows saved to {}; \
                             start a new one for the new model",
                            s.rows,
                            s.path.display()
                        ),
                        Err(e) => e,
                    })
                }
                Event::SeekFailed(e) => self.record_message = Some(e),
                Event::SourceEnded | Event::Failed(_) => {}
            }
        }
        self.rates.update(Instant::now(), self.session.stats());
    }

    /// The face the chart and the side panel's bars follow: the clicked one while it is in
    /// view, else the face seen longest (lowest id).
    pub fn followed_face(&self) -> Option<u64> {
        self.history_face
            .filter(|id| self.faces.iter().any(|f| f.id == *id))
    }

    /// Take one processed frame: its faces, the chart, the texture.
    fn accept(&mut self, s: Scored, faces: Vec<TrackedFace>) {
        self.faces = faces;
        // The chart follows the clicked face, else the face seen longest (lowest id).
        let followed = self
            .chart_face
            .and_then(|id| self.faces.iter().find(|f| f.id == id))
            .or_else(|| self.faces.iter().min_by_key(|f| f.id));
        if let Some(f) = followed {
            if self.history_face != Some(f.id) {
                self.history = History::default();
                self.history_face = Some(f.id);
            }
            self.history
                .push(self.started.elapsed().as_secs_f64(), f.smoothed.clone());
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

    pub(super) fn median_latency_ms(&self) -> f64 {
        let mut v = self.latencies_ms.clone();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    }

    /// Open the native dialog for weights, starting beside the running model's file.
    pub(super) fn pick_weights(&mut self) {
        let dir = self
            .weights_path()
            .and_then(|p| p.parent().map(Path::to_path_buf));
        self.dialogs.pick(Purpose::Weights, dir.as_deref());
    }

    fn handle_picked(&mut self, picked: Option<(Purpose, PathBuf)>) {
        match picked {
            Some((Purpose::Weights, p)) => self.open_weights(p),
            Some((Purpose::Source, p)) => self.open_source(p),
            Some((Purpose::Recording, p)) => self.open_recording(p),
            Some((Purpose::Report, p)) => {
                if let Some(s) = &self.summaries.shown {
                    self.record_message = Some(match afterwards::save_report(s, &p) {
                        Ok(html) => format!("saved report to {}", html.display()),
                        Err(e) => format!("cannot save the report: {e}"),
                    });
                }
            }
            None => {}
        }
    }

    /// The summary window, while one is open.
    fn summary_window(&mut self, ctx: &egui::Context) {
        if let Some(e) = self.summaries.poll(ctx) {
            self.record_message = Some(e);
        }
        let Some(s) = &self.summaries.shown else {
            return;
        };
        match summary::show_summary(ctx, s) {
            Some(SummaryAction::SaveReport) => {
                let suggested = afterwards::default_report_path(&s.path);
                self.dialogs.save(Purpose::Report, &suggested);
            }
            Some(SummaryAction::Close) => self.summaries.shown = None,
            None => {}
        }
    }

    fn shortcuts_and_drops(&mut self, ui: &mut Ui) {
        if ui.input_mut(|i| i.consume_shortcut(&RECORD_SHORTCUT)) {
            self.toggle_recording();
        }
        if ui.input_mut(|i| i.consume_shortcut(&OPEN_SHORTCUT)) {
            self.pick_weights();
        }
        if ui.input_mut(|i| i.consume_shortcut(&SNAPSHOT_SHORTCUT)) {
            self.save_snapshot();
        }
        let typing = ui.ctx().egui_wants_keyboard_input();
        if !typing && ui.input_mut(|i| i.consume_shortcut(&PLAY_SHORTCUT)) {
            let paused = self.session.is_paused();
            self.session.set_paused(!paused);
        }
        let dropped: Vec<PathBuf> = ui.input(|i| {
            i.raw
                .dropped_files
                .iter()
                .map(|f| f.path().to_path_buf())
                .collect()
        });
        if let Some(p) = dropped.into_iter().next() {
            self.open_file(p);
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
        let picked = self.dialogs.poll(ui.ctx());
        self.handle_picked(picked);
        self.shortcuts_and_drops(ui);
        egui::Panel::top("menu").show(ui, |ui| {
            menus::menu_bar(self, ui);
            panels::messages(self, ui);
        });
        egui::Panel::bottom("status").show(ui, |ui| panels::status_bar(self, ui));
        if panels::has_timeline(self) {
            egui::Panel::bottom("playback").show(ui, |ui| panels::playback(self, ui));
        }
        egui::Panel::right("faces")
            .min_size(320.0)
            .show(ui, |ui| panels::side_panel(self, ui));
        egui::CentralPanel::default().show(ui, |ui| match (&self.texture, &self.latest) {
            (Some(t), Some(s)) => {
                let size = [s.frame.rgb.width() as usize, s.frame.rgb.height() as usize];
                if let Some(id) = video::show(ui, t, size, &self.faces, self.chart_face) {
                    self.chart_face = Some(id);
                }
            }
            _ => {
                ui.centered_and_justified(|ui| ui.label("Waiting for the first frame..."));
            }
        });
        self.summary_window(&ui.ctx().clone());
        let typed = self.dialogs.show(ui);
        self.handle_picked(typed);
        self.scripted_exit(ui);
    }
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
