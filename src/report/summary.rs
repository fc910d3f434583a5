//! The figures of a report, computed once from a [`Recording`]: per face the time seen, the share
//! of time each class was on top, mean scores, strongest moments, and the timelines to draw,
//! already smoothed and downsampled. Drawing (HTML, PNG, the app's window) only reads these.
//!
//! Sums (seen time, shares, means, moments) use every row; only what is drawn is downsampled.

use std::path::PathBuf;
use std::time::SystemTime;

use super::read::{FaceRows, Recording, TimeAxis};
use crate::palette::{Rgb, class_colors};

/// Faces seen for less than this are summarised together, without a section.
pub const MIN_SEEN_MS: f64 = 1000.0;

/// Width of the centred moving average that smooths the timelines (half of it on each side).
pub const SMOOTH_WINDOW_MS: f64 = 1000.0;

/// A pause longer than this between two rows of a face is a gap: the face was not seen, the
/// lines break, and the pause does not count as time seen.
pub const GAP_MS: f64 = 1000.0;

/// Strongest moments of one class are at least this far apart, so that three moments are three
/// events rather than three frames of the same smile.
pub const MOMENT_SEPARATION_MS: f64 = 3000.0;

/// Strongest moments listed per class.
pub const MOMENTS_PER_CLASS: usize = 3;

/// Most points drawn per line of a timeline (about one per pixel column of a wide page).
pub const MAX_POINTS: usize = 1000;

/// Fewest points per line once many faces share the budget.
const MIN_POINTS: usize = 60;

/// Points over all timelines and classes together: bounds the HTML of a crowded session.
const POINT_BUDGET: usize = 84_000;

/// Faces with a full section (timeline and tables); further faces seen for a second or more
/// are listed in one table, and past [`MAX_LISTED`] only counted.
pub const MAX_SECTIONS: usize = 100;

/// Faces listed in the table after the sections.
pub const MAX_LISTED: usize = 1000;

/// Columns of the "who was seen when" overview across the session.
pub const OVERVIEW_BUCKETS: usize = 200;

/// Frame interval assumed for a face with a single row.
const DEFAULT_INTERVAL_MS: f64 = 1000.0 / 30.0;

/// A class of the recording's model.
#[derive(Debug, Clone, PartialEq)]
pub struct Class {
    pub name: String,
    pub color: Rgb,
}

/// One of a class's strongest moments: the row with its highest raw score nearby.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Moment {
    /// Time on the session's axis.
    pub t_ms: f64,
    /// Frame number of the row.
    pub frame: u64,
    /// The raw score.
    pub score: f32,
}

/// A stretch of the overview in which one class was on top most of the time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Run {
    pub start_ms: f64,
    pub end_ms: f64,
    /// Index into [`Summary::classes`].
    pub class: usize,
}

/// A face's timeline, ready to draw: points with their time, and per class the smoothed score
/// and the raw scores' extremes at each point.
///
/// With more rows than points, each point stands for the rows of one time column: its time is
/// theirs on average, `smooth` their smoothed scores' mean, and `raw` the lowest and highest
/// raw score in the order they came, so that a line through `raw` keeps the spikes a plot of
/// every row shows. With fewer rows, each point is one row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    pub t_ms: Vec<f64>,
    /// `smooth[class][point]`.
    pub smooth: Vec<Vec<f32>>,
    /// `raw[class][point]`: the extremes in the order they occurred (equal for one row).
    pub raw: Vec<Vec<[f32; 2]>>,
    /// Runs of points drawn as one line; a line breaks where the face was not seen.
    pub segments: Vec<std::ops::Range<usize>>,
}

/// Everything a report says about one face.
#[derive(Debug, Clone, PartialEq)]
pub struct FaceSummary {
    pub id: u64,
    pub rows: u64,
    /// First and last row's time on the session's axis.
    pub first_ms: f64,
    pub last_ms: f64,
    /// Time seen: each row counts until the next one, pauses over [`GAP_MS`] count one frame.
    pub seen_ms: f64,
    /// Typical time between two rows (the median).
    pub interval_ms: f64,
    /// Rows carried by the tracker (`detected` = 0), when the recording says.
    pub carried: Option<u64>,
    /// Wall-clock time of the first and last row, when the recording has timestamps.
    pub first_timestamp: Option<SystemTime>,
    pub last_timestamp: Option<SystemTime>,
    /// Per class: share of the time seen it was on top (`top_emotion`).
    pub shares: Vec<f64>,
    /// Per class: time-weighted mean raw score.
    pub means: Vec<f64>,
    /// Per class: up to [`MOMENTS_PER_CLASS`] strongest moments, strongest first.
    pub moments: Vec<Vec<Moment>>,
    /// The timeline; empty for faces past [`MAX_SECTIONS`].
    pub timeline: Series,
    /// The face's row in the overview; empty for faces past [`MAX_SECTIONS`].
    pub presence: Vec<Run>,
    /// Whether the face has a full section (one of the [`MAX_SECTIONS`] seen longest).
    pub detailed: bool,
}

