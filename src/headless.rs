//! Running a session without a window (`emocam run`): CSV rows, a progress bar, a summary of
//! speed, and a clean stop on Ctrl-C or SIGTERM that keeps every processed row.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::capture::SourceSpec;
use crate::error::{Error, Result};
use crate::session::{Event, Session};

/// When to stop and where to write.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Stop after this many processed frames (`None`: when the source ends).
    pub max_frames: Option<u64>,
    /// Write one CSV row per face per frame here.
    pub csv: Option<PathBuf>,
    /// Replace an existing CSV instead of refusing.
    pub overwrite: bool,
    /// Draw a progress bar on stderr (a terminal, and no `--json`).
    pub progress: bool,
}

/// Which signal asked the run to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum StopSignal {
    #[serde(rename = "SIGINT")]
    Interrupt,
    #[serde(rename = "SIGTERM")]
    Terminate,
}

impl StopSignal {
    /// The exit status a shell expects after this signal (128 + its number).
    pub fn exit_code(self) -> u8 {
        match self {
            StopSignal::Interrupt => 130,
            StopSignal::Terminate => 143,
        }
    }
}

/// Ctrl-C (SIGINT) and SIGTERM, caught so that a run can stop cleanly: the first one asks the
/// run to stop and keep what it did; a second Ctrl-C ends the process at once.
#[derive(Clone)]
pub struct StopSignals {
    interrupt: Arc<AtomicBool>,
    terminate: Arc<AtomicBool>,
}

impl StopSignals {
    /// Catch both signals for the rest of the process's life.
    pub fn install() -> Result<Self> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let s = Self::none();
        let fail = |e: std::io::Error| Error::InvalidInput {
            what: "signal handlers".into(),
            reason: e.to_string(),
        };
        // A second Ctrl-C while the first is being honoured exits with 130 at once.
        signal_hook::flag::register_conditional_shutdown(SIGINT, 130, s.interrupt.clone())
            .map_err(fail)?;
        signal_hook::flag::register(SIGINT, s.interrupt.clone()).map_err(fail)?;
        signal_hook::flag::register(SIGTERM, s.terminate.clone()).map_err(fail)?;
        Ok(s)
    }

    /// Flags that no signal sets (for library callers that handle signals themselves).
    pub fn none() -> Self {
        Self {
            interrupt: Arc::new(AtomicBool::new(false)),
            terminate: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The signal received, if any.
    pub fn received(&self) -> Option<StopSignal> {
        if self.terminate.load(Ordering::Relaxed) {
            Some(StopSignal::Terminate)
        } else if self.interrupt.load(Ordering::Relaxed) {
            Some(StopSignal::Interrupt)
        } else {
            None
        }
    }
}

/// What a run did and how fast (`emocam run --json` prints it as one line).
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
    /// Time of the last processed frame in its source (a video's position), if it has one.
    pub source_ms_last: Option<f64>,
    pub csv: Option<PathBuf>,
    pub csv_rows: u64,
    /// CSV rows lost because the disk could not keep up (0 in a healthy run).
    pub csv_rows_lost: u64,
    /// Time taken to stop and join the threads.
    pub shutdown_ms: f64,
    /// The signal that stopped the run early, if one did.
    pub stopped_by: Option<StopSignal>,
    /// Why the run ended early (a damaged file, a full disk), if it did; the rows before are
    /// in the CSV.
    pub error: Option<String>,
}

impl fmt::Display for RunSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "source:   {}", crate::text::printable(&self.source))?;
        writeln!(f, "model:    {}", crate::text::printable(&self.model))?;
        writeln!(
            f,
            "frames:   {} ({} with faces, {} faces in all), {} dropped",
            self.frames, self.frames_with_faces, self.faces, self.dropped
        )?;
        writeln!(
            f,
            "speed:    {:.1} frames/s over {:.2} s",
            self.fps, self.elapsed_secs
        )?;
        writeln!(
            f,
            "latency:  median {:.1} ms, p95 {:.1} ms (detect {:.1} ms, classify {:.2} ms per frame)",
            self.latency_ms_median,
            self.latency_ms_p95,
            self.detect_ms_median,
            self.infer_ms_median
        )?;
        if let Some(p) = &self.csv {
            write!(f, "csv:      {} rows in {}", self.csv_rows, p.display())?;
            if self.csv_rows_lost > 0 {
                write!(
                    f,
                    " ({} rows lost: the disk fell behind)",
                    self.csv_rows_lost
                )?;
            }
            writeln!(f)?;
        }
        if let Some(s) = self.stopped_by {
            let name = match s {
                StopSignal::Interrupt => "Ctrl-C (SIGINT)",
                StopSignal::Terminate => "SIGTERM",
            };
            writeln!(f, "stopped:  by {name}; every processed frame is kept")?;
        }
        Ok(())
    }
}

