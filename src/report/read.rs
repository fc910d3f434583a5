//! Reading a recording: the CSV that [`crate::record`] writes (and its newer forms), streamed
//! row by row, checked, and kept as compact columns per face. The raw text is never held.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use csv::{ByteRecord, ErrorKind, ReaderBuilder};

use crate::error::{Error, Result};

/// Longest line accepted: a row of a recording is a few hundred bytes; a longer one is not a
/// recording, and the cap keeps a hostile file from growing the row buffer without bound.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Most rows read: 46 hours of one face at 30 fps, about 230 MB in memory.
pub const MAX_ROWS: u64 = 5_000_000;

/// Most class columns a recording may have.
pub const MAX_CLASSES: usize = 32;

/// Distinct model and source names kept; more are counted, not kept.
const MAX_NAMES: usize = 16;

/// Longest value quoted in an error message.
const QUOTE_CHARS: usize = 40;

/// The header emocam writes for a FER model, to show in errors.
fn our_header() -> String {
    crate::record::csv_header(&crate::emotion::Classes::fer()).join(",")
}

/// Which time the timelines use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeAxis {
    /// `source_ms` on every row: the frame's time in its video.
    Source,
    /// `elapsed_ms`: time since the recording started (no row had a `source_ms`).
    Elapsed,
    /// `source_ms` where a row had one, `elapsed_ms` where it was empty.
    Mixed,
}

/// The rows of one face (one `face_id`), in time order, as columns.
#[derive(Debug, Clone)]
pub struct FaceRows {
    /// The tracker's id of the face.
    pub id: u64,
    /// Time of each row on the recording's [`TimeAxis`], in milliseconds.
    pub t_ms: Vec<f64>,
    /// Frame number of each row.
    pub frames: Vec<u64>,
    /// Scores, row after row: `scores[i * classes + c]` is class `c` in row `i`.
    pub scores: Vec<f32>,
    /// Index of the row's `top_emotion` among the classes.
    pub top: Vec<u8>,
    /// Rows with `detected` = 0 (carried by the tracker); 0 when the column is absent.
    pub carried: u64,
    /// Earliest and latest wall-clock `timestamp` of the face's rows, if the column exists.
    pub first_timestamp: Option<SystemTime>,
    pub last_timestamp: Option<SystemTime>,
}

impl FaceRows {
    fn new(id: u64) -> Self {
        Self {
            id,
            t_ms: Vec::new(),
            frames: Vec::new(),
            scores: Vec::new(),
            top: Vec::new(),
            carried: 0,
            first_timestamp: None,
            last_timestamp: None,
        }
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.t_ms.len()
    }

    /// True when the face has no rows.
    pub fn is_empty(&self) -> bool {
        self.t_ms.is_empty()
    }

    /// Put the rows in time order (they are already, unless the time axis jumps back, as
    /// `source_ms` does when a video loops); the order among equal times is kept.
    fn sort_by_time(&mut self, classes: usize) {
        if self.t_ms.is_sorted() {
            return;
        }
        let mut order: Vec<usize> = (0..self.len()).collect();
        order.sort_by(|&a, &b| self.t_ms[a].total_cmp(&self.t_ms[b]));
        self.t_ms = order.iter().map(|&i| self.t_ms[i]).collect();
        self.frames = order.iter().map(|&i| self.frames[i]).collect();
        self.top = order.iter().map(|&i| self.top[i]).collect();
        self.scores = order
            .iter()
            .flat_map(|&i| self.scores[i * classes..(i + 1) * classes].iter().copied())
            .collect();
    }
}

