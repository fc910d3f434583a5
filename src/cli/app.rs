//! The desktop app (`emocam` with no subcommand).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use super::SourceArgs;

/// Options of the desktop app.
#[derive(clap::Args, Clone)]
pub struct AppArgs {
    /// Camera index to open (see the Camera menu).
    #[arg(long, conflicts_with = "source")]
    camera: Option<u32>,
    #[command(flatten)]
    source: SourceArgs,
    /// Weights file (.safetensors or .onnx) to start with; default: the built-in model (weights/emocam-fer2013.safetensors).
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
    /// Start recording to a new CSV in --record-dir as soon as the window opens.
    #[arg(long)]
    record: bool,
    /// Smallest face to find, in pixels of the frame (default: 5% of the frame height, at
    /// least 40); smaller values search finer and cost more.
    #[arg(long, value_name = "PIXELS", value_parser = clap::value_parser!(u32).range(1..))]
    min_face: Option<u32>,
    /// Run every pass of the model on every frame. By default a followed face gets one of the
    /// default model's four passes a frame, scored from the latest of each (a quarter of the
    /// model's CPU time).
    #[arg(long)]
    every_pass: bool,
}

#[cfg(not(feature = "gui"))]
pub fn run(_args: AppArgs) -> Result<ExitCode> {
    anyhow::bail!(
        "this emocam was built without the window (the `gui` feature); use a subcommand such as \
         `emocam run --source demo`, or build with the default features"
    )
}

#[cfg(feature = "gui")]
pub fn run(args: AppArgs) -> Result<ExitCode> {
    use emocam::capture::SourceSpec;
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
        min_face: args.min_face,
        every_pass: args.every_pass,
        quit_after: args
            .quit_after
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(std::time::Duration::from_secs_f64),
        record: args.record,
    };
    emocam::gui::run(opts)?;
    Ok(ExitCode::SUCCESS)
}
