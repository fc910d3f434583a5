//! Following faces from frame to frame: the [`Tracker`] (run by the pipeline's face stage) gives
//! each face a stable id, predicts where it goes next, and carries it on that prediction for a
//! while when the detector misses it; the [`Smoother`] (run by the session) averages each id's
//! scores over time.

use std::collections::HashMap;

use crate::emotion::Scores;
use crate::imaging::FaceBox;

/// A face is carried on its predicted box for at most this long after the detector last found
/// it (a hand over the face, a turn of the head).
pub const CARRY_MS: f64 = 1000.0;

/// A detection is a candidate for a track when their boxes overlap at least this much...
pub const MATCH_IOU: f32 = 0.2;

/// ...or when their centres are closer than this many times the track's box width.
pub const MATCH_CENTRE: f32 = 0.5;

/// Two detections overlapping this much are one face (found twice by overlapping searches).
pub const SAME_FACE_IOU: f32 = 0.4;

/// A track needs this many detections before it is carried through misses: one stray false
/// detection must not live on for a second.
pub const CONFIRM_HITS: u32 = 2;

/// One face as the tracker sees it in a frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrackedBox {
    /// Stable id, unique within a pipeline run.
    pub id: u64,
    pub bbox: FaceBox,
    /// True when the detector found the face in this frame; false when it was carried on its
    /// predicted box.
    pub detected: bool,
}

/// One face with its scores, as the session hands it out.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackedFace {
    /// Stable id: the same person keeps it while the tracker follows them.
    pub id: u64,
    pub bbox: FaceBox,
    /// True when the detector found the face in this frame; false when it was carried over
    /// from earlier frames.
    pub detected: bool,
    /// This frame's scores.
    pub raw: Scores,
    /// Exponential moving average of the scores.
    pub smoothed: Scores,
}

#[derive(Debug, Clone)]
struct Track {
    id: u64,
    /// Box at `t_ms` (detected or carried).
    bbox: FaceBox,
    t_ms: f64,
    /// Centre velocity in pixels per millisecond.
    vx: f32,
    vy: f32,
    hits: u32,
    last_detected_ms: f64,
}

impl Track {
    /// The box moved on with constant velocity to time `t`.
    fn predict(&self, t: f64) -> FaceBox {
        let dt = (t - self.t_ms) as f32;
        FaceBox {
            x: (self.bbox.x as f32 + self.vx * dt).round() as i32,
            y: (self.bbox.y as f32 + self.vy * dt).round() as i32,
            ..self.bbox
        }
    }
}

/// Gives faces stable ids across frames and carries missed faces on a constant-velocity
/// prediction. Times are in milliseconds of the source's clock.
#[derive(Debug, Default)]
pub struct Tracker {
    tracks: Vec<Track>,
    next_id: u64,
}

/// How well detection `d` fits the predicted box `p`: higher is better, `None` outside the
/// gate. Overlap decides; centre distance breaks ties and matches small fast faces whose boxes
/// no longer overlap their prediction.
fn fit(p: &FaceBox, d: &FaceBox) -> Option<f32> {
    let iou = p.iou(d);
    let (pc, dc) = (p.center(), d.center());
    let dist = ((pc.0 - dc.0).powi(2) + (pc.1 - dc.1).powi(2)).sqrt() / p.w.max(1) as f32;
    let size = (d.w as f32 / p.w.max(1) as f32).max(p.w as f32 / d.w.max(1) as f32);
    (size < 2.0 && (iou >= MATCH_IOU || dist < MATCH_CENTRE)).then_some(iou - 0.5 * dist)
}

/// The detections with duplicates (boxes of one face found by two searches) removed, the
/// higher-scoring one kept.
pub fn dedup(mut boxes: Vec<FaceBox>) -> Vec<FaceBox> {
    boxes.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<FaceBox> = Vec::with_capacity(boxes.len());
    for b in boxes {
        if kept.iter().all(|k| k.iou(&b) < SAME_FACE_IOU) {
            kept.push(b);
        }
    }
    kept.sort_by_key(|b| (b.x, b.y));
    kept
}

impl Tracker {
    /// A tracker with no faces yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// True while no face is followed.
    pub fn is_empty(&self) -> bool {
        self.tracks.is_empty()
    }

    /// Forget every face (a seek: what was followed is no longer there); ids keep counting up.
    pub fn clear(&mut self) {
        self.tracks.clear();
    }

    /// Where each followed face is expected at time `t_ms`, to search around.
    pub fn predicted(&self, t_ms: f64) -> Vec<FaceBox> {
        self.tracks.iter().map(|t| t.predict(t_ms)).collect()
    }