impl FaceSummary {
    /// Index of the class on top for the longest time.
    pub fn dominant(&self) -> usize {
        argmax(&self.shares)
    }
}

/// Faces seen for less than [`MIN_SEEN_MS`], together.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BriefFaces {
    pub faces: usize,
    pub rows: u64,
    /// Their ids, the first 50.
    pub ids: Vec<u64>,
}

/// The figures of a whole recording.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// The recording's file.
    pub path: PathBuf,
    pub time_axis: TimeAxis,
    pub sources: Vec<String>,
    pub more_sources: usize,
    pub models: Vec<String>,
    pub more_models: usize,
    /// Wall-clock start and end, when the recording has timestamps.
    pub started: Option<SystemTime>,
    pub ended: Option<SystemTime>,
    /// The session on its time axis: first row to the last row plus its frame interval.
    pub start_ms: f64,
    pub end_ms: f64,
    pub rows: u64,
    pub frames: u64,
    pub has_detected: bool,
    pub classes: Vec<Class>,
    /// Per class: share of all faces' time seen it was on top.
    pub overall_shares: Vec<f64>,
    /// Faces seen for [`MIN_SEEN_MS`] or more, in order of first appearance, at most
    /// [`MAX_LISTED`]; the first [`MAX_SECTIONS`] by time seen are `detailed`.
    pub faces: Vec<FaceSummary>,
    /// Faces seen long enough but past [`MAX_LISTED`]: only counted.
    pub unlisted_faces: usize,
    pub brief: BriefFaces,
    /// What the reader noticed (e.g. a cut-off last line).
    pub notes: Vec<String>,
}

impl Summary {
    /// Number of distinct faces in the recording.
    pub fn face_count(&self) -> usize {
        self.faces.len() + self.unlisted_faces + self.brief.faces
    }

    /// Length of the session on its time axis.
    pub fn duration_ms(&self) -> f64 {
        self.end_ms - self.start_ms
    }

    /// The faces with a full section.
    pub fn detailed(&self) -> impl Iterator<Item = &FaceSummary> {
        self.faces.iter().filter(|f| f.detailed)
    }
}

