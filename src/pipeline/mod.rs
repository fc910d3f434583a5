//! The live pipeline: a capture thread, a face-stage thread (rustface, the tracker, crops) with
//! its full-frame search thread, and an inference thread (candle), joined by bounded crossbeam
//! channels.
//!
//! ```text
//!  FrameSource --Frame--> face stage --FaceBatch--> inference --Scored--> consumer (GUI, `run`)
//!                          |  ^ new faces              ^ Command (swap weights)   Notice -->
//!                          v  |
//!                    full-frame search
//! ```
//! The face stage follows known faces in small regions on every frame while the search thread
//! looks for new ones over the whole frame, so the stages keep both cores busy: the capture
//! thread decodes the next frame, the face stage searches this one, the inference thread scores
//! the previous one. Each face keeps the tracker's id, which the consumer uses for its smoothing
//! and recordings (see [`ScoredFace`]).
//!
//! Live sources (cameras, paced files) never wait: a stage that is still busy finds at most one
//! frame waiting, newer frames replace it and the replaced ones are counted as dropped. Unpaced
//! file sources (`--fps 0`) instead produce each frame when the face stage asks for one (one
//! frame ahead), so every frame is processed, in order, and none waits in a queue (which would
//! only add latency). Every message carries its frame's capture time, so consumers can show
//! end-to-end latency. The pipeline calls a waker after each result; the GUI passes one that
//! requests a repaint.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};
use image::RgbImage;

mod face_stage;
mod inference;
mod source_thread;
mod spread;

use face_stage::FaceStage;
use inference::Inference;
pub use source_thread::Control;
use source_thread::SourceLoop;

use crate::capture::{FrameSource, Pacing};
use crate::detect::DetectorConfig;
use crate::emotion::{Classes, FaceResult, Scores};
use crate::error::{Error, Result};
use crate::imaging::FaceBox;
use crate::model::{Classifier, FaceCrops};
use crate::recognize::DEFAULT_MARGIN;
use crate::track::TrackedBox;

/// Called by the pipeline after each result or notice (the GUI requests a repaint).
pub type Waker = Arc<dyn Fn() + Send + Sync>;

/// A captured frame.
#[derive(Clone)]
pub struct Frame {
    /// Frame number from the source, starting at 0.
    pub index: u64,
    /// When the capture thread received it (for latency).
    pub captured: Instant,
    /// The same moment on the wall clock (for timestamps in recordings).
    pub captured_at: SystemTime,
    /// The frame's time in its source in milliseconds (a video's presentation time; for a
    /// camera, the time since its first frame); `None` for an unpaced source without a clock.
    pub source_ms: Option<f64>,
    pub rgb: Arc<RgbImage>,
}

/// A frame's faces on their way to the model.
struct FaceBatch {
    frame: Frame,
    faces: Vec<TrackedBox>,
    crops: FaceCrops,
    detect_ms: f32,
}

/// The crops the running model takes, shared by the face stage (which cuts them) and the
/// inference thread (which changes them when it swaps weights).
struct CropShape {
    size: AtomicU32,
    colour: AtomicBool,
}

impl CropShape {
    fn of(c: &Classifier) -> Self {
        Self {
            size: AtomicU32::new(c.input_size()),
            colour: AtomicBool::new(c.wants_colour()),
        }
    }

    fn set(&self, c: &Classifier) {
        self.size.store(c.input_size(), Ordering::Relaxed);
        self.colour.store(c.wants_colour(), Ordering::Relaxed);
    }

    /// Side of the square crop, and whether it is colour.
    fn get(&self) -> (u32, bool) {
        (
            self.size.load(Ordering::Relaxed),
            self.colour.load(Ordering::Relaxed),
        )
    }
}

/// One face of a processed frame: its tracker id, where it is, how it scored.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredFace {
    /// Stable id from the face stage's tracker: the same person keeps it from frame to frame
    /// (and across weights swaps) while they are followed.
    pub id: u64,
    /// True when the detector found the face in this frame; false when the tracker carried it
    /// on its predicted box (a hand over the face, a turn of the head).
    pub detected: bool,
    pub bbox: FaceBox,
    pub scores: Scores,
}