    /// Where each followed face is expected at time `t_ms`, with how long ago (ms) the
    /// detector last found it: the longer, the less sure the prediction.
    pub fn predicted_unseen(&self, t_ms: f64) -> Vec<(FaceBox, f64)> {
        self.tracks
            .iter()
            .map(|t| (t.predict(t_ms), (t_ms - t.last_detected_ms).max(0.0)))
            .collect()
    }

    /// Start tracks for faces a full-frame search found in an earlier frame (at `t_ms`) that
    /// no track covers; they are confirmed or dropped by the next frame's searches around them.
    /// Returns how many tracks were started.
    pub fn add_found(&mut self, t_ms: f64, found: &[FaceBox]) -> usize {
        let mut started = 0;
        for d in found {
            // Only a fit counts: in a group the boxes of neighbours touch, and a new face
            // beside a followed one must not be taken for it.
            // Where the track was then, or where it is now: a face carried on a velocity
            // estimated from jittery boxes drifts from its prediction, and the search's frame
            // may be several frames old.
            let known = self
                .tracks
                .iter()
                .any(|t| fit(&t.predict(t_ms), d).is_some() || fit(&t.bbox, d).is_some());
            if !known {
                self.start(*d, t_ms);
                started += 1;
            }
        }
        started
    }

    fn start(&mut self, bbox: FaceBox, t_ms: f64) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.tracks.push(Track {
            id,
            bbox,
            t_ms,
            vx: 0.0,
            vy: 0.0,
            hits: 1,
            last_detected_ms: t_ms,
        });
        id
    }

    /// This frame's detections (at `t_ms`, in a `w` x `h` frame) matched to the tracks: matched
    /// tracks move to their detection, unmatched confirmed ones are carried on their predicted
    /// box for up to [`CARRY_MS`], unmatched detections start new tracks. Returns every face of
    /// the frame, ordered left to right.
    pub fn update(&mut self, t_ms: f64, detections: &[FaceBox], w: u32, h: u32) -> Vec<TrackedBox> {
        if self.tracks.iter().any(|t| t.t_ms > t_ms) {
            // The clock went back (a seek, a looping file): the old positions mean nothing.
            self.tracks.clear();
        }
        let detections = dedup(detections.to_vec());
        let predicted = self.predicted(t_ms);
        // Greedy assignment, best fit first: with motion-predicted boxes two faces passing each
        // other are each nearest their own prediction, so their ids do not swap.
        let mut pairs: Vec<(f32, usize, usize)> = Vec::new();
        for (ti, p) in predicted.iter().enumerate() {
            for (di, d) in detections.iter().enumerate() {
                if let Some(f) = fit(p, d) {
                    pairs.push((f, ti, di));
                }
            }
        }
        pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut track_det: Vec<Option<usize>> = vec![None; self.tracks.len()];
        let mut det_used = vec![false; detections.len()];
        for (_, ti, di) in pairs {
            if track_det[ti].is_none() && !det_used[di] {
                track_det[ti] = Some(di);
                det_used[di] = true;
            }
        }
        // A confirmed face left without a detection, where a track not yet confirmed got one
        // that covers this face's predicted box as much as one face's two boxes do: the same
        // face, which a whole-frame search reported beside a prediction that had drifted. It
        // keeps its older id (the newer track is dropped) instead of being carried beside
        // itself for a second. A neighbour's face overlaps less and keeps its own track.
        for ti in 0..self.tracks.len() {
            if track_det[ti].is_some() || self.tracks[ti].hits < CONFIRM_HITS {
                continue;
            }
            let twin = (0..self.tracks.len())
                .filter(|&u| self.tracks[u].hits < CONFIRM_HITS)
                .filter_map(|u| track_det[u].map(|di| (u, di, predicted[ti].iou(&detections[di]))))
                .filter(|&(_, _, iou)| iou >= SAME_FACE_IOU)
                .max_by(|a, b| a.2.total_cmp(&b.2));
            if let Some((u, di, _)) = twin {
                track_det[ti] = Some(di);
                track_det[u] = None;
            }
        }
        let mut out = Vec::with_capacity(self.tracks.len() + detections.len());
        let mut keep = vec![true; self.tracks.len()];
        for (ti, t) in self.tracks.iter_mut().enumerate() {
            match track_det[ti] {
                Some(di) => {
                    let d = detections[di];
                    let dt = (t_ms - t.t_ms) as f32;
                    if dt > 0.0 {
                        let (c0, c1) = (t.bbox.center(), d.center());
                        let (vx, vy) = ((c1.0 - c0.0) / dt, (c1.1 - c0.1) / dt);
                        // Detected boxes jitter by a few pixels: average the velocity a little.
                        let a = if t.hits == 1 { 1.0 } else { 0.6 };
                        t.vx = a * vx + (1.0 - a) * t.vx;
                        t.vy = a * vy + (1.0 - a) * t.vy;
                    }
                    t.bbox = d;
                    t.t_ms = t_ms;
                    t.hits += 1;
                    t.last_detected_ms = t_ms;
                    out.push(TrackedBox {
                        id: t.id,
                        bbox: d,
                        detected: true,
                    });
                }
                None => {
                    let p = predicted[ti];
                    let (cx, cy) = p.center();
                    let inside = cx >= 0.0 && cy >= 0.0 && cx < w as f32 && cy < h as f32;
                    if t.hits < CONFIRM_HITS || !inside || t_ms - t.last_detected_ms > CARRY_MS {
                        keep[ti] = false;
                        continue;
                    }
                    t.bbox = p;
                    t.t_ms = t_ms;
                    if let Some(bbox) = clip_box(&p, w, h) {
                        out.push(TrackedBox {
                            id: t.id,
                            bbox,
                            detected: false,
                        });
                    }
                }
            }
        }
        let mut k = keep.iter();
        self.tracks.retain(|_| *k.next().unwrap_or(&true));
        for (di, d) in detections.iter().enumerate() {
            if !det_used[di] {
                let id = self.start(*d, t_ms);
                out.push(TrackedBox {
                    id,
                    bbox: *d,
                    detected: true,
                });
            }
        }
        out.sort_by_key(|f| (f.bbox.x, f.bbox.y));
        out
    }
}

