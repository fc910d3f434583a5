//! Recording per-face scores to CSV, on a thread of its own so the GUI never waits for the disk.
//!
//! Rows reach the file at least once a second, so a crash loses at most a second. The file only
//! ever holds whole rows: each batch of rows is handed to the file in one write, and a write
//! that fails part-way (a full disk) is cut back to the end of the last whole row, so what
//! remains always parses. A write error stops the recording, keeps every row already written,
//! and is reported through [`Recorder::error`]; the caller decides how to show it.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError, bounded};

use crate::emotion::{Classes, Scores};
use crate::error::{Error, Result};
use crate::imaging::FaceBox;
use crate::output::{create_private, csv_line, prob};

/// The columns before the class columns.
pub const LEADING_COLUMNS: [&str; 10] = [
    "timestamp",
    "elapsed_ms",
    "source_ms",
    "frame",
    "face_id",
    "detected",
    "x",
    "y",
    "w",
    "h",
];

/// The columns after the class columns.
pub const TRAILING_COLUMNS: [&str; 3] = ["top_emotion", "model", "source"];

/// The CSV header for a model's classes: [`LEADING_COLUMNS`], one column per class (the
/// model's raw, unsmoothed probabilities), [`TRAILING_COLUMNS`].
pub fn csv_header(classes: &Classes) -> Vec<String> {
    LEADING_COLUMNS
        .iter()
        .map(|c| c.to_string())
        .chain(classes.names().iter().cloned())
        .chain(TRAILING_COLUMNS.iter().map(|c| c.to_string()))
        .collect()
}

/// Longest time rows wait in memory before they reach the file.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// Rows that may wait for the writer thread; more are counted as lost.
const QUEUE_ROWS: usize = 8192;

/// Bytes of rows gathered before they are written even if a second has not passed.
const BATCH_BYTES: usize = 256 * 1024;

/// One face in one processed frame.
#[derive(Debug, Clone)]
pub struct Row {
    /// Wall-clock time of capture.
    pub timestamp: SystemTime,
    /// Milliseconds since the recording started.
    pub elapsed_ms: f64,
    /// The frame's time in its source (a video's presentation time), if it has one.
    pub source_ms: Option<f64>,
    pub frame: u64,
    pub face_id: u64,
    /// True when the detector found the face in this frame; false when the tracker carried it.
    pub detected: bool,
    pub bbox: FaceBox,
    /// Raw model scores.
    pub scores: Scores,
    pub model: Arc<str>,
    /// What the frames come from (a file, a camera, the demo).
    pub source: Arc<str>,
}

impl Row {
    /// The row as one CSV line, line break included.
    pub fn to_csv(&self) -> Vec<u8> {
        let ts = humantime::format_rfc3339_millis(self.timestamp).to_string();
        let mut fields = vec![
            ts,
            format!("{:.1}", self.elapsed_ms),
            self.source_ms
                .map_or(String::new(), |ms| format!("{ms:.1}")),
            self.frame.to_string(),
            self.face_id.to_string(),
            u8::from(self.detected).to_string(),
            self.bbox.x.to_string(),
            self.bbox.y.to_string(),
            self.bbox.w.to_string(),
            self.bbox.h.to_string(),
        ];
        fields.extend(self.scores.probs().iter().map(|&p| prob(p)));
        fields.push(self.scores.top().0.to_string());
        fields.push(self.model.to_string());
        fields.push(self.source.to_string());
        csv_line(fields)
    }
}

/// Where a recording's bytes go: a file, or (in tests) anything that can also be cut back to a
/// length after a failed write.
pub trait Sink: Write + Send {
    /// Shorten what was written to `len` bytes.
    fn truncate(&mut self, len: u64) -> io::Result<()>;
}

