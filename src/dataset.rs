//! Labelled face crops for evaluation and training, from a class-folder tree or a FER2013 CSV.
//!
//! Folder form: `<root>/<class>/<image>`, where `<class>` is an emotion name or FER id (the layout
//! of `fer2013/train` and `fer2013/val`). CSV form: `emotion,pixels[,Usage]` with `pixels` as
//! space-separated gray values of a square image (2304 for FER2013's 48x48).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use image::GrayImage;

use crate::emotion::Emotion;
use crate::error::{Error, Result};
use crate::imaging::{load_rgb, to_gray};

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

/// Read a FER2013-style CSV; every malformed row is reported with its line number.
pub fn load_csv(path: &Path, usage: Option<&str>) -> Result<LabeledFaces> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let at = |line: usize, reason: String| Error::Dataset {
        path: path.to_path_buf(),
        reason: format!("line {line}: {reason}"),
    };
    let mut lines = BufReader::new(file).lines();
    let header = match lines.next() {
        Some(h) => h.map_err(|e| Error::io(path, e))?,
        None => {
            return Err(at(
                1,
                "empty file, expected a header emotion,pixels[,Usage]".into(),
            ));
        }
    };
    let cols: Vec<String> = header
        .trim()
        .split(',')
        .map(|c| c.trim().to_ascii_lowercase())
        .collect();
    let col = |name: &str| cols.iter().position(|c| c == name);
    let (Some(ei), Some(pi)) = (col("emotion"), col("pixels")) else {
        return Err(at(
            1,
            format!("header is {header:?}, expected emotion,pixels[,Usage]"),
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
    for (i, line) in lines.enumerate() {
        let n = i + 2;
        let line = line.map_err(|e| Error::io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() != cols.len() {
            return Err(at(
                n,
                format!("{} fields, expected {}", fields.len(), cols.len()),
            ));
        }
        if let (Some(want), Some(ui)) = (usage, ui)
            && fields[ui] != want
        {
            continue;
        }
        let label: Emotion = fields[ei]
            .parse()
            .map_err(|e| at(n, format!("emotion: {e}")))?;
        let pixels: Vec<u8> = fields[pi]
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
