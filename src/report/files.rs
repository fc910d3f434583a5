//! Writing reports: output paths, never replacing a file unasked or the recording itself, and
//! files readable by their owner only (they hold emotion data about people).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::html::html;
use super::png::png_bytes;
use super::read::Recording;
use super::summary::Summary;
use crate::error::{Error, Result};

/// What `emocam report` is asked to make.
#[derive(Debug, Clone)]
pub struct ReportRequest {
    /// The recording (CSV).
    pub recording: PathBuf,
    /// Where the HTML goes; `None`: the recording's path with `.html`.
    pub html: Option<PathBuf>,
    /// Where the PNG summary goes, if one is wanted.
    pub png: Option<PathBuf>,
    /// Replace outputs that exist.
    pub overwrite: bool,
}

/// What was written.
#[derive(Debug, Clone)]
pub struct ReportWritten {
    pub html: PathBuf,
    pub html_bytes: usize,
    pub png: Option<PathBuf>,
    pub rows: u64,
    pub faces: usize,
    /// What the reader noticed and worked around.
    pub notes: Vec<String>,
}

/// The default HTML path for a recording: the same path with `.html`.
pub fn default_html_path(recording: &Path) -> PathBuf {
    recording.with_extension("html")
}

/// Read the recording, make the report (and the PNG) and write them. Outputs are checked
/// before the recording is read: one that exists is refused without `overwrite`, and one that
/// is the recording (or the other output) is refused always.
pub fn write_report(req: &ReportRequest) -> Result<ReportWritten> {
    let html_path = req
        .html
        .clone()
        .unwrap_or_else(|| default_html_path(&req.recording));
    let mut outputs = vec![&html_path];
    outputs.extend(req.png.as_ref());
    for out in &outputs {
        if same_file(out, &req.recording) {
            return Err(refuse(
                out,
                format!(
                    "is the recording {}; expected another file",
                    req.recording.display()
                ),
            ));
        }
        if !req.overwrite && std::fs::symlink_metadata(out).is_ok() {
            return Err(refuse(
                out,
                "exists already; pass --overwrite to replace it".into(),
            ));
        }
    }
    if let Some(png) = &req.png
        && same_file(png, &html_path)
    {
        return Err(refuse(
            png,
            "is also the HTML output; expected two different files".into(),
        ));
    }
    let rec = Recording::read(&req.recording)?;
    let summary = Summary::from(&rec);
    let page = html(&summary);
    // Draw before writing anything, so that a failure leaves no half set of outputs.
    let picture = req.png.as_ref().map(|_| png_bytes(&summary)).transpose()?;
    write_private(&html_path, page.as_bytes(), req.overwrite)?;
    if let (Some(path), Some(bytes)) = (&req.png, &picture) {
        write_private(path, bytes, req.overwrite)?;
    }
    Ok(ReportWritten {
        html: html_path,
        html_bytes: page.len(),
        png: req.png.clone(),
        rows: rec.rows,
        faces: summary.face_count(),
        notes: rec.notes,
    })
}

fn refuse(path: &Path, reason: String) -> Error {
    Error::InvalidInput {
        what: format!("output {}", path.display()),
        reason,
    }
}

/// True when `a` and `b` name the same file: the same inode if both exist (links included),
/// otherwise the same absolute path.
fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        #[cfg(unix)]
        (Ok(x), Ok(y)) => {
            use std::os::unix::fs::MetadataExt;
            x.dev() == y.dev() && x.ino() == y.ino()
        }
        _ => match (std::path::absolute(a), std::path::absolute(b)) {
            (Ok(x), Ok(y)) => x == y,
            _ => a == b,
        },
    }
}

/// Write `bytes` to `path`, readable and writable by the owner only (mode 0600 on Unix).
///
/// Without `overwrite` the file is created only if it does not exist (checked by the open
/// itself, so nothing can slip in between). With it, the bytes go to a new file beside `path`
/// that then replaces it in one rename: a reader never sees half a report, and a replaced
/// file does not keep its old, wider permissions.
pub fn write_private(path: &Path, bytes: &[u8], overwrite: bool) -> Result<()> {
    let io = |e| Error::io(path, e);
    if !overwrite {
        let mut f = private_options().create_new(true).open(path).map_err(io)?;
        if let Err(e) = f.write_all(bytes).and_then(|_| f.sync_all()) {
            let _ = std::fs::remove_file(path);
            return Err(io(e));
        }
        return Ok(());
    }
    let name = path
        .file_name()
        .map_or_else(|| "report".into(), |n| n.to_string_lossy().into_owned());
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let result = private_options()
        .create_new(true)
        .open(&tmp)
        .and_then(|mut f: File| f.write_all(bytes).and_then(|_| f.sync_all()))
        .and_then(|_| std::fs::rename(&tmp, path));
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(e));
    }
    Ok(())
}

fn private_options() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.write(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o
}
