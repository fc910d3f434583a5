//! What the window does with what was recorded: the "Session summary" of a recording (when a
//! recording stops, or from File > Open recording...), its HTML report, and snapshots of the
//! current frame with its overlays.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crossbeam_channel::{Receiver, bounded};

use crate::annotate::Annotator;
use crate::error::{Error, Result};
use crate::outfile::{self, OutputPolicy};
use crate::report::{self, Recording, ReportRequest, Summary};
use crate::track::TrackedFace;

/// A recording's summary being made on a helper thread, or shown.
#[derive(Default)]
pub struct Summaries {
    /// Reading and summarising a recording (an hour's CSV takes a fraction of a second, which
    /// the window must not wait for).
    pending: Option<Receiver<Result<Summary>>>,
    /// The summary in the window, if one is open.
    pub shown: Option<Summary>,
}

impl Summaries {
    /// Read and summarise `recording` on a helper thread; the window opens when it is done.
    pub fn open(&mut self, recording: PathBuf) {
        let (tx, rx) = bounded(1);
        let spawned = std::thread::Builder::new()
            .name("emocam-summary".into())
            .spawn(move || {
                let r = Recording::read(&recording).map(|rec| Summary::from(&rec));
                let _ = tx.send(r);
            });
        match spawned {
            Ok(_) => self.pending = Some(rx),
            Err(e) => {
                let (tx, rx) = bounded(1);
                let _ = tx.send(Err(Error::io("summary thread", e)));
                self.pending = Some(rx);
            }
        }
    }

    /// A summary that finished since the last call opens the window; an error is returned for
    /// the caller to show.
    pub fn poll(&mut self, ctx: &egui::Context) -> Option<String> {
        let rx = self.pending.as_ref()?;
        match rx.try_recv() {
            Ok(Ok(s)) => {
                self.pending = None;
                self.shown = Some(s);
                None
            }
            Ok(Err(e)) => {
                self.pending = None;
                Some(format!("cannot summarise the recording: {e}"))
            }
            Err(_) => {
                ctx.request_repaint_after(Duration::from_millis(50));
                None
            }
        }
    }

    /// True while a summary is being made.
    pub fn is_pending(&self) -> bool {
        self.pending.is_some()
    }
}

/// Write the HTML report of the shown summary's recording to `html` (the user chose the path,
/// in a dialog that asked before replacing a file, so an existing file is replaced).
pub fn save_report(summary: &Summary, html: &Path) -> Result<PathBuf> {
    let w = report::write_report(&ReportRequest {
        recording: summary.path.clone(),
        html: Some(html.to_path_buf()),
        png: None,
        overwrite: true,
    })?;
    Ok(w.html)
}

/// Where the report of `recording` goes by default: beside it, `.html`.
pub fn default_report_path(recording: &Path) -> PathBuf {
    report::default_html_path(recording)
}

/// A new snapshot name in `dir`, e.g. `emocam-snapshot-20261201-101500.png` (UTC).
pub fn snapshot_path(dir: &Path) -> PathBuf {
    let ts = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let compact: String = ts.chars().filter(|c| c.is_ascii_digit()).collect();
    let (date, time) = compact.split_at(8.min(compact.len()));
    let mut path = dir.join(format!("emocam-snapshot-{date}-{time}.png"));
    let mut n = 2;
    while path.exists() {
        path = dir.join(format!("emocam-snapshot-{date}-{time}-{n}.png"));
        n += 1;
    }
    path
}

/// Save `frame` with `faces` drawn on it (as annotated videos show them) as a PNG at `path`,
/// owner-only, never over an existing file.
pub fn save_snapshot(frame: &image::RgbImage, faces: &[TrackedFace], path: &Path) -> Result<()> {
    let mut img = frame.clone();
    Annotator::new()?.draw(&mut img, faces);
    let mut png = std::io::Cursor::new(Vec::new());
    img.write_to(&mut png, image::ImageFormat::Png)
        .map_err(|e| Error::Image {
            path: path.to_path_buf(),
            reason: format!("cannot encode the snapshot: {e}"),
        })?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    outfile::write_bytes_atomically(path, png.get_ref(), &OutputPolicy::new())
}
