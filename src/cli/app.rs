//! The desktop app (`emocam` with no subcommand).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use emocam::capture::SourceSpec;

use super::SourceArgs;

/// Options of the desktop app.
#[derive(clap::Args, Clone)]
pub struct AppArgs {
    /// Camera index to open (see the Camera menu).
    #[arg(long, conflicts_with = "source")]
    camera: Option<u32>,
    #[command(flatten)]
    source: SourceArgs,
    /// Weights file (.safetensors) to start with; default: the built-in model (weights/emocam-fer2013.safetensors).
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Folder for recordings.
    #[arg(long, default_value = "emocam-recordings")]
    record_dir: PathBuf,
    /// Save a PNG screenshot of the window here when --quit-after expires.
    #[arg(long, requires = "quit_after")]
    screenshot: Option<PathBuf>,
    /// Close the window after this many seconds (scripted runs, CI).
    #[arg(long)]
    quit_after: Option<f64>,
}

pub fn run(args: AppArgs) -> Result<ExitCode> {
    let source = match (args.camera, args.source.source.clone()) {
        (Some(i), _) => Some(SourceSpec::Camera(i)),
        (None, s) => s,
    };
    let opts = emocam::gui::AppOptions {
        source,
        source_options: args.source.pace.options(),
        weights: args.weights,
        record_dir: args.record_dir,
        screenshot: args.screenshot,
        quit_after: args
            .quit_after
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(std::time::Duration::from_secs_f64),
    };
    emocam::gui::run(opts)?;
    Ok(ExitCode::SUCCESS)
}
