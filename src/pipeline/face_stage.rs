//! The face stage: finds and follows the faces of each frame and cuts the crops the model
//! takes.
//!
//! With tracking on (video), each followed face is searched for in a small region around its
//! predicted box, at the scale its size needs, on every frame. The whole frame is searched, at
//! the scale the smallest wanted face needs ([`PipelineConfig::min_face`]), by a second thread
//! (`emocam-search`) while this one goes on with the next frames: new faces join the tracks
//! when its answer comes. Only a frame with no face followed is searched whole here and at
//! once, so the first face of a scene shows from its first frame. With tracking off (still
//! images), each frame is searched whole with the configured detector and faces get fresh ids.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError, bounded};
use image::GrayImage;

use super::{Counters, CropShape, FaceBatch, Frame, Notice, PipelineConfig, Waker, deliver};
use crate::detect::{DetectorConfig, FaceDetector, MAX_SCALE, MIN_FACE_WINDOW, MIN_SCALE, Region};
use crate::error::{Error, Result};
use crate::imaging::{FaceBox, to_gray};
use crate::recognize::crop_for_model;
use crate::track::{MATCH_IOU, TrackedBox, Tracker, dedup};

/// Region searched around a followed face: its predicted box grown by this much of its size on
/// each side (plus the distance it moved since the last frame), room for a change of speed.
const REGION_PAD: f32 = 0.4;

/// A followed face is searched on a copy scaled so that it is this many pixels wide: above the
/// detector's 40 px window so that it is still found when it moves away and shrinks, small
/// enough that a region costs little.
///
/// Measured on a 140 px face in 640x480 (its region searched with a 4 px step, one core, a
/// busy machine, rustface's upstream loops): 64 px with a pad of 0.6 took 11 ms, 56 px with 0.4 about 5 ms, 48 px with
/// 0.3 about 2.5 ms. Most of the cost is the cascade's later stages on the many windows that
/// overlap a face, so it grows with the face's size in the copy. At 48 px (and with an 8 px
/// step) the faces of 40-45 px in a group photograph were missed now and then, and a 120 px
/// face moving across 1080p was found in only 84 of 90 frames; 56 px finds them all.
const REGION_FACE_PX: f32 = 56.0;

/// Each region is searched first on a copy where the face is this wide, and again at
/// [`REGION_FACE_PX`] only when that finds nothing. The small copy has about a third of the
/// windows, and finds a steady face almost every time: the 640x480 demo's face was found in
/// 99.3% of 1200 frames either way, and the face stage took 2.9-3.3 ms a frame instead of
/// 6.1 ms. Alone, at 44 px, it lost faces of a panning group shot and swapped the ids of two
/// faces passing each other (`tests/tracking.rs`): in a small copy, a neighbour reaching into
/// the region is found instead of the face, or merged with it. So the first search is made
/// only where no other followed face reaches into the region, and the second is made unless
/// the first found a box on the face's predicted one.
const REGION_FACE_PX_FIRST: f32 = 44.0;

/// The first, smaller search is made only for faces at least this wide in the frame. The
/// region's search also finds new faces beside the followed one; around the 70 px faces of the
/// panning group shot, the small copies found fewer of them (4.3 faces short of the thorough
/// search over 9 sampled frames, against 3.3 without them, six debug runs each). Big faces are
/// where the small copy saves most: 5-6 ms a frame for a 140 px face at 640x480, against 3.
const REGION_FIRST_MIN_FACE: u32 = 96;

/// The whole frame is searched on a copy where the smallest wanted face is this wide: a
/// little above the detector's 40 px window, which finds a face of exactly its size only where
/// a window step lands on it (at 40 px, 25 of the 28 faces of a group photograph; at 44, all).
const FULL_FACE_PX: f32 = 44.0;

/// Frame time assumed for sources without a clock (unpaced folders), in milliseconds.
const NO_CLOCK_FRAME_MS: f64 = 1000.0 / 30.0;

/// An unpaced run waits for a full-frame search started this many frames ago rather than
/// going on without it, so a slow search still finds new faces within a bounded delay.
const MAX_SEARCH_LAG_FRAMES: u64 = 30;

/// What the face-stage thread owns.
pub(super) struct FaceStage {
    pub config: PipelineConfig,
    pub lossy: bool,
    pub counters: Arc<Counters>,
    pub stop: Arc<AtomicBool>,
    /// The crops the running model takes (changes when weights are swapped).
    pub crop: Arc<CropShape>,
    pub demand: Sender<()>,
    pub frames: Receiver<Frame>,
    pub batches: Sender<FaceBatch>,
    /// The same channel's receiving end, to replace a stale batch when lossy.
    pub batches_rx: Receiver<FaceBatch>,
    pub notices: Sender<Notice>,
    pub waker: Waker,
}

