//! Recording per-face scores to CSV, on a thread of its own so the GUI never waits for the disk.
//!
//! Rows are flushed at least once a second, so a crash loses at most a second. A write error
//! stops the recording, keeps every row already written, and is reported through
//! [`Recorder::error`]; the caller decides how to show it.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError, bounded};

use crate::emotion::Scores;
use crate::error::{Error, Result};
use crate::imaging::FaceBox;
use crate::recognize::csv_field;

/// The CSV header; the seven scores are the model's raw (unsmoothed) probabilities.
pub const CSV_HEADER: &str = "timestamp,elapsed_ms,frame,face_id,x,y,w,h,angry,disgust,fear,happy,sad,surprise,neutral,top_emotion,model";

/// Longest time rows wait in memory before they reach the file.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// Rows that may wait for the writer thread; more are counted as lost.
const QUEUE_ROWS: usize = 8192;

/// One face in one processed frame.
#[derive(Debug, Clone)]
pub struct Row {
    /// Wall-clock time of capture.
    pub timestamp: SystemTime,
    /// Milliseconds since the recording started.
    pub elapsed_ms: f64,
    pub frame: u64,
    pub face_id: u64,
    pub bbox: FaceBox,
    /// Raw model scores.
    pub scores: Scores,
    pub model: Arc<str>,
}

impl Row {
    /// The row as one CSV line (no line break).
    pub fn to_csv(&self) -> String {
        let ts = humantime::format_rfc3339_millis(self.timestamp);
        let scores: Vec<String> = self
            .scores
            .probs()
            .iter()
            .map(|p| format!("{p:.6}"))
            .collect();
        format!(
            "{ts},{:.1},{},{},{},{},{},{},{},{},{}",
            self.elapsed_ms,
            self.frame,
            self.face_id,
            self.bbox.x,
            self.bbox.y,
            self.bbox.w,
            self.bbox.h,
            scores.join(","),
            self.scores.top().0,
            csv_field(&self.model)
        )
    }
}

#[derive(Default)]
struct Shared {
    rows: AtomicU64,
    lost: AtomicU64,
    error: Mutex<Option<String>>,
}

/// A recording in progress.
pub struct Recorder {
    path: PathBuf,
    tx: Option<Sender<Row>>,
    handle: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
    started: Instant,
}

/// What a finished recording holds.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordSummary {
    pub path: PathBuf,
    pub rows: u64,
    /// Rows that could not be queued because the disk fell behind.
    pub lost: u64,
}

impl Recorder {
    /// Create `path` (and its folder), write the header and start the writer thread.
    pub fn start(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let file = File::create(path).map_err(|e| Error::io(path, e))?;
        Self::with_writer(path, Box::new(file))
    }

    /// Record into any writer; `path` names it in messages.
    pub fn with_writer(path: &Path, writer: Box<dyn Write + Send>) -> Result<Self> {
        let mut out = BufWriter::new(writer);
        writeln!(out, "{CSV_HEADER}")
            .and_then(|_| out.flush())
            .map_err(|e| Error::io(path, e))?;
        let (tx, rx) = bounded::<Row>(QUEUE_ROWS);
        let shared = Arc::new(Shared::default());
        let handle = {
            let (shared, owned) = (shared.clone(), path.to_path_buf());
            std::thread::Builder::new()
                .name("emocam-record".into())
                .spawn(move || write_rows(out, rx, &shared, &owned))
                .map_err(|e| Error::io(path, e))?
        };
        Ok(Self {
            path: path.to_path_buf(),
            tx: Some(tx),
            handle: Some(handle),
            shared,
            started: Instant::now(),
        })
    }

    /// Queue a row. Returns false once the recording has stopped on an error.
    pub fn push(&self, row: Row) -> bool {
        let Some(tx) = &self.tx else { return false };
        match tx.try_send(row) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.shared.lost.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.shared.rows.load(Ordering::Relaxed)
    }