/// A recording read into memory: what the header says, and every face's rows.
#[derive(Debug, Clone)]
pub struct Recording {
    /// The file it was read from.
    pub path: PathBuf,
    /// Class names, in the order of their columns (between `h` and `top_emotion`).
    pub classes: Vec<String>,
    /// The time the rows are placed on.
    pub time_axis: TimeAxis,
    /// Whether rows say if the detector found the face (`detected`) or the tracker carried it.
    pub has_detected: bool,
    /// Distinct `model` values in order of appearance (at most 16; see `more_models`).
    pub models: Vec<String>,
    /// Distinct models beyond those kept in `models`.
    pub more_models: usize,
    /// Distinct `source` values in order of appearance (at most 16; see `more_sources`).
    pub sources: Vec<String>,
    /// Distinct sources beyond those kept in `sources`.
    pub more_sources: usize,
    /// Earliest and latest `timestamp`, if the column exists.
    pub first_timestamp: Option<SystemTime>,
    pub last_timestamp: Option<SystemTime>,
    /// Rows read.
    pub rows: u64,
    /// Frames with at least one face (consecutive rows with the same frame number are one frame).
    pub frames: u64,
    /// Faces in order of their first row.
    pub faces: Vec<FaceRows>,
    /// Things the reader noticed and worked around (e.g. a cut-off last line).
    pub notes: Vec<String>,
}

/// Where each column is.
struct Layout {
    width: usize,
    timestamp: Option<usize>,
    elapsed: usize,
    source_ms: Option<usize>,
    frame: usize,
    face_id: usize,
    detected: Option<usize>,
    bbox: [(usize, &'static str); 4],
    classes: Range<usize>,
    top: usize,
    model: Option<usize>,
    source: Option<usize>,
}

impl Recording {
    /// Read the recording at `path`. Anything but a regular file (a FIFO, a device, a folder)
    /// is refused without reading from it.
    pub fn read(path: &Path) -> Result<Recording> {
        let file = open_regular(path)?;
        Self::from_reader(path, file)
    }

    /// Read a recording from any reader; `path` names it in messages and in the report.
    pub fn from_reader(path: &Path, reader: impl Read) -> Result<Recording> {
        Reader::new(path).read(reader)
    }
}

/// Open `path` for reading only if it is a regular file. The open does not block on a FIFO
/// (`O_NONBLOCK`), and the check is made on the opened file, so a swap in between cannot fool it.
fn open_regular(path: &Path) -> Result<File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.custom_flags(libc::O_NONBLOCK);
    }
    let file = opts.open(path).map_err(|e| Error::io(path, e))?;
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(Error::Recording {
            path: path.to_path_buf(),
            line: None,
            reason: format!(
                "not a regular file ({}), expected a CSV recording",
                file_kind(&meta)
            ),
        });
    }
    // O_NONBLOCK means nothing for regular files; reads behave as usual.
    Ok(file)
}

fn file_kind(meta: &std::fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        return "a folder";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_char_device() || t.is_block_device() {
            return "a device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    "not a file"
}

/// Passes bytes through, counting lines, and fails once a line (outside quotes: a quoted field
/// may hold a line break) grows past [`MAX_LINE_BYTES`]. The csv crate has no such limit.
struct LineGuard<R> {
    inner: R,
    line: u64,
    line_bytes: usize,
    /// Inside a quoted field (RFC 4180: a quote opens one only at the start of a field).
    quoted: bool,
    /// The last byte ended a field or a line, so a quote here opens a quoted field.
    field_start: bool,
    /// The last byte closed a quoted field; a quote here is an escaped (doubled) quote.
    just_closed: bool,
    overlong_at: Option<u64>,
    at_eof: bool,
    last_byte: Option<u8>,
}

impl<R: Read> LineGuard<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            line: 1,
            line_bytes: 0,
            quoted: false,
            field_start: true,
            just_closed: false,
            overlong_at: None,
            at_eof: false,
            last_byte: None,
        }
    }

    /// True when the whole input has been read and it did not end with a line break: its last
    /// line may have been cut off (a recorder killed mid-write).
    fn ended_mid_line(&self) -> bool {
        self.at_eof && self.last_byte.is_some_and(|b| b != b'\n')
    }
}