/// A full-frame search for the search thread: frame index, frame time, image, scale.
type Job = (u64, f64, Arc<GrayImage>, f32);

/// The search thread's answer: frame index, frame time, faces found, time it took.
type Found = (u64, f64, Vec<FaceBox>, Duration);

/// With a paced source (a camera, a video at its rate), full-frame searches take at most this
/// share of a core: a 640x480 search of 27 ms then starts at most every 270 ms, so a new face
/// shows within about half a second; the faces already followed are searched for on every
/// frame regardless. Unpaced runs search back to back on the second core instead.
const PACED_SEARCH_SHARE: f64 = 0.1;

/// The share once [`QUIET_SEARCHES`] searches in a row found no face that was not followed
/// already: a webcam on one person mostly sees nobody new, and the searches were then a
/// quarter of the process's CPU at 30 fps. A new face then shows within about a second (a
/// 27 ms search every 0.9 s), and the next search goes back to the full share.
const QUIET_SEARCH_SHARE: f64 = 0.03;

/// See [`QUIET_SEARCH_SHARE`].
const QUIET_SEARCHES: u32 = 3;

/// The full-frame search thread, with one search in flight at most.
struct Searcher {
    jobs: Option<Sender<Job>>,
    found: Receiver<Found>,
    thread: Option<JoinHandle<()>>,
    /// Index and time of the frame being searched.
    in_flight: Option<(u64, f64)>,
    /// Time of the frame the last search started on.
    last_start_ms: Option<f64>,
    /// When the last search started, and how long the last finished one took.
    last_start: Option<Instant>,
    last_took: Duration,
    /// Searches in a row that found nobody new.
    quiet: u32,
}