impl Sink for File {
    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.set_len(len)
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
    classes: Classes,
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
    /// Create `path` (and its folder) for a model with `classes`, write the header and start
    /// the writer thread. An existing file is kept unless `overwrite`.
    pub fn start(path: &Path, classes: &Classes, overwrite: bool) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let file = create_private(path, overwrite)?;
        Self::with_sink(path, classes, Box::new(file))
    }

    /// Record into any sink; `path` names it in messages.
    pub fn with_sink(path: &Path, classes: &Classes, mut sink: Box<dyn Sink>) -> Result<Self> {
        let header = csv_line(csv_header(classes));
        sink.write_all(&header)
            .and_then(|_| sink.flush())
            .map_err(|e| Error::io(path, e))?;
        let (tx, rx) = bounded::<Row>(QUEUE_ROWS);
        let shared = Arc::new(Shared::default());
        let handle = {
            let (shared, owned) = (shared.clone(), path.to_path_buf());
            let written = header.len() as u64;
            std::thread::Builder::new()
                .name("emocam-record".into())
                .spawn(move || write_rows(sink, written, rx, &shared, &owned))
                .map_err(|e| Error::io(path, e))?
        };
        Ok(Self {
            path: path.to_path_buf(),
            classes: classes.clone(),
            tx: Some(tx),
            handle: Some(handle),
            shared,
            started: Instant::now(),
        })
    }

    /// Queue a row. Returns false once the recording has stopped on an error. A row over
    /// other classes than the header's is refused (it would not fit the columns): the caller
    /// starts a new recording when the model's classes change.
    pub fn push(&self, row: Row) -> bool {
        let Some(tx) = &self.tx else { return false };
        if row.scores.classes() != &self.classes {
            return false;
        }
        match tx.try_send(row) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.shared.lost.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }

    /// The classes of the recording's columns.
    pub fn classes(&self) -> &Classes {
        &self.classes
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

    /// Write what is queued and close the file. An error means the recording had stopped
    /// early; the rows before the error are in the file.
    pub fn finish(mut self) -> Result<RecordSummary> {
        self.close();
        let summary = RecordSummary {
            path: self.path.clone(),
            rows: self.rows(),
            lost: self.shared.lost.load(Ordering::Relaxed),
        };
        match self.error() {
            Some(e) => Err(Error::Io {
                path: self.path.clone(),
                error: io::Error::other(e),
            }),
            None => Ok(summary),
        }
    }

    fn close(&mut self) {
        self.tx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Recorder {
    /// Writes what is queued (a few milliseconds' work) so that no row is lost.
    fn drop(&mut self) {
        self.close();
    }
}

/// Rows gathered for one write, with where each one ends.
#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    /// End offset of each row in `bytes`.
    ends: Vec<usize>,
}

impl Batch {
    fn push(&mut self, row: &Row) {
        self.bytes.extend(row.to_csv());
        self.ends.push(self.bytes.len());
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }
}

/// Hand `batch` to the sink whole. On a failure part-way, cut the sink back to the end of the
/// last row that made it whole, and return how many rows those were with the error.
fn write_batch(sink: &mut dyn Sink, written: u64, batch: &Batch) -> Result<(), (usize, String)> {
    let mut off = 0;
    let failure = loop {
        if off == batch.bytes.len() {
            match sink.flush() {
                Ok(()) => return Ok(()),
                Err(e) => break e,
            }
        }
        match sink.write(&batch.bytes[off..]) {
            Ok(0) => break io::Error::new(io::ErrorKind::WriteZero, "the file took no more bytes"),
            Ok(n) => off += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break e,
        }
    };
    // Keep the rows that reached the file whole; cut the partial one.
    let whole = batch.ends.iter().take_while(|&&end| end <= off).count();
    let keep = batch.ends[..whole].last().copied().unwrap_or(0);
    let cut = match sink.truncate(written + keep as u64) {
        Ok(()) => String::new(),
        Err(t) => format!(" (and cutting back the partial row failed: {t})"),
    };
    Err((whole, format!("{failure}{cut}")))
}

/// The writer thread: gathers rows into one batch and hands it to the sink each second (or
/// each [`BATCH_BYTES`]), so only whole rows reach the file.
fn write_rows(
    mut sink: Box<dyn Sink>,
    mut written: u64,
    rx: Receiver<Row>,
    shared: &Shared,
    path: &Path,
) {
    let mut last_flush = Instant::now();
    let mut batch = Batch::default();
    let mut commit = |batch: &mut Batch| -> bool {
        if batch.ends.is_empty() {
            return true;
        }
        match write_batch(sink.as_mut(), written, batch) {
            Ok(()) => {
                written += batch.bytes.len() as u64;
                shared
                    .rows
                    .fetch_add(batch.ends.len() as u64, Ordering::Relaxed);
                batch.clear();
                true
            }
            Err((whole, e)) => {
                let rows = shared.rows.fetch_add(whole as u64, Ordering::Relaxed) + whole as u64;
                if let Ok(mut slot) = shared.error.lock() {
                    *slot = Some(format!(
                        "cannot write {}: {e}; recording stopped, the {rows} rows before it are kept",
                        path.display()
                    ));
                }
                false
            }
        }
    };
    loop {
        let wait = FLUSH_INTERVAL.saturating_sub(last_flush.elapsed());
        match rx.recv_timeout(wait) {
            Ok(row) => batch.push(&row),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                commit(&mut batch);
                return;
            }
        }
        if last_flush.elapsed() >= FLUSH_INTERVAL || batch.bytes.len() >= BATCH_BYTES {
            if !commit(&mut batch) {
                return;
            }
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
            source_ms: Some(frame as f64 * 40.0),
            frame,
            face_id: 0,
            detected: true,
            bbox: FaceBox {
                x: 1,
                y: 2,
                w: 3,
                h: 4,
                score: 0.0,
            },
            scores: Scores::fer([0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]),
            model: "m,1".into(),
            source: "clip.mp4".into(),
        }
    }

    #[test]
    fn rows_have_every_column() {
        let line = String::from_utf8(row(7).to_csv()).unwrap();
        assert_eq!(csv_header(&Classes::fer()).len(), 20);
        assert!(
            line.starts_with("2023-11-14T22:13:20.123Z,233.1,280.0,7,0,1,1,2,3,4,"),
            "{line}"
        );
        assert!(line.ends_with(",happy,\"m,1\",clip.mp4\n"), "{line}");
        assert_eq!(row(0).scores.top().0, Emotion::Happy);
        let untimed = Row {
            source_ms: None,
            ..row(1)
        };
        let line = String::from_utf8(untimed.to_csv()).unwrap();
        assert!(
            line.contains(",33.3,,1,"),
            "an unknown time is an empty field: {line}"
        );
    }

    /// A disk that takes `room` bytes and then fails part-way through a write, as a full disk
    /// does, sharing what it kept.
    struct FullDisk {
        kept: Arc<Mutex<Vec<u8>>>,
        room: usize,
    }

    impl Write for FullDisk {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let mut k = self.kept.lock().unwrap();
            let free = self.room.saturating_sub(k.len());
            if free == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::StorageFull,
                    "no space left on device",
                ));
            }
            let n = free.min(buf.len());
            k.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Sink for FullDisk {
        fn truncate(&mut self, len: u64) -> io::Result<()> {
            self.kept.lock().unwrap().truncate(len as usize);
            Ok(())
        }
    }

    #[test]
    fn a_full_disk_stops_the_recording_and_keeps_only_whole_rows() {
        let kept = Arc::new(Mutex::new(Vec::new()));
        let disk = FullDisk {
            kept: kept.clone(),
            room: 20_000,
        };
        let rec =
            Recorder::with_sink(Path::new("full.csv"), &Classes::fer(), Box::new(disk)).unwrap();
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
        assert!(text.ends_with('\n'), "the file ends on a whole row");
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let header: Vec<String> = reader
            .headers()
            .unwrap()
            .iter()
            .map(str::to_string)
            .collect();
        assert_eq!(header, csv_header(&Classes::fer()));
        let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
        assert!(rows.len() > 10, "rows before the error are kept");
        assert!(rows.iter().all(|r| r.len() == 20));
    }

    #[test]
    fn rows_of_other_classes_are_refused() {
        let kept = Arc::new(Mutex::new(Vec::new()));
        let disk = FullDisk {
            kept,
            room: 1 << 20,
        };
        let rec = Recorder::with_sink(Path::new("r.csv"), &Classes::fer(), Box::new(disk)).unwrap();
        let (other, _) = Classes::from_model_order(&["a", "b"]).unwrap();
        let mut r = row(0);
        r.scores = Scores::new(other, vec![0.5, 0.5]);
        assert!(!rec.push(r));
        assert!(rec.push(row(1)));
        assert_eq!(rec.finish().unwrap().rows, 1);
    }

    #[test]
    fn an_existing_file_is_kept_unless_overwriting() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.csv");
        std::fs::write(&p, "precious").unwrap();
        let err = Recorder::start(&p, &Classes::fer(), false)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("already exists") && err.contains("--overwrite"),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "precious");
        Recorder::start(&p, &Classes::fer(), true)
            .unwrap()
            .finish()
            .unwrap();
        assert!(
            std::fs::read_to_string(&p)
                .unwrap()
                .starts_with("timestamp,")
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let q = dir.path().join("new.csv");
            Recorder::start(&q, &Classes::fer(), false)
                .unwrap()
                .finish()
                .unwrap();
            let mode = std::fs::metadata(&q).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "recordings are private");
        }
        let err = Recorder::start(Path::new("/dev/null"), &Classes::fer(), true)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("not a regular file"), "{err}");
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
