//! What the window and `emocam run` share: one pipeline over one source at a time, stable face
//! ids and smoothed scores, the recording, weights swaps, and what went wrong. Egui-free: the
//! window draws a [`Session`], `run` drives one, and both record the same rows.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::select;

use crate::capture::{self, SourceOptions, SourceSpec};
use crate::emotion::Classes;
use crate::error::{Error, Result};
use crate::model::Classifier;
use crate::outfile::OutputPolicy;
use crate::pipeline::{Notice, Pipeline, PipelineConfig, Scored, SourceInfo, Stats, Waker};
use crate::record::{RecordSummary, Recorder, Row};
use crate::track::{Smoother, TrackedFace};

/// How a session starts.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub source: SourceSpec,
    pub source_options: SourceOptions,
    /// Weights file to start with; `None` for the built-in model.
    pub weights: Option<PathBuf>,
    pub pipeline: PipelineConfig,
    /// Weight of the past in each face's moving average of scores (0 = raw scores).
    pub smoothing: f32,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            source: SourceSpec::Demo(None),
            source_options: SourceOptions::default(),
            weights: None,
            pipeline: PipelineConfig::default(),
            smoothing: 0.6,
        }
    }
}

/// A processed frame with its faces tracked: stable ids, smoothed scores.
#[derive(Clone)]
pub struct Processed {
    pub scored: Scored,
    pub faces: Vec<TrackedFace>,
}

/// What happened since the last look, in order.
#[derive(Clone)]
pub enum Event {
    /// A frame came through (and its rows went to the recording, if one runs).
    Frame(Box<Processed>),
    /// A new model runs.
    ModelLoaded { name: String, source: PathBuf },
    /// A weights file was refused; the running model stays.
    SwapFailed { path: PathBuf, error: String },
    /// A finite source delivered its last frame.
    SourceEnded,
    /// The source or a stage failed; the pipeline has stopped.
    Failed(String),
    /// A seek was refused.
    SeekFailed(String),
    /// The recording stopped by itself: its summary, or the error that stopped it.
    RecordingStopped(Result<RecordSummary, String>),
}

/// The running model, as far as the session knows.
#[derive(Debug, Clone)]
pub struct ModelState {
    pub name: String,
    pub classes: Classes,
    /// File of the running model (`None`: built-in).
    pub path: Option<PathBuf>,
    /// A file the inference thread is validating.
    pub pending: Option<PathBuf>,
}

/// A pipeline over one source, with tracking and recording.
pub struct Session {
    config: SessionConfig,
    waker: Waker,
    pipeline: Option<Pipeline>,
    /// Moving averages of scores, by the face stage's ids.
    smoother: Smoother,
    recorder: Option<Recorder>,
    model: ModelState,
    /// Why the source or pipeline is not running, if it is not.
    source_error: Option<String>,
    source_ended: bool,
    /// The source as given (a path, `camera:0`, `demo`), for the `source` column of recordings.
    source_label: Arc<str>,
    /// Time of the last frame in its source, for a seek bar.
    position_ms: Option<f64>,
    paused: bool,
}

impl Session {
    /// Start a pipeline over the configured source with `classifier`; an error if the source
    /// cannot be opened or the pipeline cannot start (for `emocam run`, which stops there).
    pub fn start(config: SessionConfig, classifier: Classifier, waker: Waker) -> Result<Self> {
        let mut s = Self::idle(config, &classifier, waker);
        s.run_pipeline(classifier)?;
        Ok(s)
    }

    /// Like [`Session::start`], but never fails: a weights file that does not load falls back
    /// to the built-in model (`Err` carries why), and a source that does not open leaves the
    /// session idle with [`Session::source_error`] set (for the window, which shows both).
    pub fn start_lenient(config: SessionConfig, waker: Waker) -> (Self, Option<String>) {
        let (classifier, weights_error) =
            match Classifier::load_or_builtin(config.weights.as_deref()) {
                Ok(c) => (Ok(c), None),
                Err(e) => (
                    Classifier::builtin(),
                    Some(format!("{e}; using the built-in model")),
                ),
            };
        let classifier = match classifier {
            Ok(c) => c,
            Err(e) => {
                // The built-in model is compiled in and tested; failing to load it is a broken build.
                let mut s = Self::idle_without_model(config, waker);
                s.source_error = Some(e.to_string());
                return (s, weights_error);
            }
        };
        let mut config = config;
        if weights_error.is_some() {
            config.weights = None;
        }
        let mut s = Self::idle(config, &classifier, waker);
        if let Err(e) = s.run_pipeline(classifier) {
            s.source_error = Some(e.to_string());
        }
        (s, weights_error)
    }

