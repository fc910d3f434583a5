//! Labelled face crops for evaluation and training, from a class-folder tree or a FER2013 CSV.
//!
//! Folder form: `<root>/<class>/<image>`, where `<class>` is an emotion name or FER id (the layout
//! of `fer2013/train` and `fer2013/val`). CSV form: `emotion,pixels[,Usage]` with `pixels` as
//! space-separated gray values of a square image (2304 for FER2013's 48x48).

use std::cell::Cell;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use image::GrayImage;

use crate::emotion::Emotion;
use crate::error::{Error, Result};
use crate::imaging::{load_rgb, open_regular, to_gray};

/// Longest CSV record (row) accepted: a FER2013 row is about 8 KB (2304 values of up to 4
/// bytes); a longer one is not such a row, and an endless one (a file of zeros) would
/// otherwise be held whole in memory.
pub const MAX_CSV_RECORD_BYTES: u64 = 64 * 1024;

/// Largest CSV file accepted (FER2013's is under 300 MB); every row it holds is kept in memory.
pub const MAX_CSV_BYTES: u64 = 4 << 30;

/// Grayscale face crops with their true class.
#[derive(Debug, Clone, Default)]
pub struct LabeledFaces {
    pub images: Vec<GrayImage>,
    pub labels: Vec<Emotion>,
    /// Where each sample came from (its file, or `line N` of a CSV), for per-image reports;
    /// may be empty for sets built in memory.
    pub sources: Vec<String>,
}

impl LabeledFaces {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when there are no samples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Where sample `i` came from: its recorded source, else `#i`.
    pub fn source(&self, i: usize) -> String {
        self.sources
            .get(i)
            .cloned()
            .unwrap_or_else(|| format!("#{i}"))
    }

    /// Samples per class, in FER order.
    pub fn class_counts(&self) -> [usize; Emotion::COUNT] {
        let mut c = [0; Emotion::COUNT];
        for l in &self.labels {
            c[l.index()] += 1;
        }
        c
    }
}

/// Load a dataset from a class folder or a FER2013 CSV. `usage` picks CSV rows by their `Usage`
/// column (e.g. `PublicTest`); it is an error for a folder.
pub fn load(path: &Path, usage: Option<&str>) -> Result<LabeledFaces> {
    let fail = |reason: String| Error::Dataset {
        path: path.to_path_buf(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| fail(format!("cannot open: {e}")))?;
    if !meta.is_dir() && !meta.is_file() {
        return Err(fail(format!(
            "is {}, expected a folder of class folders or a FER2013 CSV file",
            crate::outfile::describe_file_type(meta.file_type())
        )));
    }
    let data = if meta.is_dir() {
        if let Some(u) = usage {
            return Err(fail(format!(
                "--usage {u} applies to a FER2013 CSV, but this is a folder of class folders"
            )));
        }
        load_folder(path)?
    } else {
        load_csv(path, usage)?
    };
    if data.is_empty() {
        return Err(fail(match usage {
            Some(u) => format!("no samples with Usage {u:?}"),
            None => {
                "no samples found (expected <class>/<image> folders or emotion,pixels CSV rows)"
                    .into()
            }
        }));
    }
    Ok(data)
}

/// Read `<root>/<class>/<image>` trees; decoding runs on every core.
pub fn load_folder(root: &Path) -> Result<LabeledFaces> {
    let fail = |reason: String| Error::Dataset {
        path: root.to_path_buf(),
        reason,
    };
    let mut files: Vec<(PathBuf, Emotion)> = Vec::new();
    let entries = std::fs::read_dir(root).map_err(|e| fail(format!("cannot list: {e}")))?;
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    dirs.sort();
    for dir in dirs {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let class: Emotion = name
            .parse()
            .map_err(|e| fail(format!("class folder {name:?}: {e}")))?;
        let mut imgs: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(|e| Error::io(&dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && is_image_name(p))
            .collect();
        imgs.sort();
        files.extend(imgs.into_iter().map(|p| (p, class)));
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = files.len().div_ceil(threads).max(1);
    let decoded: Vec<Result<Vec<GrayImage>>> = std::thread::scope(|s| {
        let handles: Vec<_> = files
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|(p, _)| load_rgb(p).map(|rgb| to_gray(&rgb)))
                        .collect::<Result<Vec<_>>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(fail("a decoding thread panicked".into())))
            })
            .collect()
    });
    let mut images = Vec::with_capacity(files.len());
    for part in decoded {
        images.extend(part?);
    }
    let (sources, labels) = files
        .into_iter()
        .map(|(p, c)| (p.display().to_string(), c))
        .unzip();
    Ok(LabeledFaces {
        images,
        labels,
        sources,
    })
}

