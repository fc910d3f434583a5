//! `emocam eval`: a classifier's accuracy on labelled face crops.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use emocam::model::describe_source;
use emocam::outfile::{self, OutputPolicy};
use emocam::text::printable;
use emocam::{dataset, eval};

use super::{WeightsArgs, load_classifier};

/// Options of `emocam eval`.
#[derive(clap::Args)]
pub struct EvalArgs {
    /// A folder of <class>/<images> or a FER2013 CSV (emotion,pixels[,Usage]).
    #[arg(long)]
    data: PathBuf,
    #[command(flatten)]
    weights: WeightsArgs,
    /// Only CSV rows whose Usage column equals this (e.g. PublicTest).
    #[arg(long)]
    usage: Option<String>,
    /// Average each face with its mirror image.
    #[arg(long)]
    tta: bool,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    json: bool,
    /// Also write one CSV row per face: source, true and predicted class, probabilities.
    #[arg(long, value_name = "CSV")]
    per_image: Option<PathBuf>,
    /// Replace an existing --per-image file.
    #[arg(long)]
    overwrite: bool,
}

pub fn run(a: EvalArgs) -> Result<ExitCode> {
    let weights = a.weights.weights.as_deref();
    let classifier = load_classifier(&a.weights)?;
    let mut policy = OutputPolicy::new()
        .with_overwrite(a.overwrite)
        .with_input(&a.data);
    if let Some(w) = weights {
        policy = policy.with_input(w);
    }
    if let Some(csv) = &a.per_image {
        // Refused before the dataset is decoded, which can take a while.
        outfile::check_output(csv, &policy)?;
    }
    let set = dataset::load(&a.data, a.usage.as_deref())?;
    let report = match &a.per_image {
        Some(csv) => eval::evaluate_to_csv(&classifier, &set, a.tta, csv, &policy)?,
        None => eval::evaluate(&classifier, &set, a.tta)?,
    };
    if a.json {
        let mut v = report.to_json();
        v["model"] = classifier.name().into();
        v["weights"] = describe_source(weights).into();
        v["data"] = a.data.display().to_string().into();
        println!("{v}");
    } else {
        println!(
            "model: {} ({})",
            printable(classifier.name()),
            printable(&describe_source(weights))
        );
        println!("data:  {}", printable(&a.data.display().to_string()));
        print!("{report}");
    }
    Ok(ExitCode::SUCCESS)
}