impl Searcher {
    fn spawn(config: DetectorConfig) -> Result<Self> {
        let (job_tx, job_rx) = bounded::<Job>(1);
        let (found_tx, found_rx) = bounded::<Found>(1);
        let thread = std::thread::Builder::new()
            .name("emocam-search".into())
            .spawn(move || {
                lower_priority();
                // rustface's detector is not Send: it is made on the thread that uses it.
                let Ok(mut det) = FaceDetector::new(config) else {
                    return;
                };
                for (index, t, gray, scale) in job_rx {
                    let t0 = Instant::now();
                    let whole = Region::whole(gray.width(), gray.height());
                    let found = det.detect_region(&gray, whole, scale);
                    if found_tx.send((index, t, found, t0.elapsed())).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| Error::Camera(format!("cannot start thread emocam-search: {e}")))?;
        Ok(Self {
            jobs: Some(job_tx),
            found: found_rx,
            thread: Some(thread),
            in_flight: None,
            last_start_ms: None,
            last_start: None,
            last_took: Duration::ZERO,
            quiet: 0,
        })
    }

    /// Start a search unless one runs; false when the search thread has gone.
    fn start(&mut self, index: u64, t: f64, gray: Arc<GrayImage>, scale: f32) -> bool {
        if self.in_flight.is_some() {
            return true;
        }
        let Some(jobs) = &self.jobs else { return false };
        if jobs.send((index, t, gray, scale)).is_err() {
            return false;
        }
        self.in_flight = Some((index, t));
        self.last_start_ms = Some(t);
        self.last_start = Some(Instant::now());
        true
    }

    /// The running search's answer: waiting for it when `wait`, else only if it is ready.
    /// `Err` when the search thread has gone.
    fn take(&mut self, wait: bool) -> std::result::Result<Option<Found>, ()> {
        if self.in_flight.is_none() {
            return Ok(None);
        }
        let got = if wait {
            self.found.recv().map_err(|_| ())
        } else {
            match self.found.try_recv() {
                Ok(f) => Ok(f),
                Err(TryRecvError::Empty) => return Ok(None),
                Err(TryRecvError::Disconnected) => Err(()),
            }
        };
        self.in_flight = None;
        if let Ok(f) = &got {
            self.last_took = f.3;
        }
        got.map(Some)
    }

    /// Count a finished search that found `new` faces nobody followed.
    fn found_new(&mut self, new: usize) {
        self.quiet = if new == 0 {
            self.quiet.saturating_add(1)
        } else {
            0
        };
    }

    /// True when a new search may start at source time `t`: `every_ms` after the last one,
    /// and when `paced`, not before the last one's duration over [`PACED_SEARCH_SHARE`] (or
    /// [`QUIET_SEARCH_SHARE`] while nobody new has been found for a while).
    fn due(&self, t: f64, every_ms: f64, paced: bool) -> bool {
        let by_source = self
            .last_start_ms
            .is_none_or(|l| t - l >= every_ms || t < l);
        let share = if self.quiet >= QUIET_SEARCHES {
            QUIET_SEARCH_SHARE
        } else {
            PACED_SEARCH_SHARE
        };
        let by_budget = !paced
            || self
                .last_start
                .is_none_or(|s| s.elapsed().as_secs_f64() >= self.last_took.as_secs_f64() / share);
        by_source && by_budget
    }
}

impl Drop for Searcher {
    fn drop(&mut self) {
        // Closing the job channel ends the search thread after its current search.
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Run the calling thread below the others: a full-frame search only looks for faces not yet
/// followed, so it takes the CPU the per-frame work leaves over. Without this, an unpaced run
/// had the search thread take a core of two from the frames. Best effort: where the priority
/// cannot be lowered the search still runs, only less politely.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority on the calling thread's own id only changes its scheduling weight.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10);
    }
}

/// Scale for a whole-frame search of a frame `h` pixels high that finds faces down to
/// `min_face` pixels (default: 5% of the frame height, at least the detector's window).
pub(super) fn full_search_scale(min_face: Option<u32>, h: u32) -> f32 {
    let min_face = min_face
        .unwrap_or_else(|| ((h as f32 * 0.05).round() as u32).max(MIN_FACE_WINDOW))
        .max(1);
    FULL_FACE_PX / min_face as f32
}

/// How much wider the region of a face the detector has not found for a while is searched,
/// in face sizes per second unseen, and at most: a face found by a whole-frame search a few
/// frames ago (it has no velocity yet) or carried behind a hand may have moved on. In a demo
/// panning at 6 px a frame, new faces from a search that took 10 frames were otherwise lost
/// (3 faces of 7 followed).
const UNSEEN_PAD_PER_S: f32 = 3.0;
const UNSEEN_PAD_MAX: f32 = 1.5;

/// Where and how each followed face is searched this frame: its region, the scale of a first,
/// cheaper search (`None` when another followed face reaches into the region) and the scale of
/// the search made when the first finds nothing.
fn region_searches(
    tracker: &Tracker,
    t: f64,
    dt: f64,
    w: u32,
    h: u32,
) -> Vec<(FaceBox, Region, Option<f32>, f32)> {
    let now = tracker.predicted_unseen(t);
    let boxes: Vec<FaceBox> = now.iter().map(|(p, _)| *p).collect();
    now.iter()
        .zip(tracker.predicted(t - dt))
        .enumerate()
        .filter_map(|(i, ((p, unseen_ms), before))| {
            let moved = (p.x - before.x).abs().max((p.y - before.y).abs()) as f32;
            let unseen = (*unseen_ms as f32 / 1e3 * UNSEEN_PAD_PER_S).min(UNSEEN_PAD_MAX);
            let pad = REGION_PAD + moved / p.w.max(1) as f32 + unseen;
            let side = p.w.max(1) as f32;
            let r = Region::around(p, pad, w, h)?;
            let alone = boxes
                .iter()
                .enumerate()
                .all(|(j, o)| j == i || !r.overlaps(o));
            let (first, second) = (REGION_FACE_PX_FIRST / side, REGION_FACE_PX / side);
            // Tiny faces clamp both scales to the largest: the second search would repeat the
            // first.
            let differ = second.clamp(MIN_SCALE, MAX_SCALE) > first.clamp(MIN_SCALE, MAX_SCALE);
            let big = p.w >= REGION_FIRST_MIN_FACE;
            Some((*p, r, (alone && big && differ).then_some(first), second))
        })
        .collect()
}

impl FaceStage {
    /// Run until the frames stop coming or the pipeline stops.
    pub fn run(self) {
        // rustface's detector is not Send: it is made here, on the thread that uses it.
        let detector = FaceDetector::new(self.config.detector);
        let searcher = if self.config.tracking {
            Searcher::spawn(self.config.detector).map(Some)
        } else {
            Ok(None)
        };
        match (detector, searcher) {
            (Ok(d), Ok(s)) => self.run_with(d, s),
            (Err(e), _) | (_, Err(e)) => self.fail(&e.to_string()),
        }
    }

    fn fail(&self, why: &str) {
        let _ = self.notices.try_send(Notice::StageFailed(why.to_string()));
        (self.waker)();
    }

    fn run_with(&self, mut detector: FaceDetector, mut searcher: Option<Searcher>) {
        let mut tracker = Tracker::new();
        let mut next_id = 0u64;
        let mut last_t: Option<f64> = None;
        if !self.lossy && self.demand.send(()).is_err() {
            return;
        }
        while let Ok(frame) = self.frames.recv() {
            if !self.lossy {
                // Ask for the next frame now, so that it is read and decoded while this one is
                // searched (one frame ahead: still in order, and nothing queues up). A source
                // that has ended no longer listens; the frames channel then closes.
                let _ = self.demand.send(());
            }
            let t0 = Instant::now();
            let gray = Arc::new(to_gray(&frame.rgb));
            let faces = match &mut searcher {
                Some(s) => {
                    let t = frame
                        .source_ms
                        .unwrap_or(frame.index as f64 * NO_CLOCK_FRAME_MS);
                    let dt = last_t.map_or(NO_CLOCK_FRAME_MS, |l| (t - l).max(0.0));
                    if last_t.is_some_and(|l| t < l) {
                        // A seek or a loop: the old positions mean nothing there.
                        tracker.clear();
                    }
                    last_t = Some(t);
                    match self.follow(&mut detector, s, &mut tracker, &frame, &gray, t, dt) {
                        Some(f) => f,
                        None => {
                            self.fail("face stage: the full-frame search thread stopped");
                            break;
                        }
                    }
                }
                None => detector
                    .detect(&gray)
                    .into_iter()
                    .map(|bbox| {
                        next_id += 1;
                        TrackedBox {
                            id: next_id - 1,
                            bbox,
                            detected: true,
                        }
                    })
                    .collect(),
            };
            let boxes: Vec<FaceBox> = faces.iter().map(|f| f.bbox).collect();
            let (size, colour) = self.crop.get();
            let crops = crop_for_model(
                Some(&frame.rgb),
                &gray,
                &boxes,
                size,
                self.config.margin,
                colour,
            );
            let detect_ms = t0.elapsed().as_secs_f32() * 1e3;
            self.counters.detected.fetch_add(1, Ordering::Relaxed);
            let batch = FaceBatch {
                frame,
                faces,
                crops,
                detect_ms,
            };
            if !deliver(
                &self.batches,
                &self.batches_rx,
                batch,
                self.lossy,
                &self.counters.dropped_faces,
                &self.stop,
            ) {
                break;
            }
        }
    }

    /// One frame with tracking: take a finished full search, search around each followed
    /// face, start the next full search when due, update the tracks. `None` when the search
    /// thread has gone.
    #[allow(clippy::too_many_arguments)]
    fn follow(
        &self,
        detector: &mut FaceDetector,
        searcher: &mut Searcher,
        tracker: &mut Tracker,
        frame: &Frame,
        gray: &Arc<GrayImage>,
        t: f64,
        dt: f64,
    ) -> Option<Vec<TrackedBox>> {
        let (w, h) = gray.dimensions();
        let overdue = searcher
            .in_flight
            .is_some_and(|(k, _)| frame.index >= k + MAX_SEARCH_LAG_FRAMES);
        if let Some((_, tk, found, _)) = searcher.take(!self.lossy && overdue).ok()? {
            let new = tracker.add_found(tk, &found);
            searcher.found_new(new);
        }
        let full_scale = full_search_scale(self.config.min_face, h);
        let mut found = Vec::new();
        if tracker.is_empty() {
            // Nothing to follow: search the whole frame now, so a face shows from its first
            // frame; a search still running elsewhere is left to finish.
            found = detector.detect_region(gray, Region::whole(w, h), full_scale);
        } else {
            for (predicted, region, first, second) in region_searches(tracker, t, dt, w, h) {
                let here = first.map_or_else(Vec::new, |s| detector.detect_region(gray, region, s));
                // The first search counts only if it found this face: what else it found (a
                // newcomer, a false detection) does not spare the second, finer search, whose
                // answer then stands alone.
                if here.iter().any(|d| predicted.iou(d) >= MATCH_IOU) {
                    found.extend(here);
                } else {
                    found.extend(detector.detect_region(gray, region, second));
                }
            }
            let due = searcher.due(t, self.config.full_search_ms, self.lossy);
            if due && !searcher.start(frame.index, t, gray.clone(), full_scale) {
                return None;
            }
        }
        Some(tracker.update(t, &dedup(found), w, h))
    }
}