fn is_image_name(p: &Path) -> bool {
    p.extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .is_some_and(|e| matches!(e.as_str(), "jpg" | "jpeg" | "png" | "bmp" | "gif" | "pgm"))
}

/// Read a FER2013-style CSV (with the `csv` crate: quoted fields are read as spreadsheets
/// write them); every malformed row is reported with its line number. A row longer than
/// [`MAX_CSV_RECORD_BYTES`] is refused as soon as that much of it has been read.
pub fn load_csv(path: &Path, usage: Option<&str>) -> Result<LabeledFaces> {
    let fail = |reason: String| Error::Dataset {
        path: path.to_path_buf(),
        reason,
    };
    let at = |line: u64, reason: String| fail(format!("line {line}: {reason}"));
    let file = open_regular(path, MAX_CSV_BYTES, "a FER2013 CSV").map_err(fail)?;
    let record_start = Rc::new(Cell::new(0));
    let bounded = RecordLimit {
        inner: file,
        taken: 0,
        record_start: Rc::clone(&record_start),
    };
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(bounded);
    let mut record = csv::StringRecord::new();
    // Reads the next record, saying why not with the line it starts on.
    let next = |rdr: &mut csv::Reader<RecordLimit<std::fs::File>>,
                record: &mut csv::StringRecord|
     -> Result<Option<u64>> {
        let line = rdr.position().line();
        let more = rdr
            .read_record(record)
            .map_err(|e| at(line, csv_reason(&e)))?;
        record_start.set(rdr.position().byte());
        Ok(more.then(|| record.position().map_or(line, csv::Position::line)))
    };
    if next(&mut rdr, &mut record)?.is_none() {
        return Err(at(
            1,
            "empty file, expected a header emotion,pixels[,Usage]".into(),
        ));
    }
    let cols: Vec<String> = record.iter().map(str::to_ascii_lowercase).collect();
    let col = |name: &str| cols.iter().position(|c| c == name);
    let (Some(ei), Some(pi)) = (col("emotion"), col("pixels")) else {
        return Err(at(
            1,
            format!(
                "header is {:?}, expected emotion,pixels[,Usage]",
                record.iter().collect::<Vec<_>>().join(",")
            ),
        ));
    };
    let ui = col("usage");
    if usage.is_some() && ui.is_none() {
        return Err(at(
            1,
            "--usage was given but the CSV has no Usage column".into(),
        ));
    }
    let mut out = LabeledFaces::default();
    let mut side: Option<u32> = None;
    while let Some(n) = next(&mut rdr, &mut record)? {
        if record.iter().all(str::is_empty) {
            continue;
        }
        if record.len() != cols.len() {
            return Err(at(
                n,
                format!("{} fields, expected {}", record.len(), cols.len()),
            ));
        }
        if let (Some(want), Some(ui)) = (usage, ui)
            && &record[ui] != want
        {
            continue;
        }
        let label: Emotion = record[ei]
            .parse()
            .map_err(|e| at(n, format!("emotion: {e}")))?;
        let pixels: Vec<u8> = record[pi]
            .split_ascii_whitespace()
            .map(|v| v.parse::<u8>())
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| {
                at(
                    n,
                    "pixels must be integers 0..=255 separated by spaces".into(),
                )
            })?;
        let s = (pixels.len() as f64).sqrt() as u32;
        if s == 0 || (s * s) as usize != pixels.len() {
            return Err(at(
                n,
                format!(
                    "{} pixels is not a square image (FER2013 has 2304 = 48x48)",
                    pixels.len()
                ),
            ));
        }
        if let Some(prev) = side
            && prev != s
        {
            return Err(at(
                n,
                format!("{s}x{s} image, but earlier rows are {prev}x{prev}"),
            ));
        }
        side = Some(s);
        out.images
            .push(GrayImage::from_raw(s, s, pixels).expect("s*s pixels"));
        out.labels.push(label);
        out.sources.push(format!("line {n}"));
    }
    Ok(out)
}

