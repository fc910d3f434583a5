//! The live pipeline: a capture thread, a face-stage thread (rustface + crops) and an inference
//! thread (candle), joined by bounded crossbeam channels.
//!
//! ```text
//!  FrameSource --Frame--> face stage --FaceBatch--> inference --Scored--> consumer (GUI, `run`)
//!                                                      ^ Command (swap weights)   Notice -->
//! ```
//! Live sources (cameras, paced files) never wait: a stage that is still busy finds at most one
//! frame waiting, newer frames replace it and the replaced ones are counted as dropped. Unpaced
//! file sources (`--fps 0`) instead produce each frame when the face stage asks for one, so
//! every frame is processed and none waits in a queue (which would only add latency). Every
//! message carries its frame's capture time, so consumers can show end-to-end latency. The
//! pipeline calls a waker after each result; the GUI passes one that requests a repaint.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError, bounded, select};
use image::{GrayImage, RgbImage};

use crate::capture::{FrameSource, Pacing};
use crate::detect::{DetectorConfig, FaceDetector};
use crate::error::{Error, Result};
use crate::imaging::{FaceBox, to_gray};
use crate::model::Classifier;
use crate::recognize::{DEFAULT_MARGIN, FaceResult, crop_faces};

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

struct FaceBatch {
    frame: Frame,
    boxes: Vec<FaceBox>,
    crops: Vec<GrayImage>,
    detect_ms: f32,
}

/// A processed frame: its faces and their scores.
#[derive(Clone)]
pub struct Scored {
    pub frame: Frame,
    pub faces: Vec<FaceResult>,
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
    ModelLoaded { name: String, source: PathBuf },
    /// A weights file was rejected; the previous model keeps running.
    SwapFailed { path: PathBuf, error: String },
    /// The source failed (a camera vanished, a file became unreadable); capture has stopped.
    SourceFailed(String),
    /// A finite source delivered its last frame.
    SourceEnded,
    /// A stage hit an error it could not recover from.
    StageFailed(String),
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
    pub detector: DetectorConfig,
    /// Crop margin around each face box (see [`DEFAULT_MARGIN`]).
    pub margin: f32,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            detector: DetectorConfig::live(),
            margin: DEFAULT_MARGIN,
        }
    }
}