impl ScoredFace {
    /// The face without its tracking.
    pub fn result(&self) -> FaceResult {
        FaceResult {
            bbox: self.bbox,
            scores: self.scores.clone(),
        }
    }
}

/// A processed frame: its faces and their scores.
#[derive(Clone)]
pub struct Scored {
    pub frame: Frame,
    /// Every face of the frame, left to right.
    pub faces: Vec<ScoredFace>,
    /// Name of the model that scored it.
    pub model: Arc<str>,
    /// Time spent finding and cropping faces.
    pub detect_ms: f32,
    /// Time spent in the network.
    pub infer_ms: f32,
    /// When the scores were ready.
    pub scored_at: Instant,
}

impl Scored {
    /// Capture-to-scores latency.
    pub fn latency(&self) -> Duration {
        self.scored_at.duration_since(self.frame.captured)
    }
}

/// Requests to the running pipeline.
#[derive(Debug, Clone)]
pub enum Command {
    /// Validate a weights file and, if it is good, use it from the next frame on.
    SwapWeights(PathBuf),
}

/// Things a consumer must hear about (never dropped, unlike frames).
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    /// A new model is running.
    ModelLoaded {
        name: String,
        source: PathBuf,
        classes: Classes,
    },
    /// A weights file was rejected; the previous model keeps running.
    SwapFailed { path: PathBuf, error: String },
    /// The source failed (a camera vanished, a file became unreadable); capture has stopped.
    SourceFailed(String),
    /// A finite source delivered its last frame.
    SourceEnded,
    /// A stage hit an error it could not recover from.
    StageFailed(String),
    /// A seek was refused (the source has no positions, or the time is outside it); playing
    /// goes on where it was.
    SeekFailed(String),
}

/// Running totals, updated by the stages.
#[derive(Debug, Default)]
pub struct Counters {
    pub captured: AtomicU64,
    pub detected: AtomicU64,
    pub scored: AtomicU64,
    /// Frames replaced before the face stage took them.
    pub dropped_capture: AtomicU64,
    /// Face batches replaced before the inference thread took them.
    pub dropped_faces: AtomicU64,
    /// Results replaced before the consumer took them.
    pub dropped_results: AtomicU64,
}

/// A copy of [`Counters`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub captured: u64,
    pub detected: u64,
    pub scored: u64,
    pub dropped_capture: u64,
    pub dropped_faces: u64,
    pub dropped_results: u64,
}

impl Stats {
    /// Frames dropped anywhere in the pipeline.
    pub fn dropped(&self) -> u64 {
        self.dropped_capture + self.dropped_faces + self.dropped_results
    }
}

impl Counters {
    /// Read every counter.
    pub fn snapshot(&self) -> Stats {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            captured: r(&self.captured),
            detected: r(&self.detected),
            scored: r(&self.scored),
            dropped_capture: r(&self.dropped_capture),
            dropped_faces: r(&self.dropped_faces),
            dropped_results: r(&self.dropped_results),
        }
    }
}

/// Face-stage settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PipelineConfig {
    /// Detector settings. With `tracking`, only its pyramid, step and threshold are used: the
    /// search scale comes from `min_face` and from each followed face's size.
    pub detector: DetectorConfig,
    /// Crop margin around each face box (see [`DEFAULT_MARGIN`]).
    pub margin: f32,
    /// Follow faces from frame to frame (video): stable ids, searches around known faces,
    /// missed faces carried for up to a second. Off for still images, where each frame is
    /// searched whole with `detector` and stands alone.
    pub tracking: bool,
    /// Smallest face to find, in frame pixels (`None`: 5% of the frame height, at least 40).
    pub min_face: Option<u32>,
    /// Start a whole-frame search for new faces at most this often, in milliseconds of the
    /// source's time (one runs at a time, beside the searches around known faces).
    pub full_search_ms: f64,
    /// Run every pass of a model that makes several a face (an ensemble, a mirror average)
    /// on every frame. Off: a paced source with tracking runs one pass a frame on each face it
    /// follows and scores it from the latest row of each pass (see the `spread` module), for
    /// a quarter of the default model's cost; unpaced sources always run every pass.
    pub every_pass: bool,
}