impl<R: Read> Read for LineGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 {
            self.at_eof = true;
            return Ok(0);
        }
        for &b in &buf[..n] {
            let (field_start, just_closed) = (self.field_start, self.just_closed);
            self.field_start = false;
            self.just_closed = false;
            match (self.quoted, b) {
                (true, b'"') => {
                    self.quoted = false;
                    self.just_closed = true;
                }
                // A quote elsewhere in an unquoted field is a plain character, as the csv
                // crate reads it.
                (false, b'"') if field_start || just_closed => self.quoted = true,
                (false, b',') => self.field_start = true,
                (quoted, b'\n') => {
                    self.line += 1;
                    if !quoted {
                        self.line_bytes = 0;
                        self.field_start = true;
                        continue;
                    }
                }
                _ => {}
            }
            self.line_bytes += 1;
            if self.line_bytes > MAX_LINE_BYTES {
                self.overlong_at = Some(self.line);
                return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
            }
        }
        self.last_byte = Some(buf[n - 1]);
        Ok(n)
    }
}

/// The state of one read.
struct Reader {
    path: PathBuf,
}

/// What one row holds, parsed into reused buffers.
struct RowBuf {
    scores: Vec<f32>,
}

impl Reader {
    fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
        }
    }

    fn err(&self, line: Option<u64>, reason: impl Into<String>) -> Error {
        Error::Recording {
            path: self.path.clone(),
            line,
            reason: reason.into(),
        }
    }

    fn csv_err<R>(&self, e: csv::Error, guard: &LineGuard<R>) -> Error {
        let line = e.position().map(|p| p.line());
        match e.kind() {
            ErrorKind::UnequalLengths {
                expected_len, len, ..
            } => self.err(
                line,
                format!("{len} fields, expected {expected_len} (one per header column)"),
            ),
            ErrorKind::Io(io) => match guard.overlong_at {
                Some(l) => self.err(
                    Some(l),
                    format!(
                        "longer than {MAX_LINE_BYTES} bytes, expected a row of a recording (a few hundred bytes)"
                    ),
                ),
                None => Error::io(&self.path, io::Error::new(io.kind(), io.to_string())),
            },
            _ => self.err(line, e.to_string()),
        }
    }

    fn read(&self, input: impl Read) -> Result<Recording> {
        let mut rdr = ReaderBuilder::new()
            .has_headers(false)
            .flexible(false)
            .from_reader(LineGuard::new(input));
        let mut rec = ByteRecord::new();
        let has_header = rdr
            .read_byte_record(&mut rec)
            .map_err(|e| self.csv_err(e, rdr.get_ref()))?;
        if !has_header {
            return Err(self.err(
                None,
                format!(
                    "empty file, expected a header naming the columns (emocam writes {})",
                    our_header()
                ),
            ));
        }
        let layout = self.layout(&rec)?;
        let classes: Vec<String> = layout
            .classes
            .clone()
            .map(|i| String::from_utf8_lossy(&rec[i]).into_owned())
            .collect();
        let mut out = Recording {
            path: self.path.clone(),
            classes,
            time_axis: TimeAxis::Elapsed,
            has_detected: layout.detected.is_some(),
            models: Vec::new(),
            more_models: 0,
            sources: Vec::new(),
            more_sources: 0,
            first_timestamp: None,
            last_timestamp: None,
            rows: 0,
            frames: 0,
            faces: Vec::new(),
            notes: Vec::new(),
        };
        let mut state = ReadState::default();
        let mut buf = RowBuf {
            scores: Vec::with_capacity(out.classes.len()),
        };
        loop {
            let line = match rdr.read_byte_record(&mut rec) {
                Ok(false) => break,
                Ok(true) => rec.position().map_or(0, |p| p.line()),
                Err(e) => {
                    let unequal = matches!(e.kind(), ErrorKind::UnequalLengths { .. });
                    if unequal && self.cut_off_tail(&mut rdr) {
                        out.notes.push(cut_note(e.position().map(|p| p.line())));
                        break;
                    }
                    return Err(self.csv_err(e, rdr.get_ref()));
                }
            };
            if out.rows >= MAX_ROWS {
                return Err(self.err(
                    Some(line),
                    format!(
                        "more than {MAX_ROWS} rows, expected at most that many (46 hours of one face at 30 fps)"
                    ),
                ));
            }
            if let Err(e) = self.row(&layout, &rec, line, &mut buf, &mut state, &mut out) {
                if self.cut_off_tail(&mut rdr) {
                    out.notes.push(cut_note(Some(line)));
                    break;
                }
                return Err(e);
            }
        }
        out.time_axis = match (state.with_source_ms, state.without_source_ms) {
            (0, _) => TimeAxis::Elapsed,
            (_, 0) => TimeAxis::Source,
            _ => TimeAxis::Mixed,
        };
        let k = out.classes.len();
        for f in &mut out.faces {
            f.sort_by_time(k);
        }
        Ok(out)
    }

    /// After a bad row: true if it was the last one and the file ends mid-line, i.e. the
    /// recording was cut off while a row was being written. Such a row is left out.
    fn cut_off_tail<R: Read>(&self, rdr: &mut csv::Reader<LineGuard<R>>) -> bool {
        let mut scratch = ByteRecord::new();
        // Reading on is needed to know that nothing follows; the guard knows how the file ended.
        matches!(rdr.read_byte_record(&mut scratch), Ok(false)) && rdr.get_ref().ended_mid_line()
    }

    fn layout(&self, header: &ByteRecord) -> Result<Layout> {
        let line = Some(header.position().map_or(1, |p| p.line()));
        let mut names: Vec<String> = Vec::with_capacity(header.len());
        for (i, raw) in header.iter().enumerate() {
            let mut name = std::str::from_utf8(raw)
                .map_err(|_| self.err(line, format!("header column {} is not UTF-8 text", i + 1)))?
                .trim()
                .to_string();
            if i == 0 {
                // A spreadsheet may save the file with a byte-order mark.
                name = name.trim_start_matches('\u{feff}').to_string();
            }
            if name.is_empty() {
                return Err(self.err(
                    line,
                    format!(
                        "header column {} has no name, expected a column name",
                        i + 1
                    ),
                ));
            }
            if names.contains(&name) {
                return Err(self.err(
                    line,
                    format!("the header names column {name:?} twice, expected each once"),
                ));
            }
            names.push(name);
        }
        let find = |n: &str| names.iter().position(|c| c == n);
        let need = |n: &str| {
            find(n).ok_or_else(|| {
                self.err(
                    line,
                    format!(
                        "the header has no column {n:?}; expected a recording's header with elapsed_ms, frame, \
                         face_id, x, y, w, h, two or more class columns and top_emotion (emocam writes {})",
                        our_header()
                    ),
                )
            })
        };
        let (elapsed, frame, face_id) = (need("elapsed_ms")?, need("frame")?, need("face_id")?);
        let bbox = [
            (need("x")?, "x"),
            (need("y")?, "y"),
            (need("w")?, "w"),
            (need("h")?, "h"),
        ];
        let top = need("top_emotion")?;
        let h = bbox[3].0;
        if top <= h {
            return Err(self.err(
                line,
                "top_emotion comes before h; expected the class columns between h and top_emotion",
            ));
        }
        let classes = h + 1..top;
        if classes.len() < 2 {
            return Err(self.err(
                line,
                format!(
                    "{} class column(s) between h and top_emotion, expected at least two",
                    classes.len()
                ),
            ));
        }
        if classes.len() > MAX_CLASSES {
            return Err(self.err(
                line,
                format!(
                    "{} class columns between h and top_emotion, expected at most {MAX_CLASSES}",
                    classes.len()
                ),
            ));
        }
        Ok(Layout {
            width: names.len(),
            timestamp: find("timestamp"),
            elapsed,
            source_ms: find("source_ms"),
            frame,
            face_id,
            detected: find("detected"),
            bbox,
            classes,
            top,
            model: find("model"),
            source: find("source"),
        })
    }

    fn row(
        &self,
        l: &Layout,
        rec: &ByteRecord,
        line: u64,
        buf: &mut RowBuf,
        st: &mut ReadState,
        out: &mut Recording,
    ) -> Result<()> {
        debug_assert_eq!(rec.len(), l.width);
        let bad = |col: usize, what: &str| {
            self.err(
                Some(line),
                format!(
                    "column {}: expected {what}, found {}",
                    column_name(&out.classes, l, col),
                    quote(&rec[col])
                ),
            )
        };
        let elapsed = number(&rec[l.elapsed])
            .filter(|v| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| bad(l.elapsed, "a number of milliseconds (0 or more)"))?;
        let source_ms = match l.source_ms {
            Some(i) if !rec[i].is_empty() => Some(
                number(&rec[i])
                    .filter(|v| v.is_finite() && *v >= 0.0)
                    .ok_or_else(|| bad(i, "a number of milliseconds (0 or more) or nothing"))?,
            ),
            _ => None,
        };
        let frame = whole(&rec[l.frame]).ok_or_else(|| bad(l.frame, "a frame number"))?;
        let face_id = whole(&rec[l.face_id]).ok_or_else(|| bad(l.face_id, "a face id"))?;
        for &(i, name) in &l.bbox {
            let ok = match name {
                "x" | "y" => integer(&rec[i]).is_some(),
                _ => whole(&rec[i]).is_some(),
            };
            if !ok {
                return Err(bad(i, "a whole number of pixels"));
            }
        }
        buf.scores.clear();
        for i in l.classes.clone() {
            let p = number(&rec[i])
                .filter(|p| (0.0..=1.0).contains(p))
                .ok_or_else(|| bad(i, "a probability in [0, 1]"))?;
            buf.scores.push(p as f32);
        }
        let top_field = trim(&rec[l.top]);
        let top = out
            .classes
            .iter()
            .position(|c| c.as_bytes() == top_field)
            .ok_or_else(|| {
                bad(
                    l.top,
                    &format!("one of the class columns ({})", out.classes.join(", ")),
                )
            })?;
        let detected = match l.detected {
            Some(i) => match trim(&rec[i]) {
                b"1" => Some(true),
                b"0" => Some(false),
                _ => {
                    return Err(bad(
                        i,
                        "1 (found by the detector) or 0 (carried by the tracker)",
                    ));
                }
            },
            None => None,
        };
        let timestamp = match l.timestamp {
            Some(i) if !rec[i].is_empty() => Some(
                std::str::from_utf8(&rec[i])
                    .ok()
                    .and_then(|s| humantime::parse_rfc3339(s.trim()).ok())
                    .ok_or_else(|| bad(i, "an RFC 3339 time such as 2026-11-25T14:30:00.123Z"))?,
            ),
            _ => None,
        };
        if let Some(i) = l.model {
            st.models
                .see(&rec[i], &mut out.models, &mut out.more_models)
                .map_err(|_| bad(i, "UTF-8 text"))?;
        }
        if let Some(i) = l.source {
            st.sources
                .see(&rec[i], &mut out.sources, &mut out.more_sources)
                .map_err(|_| bad(i, "UTF-8 text"))?;
        }

        // The row is good: store it.
        match source_ms {
            Some(_) => st.with_source_ms += 1,
            None => st.without_source_ms += 1,
        }
        let t = source_ms.unwrap_or(elapsed);
        if st.last_frame != Some(frame) {
            out.frames += 1;
            st.last_frame = Some(frame);
        }
        let fi = match st.last_face {
            Some((id, fi)) if id == face_id => fi,
            _ => {
                let fi = *st.face_index.entry(face_id).or_insert_with(|| {
                    out.faces.push(FaceRows::new(face_id));
                    out.faces.len() - 1
                });
                st.last_face = Some((face_id, fi));
                fi
            }
        };
        let f = &mut out.faces[fi];
        f.t_ms.push(t);
        f.frames.push(frame);
        f.scores.extend_from_slice(&buf.scores);
        // MAX_CLASSES (32) keeps class indices within a byte.
        f.top.push(top as u8);
        if detected == Some(false) {
            f.carried += 1;
        }
        if let Some(ts) = timestamp {
            widen(&mut f.first_timestamp, &mut f.last_timestamp, ts);
            widen(&mut out.first_timestamp, &mut out.last_timestamp, ts);
        }
        out.rows += 1;
        Ok(())
    }
}

