//! The `emocam` binary's subcommands (part of the binary, not the library): each file holds
//! one subcommand's clap options and the few lines that hand them to the library.

pub mod app;
pub mod eval;
pub mod export;
pub mod predict;
pub mod report;
pub mod run;
pub mod train;

use std::path::PathBuf;

use anyhow::{Context, Result};
use emocam::capture::{SourceOptions, SourceSpec};
use emocam::model::onnx::OnnxScaling;
use emocam::model::{Classifier, LoadOptions};

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
    /// Weights file (.safetensors, or an .onnx model); default: the built-in model
    /// (weights/emocam-fer2013.safetensors).
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// An ONNX model's class names in output order, comma-separated (wins over its metadata
    /// and sidecar JSON).
    #[arg(long, value_delimiter = ',', requires = "weights")]
    pub classes: Option<Vec<String>>,
    /// How an ONNX model's input is scaled: minus_one_to_one, zero_to_one, zero_to_255, or
    /// mean_std:M1,M2,M3:S1,S2,S3 (wins over its metadata and sidecar JSON).
    #[arg(long, value_parser = OnnxScaling::parse, requires = "weights")]
    pub input_scaling: Option<OnnxScaling>,
}

/// Load the weights the options name, or the built-in model; tells the user what an ONNX
/// model had to assume.
pub fn load_classifier(w: &WeightsArgs) -> Result<Classifier> {
    let opts = LoadOptions {
        classes: w.classes.clone(),
        input_scaling: w.input_scaling.clone(),
    };
    // The library's errors name the file already.
    let clf = match &w.weights {
        Some(p) => Classifier::load_with(p, &opts),
        None => Classifier::builtin(),
    }
    .context("cannot load weights")?;
    if let Some(n) = clf.notice() {
        eprintln!("emocam: note: {n}");
    }
    Ok(clf)
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