/// The part of `b` inside a `w` x `h` frame.
fn clip_box(b: &FaceBox, w: u32, h: u32) -> Option<FaceBox> {
    let x0 = b.x.max(0);
    let y0 = b.y.max(0);
    let x1 = (b.x + b.w as i32).min(w as i32);
    let y1 = (b.y + b.h as i32).min(h as i32);
    (x1 > x0 && y1 > y0).then(|| FaceBox {
        x: x0,
        y: y0,
        w: (x1 - x0) as u32,
        h: (y1 - y0) as u32,
        score: b.score,
    })
}

/// Forget a face's average after this many frames without it.
pub const FORGET_AFTER_FRAMES: u64 = 60;

/// Exponential moving average of each face id's scores.
#[derive(Debug, Default)]
pub struct Smoother {
    by_id: HashMap<u64, (Scores, u64)>,
}

impl Smoother {
    /// A smoother with no faces yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Blend this frame's scores of face `id` into its average and return the average.
    ///
    /// `smoothing` in [0, 1): the weight of the past in `s = smoothing * s_prev + (1 - smoothing) * raw`;
    /// 0 gives the raw scores. Scores over other classes (after a weights swap) start afresh.
    pub fn update(&mut self, frame: u64, id: u64, raw: &Scores, smoothing: f32) -> Scores {
        let k = smoothing.clamp(0.0, 0.99);
        let e = self
            .by_id
            .entry(id)
            .and_modify(|(s, seen)| {
                *s = s.blend(raw, k);
                *seen = frame;
            })
            .or_insert_with(|| (raw.clone(), frame));
        e.0.clone()
    }