fn cut_note(line: Option<u64>) -> String {
    match line {
        Some(l) => format!(
            "line {l}, the last, is incomplete (the recording was cut off while writing it) and was left out"
        ),
        None => "the last line is incomplete (the recording was cut off while writing it) and was left out"
            .to_string(),
    }
}

fn widen(first: &mut Option<SystemTime>, last: &mut Option<SystemTime>, t: SystemTime) {
    if first.is_none_or(|f| t < f) {
        *first = Some(t);
    }
    if last.is_none_or(|l| t > l) {
        *last = Some(t);
    }
}

#[derive(Default)]
struct ReadState {
    face_index: HashMap<u64, usize>,
    last_face: Option<(u64, usize)>,
    last_frame: Option<u64>,
    with_source_ms: u64,
    without_source_ms: u64,
    models: Names,
    sources: Names,
}

/// Distinct text values of a column, compared as bytes so that a repeated value costs nothing.
#[derive(Default)]
struct Names {
    last: Vec<u8>,
    seen_any: bool,
    more: Vec<Vec<u8>>,
}

impl Names {
    /// Note `value`; a new one goes into `kept` (or counts in `more_count` once `kept` is full).
    fn see(
        &mut self,
        value: &[u8],
        kept: &mut Vec<String>,
        more_count: &mut usize,
    ) -> Result<(), ()> {
        if self.seen_any && self.last == value {
            return Ok(());
        }
        let text = std::str::from_utf8(value).map_err(|_| ())?;
        self.seen_any = true;
        self.last.clear();
        self.last.extend_from_slice(value);
        if value.is_empty()
            || kept.iter().any(|k| k == text)
            || self.more.iter().any(|m| m == value)
        {
            return Ok(());
        }
        if kept.len() < MAX_NAMES {
            kept.push(text.to_string());
        } else if self.more.len() < MAX_NAMES * 4 {
            // Remembered only to count them once; past this many, counts may repeat a name.
            self.more.push(value.to_vec());
            *more_count += 1;
        } else {
            *more_count += 1;
        }
        Ok(())
    }
}