/// What a CSV read error means for a user holding the file.
fn csv_reason(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::Io(io) if io.get_ref().is_some_and(|r| r.is::<RecordTooLong>()) => {
            format!(
                "a row longer than {MAX_CSV_RECORD_BYTES} bytes (FER2013 rows are about 8 KB); not a FER2013 CSV"
            )
        }
        csv::ErrorKind::Io(io) => format!("cannot read: {io}"),
        csv::ErrorKind::Utf8 { .. } => "not UTF-8 text; expected a FER2013 CSV".into(),
        _ => e.to_string(),
    }
}

/// The error a [`RecordLimit`] reader gives.
#[derive(Debug)]
struct RecordTooLong;

impl std::fmt::Display for RecordTooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "record longer than {MAX_CSV_RECORD_BYTES} bytes")
    }
}

impl std::error::Error for RecordTooLong {}

/// A reader that fails once the CSV reader has taken more than [`MAX_CSV_RECORD_BYTES`] past
/// the start of the record it is on (`record_start`, updated after each record). The `csv`
/// crate grows a record's buffer for as long as the record goes on and has no bound of its
/// own; this one lets it hold a record and its read-ahead buffer, no more.
struct RecordLimit<R> {
    inner: R,
    /// Bytes handed to the CSV reader so far.
    taken: u64,
    record_start: Rc<Cell<u64>>,
}

impl<R: Read> Read for RecordLimit<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.taken.saturating_sub(self.record_start.get()) > MAX_CSV_RECORD_BYTES {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                RecordTooLong,
            ));
        }
        let n = self.inner.read(buf)?;
        self.taken += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn csv(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    fn row(label: u8, usage: &str) -> String {
        let px: Vec<String> = (0..2304).map(|i| (i % 256).to_string()).collect();
        format!("{label},{},{usage}\n", px.join(" "))
    }

    #[test]
    fn csv_selects_usage_rows() {
        let f = csv(&format!(
            "emotion,pixels,Usage\n{}{}{}",
            row(3, "Training"),
            row(5, "PublicTest"),
            row(6, "PublicTest")
        ));
        let all = load(f.path(), None).unwrap();
        assert_eq!(all.len(), 3);
        let public = load(f.path(), Some("PublicTest")).unwrap();
        assert_eq!(public.labels, vec![Emotion::Surprise, Emotion::Neutral]);
        assert_eq!(public.images[0].dimensions(), (48, 48));
        assert_eq!(public.images[0].get_pixel(1, 0).0[0], 1);
        assert_eq!(public.sources, ["line 3", "line 4"]);
    }

    #[test]
    fn csv_bad_row_names_its_line() {
        let f = csv(&format!(
            "emotion,pixels,Usage\n{}9,1 2 3 4,Training\n",
            row(0, "Training")
        ));
        let e = load(f.path(), None).unwrap_err().to_string();
        assert!(e.contains("line 3"), "{e}");
        let f = csv(&format!(
            "emotion,pixels\n{}\n1,1 2 x 4\n",
            row(0, "").trim_end_matches(",\n")
        ));
        let e = load(f.path(), None).unwrap_err().to_string();
        assert!(e.contains("line 3") && e.contains("0..=255"), "{e}");
        let f = csv("emo,pix\n");
        let e = load(f.path(), None).unwrap_err().to_string();
        assert!(e.contains("line 1"), "{e}");
    }
}
