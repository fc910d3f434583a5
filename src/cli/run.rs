//! `emocam run`: the pipeline without a window, over one source or a batch of them.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::ValueEnum;
use emocam::capture::{self, SourceSpec};
use emocam::detect::DetectorConfig;
use emocam::headless::{self, RunOptions, StopSignals};
use emocam::pipeline::PipelineConfig;
use emocam::session::{Session, SessionConfig};

use super::{PaceArgs, WeightsArgs, load_classifier};

/// Options of `emocam run`.
#[derive(clap::Args)]
pub struct RunArgs {
    /// What to read: `demo`, `demo:SCENE`, `camera:N`, a video, a stream URL, a folder of
    /// images, a GIF or an image. Repeat for several; a folder of videos runs each of them.
    #[arg(long = "source", value_name = "SRC")]
    sources: Vec<SourceSpec>,
    #[command(flatten)]
    pace: PaceArgs,
    #[command(flatten)]
    weights: WeightsArgs,
    /// Write one row per face per processed frame to this CSV file (one source).
    #[arg(long, conflicts_with = "out_dir")]
    csv: Option<PathBuf>,
    /// Write one CSV per source into this folder, named after the source (batches).
    #[arg(long, value_name = "DIR")]
    out_dir: Option<PathBuf>,
    /// Also write the video with each face's box, id, top emotion and bars drawn on it, as
    /// H.264 MP4 (one source; every frame: implies --fps 0 unless --fps is given).
    #[arg(long, value_name = "OUT.mp4")]
    annotate: Option<PathBuf>,
    /// Replace existing output files instead of refusing to.
    #[arg(long)]
    overwrite: bool,
    /// Stop after this many processed frames (of each source).
    #[arg(long)]
    max_frames: Option<u64>,
    /// Face search: `thorough` (each frame searched whole at full resolution, fine steps) or
    /// `live` (faces followed from frame to frame, whole-frame searches for new ones at the
    /// scale --min-face needs); default: thorough for still images and folders of them, live
    /// for video, cameras and the demo (and `live` treats stills as frames of a video).
    #[arg(long, value_enum)]
    detector: Option<Detector>,
    /// Smallest face to find in video, in pixels of the frame (default: 5% of the frame
    /// height, at least 40); smaller values search finer and cost more.
    #[arg(long, value_name = "PIXELS", value_parser = clap::value_parser!(u32).range(1..))]
    min_face: Option<u32>,
    /// Run every pass of the model on every frame of a paced source. By default a followed
    /// face gets one of the default model's four passes a frame, scored from the latest of
    /// each (a quarter of the model's CPU time); unpaced runs (--fps 0) always run every pass.
    #[arg(long)]
    every_pass: bool,
    /// Print each source's summary as one JSON line.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum Detector {
    Live,
    Thorough,
}

pub fn run(a: RunArgs) -> Result<ExitCode> {
    let specs = if a.sources.is_empty() {
        vec![SourceSpec::Demo(None)]
    } else {
        capture::expand_batch(&a.sources)?
    };
    if specs.len() > 1 && a.annotate.is_some() {
        anyhow::bail!(
            "--annotate names one video but {} sources were given; annotate one at a time",
            specs.len()
        );
    }
    if specs.len() > 1 && a.csv.is_some() {
        anyhow::bail!(
            "--csv names one file but {} sources were given; use --out-dir DIR for one CSV per source",
            specs.len()
        );
    }
    let csv_paths = match &a.out_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create --out-dir {}", dir.display()))?;
            headless::batch_csv_paths(dir, &specs)
        }
        None => vec![a.csv.clone(); specs.len()],
    };
    let signals = StopSignals::install()?;
    let progress = !a.json && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut code = ExitCode::SUCCESS;
    for (i, (spec, csv)) in specs.into_iter().zip(csv_paths).enumerate() {
        let classifier = load_classifier(&a.weights)?;
        let still = capture::is_still(&spec);
        let detector = match a.detector {
            Some(Detector::Thorough) => DetectorConfig::thorough(),
            None if still => DetectorConfig::thorough(),
            Some(Detector::Live) | None => DetectorConfig::tracking(),
        };
        // Still images stand alone (each searched whole, nothing carried over) unless told to
        // be read as a video.
        let tracking = match a.detector {
            Some(Detector::Live) => true,
            Some(Detector::Thorough) => false,
            None => !still,
        };
        let mut source_options = a.pace.options();
        if a.annotate.is_some() && source_options.fps.is_none() {
            // An annotated video has every frame of its source.
            source_options.fps = Some(0.0);
        }
        let config = SessionConfig {
            source: spec.clone(),
            source_options,
            weights: a.weights.weights.clone(),
            pipeline: PipelineConfig {
                detector,
                tracking,
                min_face: a.min_face,
                every_pass: a.every_pass,
                ..PipelineConfig::default()
            },
            ..SessionConfig::default()
        };
        let waker = std::sync::Arc::new(|| {});
        let mut session = match Session::start(config, classifier, waker) {
            Ok(s) => s,
            Err(e) => {
                report_failure(&spec, &e.to_string(), a.json);
                code = ExitCode::FAILURE;
                continue;
            }
        };
        let opts = RunOptions {
            max_frames: a.max_frames,
            csv,
            overwrite: a.overwrite,
            progress,
            annotate: a.annotate.clone(),
        };
        let summary = match headless::run(&mut session, &opts, &signals) {
            Ok(s) => s,
            Err(e) => {
                report_failure(&spec, &e.to_string(), a.json);
                code = ExitCode::FAILURE;
                continue;
            }
        };
        if a.json {
            println!("{}", serde_json::to_string(&summary)?);
        } else {
            if i > 0 {
                println!();
            }
            print!("{summary}");
        }
        if let Some(e) = &summary.error {
            eprintln!("emocam: {}", emocam::text::printable(e));
            code = ExitCode::FAILURE;
        }
        if let Some(sig) = summary.stopped_by {
            return Ok(ExitCode::from(sig.exit_code()));
        }
    }
    Ok(code)
}

/// A source that could not start: said on stderr, and as a JSON line with `--json` so that a
/// batch's output still has one line per source.
fn report_failure(spec: &SourceSpec, error: &str, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::json!({"source": spec.to_string(), "error": error})
        );
    }
    eprintln!(
        "emocam: cannot open source {}: {}",
        emocam::text::printable(&spec.to_string()),
        emocam::text::printable(error)
    );
}