fn column_name(classes: &[String], l: &Layout, col: usize) -> String {
    if l.classes.contains(&col) {
        return classes[col - l.classes.start].clone();
    }
    let fixed = [
        (l.timestamp, "timestamp"),
        (Some(l.elapsed), "elapsed_ms"),
        (l.source_ms, "source_ms"),
        (Some(l.frame), "frame"),
        (Some(l.face_id), "face_id"),
        (l.detected, "detected"),
        (Some(l.bbox[0].0), "x"),
        (Some(l.bbox[1].0), "y"),
        (Some(l.bbox[2].0), "w"),
        (Some(l.bbox[3].0), "h"),
        (Some(l.top), "top_emotion"),
        (l.model, "model"),
        (l.source, "source"),
    ];
    fixed
        .iter()
        .find(|(i, _)| *i == Some(col))
        .map_or_else(|| format!("{}", col + 1), |(_, n)| n.to_string())
}

/// A field as it appears in a message: quoted, escaped, shortened.
fn quote(field: &[u8]) -> String {
    let text = String::from_utf8_lossy(field);
    if text.chars().count() > QUOTE_CHARS {
        let cut: String = text.chars().take(QUOTE_CHARS).collect();
        format!("{cut:?}...")
    } else {
        format!("{text:?}")
    }
}