impl From<&Recording> for Summary {
    fn from(rec: &Recording) -> Self {
        let k = rec.classes.len();
        let colors = class_colors(&rec.classes);
        let classes: Vec<Class> = rec
            .classes
            .iter()
            .zip(colors)
            .map(|(name, color)| Class {
                name: name.clone(),
                color,
            })
            .collect();
        let mut start_ms = f64::INFINITY;
        let mut end_ms = f64::NEG_INFINITY;
        let mut on_top = vec![0.0f64; k];
        let mut brief = BriefFaces::default();
        let mut long: Vec<(&FaceRows, Vec<f64>, FaceSummary)> = Vec::new();
        let mut unlisted = 0usize;
        for f in rec.faces.iter().filter(|f| !f.is_empty()) {
            let (weights, interval) = weights(&f.t_ms);
            let figures = figures(f, &weights, k);
            for (c, t) in figures.on_top_ms.iter().enumerate() {
                on_top[c] += t;
            }
            let first = f.t_ms[0];
            let last = f.t_ms[f.len() - 1];
            start_ms = start_ms.min(first);
            end_ms = end_ms.max(last + interval);
            if figures.seen_ms + 1e-6 < MIN_SEEN_MS {
                brief.faces += 1;
                brief.rows += f.len() as u64;
                if brief.ids.len() < 50 {
                    brief.ids.push(f.id);
                }
                continue;
            }
            if long.len() >= MAX_LISTED {
                unlisted += 1;
                continue;
            }
            let seen = figures.seen_ms;
            long.push((
                f,
                weights,
                FaceSummary {
                    id: f.id,
                    rows: f.len() as u64,
                    first_ms: first,
                    last_ms: last,
                    seen_ms: seen,
                    interval_ms: interval,
                    carried: rec.has_detected.then_some(f.carried),
                    first_timestamp: f.first_timestamp,
                    last_timestamp: f.last_timestamp,
                    shares: figures.on_top_ms.iter().map(|t| share(*t, seen)).collect(),
                    means: figures.means,
                    moments: (0..k).map(|c| moments(f, c, k)).collect(),
                    timeline: Series::default(),
                    presence: Vec::new(),
                    detailed: false,
                },
            ));
        }
        if !start_ms.is_finite() {
            (start_ms, end_ms) = (0.0, 0.0);
        }
        // Sections for the faces seen longest; their timelines share the point budget.
        let mut by_seen: Vec<usize> = (0..long.len()).collect();
        by_seen.sort_by(|&a, &b| long[b].2.seen_ms.total_cmp(&long[a].2.seen_ms));
        by_seen.truncate(MAX_SECTIONS);
        let points = (POINT_BUDGET / (by_seen.len().max(1) * k)).clamp(MIN_POINTS, MAX_POINTS);
        for &i in &by_seen {
            let (rows, w, face) = &mut long[i];
            face.detailed = true;
            face.timeline = series(rows, k, points);
            face.presence = presence(rows, w, k, start_ms, end_ms);
        }
        let total: f64 = on_top.iter().sum();
        Summary {
            path: rec.path.clone(),
            time_axis: rec.time_axis,
            sources: rec.sources.clone(),
            more_sources: rec.more_sources,
            models: rec.models.clone(),
            more_models: rec.more_models,
            started: rec.first_timestamp,
            ended: rec.last_timestamp,
            start_ms,
            end_ms,
            rows: rec.rows,
            frames: rec.frames,
            has_detected: rec.has_detected,
            classes,
            overall_shares: on_top.iter().map(|t| share(*t, total)).collect(),
            faces: long.into_iter().map(|(_, _, f)| f).collect(),
            unlisted_faces: unlisted,
            brief,
            notes: rec.notes.clone(),
        }
    }
}

fn share(part: f64, whole: f64) -> f64 {
    if whole > 0.0 { part / whole } else { 0.0 }
}

fn argmax(v: &[f64]) -> usize {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best
}

/// How long each row counts: until the next row, or one typical interval before a gap and at
/// the end. Also returns the typical interval (the median of the steps that are not gaps).
fn weights(t: &[f64]) -> (Vec<f64>, f64) {
    let mut steps: Vec<f64> = t
        .windows(2)
        .map(|w| w[1] - w[0])
        .filter(|d| *d > 0.0 && *d <= GAP_MS)
        .collect();
    let interval = if steps.is_empty() {
        DEFAULT_INTERVAL_MS
    } else {
        let mid = steps.len() / 2;
        *steps.select_nth_unstable_by(mid, f64::total_cmp).1
    };
    let mut w: Vec<f64> = t
        .windows(2)
        .map(|p| {
            let d = p[1] - p[0];
            if d <= GAP_MS { d } else { interval }
        })
        .collect();
    w.push(interval);
    (w, interval)
}

struct Figures {
    seen_ms: f64,
    on_top_ms: Vec<f64>,
    means: Vec<f64>,
}

fn figures(f: &FaceRows, w: &[f64], k: usize) -> Figures {
    let mut on_top_ms = vec![0.0; k];
    let mut sums = vec![0.0; k];
    let mut seen = 0.0;
    for (i, wi) in w.iter().enumerate() {
        seen += wi;
        on_top_ms[f.top[i] as usize] += wi;
        for (c, s) in f.scores[i * k..(i + 1) * k].iter().enumerate() {
            sums[c] += wi * *s as f64;
        }
    }
    Figures {
        seen_ms: seen,
        on_top_ms,
        means: sums.iter().map(|s| share(*s, seen)).collect(),
    }
}