/// Handles to the running threads; [`Pipeline::shutdown`] stops and joins them.
pub struct Pipeline {
    results: Receiver<Scored>,
    notices: Receiver<Notice>,
    commands: Sender<Command>,
    stop: Arc<AtomicBool>,
    stop_tx: Option<Sender<()>>,
    threads: Vec<JoinHandle<()>>,
    counters: Arc<Counters>,
    source: String,
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
        let pacing = source.pacing();
        let lossy = pacing != Pacing::Unpaced;
        let describe = source.describe();
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (stop_tx, stop_rx) = bounded::<()>(0);
        let (frame_tx, frame_rx) = bounded::<Frame>(1);
        // Unpaced sources make a frame only when the face stage asks for one.
        let (demand_tx, demand_rx) = bounded::<()>(1);
        let (batch_tx, batch_rx) = bounded::<FaceBatch>(1);
        let (result_tx, result_rx) = bounded::<Scored>(2);
        let (notice_tx, notice_rx) = bounded::<Notice>(64);
        let (cmd_tx, cmd_rx) = bounded::<Command>(8);
        let input_size = Arc::new(AtomicU32::new(classifier.input_size()));
        config.detector.validate()?;

        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(f)
                .map_err(|e| Error::Camera(format!("cannot start thread {name}: {e}")))
        };
        let mut threads = Vec::new();

        // Capture.
        {
            let (counters, stop, notice_tx, waker, frame_rx2) = (
                counters.clone(),
                stop.clone(),
                notice_tx.clone(),
                waker.clone(),
                frame_rx.clone(),
            );
            let mut source = source;
            threads.push(spawn(
                "emocam-capture",
                Box::new(move || {
                    let mut index = 0u64;
                    let mut due = Instant::now();
                    // The first frame's capture time and source time, the origin of the clock
                    // for cameras and of the schedule for sources played at their own rate.
                    let mut origin: Option<(Instant, f64)> = None;
                    while !stop.load(Ordering::Relaxed) {
                        if !lossy && demand_rx.recv().is_err() {
                            break;
                        }
                        let sf = match source.next_frame() {
                            Ok(Some(sf)) => sf,
                            Ok(None) => {
                                let _ = notice_tx.try_send(Notice::SourceEnded);
                                waker();
                                break;
                            }
                            Err(e) => {
                                let _ = notice_tx.try_send(Notice::SourceFailed(e.to_string()));
                                waker();
                                break;
                            }
                        };
                        let captured = Instant::now();
                        let (t0, ms0) =
                            *origin.get_or_insert((captured, sf.source_ms.unwrap_or(0.0)));
                        let source_ms = match (sf.source_ms, pacing) {
                            (Some(ms), _) => Some(ms),
                            (None, Pacing::Live) => {
                                Some(captured.duration_since(t0).as_secs_f64() * 1e3)
                            }
                            (None, _) => None,
                        };
                        if pacing == Pacing::SourceTime
                            && let Some(ms) = source_ms
                        {
                            // Wait until this frame's time comes, counted from the first one.
                            let at = t0 + Duration::from_secs_f64(((ms - ms0) / 1e3).max(0.0));
                            let now = Instant::now();
                            if at > now
                                && let Ok(()) | Err(RecvTimeoutError::Disconnected) =
                                    stop_rx.recv_timeout(at - now)
                            {
                                break;
                            }
                        }
                        let frame = Frame {
                            index,
                            captured: Instant::now(),
                            captured_at: SystemTime::now(),
                            source_ms,
                            rgb: Arc::new(sf.rgb),
                        };
                        index += 1;
                        counters.captured.fetch_add(1, Ordering::Relaxed);
                        if !deliver(
                            &frame_tx,
                            &frame_rx2,
                            frame,
                            lossy,
                            &counters.dropped_capture,
                            &stop,
                        ) {
                            break;
                        }
                        if let Pacing::Interval(iv) = pacing {
                            let now = Instant::now();
                            due = (due + iv).max(now);
                            if let Ok(()) | Err(RecvTimeoutError::Disconnected) =
                                stop_rx.recv_timeout(due - now)
                            {
                                break;
                            }
                        }
                    }
                }),
            )?);
        }

        // Face stage.
        {
            let (counters, stop, notice_tx, waker, batch_rx2, input_size) = (
                counters.clone(),
                stop.clone(),
                notice_tx.clone(),
                waker.clone(),
                batch_rx.clone(),
                input_size.clone(),
            );
            threads.push(spawn(
                "emocam-detect",
                Box::new(move || {
                    let mut detector = match FaceDetector::new(config.detector) {
                        Ok(d) => d,
                        Err(e) => {
                            let _ = notice_tx.try_send(Notice::StageFailed(e.to_string()));
                            waker();
                            return;
                        }
                    };
                    loop {
                        if !lossy && demand_tx.send(()).is_err() {
                            break;
                        }
                        let Ok(frame) = frame_rx.recv() else { break };
                        let t0 = Instant::now();
                        let gray = to_gray(&frame.rgb);
                        let boxes = detector.detect(&gray);
                        let crops = crop_faces(
                            &gray,
                            &boxes,
                            input_size.load(Ordering::Relaxed),
                            config.margin,
                        );
                        let detect_ms = t0.elapsed().as_secs_f32() * 1e3;
                        counters.detected.fetch_add(1, Ordering::Relaxed);
                        let batch = FaceBatch {
                            frame,
                            boxes,
                            crops,
                            detect_ms,
                        };
                        if !deliver(
                            &batch_tx,
                            &batch_rx2,
                            batch,
                            lossy,
                            &counters.dropped_faces,
                            &stop,
                        ) {
                            break;
                        }
                    }
                }),
            )?);
        }

        // Inference.
        {
            let (counters, stop, waker, result_rx2) = (
                counters.clone(),
                stop.clone(),
                waker.clone(),
                result_rx.clone(),
            );
            let mut classifier = classifier;
            let mut model: Arc<str> = classifier.name().into();
            threads.push(spawn(
                "emocam-infer",
                Box::new(move || {
                    // Some candle ops use rayon: keep them on this thread (see `use_own_rayon_pool`).
                    crate::runtime::use_own_rayon_pool();
                    let notify = |n: Notice| {
                        let _ = notice_tx.try_send(n);
                        waker();
                    };
                    loop {
                        select! {
                            recv(cmd_rx) -> cmd => match cmd {
                                Ok(Command::SwapWeights(path)) => match Classifier::load(&path) {
                                    Ok(c) => {
                                        input_size.store(c.input_size(), Ordering::Relaxed);
                                        model = c.name().into();
                                        notify(Notice::ModelLoaded { name: c.name().to_string(), source: path });
                                        classifier = c;
                                    }
                                    Err(e) => notify(Notice::SwapFailed { path, error: e.to_string() }),
                                },
                                Err(_) => break,
                            },
                            recv(batch_rx) -> batch => {
                                let Ok(batch) = batch else { break };
                                let t0 = Instant::now();
                                let scores = match classifier.classify(&batch.crops) {
                                    Ok(s) => s,
                                    Err(e) => {
                                        notify(Notice::StageFailed(format!("inference: {e}")));
                                        continue;
                                    }
                                };
                                let infer_ms = t0.elapsed().as_secs_f32() * 1e3;
                                let faces = batch.boxes.into_iter().zip(scores).map(|(bbox, scores)| FaceResult { bbox, scores }).collect();
                                counters.scored.fetch_add(1, Ordering::Relaxed);
                                let scored = Scored {
                                    frame: batch.frame,
                                    faces,
                                    model: model.clone(),
                                    detect_ms: batch.detect_ms,
                                    infer_ms,
                                    scored_at: Instant::now(),
                                };
                                if !deliver(&result_tx, &result_rx2, scored, lossy, &counters.dropped_results, &stop) {
                                    break;
                                }
                                waker();
                            }
                        }
                    }
                }),
            )?);
        }

        Ok(Self {
            results: result_rx,
            notices: notice_rx,
            commands: cmd_tx,
            stop,
            stop_tx: Some(stop_tx),
            threads,
            counters,
            source: describe,
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

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        self.counters.snapshot()
    }

    /// What the source said it is.
    pub fn source(&self) -> &str {
        &self.source
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