    /// The write error that stopped the recording, if one did.
    pub fn error(&self) -> Option<String> {
        self.shared.error.lock().ok().and_then(|e| e.clone())
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Time since the recording started, for [`Row::elapsed_ms`].
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Flush and close the file. An error means the recording had stopped early; the rows
    /// before the error are in the file.
    pub fn finish(mut self) -> Result<RecordSummary> {
        self.tx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        let summary = RecordSummary {
            path: self.path.clone(),
            rows: self.rows(),
            lost: self.shared.lost.load(Ordering::Relaxed),
        };
        match self.error() {
            Some(e) => Err(Error::Io {
                path: self.path.clone(),
                error: std::io::Error::other(e),
            }),
            None => Ok(summary),
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn write_rows(
    mut out: BufWriter<Box<dyn Write + Send>>,
    rx: Receiver<Row>,
    shared: &Shared,
    path: &Path,
) {
    let mut last_flush = Instant::now();
    let fail = |e: std::io::Error, rows: u64| {
        if let Ok(mut slot) = shared.error.lock() {
            *slot = Some(format!(
                "cannot write {}: {e}; recording stopped, the rows before it are kept (at least {rows})",
                path.display()
            ));
        }
    };
    let mut pending = 0u64;
    loop {
        let wait = FLUSH_INTERVAL.saturating_sub(last_flush.elapsed());
        match rx.recv_timeout(wait) {
            Ok(row) => {
                if let Err(e) = writeln!(out, "{}", row.to_csv()) {
                    fail(e, shared.rows.load(Ordering::Relaxed));
                    return;
                }
                pending += 1;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                if let Err(e) = out.flush() {
                    fail(e, shared.rows.load(Ordering::Relaxed));
                } else {
                    shared.rows.fetch_add(pending, Ordering::Relaxed);
                }
                return;
            }
        }
        if last_flush.elapsed() >= FLUSH_INTERVAL {
            if let Err(e) = out.flush() {
                fail(e, shared.rows.load(Ordering::Relaxed));
                return;
            }
            shared.rows.fetch_add(pending, Ordering::Relaxed);
            pending = 0;
            last_flush = Instant::now();
        }
    }
}

/// Folder for recordings when none is chosen: `emocam-recordings` in the working directory.
pub fn default_dir() -> PathBuf {
    PathBuf::from("emocam-recordings")
}

/// A new file name in `dir` carrying the UTC start time, e.g. `emocam-20261125-143000.csv`;
/// `-2`, `-3`, ... is added when a recording of the same second exists.
pub fn timestamped_path(dir: &Path) -> PathBuf {
    let ts = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let compact: String = ts.chars().filter(|c| c.is_ascii_digit()).collect();
    let (date, time) = compact.split_at(8.min(compact.len()));
    let mut path = dir.join(format!("emocam-{date}-{time}.csv"));
    let mut n = 2;
    while path.exists() {
        path = dir.join(format!("emocam-{date}-{time}-{n}.csv"));
        n += 1;
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emotion::Emotion;

    fn row(frame: u64) -> Row {
        Row {
            timestamp: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            elapsed_ms: frame as f64 * 33.3,
            frame,
            face_id: 0,
            bbox: FaceBox {
                x: 1,
                y: 2,
                w: 3,
                h: 4,
                score: 0.0,
            },
            scores: Scores::fer([0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]),
            model: "m,1".into(),
        }
    }

    #[test]
    fn rows_have_every_column() {
        let line = row(7).to_csv();
        assert_eq!(CSV_HEADER.split(',').count(), 17);
        assert!(
            line.starts_with("2023-11-14T22:13:20.123Z,233.1,7,0,1,2,3,4,"),
            "{line}"
        );
        assert!(line.ends_with(",happy,\"m,1\""), "{line}");
        assert_eq!(row(0).scores.top().0, Emotion::Happy.name());
    }

    /// A disk that takes `room` bytes and then fails, sharing what it kept.
    struct FullDisk {
        kept: Arc<Mutex<Vec<u8>>>,
        room: usize,
    }

    impl Write for FullDisk {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let mut k = self.kept.lock().unwrap();
            if k.len() + buf.len() > self.room {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::StorageFull,
                    "no space left on device",
                ));
            }
            k.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_full_disk_stops_the_recording_and_keeps_the_rows() {
        let kept = Arc::new(Mutex::new(Vec::new()));
        let disk = FullDisk {
            kept: kept.clone(),
            room: 20_000,
        };
        let rec = Recorder::with_writer(Path::new("full.csv"), Box::new(disk)).unwrap();
        let mut stopped_at = None;
        for i in 0..10_000 {
            if !rec.push(row(i)) {
                stopped_at = Some(i);
                break;
            }
            if i % 100 == 0 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        let err = rec.finish().unwrap_err().to_string();
        assert!(
            err.contains("full.csv") && err.contains("recording stopped"),
            "{err}"
        );
        assert!(stopped_at.is_some() || err.contains("no space"));
        let text = String::from_utf8(kept.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], CSV_HEADER);
        assert!(lines.len() > 10, "rows before the error are kept");
        // Every complete line is a whole row.
        for l in &lines[1..lines.len() - 1] {
            assert_eq!(l.matches(',').count(), 17, "{l}");
        }
    }

    #[test]
    fn timestamped_names_carry_date_and_time() {
        let p = timestamped_path(Path::new("out"));
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        assert!(
            name.starts_with("emocam-20")
                && name.ends_with(".csv")
                && name.len() == "emocam-20261125-143000.csv".len(),
            "{name}"
        );
    }
}
