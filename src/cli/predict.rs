//! `emocam predict`: faces and scores of still images.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::ValueEnum;
use emocam::output::{PredictText, predict_csv_header, predict_csv_rows, predict_json};
use emocam::text::printable;
use emocam::{DetectorConfig, FaceDetector, Recognizer, imaging};

use super::{WeightsArgs, load_classifier};

/// Options of `emocam predict`.
#[derive(clap::Args)]
pub struct PredictArgs {
    #[command(flatten)]
    weights: WeightsArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Average each face with its mirror image.
    #[arg(long)]
    tta: bool,
    /// Image files (PNG, JPEG, GIF).
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
    Csv,
}

pub fn run(a: PredictArgs) -> Result<ExitCode> {
    let classifier = load_classifier(&a.weights)?;
    let classes = classifier.classes().clone();
    let detector = FaceDetector::new(DetectorConfig::thorough())?;
    let mut rec = Recognizer::new(detector, classifier);
    rec.tta = a.tta;
    let mut failed = 0usize;
    let mut out = std::io::stdout().lock();
    if let Format::Csv = a.format {
        out.write_all(&predict_csv_header(&classes))?;
    }
    for path in &a.images {
        let name = path.display().to_string();
        let faces = match imaging::load_rgb(path).and_then(|rgb| rec.analyze(&rgb)) {
            Ok(f) => f,
            Err(e) => {
                failed += 1;
                eprintln!("emocam: {}", printable(&e.to_string()));
                if let Format::Json = a.format {
                    let line = serde_json::json!({"image": name, "error": e.to_string()});
                    writeln!(out, "{line}")?;
                }
                continue;
            }
        };
        match a.format {
            Format::Json => writeln!(out, "{}", predict_json(&name, &faces))?,
            Format::Csv => {
                out.write_all(&predict_csv_rows(&name, &faces))?;
                if faces.is_empty() {
                    eprintln!("{}: no face found", printable(&name));
                }
            }
            Format::Text => {
                let text = PredictText {
                    image: &name,
                    faces: &faces,
                };
                write!(out, "{text}")?;
            }
        }
    }
    out.flush()?;
    if failed > 0 {
        eprintln!(
            "emocam: {failed} of {} images could not be read",
            a.images.len()
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