/// See [`PipelineConfig::full_search_ms`].
pub const DEFAULT_FULL_SEARCH_MS: f64 = 250.0;

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            detector: DetectorConfig::tracking(),
            margin: DEFAULT_MARGIN,
            tracking: true,
            min_face: None,
            full_search_ms: DEFAULT_FULL_SEARCH_MS,
            every_pass: false,
        }
    }
}

/// Handles to the running threads; [`Pipeline::shutdown`] stops and joins them.
pub struct Pipeline {
    results: Receiver<Scored>,
    notices: Receiver<Notice>,
    commands: Sender<Command>,
    stop: Arc<AtomicBool>,
    control: Sender<Control>,
    stop_tx: Option<Sender<()>>,
    threads: Vec<JoinHandle<()>>,
    counters: Arc<Counters>,
    info: SourceInfo,
}

/// What a source says about itself.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceInfo {
    pub description: String,
    /// Frames in the source, where known in advance (videos, GIFs, folders).
    pub frame_count: Option<u64>,
    /// Length in milliseconds, where known (videos, GIFs).
    pub duration_ms: Option<f64>,
    pub pacing: Pacing,
}

/// Send, replacing a message still waiting in the channel (counted in `dropped`) when `lossy`,
/// else waiting for room until `stop` is set. Returns false once the receiver is gone or stop.
fn deliver<T>(
    tx: &Sender<T>,
    rx: &Receiver<T>,
    mut msg: T,
    lossy: bool,
    dropped: &AtomicU64,
    stop: &AtomicBool,
) -> bool {
    loop {
        if !lossy {
            match tx.send_timeout(msg, Duration::from_millis(50)) {
                Ok(()) => return true,
                Err(crossbeam_channel::SendTimeoutError::Timeout(m)) => {
                    if stop.load(Ordering::Relaxed) {
                        return false;
                    }
                    msg = m;
                    continue;
                }
                Err(crossbeam_channel::SendTimeoutError::Disconnected(_)) => return false,
            }
        }
        match tx.try_send(msg) {
            Ok(()) => return true,
            Err(TrySendError::Full(m)) => {
                if rx.try_recv().is_ok() {
                    dropped.fetch_add(1, Ordering::Relaxed);
                }
                msg = m;
            }
            Err(TrySendError::Disconnected(_)) => return false,
        }
    }
}

