//! `emocam export`: one of our models as an ONNX graph.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use emocam::model::{BUILTIN_LABEL, BUILTIN_WEIGHTS, WeightsFile, onnx};
use emocam::outfile::OutputPolicy;
use emocam::text::printable;

/// Options of `emocam export`.
#[derive(clap::Args)]
pub struct ExportArgs {
    /// Where to write the ONNX model.
    #[arg(long, value_name = "OUT.onnx")]
    onnx: PathBuf,
    /// Weights file (.safetensors) to export; default: the built-in model.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Side of the graph's square input [default: the model's own input size]; the scores
    /// are the app's exactly for crops of this size.
    #[arg(long)]
    input_size: Option<u32>,
    /// Replace an existing file at --onnx.
    #[arg(long)]
    overwrite: bool,
}

pub fn run(a: ExportArgs) -> Result<ExitCode> {
    let file = match &a.weights {
        Some(p) => WeightsFile::read(p)?,
        None => WeightsFile::parse(BUILTIN_WEIGHTS, Path::new(BUILTIN_LABEL))?,
    };
    let policy = OutputPolicy::new()
        .with_overwrite(a.overwrite)
        .with_inputs(a.weights.iter().cloned());
    let opts = onnx::ExportOptions {
        input_size: a.input_size,
    };
    onnx::export_onnx(&file, &a.onnx, &opts, &policy)?;
    let side = a.input_size.unwrap_or(file.spec.input_size);
    let classes: Vec<&str> = file.spec.classes.iter().map(|c| c.name()).collect();
    println!(
        "wrote {} ({}: input pixels (batch, 1, {side}, {side}) gray 0..255, output probs over {})",
        a.onnx.display(),
        printable(&file.spec.name),
        classes.join(", ")
    );
    Ok(ExitCode::SUCCESS)
}
