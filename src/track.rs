//! Stable face ids across frames (by box overlap) and temporal smoothing of scores.

use crate::emotion::FaceResult;
use crate::emotion::Scores;
use crate::imaging::FaceBox;

/// Boxes overlapping at least this much (intersection over union) are the same face.
pub const MATCH_IOU: f32 = 0.3;

/// A face is forgotten after this many frames without a match.
pub const FORGET_AFTER_FRAMES: u64 = 15;

/// One face as the tracker sees it this frame.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackedFace {
    /// Stable id: the same person keeps it while their box keeps overlapping.
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
    bbox: FaceBox,
    smoothed: Scores,
    last_seen: u64,
}

/// Matches faces to the previous frame's and smooths their scores.
#[derive(Debug, Default)]
pub struct Tracker {
    tracks: Vec<Track>,
    next_id: u64,
}

impl Tracker {
    /// A tracker with no faces yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Match this frame's faces and update their smoothed scores.
    ///
    /// `smoothing` in [0, 1): the weight of the past in `s = smoothing * s_prev + (1 - smoothing) * raw`;
    /// 0 shows raw scores.
    pub fn update(&mut self, frame: u64, faces: &[FaceResult], smoothing: f32) -> Vec<TrackedFace> {
        let k = smoothing.clamp(0.0, 0.99);
        // Greedy matching by best overlap first.
        let mut pairs: Vec<(f32, usize, usize)> = Vec::new();
        for (fi, f) in faces.iter().enumerate() {
            for (ti, t) in self.tracks.iter().enumerate() {
                let iou = f.bbox.iou(&t.bbox);
                if iou >= MATCH_IOU {
                    pairs.push((iou, fi, ti));
                }
            }
        }
        pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut face_track: Vec<Option<usize>> = vec![None; faces.len()];
        let mut used = vec![false; self.tracks.len()];
        for (_, fi, ti) in pairs {
            if face_track[fi].is_none() && !used[ti] {
                face_track[fi] = Some(ti);
                used[ti] = true;
            }
        }
        let mut out = Vec::with_capacity(faces.len());
        for (f, matched) in faces.iter().zip(face_track) {
            let ti = match matched {
                Some(ti) => {
                    let t = &mut self.tracks[ti];
                    t.smoothed = t.smoothed.blend(&f.scores, k);
                    t.bbox = f.bbox;
                    t.last_seen = frame;
                    ti
                }
                None => {
                    self.tracks.push(Track {
                        id: self.next_id,
                        bbox: f.bbox,
                        smoothed: f.scores.clone(),
                        last_seen: frame,
                    });
                    self.next_id += 1;
                    self.tracks.len() - 1
                }
            };
            let t = &self.tracks[ti];
            out.push(TrackedFace {
                id: t.id,
                bbox: f.bbox,
                detected: true,
                raw: f.scores.clone(),
                smoothed: t.smoothed.clone(),
            });
        }
        self.tracks
            .retain(|t| frame.saturating_sub(t.last_seen) <= FORGET_AFTER_FRAMES);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emotion::Emotion;

    fn face(x: i32, happy: f32) -> FaceResult {
        let mut s = [0.0; 7];
        s[3] = happy;
        s[6] = 1.0 - happy;
        FaceResult {
            bbox: FaceBox {
                x,
                y: 10,
                w: 50,
                h: 50,
                score: 5.0,
            },
            scores: Scores::fer(s),
        }
    }

    #[test]
    fn ids_follow_moving_faces_and_new_faces_get_new_ids() {
        let mut t = Tracker::new();
        let a = t.update(0, &[face(0, 1.0), face(200, 1.0)], 0.0);
        let b = t.update(1, &[face(205, 1.0), face(5, 1.0)], 0.0);
        assert_eq!(a[0].id, b[1].id);
        assert_eq!(a[1].id, b[0].id);
        let c = t.update(2, &[face(400, 1.0)], 0.0);
        assert!(c[0].id > a[1].id.max(a[0].id));
    }

    #[test]
    fn smoothing_is_an_exponential_moving_average() {
        let mut t = Tracker::new();
        t.update(0, &[face(0, 1.0)], 0.5);
        let f = t.update(1, &[face(0, 0.0)], 0.5);
        assert!((f[0].smoothed.of(Emotion::Happy) - 0.5).abs() < 1e-6);
        assert_eq!(f[0].raw.of(Emotion::Happy), 0.0);
        let raw = t.update(2, &[face(0, 0.2)], 0.0);
        assert!((raw[0].smoothed.of(Emotion::Happy) - 0.2).abs() < 1e-6);
    }
}