impl Pipeline {
    /// Start the three threads over `source`, scoring with `classifier`.
    pub fn start(
        source: Box<dyn FrameSource>,
        classifier: Classifier,
        config: PipelineConfig,
        waker: Waker,
    ) -> Result<Self> {
        config.detector.validate()?;
        if config.min_face == Some(0)
            || config.full_search_ms.is_nan()
            || config.full_search_ms < 0.0
        {
            return Err(Error::InvalidInput {
                what: "pipeline settings".into(),
                reason: format!(
                    "min face {:?} px, full search every {} ms: expected a minimum face of at least 1 px and a non-negative interval",
                    config.min_face, config.full_search_ms
                ),
            });
        }
        let pacing = source.pacing();
        let lossy = pacing != Pacing::Unpaced;
        let info = SourceInfo {
            description: source.describe(),
            frame_count: source.frame_count(),
            duration_ms: source.duration_ms(),
            pacing,
        };
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (stop_tx, stop_rx) = bounded::<()>(0);
        let (control_tx, control_rx) = bounded::<Control>(8);
        let (frame_tx, frame_rx) = bounded::<Frame>(1);
        let (demand_tx, demand_rx) = bounded::<()>(1);
        let (batch_tx, batch_rx) = bounded::<FaceBatch>(1);
        let (result_tx, result_rx) = bounded::<Scored>(2);
        let (notice_tx, notice_rx) = bounded::<Notice>(64);
        let (cmd_tx, cmd_rx) = bounded::<Command>(8);
        let crop = Arc::new(CropShape::of(&classifier));

        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(f)
                .map_err(|e| Error::Camera(format!("cannot start thread {name}: {e}")))
        };
        let source_loop = SourceLoop {
            source,
            pacing,
            counters: counters.clone(),
            stop: stop.clone(),
            stop_rx,
            control: control_rx,
            demand: demand_rx,
            frames: frame_tx,
            frames_rx: frame_rx.clone(),
            notices: notice_tx.clone(),
            waker: waker.clone(),
        };
        let face_stage = FaceStage {
            config,
            lossy,
            counters: counters.clone(),
            stop: stop.clone(),
            crop: crop.clone(),
            demand: demand_tx,
            frames: frame_rx,
            batches: batch_tx,
            batches_rx: batch_rx.clone(),
            notices: notice_tx.clone(),
            waker: waker.clone(),
        };
        let spread = (lossy && config.tracking && !config.every_pass).then(Default::default);
        let inference = Inference {
            classifier,
            lossy,
            spread,
            counters: counters.clone(),
            stop: stop.clone(),
            crop,
            commands: cmd_rx,
            batches: batch_rx,
            results: result_tx,
            results_rx: result_rx.clone(),
            notices: notice_tx,
            waker,
        };
        let threads = vec![
            spawn("emocam-capture", Box::new(move || source_loop.run()))?,
            spawn("emocam-detect", Box::new(move || face_stage.run()))?,
            spawn("emocam-infer", Box::new(move || inference.run()))?,
        ];
        Ok(Self {
            results: result_rx,
            notices: notice_rx,
            commands: cmd_tx,
            control: control_tx,
            stop,
            stop_tx: Some(stop_tx),
            threads,
            counters,
            info,
        })
    }

    /// Scored frames, in order (some may have been dropped; see [`Pipeline::stats`]).
    pub fn results(&self) -> &Receiver<Scored> {
        &self.results
    }

    /// Model changes, rejected weights, source errors.
    pub fn notices(&self) -> &Receiver<Notice> {
        &self.notices
    }

    /// Ask the inference thread to validate and load a weights file; the answer comes as a
    /// [`Notice`]. The current model keeps running if the file is bad. Returns false when the
    /// request could not be queued (the pipeline has stopped, or requests are piling up).
    pub fn swap_weights(&self, path: PathBuf) -> bool {
        self.commands.try_send(Command::SwapWeights(path)).is_ok()
    }

    /// True once every stage has ended (the source ended or was stopped and the rest drained,
    /// or something failed).
    pub fn is_finished(&self) -> bool {
        self.threads.iter().all(|t| t.is_finished())
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        self.counters.snapshot()
    }

    /// What the source said it is.
    pub fn source(&self) -> &str {
        &self.info.description
    }

    /// What the source said about itself when the pipeline started.
    pub fn source_info(&self) -> &SourceInfo {
        &self.info
    }

    /// Pause (true) or resume (false) the source; frames in flight still arrive.
    pub fn pause(&self, paused: bool) {
        let _ = self.control.try_send(Control::Pause(paused));
    }

    /// Go to `ms` in the source (a video lands on the key frame at or before it); a source
    /// that cannot seek answers with [`Notice::SeekFailed`].
    pub fn seek(&self, ms: f64) {
        let _ = self.control.try_send(Control::Seek(ms));
    }

    /// Stop taking frames but let those in flight through: the results channel closes once
    /// the last one is delivered (Ctrl-C in `emocam run`: every processed frame is kept).
    pub fn stop_source(&mut self) {
        self.stop_tx.take();
    }

    /// Stop every thread and wait for them; returns how long that took.
    pub fn shutdown(mut self) -> Duration {
        let t0 = Instant::now();
        self.stop_threads();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        t0.elapsed()
    }

    fn stop_threads(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Dropping the stop sender wakes a capture thread pacing its frames; the channels
        // closing behind it end the other stages.
        self.stop_tx.take();
        let (tx, _) = bounded(0);
        self.commands = tx;
        // Unblock stages waiting to hand a result to a consumer that stopped reading.
        while self.results.try_recv().is_ok() {}
    }
}

impl Drop for Pipeline {
    /// Signals the threads to stop without waiting for them (use [`Pipeline::shutdown`] to join).
    fn drop(&mut self) {
        self.stop_threads();
    }
}