/// The strongest rows of class `c`, each at least [`MOMENT_SEPARATION_MS`] from the stronger
/// ones; on equal scores the earlier row wins.
fn moments(f: &FaceRows, c: usize, k: usize) -> Vec<Moment> {
    let mut out: Vec<Moment> = Vec::with_capacity(MOMENTS_PER_CLASS);
    for _ in 0..MOMENTS_PER_CLASS {
        let mut best: Option<usize> = None;
        for i in 0..f.len() {
            let t = f.t_ms[i];
            if out
                .iter()
                .any(|m| (m.t_ms - t).abs() < MOMENT_SEPARATION_MS)
            {
                continue;
            }
            if best.is_none_or(|b| f.scores[i * k + c] > f.scores[b * k + c]) {
                best = Some(i);
            }
        }
        let Some(b) = best else { break };
        out.push(Moment {
            t_ms: f.t_ms[b],
            frame: f.frames[b],
            score: f.scores[b * k + c],
        });
    }
    out
}

/// Class `c`'s scores smoothed by a centred moving average over [`SMOOTH_WINDOW_MS`], with
/// prefix sums and two pointers (linear in the rows, whatever the frame rate).
fn smooth_class(f: &FaceRows, c: usize, k: usize, prefix: &mut Vec<f64>, out: &mut Vec<f32>) {
    let n = f.len();
    prefix.clear();
    prefix.push(0.0);
    let mut acc = 0.0;
    for i in 0..n {
        acc += f.scores[i * k + c] as f64;
        prefix.push(acc);
    }
    out.clear();
    let half = SMOOTH_WINDOW_MS / 2.0;
    let (mut lo, mut hi) = (0usize, 0usize);
    for i in 0..n {
        let t = f.t_ms[i];
        while f.t_ms[lo] < t - half {
            lo += 1;
        }
        while hi < n && f.t_ms[hi] <= t + half {
            hi += 1;
        }
        out.push(((prefix[hi] - prefix[lo]) / (hi - lo) as f64) as f32);
    }
}

/// Downsample a face's rows to at most `points` per line (see [`Series`]).
fn series(f: &FaceRows, k: usize, points: usize) -> Series {
    let n = f.len();
    let (t0, t1) = (f.t_ms[0], f.t_ms[n - 1]);
    // Contiguous runs of rows, one per point: rows are in time order, so a time column's rows
    // are adjacent.
    let mut ranges: Vec<std::ops::Range<usize>> = Vec::new();
    if n <= points || t1 <= t0 {
        ranges.extend((0..n).map(|i| i..i + 1));
    } else {
        let width = (t1 - t0) / points as f64;
        let column = |t: f64| (((t - t0) / width) as usize).min(points - 1);
        let mut start = 0;
        for i in 1..n {
            if column(f.t_ms[i]) != column(f.t_ms[start]) {
                ranges.push(start..i);
                start = i;
            }
        }
        ranges.push(start..n);
    }
    let t_ms: Vec<f64> = ranges
        .iter()
        .map(|r| f.t_ms[r.clone()].iter().sum::<f64>() / r.len() as f64)
        .collect();
    let mut segments = Vec::new();
    let mut seg_start = 0;
    for p in 1..ranges.len() {
        if f.t_ms[ranges[p].start] - f.t_ms[ranges[p - 1].end - 1] > GAP_MS {
            segments.push(seg_start..p);
            seg_start = p;
        }
    }
    segments.push(seg_start..ranges.len());
    let (mut prefix, mut smoothed) = (Vec::with_capacity(n + 1), Vec::with_capacity(n));
    let mut smooth = Vec::with_capacity(k);
    let mut raw = Vec::with_capacity(k);
    for c in 0..k {
        smooth_class(f, c, k, &mut prefix, &mut smoothed);
        smooth.push(
            ranges
                .iter()
                .map(|r| {
                    (smoothed[r.clone()].iter().map(|v| *v as f64).sum::<f64>() / r.len() as f64)
                        as f32
                })
                .collect(),
        );
        raw.push(
            ranges
                .iter()
                .map(|r| {
                    let (mut lo, mut hi) = (r.start, r.start);
                    for i in r.clone() {
                        let v = f.scores[i * k + c];
                        if v < f.scores[lo * k + c] {
                            lo = i;
                        }
                        if v > f.scores[hi * k + c] {
                            hi = i;
                        }
                    }
                    let (a, b) = if lo <= hi { (lo, hi) } else { (hi, lo) };
                    [f.scores[a * k + c], f.scores[b * k + c]]
                })
                .collect(),
        );
    }
    Series {
        t_ms,
        smooth,
        raw,
        segments,
    }
}

