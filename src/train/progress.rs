//! What a run reports as it goes: per-epoch figures ([`EpochLog`]), the CSV log beside the
//! output, progress bars and the line printed after each epoch.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Per-epoch figures.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EpochLog {
    pub epoch: usize,
    pub lr: f64,
    pub train_loss: f64,
    pub train_acc: f64,
    pub val_loss: f64,
    pub val_acc: f64,
    pub secs: f64,
    pub images_per_sec: f64,
}

impl EpochLog {
    /// The row in `<out>.log.csv`.
    fn csv_row(&self) -> String {
        format!(
            "{},{:.6},{:.5},{:.5},{:.5},{:.5},{:.2},{:.1}",
            self.epoch,
            self.lr,
            self.train_loss,
            self.train_acc,
            self.val_loss,
            self.val_acc,
            self.secs,
            self.images_per_sec
        )
    }

    /// The line printed after the epoch, of `epochs`.
    pub(super) fn summary(&self, epochs: usize) -> String {
        format!(
            "epoch {}/{epochs}: train loss {:.4} acc {:.4} | val loss {:.4} acc {:.4} | {:.0} img/s",
            self.epoch,
            self.train_loss,
            self.train_acc,
            self.val_loss,
            self.val_acc,
            self.images_per_sec
        )
    }
}

const LOG_HEADER: &str = "epoch,lr,train_loss,train_acc,val_loss,val_acc,secs,images_per_sec";

/// `<out>.log.csv`, one row per epoch, flushed after each.
pub(super) struct Log {
    file: std::fs::File,
    path: PathBuf,
}

impl Log {
    /// Start the log at `path` afresh with the rows of `history` (so that rows of an epoch
    /// cut off before its checkpoint go).
    pub(super) fn create(path: &Path, history: &[EpochLog]) -> Result<Self> {
        let mut file = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
        std::iter::once(LOG_HEADER.to_string())
            .chain(history.iter().map(EpochLog::csv_row))
            .try_for_each(|line| writeln!(file, "{line}"))
            .and_then(|_| file.flush())
            .map_err(|e| Error::io(path, e))?;
        Ok(Self {
            file,
            path: path.to_path_buf(),
        })
    }

    /// Add an epoch's row.
    pub(super) fn append(&mut self, row: &EpochLog) -> Result<()> {
        writeln!(self.file, "{}", row.csv_row())
            .and_then(|_| self.file.flush())
            .map_err(|e| Error::io(&self.path, e))
    }
}

/// A bar over an epoch's `len` images when `show`, else `None`.
pub(super) fn progress_bar(
    show: bool,
    len: u64,
    epoch: usize,
    epochs: usize,
) -> Option<indicatif::ProgressBar> {
    if !show {
        return None;
    }
    let bar = indicatif::ProgressBar::new(len);
    let style = indicatif::ProgressStyle::with_template(&format!(
        "epoch {epoch}/{epochs} [{{bar:30}}] {{pos}}/{{len}} {{per_sec}} {{msg}}"
    ))
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    Some(bar)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(epoch: usize) -> EpochLog {
        EpochLog {
            epoch,
            lr: 0.001,
            train_loss: 1.25,
            train_acc: 0.5,
            val_loss: 1.5,
            val_acc: 0.4,
            secs: 2.0,
            images_per_sec: 300.0,
        }
    }

    #[test]
    fn the_log_starts_from_the_history_and_grows_a_row_per_epoch() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let path = dir.path().join("run.log.csv");
        let mut log = Log::create(&path, &[row(1)])?;
        log.append(&row(2))?;
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], LOG_HEADER);
        assert_eq!(
            lines[1],
            "1,0.001000,1.25000,0.50000,1.50000,0.40000,2.00,300.0"
        );
        assert!(lines[2].starts_with("2,"));
        assert_eq!(lines.len(), 3);
        assert_eq!(
            lines[0].split(',').count(),
            lines[2].split(',').count(),
            "a value per column"
        );
        Ok(())
    }
}
