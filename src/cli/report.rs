//! `emocam report`: a recording as a self-contained HTML page and a PNG summary.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use emocam::report::{ReportRequest, write_report};
use emocam::text::printable;

/// Options of `emocam report`.
#[derive(clap::Args)]
pub struct ReportArgs {
    /// The recording (CSV from the app's Record button or `emocam run --csv`).
    recording: PathBuf,
    /// Where the HTML goes [default: the recording's path with .html].
    #[arg(short, long, value_name = "REPORT.html")]
    out: Option<PathBuf>,
    /// Also draw the summary as one PNG picture (1280x720) for slides and chat.
    #[arg(long, value_name = "SUMMARY.png")]
    png: Option<PathBuf>,
    /// Replace outputs that exist.
    #[arg(long)]
    overwrite: bool,
}

pub fn run(a: ReportArgs) -> Result<ExitCode> {
    let w = write_report(&ReportRequest {
        recording: a.recording,
        html: a.out,
        png: a.png,
        overwrite: a.overwrite,
    })?;
    for note in &w.notes {
        eprintln!("emocam: note: {}", printable(note));
    }
    println!(
        "wrote {} ({} face{}, {} rows, {} KB)",
        w.html.display(),
        w.faces,
        if w.faces == 1 { "" } else { "s" },
        w.rows,
        w.html_bytes.div_ceil(1024)
    );
    if let Some(p) = &w.png {
        println!("wrote {}", p.display());
    }
    Ok(ExitCode::SUCCESS)
}
