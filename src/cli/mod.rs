//! The `emocam` binary's subcommands (part of the binary, not the library): each file holds
//! one subcommand's clap options and the few lines that hand them to the library.

pub mod app;
pub mod eval;
pub mod predict;
pub mod run;
pub mod train;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use emocam::capture::{SourceOptions, SourceSpec};
use emocam::model::Classifier;

/// Where frames come from, for the app.
#[derive(clap::Args, Clone)]
pub struct SourceArgs {
    /// `demo`, `demo:SCENE`, `camera:N`, a video (MP4, MOV, MKV, WebM, AVI), an `rtsp://` or
    /// `http(s)://` stream, a folder of images, an animated GIF or an image.
    #[arg(long)]
    pub source: Option<SourceSpec>,
    #[command(flatten)]
    pub pace: PaceArgs,
}

/// How file and demo sources are played.
#[derive(clap::Args, Clone, Copy)]
pub struct PaceArgs {
    /// Frames per second for file and demo sources; 0 = every frame, as fast as the pipeline
    /// takes them [default: a video's or GIF's own rate; 30 for folders and the demo].
    #[arg(long)]
    pub fps: Option<f64>,
    /// Start a file source again when it ends.
    #[arg(long = "loop")]
    pub looping: bool,
}

impl PaceArgs {
    pub fn options(self) -> SourceOptions {
        SourceOptions {
            fps: self.fps,
            looping: self.looping,
        }
    }
}

/// The weights file options every subcommand that classifies takes.
#[derive(clap::Args, Clone)]
pub struct WeightsArgs {
    /// Weights file (.safetensors); default: the built-in model (weights/emocam-fer2013.safetensors).
    #[arg(long)]
    pub weights: Option<PathBuf>,
}

/// Load `weights`, or the built-in model.
pub fn load_classifier(weights: Option<&Path>) -> Result<Classifier> {
    // The library's errors name the file already.
    Classifier::load_or_builtin(weights).context("cannot load weights")
}

/// End quietly when the reader of stdout goes away (`emocam eval ... | head`), as command-line
/// tools do; Rust ignores SIGPIPE, so `println!` would panic with a backtrace instead.
pub fn quiet_on_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: restores the default disposition of one signal, before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
