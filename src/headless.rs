//! Running the pipeline without a window (`emocam run`): CSV rows and a summary of speed.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crossbeam_channel::select;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::pipeline::{Notice, Pipeline};
use crate::record::{Recorder, Row};
use crate::track::Tracker;

/// When to stop and where to write.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Stop after this many processed frames (`None`: when the source ends).
    pub max_frames: Option<u64>,
    /// Write one CSV row per face per frame here.
    pub csv: Option<PathBuf>,
}

/// What a run did and how fast.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub source: String,
    pub model: String,
    /// Frames that came out of the pipeline with scores.
    pub frames: u64,
    /// Faces scored over all frames.
    pub faces: u64,
    /// Frames with at least one face.
    pub frames_with_faces: u64,
    /// Processed frames per second, from the start to the last result.
    pub fps: f64,
    pub latency_ms_median: f64,
    pub latency_ms_p95: f64,
    pub detect_ms_median: f64,
    pub infer_ms_median: f64,
    /// Frames dropped between stages.
    pub dropped: u64,
    pub elapsed_secs: f64,
    pub csv: Option<PathBuf>,
    pub csv_rows: u64,
    /// CSV rows lost because the disk could not keep up (0 in a healthy run).
    pub csv_rows_lost: u64,
    /// Time `shutdown()` took to stop and join the threads.
    pub shutdown_ms: f64,
}

fn percentile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// Consume a started pipeline until the source ends or `max_frames` frames are processed.
pub fn run(pipeline: Pipeline, model: &str, opts: &RunOptions) -> Result<RunSummary> {
    let recorder = opts.csv.as_deref().map(Recorder::start).transpose()?;
    let started = Instant::now();
    let mut tracker = Tracker::new();
    let (mut frames, mut faces, mut with_faces) = (0u64, 0u64, 0u64);
    let (mut latency, mut detect, mut infer) = (Vec::new(), Vec::new(), Vec::new());
    let mut last = started;
    let mut ended = false;
    let mut failure = None;
    loop {
        if opts.max_frames.is_some_and(|m| frames >= m) {
            break;
        }
        // Once the source has ended, wait briefly for the frames still in flight.
        let timeout = if ended {
            Duration::from_millis(500)
        } else {
            Duration::from_secs(3600)
        };
        select! {
            recv(pipeline.results()) -> r => {
                let Ok(s) = r else { break };
                frames += 1;
                faces += s.faces.len() as u64;
                with_faces += u64::from(!s.faces.is_empty());
                latency.push(s.latency().as_secs_f64() * 1e3);
                detect.push(s.detect_ms as f64);
                infer.push(s.infer_ms as f64);
                last = s.scored_at;
                let tracked = tracker.update(s.frame.index, &s.faces, 0.0);
                if let Some(rec) = &recorder {
                    for t in tracked {
                        let ok = rec.push(Row {
                            timestamp: s.frame.captured_at,
                            elapsed_ms: rec.elapsed().as_secs_f64() * 1e3,
                            frame: s.frame.index,
                            face_id: t.id,
                            bbox: t.bbox,
                            scores: t.raw,
                            model: s.model.clone(),
                        });
                        if !ok {
                            failure = rec.error();
                        }
                    }
                }
                if failure.is_some() {
                    break;
                }
            }
            recv(pipeline.notices()) -> n => match n {
                Ok(Notice::SourceEnded) => ended = true,
                Ok(Notice::SourceFailed(e)) | Ok(Notice::StageFailed(e)) => { failure = Some(e); break; }
                Ok(_) => {}
                Err(_) => ended = true,
            },
            default(timeout) => {
                if ended { break; }
            }
        }
    }
    let source = pipeline.source().to_string();
    let dropped_before = pipeline.stats().dropped();
    let shutdown = pipeline.shutdown();
    let (rows, lost) = match recorder {
        Some(r) => {
            let s = r.finish()?;
            (s.rows, s.lost)
        }
        None => (0, 0),
    };
    if let Some(e) = failure {
        return Err(Error::InvalidInput {
            what: "run".into(),
            reason: e,
        });
    }
    let elapsed = last.duration_since(started).as_secs_f64();
    Ok(RunSummary {
        source,
        model: model.to_string(),
        frames,
        faces,
        frames_with_faces: with_faces,
        fps: if elapsed > 0.0 {
            frames as f64 / elapsed
        } else {
            0.0
        },
        latency_ms_median: percentile(&mut latency.clone(), 0.5),
        latency_ms_p95: percentile(&mut latency, 0.95),
        detect_ms_median: percentile(&mut detect, 0.5),
        infer_ms_median: percentile(&mut infer, 0.5),
        dropped: dropped_before,
        elapsed_secs: elapsed,
        csv: opts.csv.clone(),
        csv_rows: rows,
        csv_rows_lost: lost,
        shutdown_ms: shutdown.as_secs_f64() * 1e3,
    })
}