/// One CSV path per source of a batch, in `dir`, named after each source's file (`clip.mp4`
/// -> `clip.csv`); names that would collide get `-2`, `-3`, ...
pub fn batch_csv_paths(dir: &Path, specs: &[SourceSpec]) -> Vec<Option<PathBuf>> {
    let mut taken: Vec<PathBuf> = Vec::new();
    specs
        .iter()
        .map(|s| {
            let stem = match s {
                SourceSpec::Path(p) => p
                    .file_stem()
                    .map(|x| x.to_string_lossy().to_string())
                    .unwrap_or_else(|| "source".into()),
                other => other.to_string().replace([':', '/'], "-"),
            };
            let mut path = dir.join(format!("{stem}.csv"));
            let mut n = 2;
            while taken.contains(&path) {
                path = dir.join(format!("{stem}-{n}.csv"));
                n += 1;
            }
            taken.push(path.clone());
            Some(path)
        })
        .collect()
}

fn percentile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// A progress bar for a source of `frames` frames (a spinner when unknown), on stderr.
fn progress_bar(frames: Option<u64>, show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = match frames {
        Some(n) => ProgressBar::with_draw_target(Some(n), ProgressDrawTarget::stderr()),
        None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
    };
    let template = if frames.is_some() {
        "{bar:40} {pos}/{len} frames  {per_sec}  {elapsed_precise} elapsed, {eta} left  {msg}"
    } else {
        "{spinner} {pos} frames  {per_sec}  {elapsed_precise}  {msg}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}

/// Drive `session` until its source ends, `max_frames` frames are processed, a signal asks it
/// to stop (then the frames in flight are still processed and recorded), or it fails (the
/// frames before the failure are kept, and the summary carries the error).
pub fn run(session: &mut Session, opts: &RunOptions, signals: &StopSignals) -> Result<RunSummary> {
    if let Some(csv) = &opts.csv {
        session.start_recording(csv, opts.overwrite)?;
    }
    let info = session.source_info().cloned();
    let bar = progress_bar(info.as_ref().and_then(|i| i.frame_count), opts.progress);
    let started = Instant::now();
    let (mut frames, mut faces, mut with_faces) = (0u64, 0u64, 0u64);
    let (mut latency, mut detect, mut infer) = (Vec::new(), Vec::new(), Vec::new());
    let mut last = started;
    let mut last_ms = None;
    let mut finishing = false;
    let mut error: Option<String> = None;
    let mut stopped_by = None;
    loop {
        if opts.max_frames.is_some_and(|m| frames >= m) {
            break;
        }
        if !finishing && let Some(sig) = signals.received() {
            stopped_by = Some(sig);
            finishing = true;
            session.stop_source();
            bar.set_message("stopping: finishing the frames in flight");
        }
        match session.wait(Duration::from_millis(100)) {
            Some(Event::Frame(p)) => {
                let s = &p.scored;
                frames += 1;
                faces += s.faces.len() as u64;
                with_faces += u64::from(!s.faces.is_empty());
                latency.push(s.latency().as_secs_f64() * 1e3);
                detect.push(f64::from(s.detect_ms));
                infer.push(f64::from(s.infer_ms));
                last = s.scored_at;
                if s.frame.source_ms.is_some() {
                    last_ms = s.frame.source_ms;
                }
                bar.inc(1);
            }
            Some(Event::SourceEnded) => finishing = true,
            Some(Event::Failed(e)) => {
                error.get_or_insert(e);
                finishing = true;
            }
            Some(Event::RecordingStopped(r)) => {
                if let Err(e) = r {
                    error.get_or_insert(e);
                }
                break;
            }
            Some(_) => {}
            None => {
                if finishing && session.drained() {
                    break;
                }
                if !session.is_running() {
                    break;
                }
            }
        }
    }
    bar.finish_and_clear();
    let source = session.source_label().to_string();
    let model = session.model().name.clone();
    let dropped = session.stats().dropped();
    let (record, shutdown) = session.shutdown_timed();
    let (csv_rows, csv_rows_lost) = match record {
        Some(Ok(r)) => (r.rows, r.lost),
        Some(Err(e)) => {
            error.get_or_insert(e.to_string());
            (0, 0)
        }
        None => (0, 0),
    };
    let elapsed = last.duration_since(started).as_secs_f64();
    Ok(RunSummary {
        source,
        model,
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
        dropped,
        elapsed_secs: elapsed,
        source_ms_last: last_ms,
        csv: opts.csv.clone(),
        csv_rows,
        csv_rows_lost,
        shutdown_ms: shutdown.as_secs_f64() * 1e3,
        stopped_by,
        error,
    })
}