    fn idle(config: SessionConfig, classifier: &Classifier, waker: Waker) -> Self {
        let model = ModelState {
            name: classifier.name().to_string(),
            classes: classifier.classes().clone(),
            path: config.weights.clone(),
            pending: None,
        };
        Self {
            source_label: config.source.to_string().into(),
            config,
            waker,
            pipeline: None,
            smoother: Smoother::new(),
            recorder: None,
            model,
            source_error: None,
            source_ended: false,
            position_ms: None,
            paused: false,
        }
    }

    fn idle_without_model(config: SessionConfig, waker: Waker) -> Self {
        let model = ModelState {
            name: String::new(),
            classes: Classes::fer(),
            path: None,
            pending: None,
        };
        Self {
            source_label: config.source.to_string().into(),
            config,
            waker,
            pipeline: None,
            smoother: Smoother::new(),
            recorder: None,
            model,
            source_error: None,
            source_ended: false,
            position_ms: None,
            paused: false,
        }
    }

    /// Open the source and start a pipeline with `classifier`, replacing any running one.
    fn run_pipeline(&mut self, classifier: Classifier) -> Result<()> {
        self.stop_pipeline();
        self.model.name = classifier.name().to_string();
        self.model.classes = classifier.classes().clone();
        let source = capture::open(&self.config.source, self.config.source_options)?;
        self.source_label = self.config.source.to_string().into();
        let p = Pipeline::start(source, classifier, self.config.pipeline, self.waker.clone())?;
        self.pipeline = Some(p);
        Ok(())
    }

    fn stop_pipeline(&mut self) {
        // Frame numbers and face ids start again with a new pipeline: a recording ends here so
        // that one file never mixes two numberings.
        self.stop_recording();
        if let Some(p) = self.pipeline.take() {
            p.shutdown();
        }
        self.smoother = Smoother::new();
        self.source_error = None;
        self.source_ended = false;
        self.position_ms = None;
        self.paused = false;
    }

    /// Start again on the current source and weights (a failed camera's Retry, a finished
    /// file's Restart); a weights file being validated is taken up. Problems end up in
    /// [`Session::source_error`]; the returned text says why the weights were not used.
    pub fn restart(&mut self) -> Option<String> {
        if let Some(p) = self.model.pending.take() {
            self.config.weights = Some(p);
        }
        let (classifier, weights_error) =
            match Classifier::load_or_builtin(self.config.weights.as_deref()) {
                Ok(c) => (c, None),
                Err(e) => {
                    self.config.weights = None;
                    match Classifier::builtin() {
                        Ok(c) => (c, Some(format!("{e}; using the built-in model"))),
                        Err(b) => {
                            self.stop_pipeline();
                            self.source_error = Some(b.to_string());
                            return Some(e.to_string());
                        }
                    }
                }
            };
        self.model.path = self.config.weights.clone();
        if let Err(e) = self.run_pipeline(classifier) {
            self.source_error = Some(e.to_string());
        }
        weights_error
    }

    /// Switch to another source.
    pub fn set_source(&mut self, source: SourceSpec) -> Option<String> {
        self.config.source = source;
        self.restart()
    }

    /// Use the built-in model from now on (restarts the pipeline).
    pub fn use_builtin_model(&mut self) -> Option<String> {
        self.config.weights = None;
        self.model.pending = None;
        self.restart()
    }

    /// Ask the inference thread to validate and load `path`; the running model stays until it
    /// answers ([`Event::ModelLoaded`] or [`Event::SwapFailed`]). A pipeline that has ended (a
    /// finished file, a failed camera) cannot answer, so the session restarts with the file.
    pub fn swap_weights(&mut self, path: PathBuf) -> Option<String> {
        self.model.pending = Some(path.clone());
        match &self.pipeline {
            Some(p) if p.swap_weights(path) => None,
            _ => self.restart(),
        }
    }

    /// Events since the last call, without waiting (the window, once per repaint).
    pub fn poll(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        let Some(p) = &self.pipeline else {
            return out;
        };
        let notices: Vec<Notice> = p.notices().try_iter().collect();
        let results: Vec<Scored> = p.results().try_iter().collect();
        for n in notices {
            out.extend(self.on_notice(n));
        }
        for s in results {
            out.push(self.on_scored(s));
        }
        out.extend(self.check_recording());
        out
    }