fn trim(field: &[u8]) -> &[u8] {
    field.trim_ascii()
}

fn number(field: &[u8]) -> Option<f64> {
    std::str::from_utf8(trim(field)).ok()?.parse().ok()
}

fn whole(field: &[u8]) -> Option<u64> {
    std::str::from_utf8(trim(field)).ok()?.parse().ok()
}

fn integer(field: &[u8]) -> Option<i64> {
    std::str::from_utf8(trim(field)).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "elapsed_ms,frame,face_id,x,y,w,h,a,b,top_emotion";

    fn read(text: &str) -> Result<Recording> {
        Recording::from_reader(Path::new("t.csv"), text.as_bytes())
    }

    #[test]
    fn a_minimal_recording_reads_by_column_name() {
        let r = read(&format!(
            "{HEADER}\n0,0,3,1,2,3,4,0.25,0.75,b\n33,1,3,1,2,3,4,1,0,a\n"
        ))
        .unwrap();
        assert_eq!(r.classes, ["a", "b"]);
        assert_eq!(r.rows, 2);
        assert_eq!(r.frames, 2);
        assert_eq!(r.faces.len(), 1);
        let f = &r.faces[0];
        assert_eq!((f.id, f.len()), (3, 2));
        assert_eq!(f.scores, [0.25, 0.75, 1.0, 0.0]);
        assert_eq!(f.top, [1, 0]);
        assert_eq!(r.time_axis, TimeAxis::Elapsed);
    }

    #[test]
    fn a_line_past_the_cap_is_refused_with_its_number() {
        let long = "9".repeat(MAX_LINE_BYTES + 10);
        let e = read(&format!("{HEADER}\n0,0,3,1,2,3,4,0.25,0.75,b\n{long}\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 3") && e.contains("longer than"), "{e}");
    }

    #[test]
    fn a_quoted_line_break_does_not_end_the_line_count() {
        let r = read(&format!(
            "{HEADER},model\n0,0,3,1,2,3,4,0.25,0.75,b,\"m\nx\"\n1,1,3,1,2,3,4,9,0.75,b,m\n"
        ));
        let e = r.unwrap_err().to_string();
        assert!(e.contains("line 4") && e.contains("column a"), "{e}");
    }

    #[test]
    fn quotes_count_as_rfc_4180_has_them() {
        // A doubled quote inside a quoted field, and a stray quote inside an unquoted one, do
        // not open a field that never ends: 80 KB of rows after them are not one long line.
        let mut text = format!(
            "{HEADER},model\n0,0,3,1,2,3,4,0.25,0.75,b,\"say \"\"hi\"\", ok\"\n0,0,3,1,2,3,4,0.25,0.75,b,5\"in\n"
        );
        for i in 0..2000 {
            text += &format!("{i},{i},3,1,2,3,4,0.25,0.75,b,m\n");
        }
        let r = read(&text).unwrap();
        assert_eq!(r.rows, 2002);
        assert_eq!(r.models, ["say \"hi\", ok", "5\"in", "m"]);
        let e = read(&(text + "1,1,3,1,2,3,4,9,0.75,b,m\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2004: column a"), "{e}");
    }

    #[test]
    fn a_cut_off_last_line_is_left_out_with_a_note() {
        let r = read(&format!(
            "{HEADER}\n0,0,3,1,2,3,4,0.25,0.75,b\n33,1,3,1,2,3"
        ))
        .unwrap();
        assert_eq!(r.rows, 1);
        assert!(r.notes[0].contains("line 3"), "{:?}", r.notes);
        // The same row followed by a line break is damage, not a cut: refused.
        let e = read(&format!(
            "{HEADER}\n0,0,3,1,2,3,4,0.25,0.75,b\n33,1,3,1,2,3\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("line 3") && e.contains("6 fields, expected 10"),
            "{e}"
        );
    }

    #[test]
    fn rows_out_of_time_order_are_sorted_per_face() {
        let r = read(&format!(
            "{HEADER},source_ms\n0,0,0,1,2,3,4,0.1,0.9,b,500\n1,1,0,1,2,3,4,0.8,0.2,a,0\n"
        ))
        .unwrap();
        let f = &r.faces[0];
        assert_eq!(f.t_ms, [0.0, 500.0]);
        assert_eq!(f.frames, [1, 0]);
        assert_eq!(f.scores, [0.8, 0.2, 0.1, 0.9]);
        assert_eq!(f.top, [0, 1]);
        assert_eq!(r.time_axis, TimeAxis::Source);
    }
}