/// The face's row in the overview: per column of the session, the class on top for most of the
/// time the face was seen in it; neighbouring columns with the same class merge into one run
/// that spans from the first row in it to the end of the last.
fn presence(f: &FaceRows, w: &[f64], k: usize, start_ms: f64, end_ms: f64) -> Vec<Run> {
    let span = (end_ms - start_ms).max(1e-9);
    let column = |t: f64| {
        (((t - start_ms) / span * OVERVIEW_BUCKETS as f64) as usize).min(OVERVIEW_BUCKETS - 1)
    };
    let mut runs: Vec<Run> = Vec::new();
    let mut i = 0;
    let mut acc = vec![0.0f64; k];
    while i < f.len() {
        let col = column(f.t_ms[i]);
        acc.iter_mut().for_each(|a| *a = 0.0);
        let first = f.t_ms[i];
        let mut end = first;
        while i < f.len() && column(f.t_ms[i]) == col {
            acc[f.top[i] as usize] += w[i];
            end = f.t_ms[i] + w[i];
            i += 1;
        }
        let class = argmax(&acc);
        match runs.last_mut() {
            // Adjacent and not separated by a gap: one run.
            Some(r) if r.class == class && first - r.end_ms <= GAP_MS => r.end_ms = end,
            _ => runs.push(Run {
                start_ms: first,
                end_ms: end,
                class,
            }),
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn rec(rows: &[(u64, f64, [f32; 2])]) -> Recording {
        let mut text = String::from("elapsed_ms,frame,face_id,x,y,w,h,a,b,top_emotion\n");
        for (i, (face, t, s)) in rows.iter().enumerate() {
            let top = if s[0] >= s[1] { "a" } else { "b" };
            text += &format!("{t},{i},{face},0,0,1,1,{},{},{top}\n", s[0], s[1]);
        }
        Recording::from_reader(Path::new("t.csv"), text.as_bytes()).unwrap()
    }

    #[test]
    fn shares_weigh_rows_by_time_and_skip_gaps() {
        // 0.5 s of a at 10 fps, then a pause of 5 s, then 1 s of b at 10 fps.
        let mut rows = Vec::new();
        for i in 0..5 {
            rows.push((0, i as f64 * 100.0, [0.9, 0.1]));
        }
        for i in 0..10 {
            rows.push((0, 5400.0 + i as f64 * 100.0, [0.2, 0.8]));
        }
        let s = Summary::from(&rec(&rows));
        let f = &s.faces[0];
        assert!((f.seen_ms - 1500.0).abs() < 1e-6, "{}", f.seen_ms);
        assert!((f.shares[0] - 1.0 / 3.0).abs() < 1e-9);
        assert_eq!(f.timeline.segments.len(), 2, "the pause breaks the line");
        assert_eq!(f.presence.len(), 2);
        assert!((s.duration_ms() - 6400.0).abs() < 1e-6);
    }

    #[test]
    fn smoothing_is_a_centred_one_second_mean() {
        // A step from 0 to 1 at t = 5 s, 10 rows a second.
        let rows: Vec<_> = (0..100)
            .map(|i| {
                (
                    0,
                    i as f64 * 100.0,
                    if i < 50 { [0.0, 1.0] } else { [1.0, 0.0] },
                )
            })
            .collect();
        let r = rec(&rows);
        let (mut p, mut out) = (Vec::new(), Vec::new());
        smooth_class(&r.faces[0], 0, 2, &mut p, &mut out);
        assert_eq!(out[10], 0.0);
        // At 5.0 s the window 4.5..=5.5 holds 5 zeros and 6 ones.
        assert!((out[50] - 6.0 / 11.0).abs() < 1e-6, "{}", out[50]);
        assert_eq!(out[90], 1.0);
    }

    #[test]
    fn downsampling_keeps_every_spike() {
        let mut rows: Vec<_> = (0..20_000)
            .map(|i| (0, i as f64 * 10.0, [0.1, 0.9]))
            .collect();
        rows[12_345].2 = [0.97, 0.03];
        let r = rec(&rows);
        let s = series(&r.faces[0], 2, 500);
        assert!(s.t_ms.len() <= 500);
        let peak = s.raw[0].iter().map(|p| p[0].max(p[1])).fold(0.0, f32::max);
        assert_eq!(peak, 0.97);
        let low = s.raw[1].iter().map(|p| p[0].min(p[1])).fold(1.0, f32::min);
        assert_eq!(low, 0.03);
    }
}