    /// The next event, waiting up to `timeout` for one (`emocam run`). `None` on time-out, or
    /// when the pipeline has delivered its last frame after [`Session::stop_source`].
    pub fn wait(&mut self, timeout: Duration) -> Option<Event> {
        if let Some(e) = self.check_recording() {
            return Some(e);
        }
        let p = self.pipeline.as_ref()?;
        let (results, notices) = (p.results().clone(), p.notices().clone());
        select! {
            recv(notices) -> n => match n {
                Ok(n) => self.on_notice(n).into_iter().next(),
                Err(_) => None,
            },
            recv(results) -> r => r.ok().map(|s| self.on_scored(s)),
            default(timeout) => None,
        }
    }

    /// True once the pipeline has delivered every frame it will (after the source ended or
    /// was stopped, and the stages drained).
    pub fn drained(&self) -> bool {
        self.pipeline
            .as_ref()
            .is_none_or(|p| p.results().is_empty() && p.is_finished())
    }

    fn on_notice(&mut self, n: Notice) -> Option<Event> {
        Some(match n {
            Notice::ModelLoaded {
                name,
                source,
                classes,
            } => {
                if classes != self.model.classes && self.recorder.is_some() {
                    // The columns would no longer fit: this recording ends here.
                    let summary = self.stop_recording();
                    self.model.classes = classes.clone();
                    self.finish_model_load(&name, &source);
                    return summary.map(|r| Event::RecordingStopped(r.map_err(|e| e.to_string())));
                }
                self.model.classes = classes;
                self.finish_model_load(&name, &source);
                Event::ModelLoaded { name, source }
            }
            Notice::SwapFailed { path, error } => {
                self.model.pending = None;
                Event::SwapFailed { path, error }
            }
            Notice::SourceEnded => {
                self.source_ended = true;
                Event::SourceEnded
            }
            Notice::SourceFailed(e) | Notice::StageFailed(e) => {
                self.source_error = Some(e.clone());
                Event::Failed(e)
            }
            Notice::SeekFailed(e) => Event::SeekFailed(e),
        })
    }

    fn finish_model_load(&mut self, name: &str, source: &Path) {
        self.model.name = name.to_string();
        self.model.pending = None;
        self.model.path = Some(source.to_path_buf());
        self.config.weights = Some(source.to_path_buf());
    }

    fn on_scored(&mut self, s: Scored) -> Event {
        let frame = s.frame.index;
        let faces: Vec<TrackedFace> = s
            .faces
            .iter()
            .map(|f| TrackedFace {
                id: f.id,
                bbox: f.bbox,
                detected: f.detected,
                raw: f.scores.clone(),
                smoothed: self
                    .smoother
                    .update(frame, f.id, &f.scores, self.config.smoothing),
            })
            .collect();
        self.smoother.forget_old(frame);
        if s.frame.source_ms.is_some() {
            self.position_ms = s.frame.source_ms;
        }
        if let Some(r) = &self.recorder {
            let elapsed_ms = r.elapsed().as_secs_f64() * 1e3;
            for f in &faces {
                r.push(Row {
                    timestamp: s.frame.captured_at,
                    elapsed_ms,
                    source_ms: s.frame.source_ms,
                    frame: s.frame.index,
                    face_id: f.id,
                    detected: f.detected,
                    bbox: f.bbox,
                    scores: f.raw.clone(),
                    model: s.model.clone(),
                    source: self.source_label.clone(),
                });
            }
        }
        Event::Frame(Box::new(Processed { scored: s, faces }))
    }

    /// A recording that stopped by itself (a write error) ends here, with its message.
    fn check_recording(&mut self) -> Option<Event> {
        let failed = self.recorder.as_ref().is_some_and(|r| r.error().is_some());
        if !failed {
            return None;
        }
        let r = self.recorder.take()?;
        Some(Event::RecordingStopped(
            r.finish().map_err(|e| e.to_string()),
        ))
    }