    /// Drop the averages of faces not seen for [`FORGET_AFTER_FRAMES`] frames.
    pub fn forget_old(&mut self, frame: u64) {
        self.by_id
            .retain(|_, (_, seen)| frame.saturating_sub(*seen) <= FORGET_AFTER_FRAMES);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emotion::Emotion;

    fn b(x: i32, y: i32) -> FaceBox {
        FaceBox {
            x,
            y,
            w: 60,
            h: 60,
            score: 5.0,
        }
    }

    #[test]
    fn ids_follow_moving_faces_and_new_faces_get_new_ids() {
        let mut t = Tracker::new();
        let a = t.update(0.0, &[b(0, 10), b(200, 10)], 640, 480);
        let c = t.update(33.0, &[b(205, 10), b(5, 10)], 640, 480);
        assert_eq!(a[0].id, c[0].id);
        assert_eq!(a[1].id, c[1].id);
        let d = t.update(66.0, &[b(400, 300), b(10, 10), b(210, 10)], 640, 480);
        assert_eq!(d.len(), 3);
        assert!(d[2].id > a[1].id.max(a[0].id));
    }

    #[test]
    fn a_missed_face_is_carried_on_its_velocity_then_dropped() {
        let mut t = Tracker::new();
        let mut id = None;
        for i in 0..5 {
            let f = t.update(i as f64 * 100.0, &[b(100 + i * 10, 100)], 640, 480);
            id = Some(f[0].id);
        }
        let carried = t.update(500.0, &[], 640, 480);
        assert_eq!(carried.len(), 1);
        assert_eq!(Some(carried[0].id), id);
        assert!(!carried[0].detected);
        assert!(
            (carried[0].bbox.x - 150).abs() <= 2,
            "{:?}",
            carried[0].bbox
        );
        let back = t.update(600.0, &[b(160, 100)], 640, 480);
        assert_eq!(Some(back[0].id), id);
        assert!(back[0].detected);
        assert_eq!(t.update(1700.0, &[], 640, 480), vec![]);
    }

    #[test]
    fn a_single_stray_detection_is_not_carried() {
        let mut t = Tracker::new();
        t.update(0.0, &[b(100, 100)], 640, 480);
        assert!(t.update(33.0, &[], 640, 480).is_empty());
        assert!(t.is_empty());
    }

    #[test]
    fn faces_passing_each_other_keep_their_ids() {
        let mut t = Tracker::new();
        let mut ids = (0, 0);
        for i in 0..30 {
            // One moves right, one left, 40 px apart vertically: their boxes overlap mid-way.
            let l = b(10 + i * 20, 100);
            let r = b(590 - i * 20, 140);
            let f = t.update(i as f64 * 33.0, &[l, r], 800, 480);
            let by_y = |y| f.iter().find(|f| f.bbox.y == y).map(|f| f.id);
            let now = (by_y(100).unwrap_or(u64::MAX), by_y(140).unwrap_or(u64::MAX));
            if i == 0 {
                ids = now;
            }
            assert_eq!(now, ids, "frame {i}");
        }
    }

    #[test]
    fn a_face_a_search_reports_beside_its_drifted_prediction_keeps_its_id() {
        let mut t = Tracker::new();
        t.update(0.0, &[b(100, 100)], 640, 480);
        t.update(33.0, &[b(130, 100)], 640, 480);
        t.update(66.0, &[b(160, 100)], 640, 480);
        // A search of the first frame reports the face ahead of where it was then, outside the
        // gate of both the track's box and its prediction for that frame: a new track.
        t.add_found(0.0, &[b(205, 100)]);
        // The face stops short of its prediction (190): it fits the new track better.
        let f = t.update(99.0, &[b(200, 100)], 640, 480);
        assert_eq!(
            f.len(),
            1,
            "one face, not the face and its carried twin: {f:?}"
        );
        assert_eq!((f[0].id, f[0].detected), (0, true));
    }

    #[test]
    fn a_missed_face_does_not_take_a_new_neighbours_detection() {
        let mut t = Tracker::new();
        t.update(0.0, &[b(100, 100)], 640, 480);
        t.update(33.0, &[b(100, 100)], 640, 480);
        // A second face close beside the first (their boxes overlap, though less than one
        // face's two boxes would).
        let f = t.update(66.0, &[b(100, 100), b(128, 100)], 640, 480);
        let new = f.iter().find(|f| f.bbox.x == 128).map(|f| f.id).unwrap();
        // The first is missed: the neighbour keeps its own face, the first is carried.
        let f = t.update(99.0, &[b(128, 100)], 640, 480);
        let by_id = |id| f.iter().find(|f| f.id == id).unwrap();
        assert_eq!((by_id(new).bbox.x, by_id(new).detected), (128, true));
        assert!(!by_id(0).detected);
    }

    #[test]
    fn full_search_finds_only_add_faces_no_track_covers() {
        let mut t = Tracker::new();
        t.update(0.0, &[b(100, 100)], 640, 480);
        t.update(33.0, &[b(104, 100)], 640, 480);
        t.add_found(0.0, &[b(100, 100), b(400, 100)]);
        assert_eq!(t.predicted(33.0).len(), 2);
    }

    #[test]
    fn smoothing_is_an_exponential_moving_average_per_id() {
        let s = |happy: f32| {
            let mut p = [0.0; 7];
            p[3] = happy;
            p[6] = 1.0 - happy;
            Scores::fer(p)
        };
        let mut m = Smoother::new();
        m.update(0, 7, &s(1.0), 0.5);
        m.update(0, 8, &s(0.0), 0.5);
        let f = m.update(1, 7, &s(0.0), 0.5);
        assert!((f.of(Emotion::Happy) - 0.5).abs() < 1e-6);
        let raw = m.update(2, 8, &s(0.2), 0.0);
        assert!((raw.of(Emotion::Happy) - 0.2).abs() < 1e-6);
        m.forget_old(200);
        let fresh = m.update(200, 7, &s(0.0), 0.5);
        assert_eq!(fresh.of(Emotion::Happy), 0.0);
    }
}
