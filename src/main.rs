//! The `emocam` command line: clap parses it, and each subcommand's few lines of wiring in
//! `cli/` hand it to the library. Errors are printed once, here.

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Facial-emotion recognition from a webcam, videos and images: rustface finds the faces, a
/// CNN scores their expressions.
///
/// With no subcommand, opens the desktop app on the first camera (or the built-in demo when
/// there is no camera).
#[derive(Parser)]
#[command(
    name = "emocam",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    app: cli::app::AppArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Detect faces in image files and print each face's box and emotion scores.
    Predict(cli::predict::PredictArgs),
    /// Run the pipeline without a window over a camera, a video, a folder or several of them:
    /// CSV rows per face and frame, and a summary.
    Run(Box<cli::run::RunArgs>),
    /// Train a classifier on labelled face crops; writes weights the app loads unchanged.
    #[command(allow_negative_numbers = true)]
    Train(Box<cli::train::TrainArgs>),
    /// Combine two or more weights files into one ensemble that averages their probabilities.
    Ensemble {
        /// Where to write the ensemble.
        #[arg(long)]
        out: PathBuf,
        /// Name shown in the app and written to recordings.
        #[arg(long, default_value = "emocam ensemble")]
        name: String,
        /// Member number (1 = the first file) whose faces are averaged with their mirror
        /// image; repeat for several. Costs that member a second forward pass per face.
        #[arg(long = "flip", value_name = "N")]
        flip: Vec<usize>,
        /// Replace an existing file at --out.
        #[arg(long)]
        overwrite: bool,
        /// The members' weights files.
        #[arg(required = true, num_args = 2..)]
        members: Vec<PathBuf>,
    },
    /// Measure a classifier on labelled face crops (class folders or a FER2013 CSV).
    Eval(cli::eval::EvalArgs),
    /// Make a self-contained HTML report (and a PNG summary) of a recording's CSV.
    Report(cli::report::ReportArgs),
    /// Write a model as one ONNX graph (gray pixels 0..255 in, probabilities out) for
    /// onnxruntime, OpenCV's DNN module or a browser; see docs/onnx.md.
    Export(cli::export::ExportArgs),
}

fn main() -> ExitCode {
    emocam::runtime::init_cpu_runtime();
    let cli = Cli::parse();
    // Only the subcommands print for a reader that may go away; the window keeps Rust's
    // ignored SIGPIPE, since its display connections can see a closed socket while they close.
    if cli.command.is_some() {
        cli::quiet_on_closed_pipe();
    }
    let result = match cli.command {
        Some(Command::Predict(a)) => cli::predict::run(a),
        Some(Command::Eval(a)) => cli::eval::run(a),
        Some(Command::Report(a)) => cli::report::run(a),
        Some(Command::Run(a)) => cli::run::run(*a),
        Some(Command::Train(a)) => cli::train::run(*a),
        Some(Command::Ensemble {
            out,
            name,
            flip,
            overwrite,
            members,
        }) => ensemble(out, &name, &flip, overwrite, &members),
        Some(Command::Export(a)) => cli::export::run(a),
        None => cli::app::run(cli.app),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("emocam: {}", emocam::text::printable(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

fn ensemble(
    out: PathBuf,
    name: &str,
    flip: &[usize],
    overwrite: bool,
    members: &[PathBuf],
) -> anyhow::Result<ExitCode> {
    if let Some(bad) = flip.iter().find(|&&n| n == 0) {
        anyhow::bail!("--flip {bad}: members are numbered from 1");
    }
    let flip: Vec<usize> = flip.iter().map(|n| n - 1).collect();
    let paths: Vec<&std::path::Path> = members.iter().map(PathBuf::as_path).collect();
    let spec = emocam::model::ensemble::combine_with(&paths, &out, name, &flip, overwrite)?;
    println!(
        "wrote {} ({} members, input {}x{})",
        out.display(),
        paths.len(),
        spec.input_size,
        spec.input_size
    );
    Ok(ExitCode::SUCCESS)
}