    /// Start recording to `path`: an existing file is kept unless `overwrite`, and the source
    /// and the weights being read are never written over.
    pub fn start_recording(&mut self, path: &Path, overwrite: bool) -> Result<()> {
        if self.recorder.is_some() {
            return Err(Error::Output {
                path: path.to_path_buf(),
                reason: "a recording is already running; stop it first".into(),
            });
        }
        let mut policy = OutputPolicy::new().with_overwrite(overwrite);
        if let SourceSpec::Path(p) = &self.config.source {
            policy = policy.with_input(p);
        }
        if let Some(w) = &self.model.path {
            policy = policy.with_input(w);
        }
        self.recorder = Some(Recorder::start(path, &self.model.classes, &policy)?);
        Ok(())
    }

    /// Stop the recording, writing every queued row; its summary, or the error that had
    /// stopped it. `None` when none was running.
    pub fn stop_recording(&mut self) -> Option<Result<RecordSummary>> {
        self.recorder.take().map(Recorder::finish)
    }

    /// True while a recording is running.
    pub fn is_recording(&self) -> bool {
        self.recorder.is_some()
    }

    /// The running recording's file and rows written so far.
    pub fn recording(&self) -> Option<(&Path, u64)> {
        self.recorder.as_ref().map(|r| (r.path(), r.rows()))
    }

    /// Stop taking frames; those in flight still come out (then [`Session::drained`]).
    pub fn stop_source(&mut self) {
        if let Some(p) = &mut self.pipeline {
            p.stop_source();
        }
    }

    /// Pause or resume a file source (a camera keeps running, its frames are dropped).
    pub fn set_paused(&mut self, paused: bool) {
        if let Some(p) = &self.pipeline {
            p.pause(paused);
            self.paused = paused;
        }
    }

    /// True while paused.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Go to `ms` in the source (see [`Pipeline::seek`]).
    pub fn seek(&mut self, ms: f64) {
        if let Some(p) = &self.pipeline {
            p.seek(ms);
            // Smoothing across a jump would blend two moments.
            self.smoother = Smoother::new();
        }
    }

    /// Stop the pipeline and finish the recording; the recording's summary, if one ran.
    pub fn shutdown(&mut self) -> Option<Result<RecordSummary>> {
        let summary = self.stop_recording();
        if let Some(p) = self.pipeline.take() {
            p.shutdown();
        }
        summary
    }

    /// Stop and join the pipeline's threads, returning how long that took.
    pub fn shutdown_timed(&mut self) -> (Option<Result<RecordSummary>>, Duration) {
        let t0 = Instant::now();
        let s = self.shutdown();
        (s, t0.elapsed())
    }

    /// Counters of the running pipeline (zeros when none runs).
    pub fn stats(&self) -> Stats {
        self.pipeline
            .as_ref()
            .map(|p| p.stats())
            .unwrap_or_default()
    }

    /// What the source says about itself, while a pipeline runs.
    pub fn source_info(&self) -> Option<&SourceInfo> {
        self.pipeline.as_ref().map(|p| p.source_info())
    }

    /// The source as configured.
    pub fn source(&self) -> &SourceSpec {
        &self.config.source
    }

    /// The source as given (a path, `camera:0`, `demo`), as in the recording's `source` column.
    pub fn source_label(&self) -> &str {
        &self.source_label
    }

    /// What the running source says it is, e.g. `clip.mp4 (h264 640x360, 48 frames, openh264)`;
    /// the source as given when none runs.
    pub fn source_description(&self) -> &str {
        self.source_info()
            .map_or(&*self.source_label, |i| i.description.as_str())
    }

    /// The running model.
    pub fn model(&self) -> &ModelState {
        &self.model
    }

    /// Why the source is not delivering, if it is not.
    pub fn source_error(&self) -> Option<&str> {
        self.source_error.as_deref()
    }

    /// True once a finite source delivered its last frame.
    pub fn source_ended(&self) -> bool {
        self.source_ended
    }

    /// True while a pipeline is running (it may have ended or failed).
    pub fn is_running(&self) -> bool {
        self.pipeline.is_some()
    }

    /// Time of the latest frame in its source, in milliseconds.
    pub fn position_ms(&self) -> Option<f64> {
        self.position_ms
    }

    /// Weight of the past in the moving average of scores.
    pub fn smoothing(&self) -> f32 {
        self.config.smoothing
    }

    /// Set the weight of the past in the moving average of scores, in [0, 0.99].
    pub fn set_smoothing(&mut self, k: f32) {
        self.config.smoothing = k.clamp(0.0, 0.99);
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.shutdown();
    }
}
