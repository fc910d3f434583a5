//! The `emocam` command line: parses arguments and calls into the library.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use emocam::capture::{SourceOptions, SourceSpec};
use emocam::headless::{RunOptions, run};
use emocam::model::{Classifier, describe_source};
use emocam::pipeline::{Pipeline, PipelineConfig};
use emocam::recognize::{PREDICT_CSV_HEADER, faces_csv_rows, faces_json};
use emocam::{DetectorConfig, FaceDetector, Recognizer, dataset, eval, imaging};

/// Live facial-emotion recognition: rustface finds faces, a candle CNN scores 7 emotions.
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
    app: AppArgs,
}

/// Options of the desktop app.
#[derive(clap::Args, Clone)]
struct AppArgs {
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

/// Where frames come from.
#[derive(clap::Args, Clone)]
struct SourceArgs {
    /// `demo`, `demo:SCENE`, `camera:N`, a folder of images, an animated GIF or an image.
    #[arg(long)]
    source: Option<SourceSpec>,
    /// Frames per second for file and demo sources; 0 = every frame, as fast as the pipeline
    /// takes them [default: a video's or GIF's own rate; 30 for folders and the demo].
    #[arg(long)]
    fps: Option<f64>,
    /// Start a file source again when it ends.
    #[arg(long = "loop")]
    looping: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Detect faces in image files and print each face's box and emotion scores.
    Predict {
        /// Weights file (.safetensors); default: the built-in model (weights/emocam-fer2013.safetensors).
        #[arg(long)]
        weights: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Average each face with its mirror image.
        #[arg(long)]
        tta: bool,
        /// Image files (PNG, JPEG, GIF).
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// Run the live pipeline without a window: CSV rows and a speed summary.
    Run {
        #[command(flatten)]
        source: SourceArgs,
        /// Weights file (.safetensors); default: the built-in model (weights/emocam-fer2013.safetensors).
        #[arg(long)]
        weights: Option<PathBuf>,
        /// Write one row per face per processed frame to this CSV file.
        #[arg(long)]
        csv: Option<PathBuf>,
        /// Stop after this many processed frames.
        #[arg(long)]
        max_frames: Option<u64>,
        /// Print the summary as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Train a classifier on labelled face crops; writes weights the app loads unchanged.
    Train(Box<TrainArgs>),
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
        /// The members' weights files.
        #[arg(required = true, num_args = 2..)]
        members: Vec<PathBuf>,
    },
    /// Make a self-contained HTML report (and a PNG summary) of a recording's CSV.
    Report {
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
    },
    /// Measure a classifier on labelled face crops (class folders or a FER2013 CSV).
    Eval {
        /// A folder of <class>/<images> or a FER2013 CSV (emotion,pixels[,Usage]).
        #[arg(long)]
        data: PathBuf,
        /// Weights file (.safetensors); default: the built-in model (weights/emocam-fer2013.safetensors).
        #[arg(long)]
        weights: Option<PathBuf>,
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
    },
}

/// End quietly when the reader of stdout goes away (`emocam eval ... | head`), as command-line
/// tools do; Rust ignores SIGPIPE, so `println!` would panic with a backtrace instead.
fn quiet_on_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: restores the default disposition of one signal, before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Options of `emocam train`.
#[derive(clap::Args)]
struct TrainArgs {
    /// Training data: a folder of <class>/<images> or a FER2013 CSV.
    #[arg(long)]
    data: PathBuf,
    /// Validation data (same forms); the best epoch is chosen on it.
    #[arg(long)]
    val: PathBuf,
    /// Usage rows of a CSV to train on.
    #[arg(long, default_value = "Training")]
    data_usage: String,
    /// Usage rows of a CSV to validate on.
    #[arg(long, default_value = "PublicTest")]
    val_usage: String,
    /// Architecture: `vgg` (widths below) or `mini_xception` (the shipped model's, 64x64).
    #[arg(long, default_value = "vgg")]
    arch: String,
    /// Channels of each VGG block [default: 16,32,64,128].
    #[arg(long)]
    widths: Option<String>,
    /// Width of the VGG's hidden dense layer [default: 256].
    #[arg(long)]
    dense: Option<usize>,
    #[arg(long, default_value_t = 30)]
    epochs: usize,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    #[arg(long, default_value_t = 2e-3)]
    lr: f64,
    #[arg(long, value_enum, default_value_t = OptArg::Adamw)]
    optimizer: OptArg,
    #[arg(long, default_value_t = 0.9)]
    momentum: f64,
    #[arg(long, default_value_t = 1e-4)]
    weight_decay: f64,
    /// Dropout after each VGG block and the hidden layer (training only) [default: 0]. From
    /// scratch on FER2013, 0 with augmentation learned fastest; 0.25 everywhere barely learned.
    #[arg(long)]
    dropout: Option<f32>,
    #[arg(long, value_enum, default_value_t = LossArg::Ce)]
    loss: LossArg,
    /// Epochs of learning-rate warm-up before the cosine decay.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Weight classes by inverse frequency: the rare 'disgust' gains recall, overall accuracy
    /// drops.
    #[arg(long)]
    class_weights: bool,
    /// Train without augmentation (flip, shift, rotation, brightness/contrast).
    #[arg(long)]
    no_augment: bool,
    /// Start from these weights (fine-tuning).
    #[arg(long)]
    init: Option<PathBuf>,
    /// Distil from this model (any weights file the app loads, an ensemble too), or from a
    /// teacher table of probabilities per training image made elsewhere (e.g. out-of-fold
    /// teachers: weights/teacher/oof_table.py): the loss also follows them for each image.
    #[arg(long, value_name = "FILE")]
    teacher: Option<PathBuf>,
    /// Share of the loss that follows the --teacher (0 to 1).
    #[arg(long, default_value_t = 0.7, requires = "teacher")]
    distill_weight: f64,
    /// Temperature that softens the --teacher's and the net's distributions.
    #[arg(long, default_value_t = 2.0, requires = "teacher")]
    temperature: f64,
    /// Train the net to complement this model: losses and the validation accuracy that picks
    /// the best epoch are those of the two averaged (make the pair with `emocam ensemble`).
    #[arg(long, value_name = "FILE")]
    partner: Option<PathBuf>,
    /// The pair will flip-average the --partner (`ensemble --flip`): validate it that way.
    #[arg(long, requires = "partner")]
    partner_flip: bool,
    /// Keep the first N blocks fixed.
    #[arg(long, default_value_t = 0)]
    freeze: usize,
    /// Stop after this many epochs without a better validation accuracy (0: never).
    #[arg(long, default_value_t = 8)]
    patience: usize,
    /// Output weights (the best epoch); log, last checkpoint and state go beside it
    /// [default: emocam-<arch>.safetensors].
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Threads per training step, each on a slice of the batch (data-parallel)
    /// [default: one per core; on --resume, the count the run used].
    #[arg(long)]
    threads: Option<usize>,
    /// Continue an interrupted run from <out>.last.safetensors (weights), <out>.opt.safetensors
    /// (optimiser state) and <out>.state.json (epochs done, history).
    #[arg(long)]
    resume: bool,
    /// End this invocation after N epochs; go on later with --resume (for machines that cut
    /// long jobs off).
    #[arg(long, value_name = "N")]
    stop_after: Option<usize>,
}

#[derive(Clone, Copy, ValueEnum)]
enum OptArg {
    Sgd,
    Adamw,
}

#[derive(Clone, Copy, ValueEnum)]
enum LossArg {
    Ce,
    Mse,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
    Csv,
}

fn main() -> ExitCode {
    emocam::runtime::init_cpu_runtime();
    quiet_on_closed_pipe();
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Predict {
            weights,
            format,
            tta,
            images,
        }) => predict(weights.as_deref(), format, tta, &images),
        Some(Command::Eval {
            data,
            weights,
            usage,
            tta,
            json,
            per_image,
        }) => run_eval(
            &data,
            weights.as_deref(),
            usage.as_deref(),
            tta,
            json,
            per_image.as_deref(),
        ),
        Some(Command::Run {
            source,
            weights,
            csv,
            max_frames,
            json,
        }) => run_headless(&source, weights.as_deref(), csv, max_frames, json),
        Some(Command::Train(args)) => run_train(*args),
        Some(Command::Report {
            recording,
            out,
            png,
            overwrite,
        }) => run_report(emocam::report::ReportRequest {
            recording,
            html: out,
            png,
            overwrite,
        }),
        Some(Command::Ensemble {
            out,
            name,
            flip,
            members,
        }) => {
            let paths: Vec<&Path> = members.iter().map(PathBuf::as_path).collect();
            if let Some(bad) = flip.iter().find(|&&n| n == 0) {
                eprintln!("emocam: --flip {bad}: members are numbered from 1");
                return ExitCode::FAILURE;
            }
            let flip: Vec<usize> = flip.iter().map(|n| n - 1).collect();
            emocam::model::ensemble::combine(&paths, &out, &name, &flip)
                .map(|spec| {
                    println!(
                        "wrote {} ({} members, input {}x{})",
                        out.display(),
                        paths.len(),
                        spec.input_size,
                        spec.input_size
                    );
                    ExitCode::SUCCESS
                })
                .map_err(Into::into)
        }
        None => run_app(cli.app),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("emocam: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_classifier(weights: Option<&Path>) -> Result<Classifier> {
    // The library's errors name the file already.
    Classifier::load_or_builtin(weights).context("cannot load weights")
}

fn predict(
    weights: Option<&Path>,
    format: Format,
    tta: bool,
    images: &[PathBuf],
) -> Result<ExitCode> {
    let classifier = load_classifier(weights)?;
    let detector = FaceDetector::new(DetectorConfig::thorough())?;
    let mut rec = Recognizer::new(detector, classifier);
    rec.tta = tta;
    let mut failed = 0usize;
    let mut out = std::io::stdout().lock();
    if let Format::Csv = format {
        writeln!(out, "{PREDICT_CSV_HEADER}")?;
    }
    for path in images {
        let name = path.display().to_string();
        let faces = imaging::load_rgb(path).and_then(|rgb| rec.analyze(&rgb));
        let faces = match faces {
            Ok(f) => f,
            Err(e) => {
                failed += 1;
                eprintln!("emocam: {e}");
                if let Format::Json = format {
                    writeln!(
                        out,
                        "{}",
                        serde_json::json!({"image": name, "error": e.to_string()})
                    )?;
                }
                continue;
            }
        };
        match format {
            Format::Json => writeln!(out, "{}", faces_json(&name, &faces))?,
            Format::Csv => {
                for row in faces_csv_rows(&name, &faces) {
                    writeln!(out, "{row}")?;
                }
                if faces.is_empty() {
                    eprintln!("{name}: no face found");
                }
            }
            Format::Text => {
                if faces.is_empty() {
                    writeln!(out, "{name}: no face found")?;
                }
                for (i, f) in faces.iter().enumerate() {
                    let (top, p) = f.scores.top();
                    let b = f.bbox;
                    writeln!(
                        out,
                        "{name}: face {i} at x={} y={} w={} h={}: {top} ({:.1}%)",
                        b.x,
                        b.y,
                        b.w,
                        b.h,
                        100.0 * p
                    )?;
                    let bars: Vec<String> = f
                        .scores
                        .iter()
                        .map(|(e, p)| format!("{} {:.1}%", e.name(), 100.0 * p))
                        .collect();
                    writeln!(out, "    {}", bars.join("  "))?;
                }
            }
        }
    }
    out.flush()?;
    if failed > 0 {
        eprintln!(
            "emocam: {failed} of {} images could not be read",
            images.len()
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn run_eval(
    data: &Path,
    weights: Option<&Path>,
    usage: Option<&str>,
    tta: bool,
    json: bool,
    per_image: Option<&Path>,
) -> Result<ExitCode> {
    let classifier = load_classifier(weights)?;
    let set = dataset::load(data, usage)?;
    let report = match per_image {
        Some(csv) => eval::evaluate_to_csv(&classifier, &set, tta, csv)?,
        None => eval::evaluate(&classifier, &set, tta)?,
    };
    if json {
        let mut v = report.to_json();
        v["model"] = classifier.name().into();
        v["weights"] = describe_source(weights).into();
        v["data"] = data.display().to_string().into();
        println!("{v}");
    } else {
        println!(
            "model: {} ({})",
            classifier.name(),
            describe_source(weights)
        );
        println!("data:  {}", data.display());
        print!("{report}");
    }
    Ok(ExitCode::SUCCESS)
}

fn source_options(s: &SourceArgs) -> SourceOptions {
    SourceOptions {
        fps: s.fps,
        looping: s.looping,
    }
}

fn run_app(args: AppArgs) -> Result<ExitCode> {
    let source = match (args.camera, args.source.source.clone()) {
        (Some(i), _) => Some(SourceSpec::Camera(i)),
        (None, s) => s,
    };
    let opts = emocam::gui::AppOptions {
        source,
        source_options: source_options(&args.source),
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

fn run_headless(
    source: &SourceArgs,
    weights: Option<&Path>,
    csv: Option<PathBuf>,
    max_frames: Option<u64>,
    json: bool,
) -> Result<ExitCode> {
    let classifier = load_classifier(weights)?;
    let model = classifier.name().to_string();
    let spec = source.source.clone().unwrap_or(SourceSpec::Demo(None));
    let src = emocam::capture::open(&spec, source_options(source))
        .with_context(|| format!("cannot open source {spec}"))?;
    let pipeline = Pipeline::start(
        src,
        classifier,
        PipelineConfig::default(),
        std::sync::Arc::new(|| {}),
    )?;
    let summary = run(pipeline, &model, &RunOptions { max_frames, csv })?;
    if json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!("source:   {}", summary.source);
        println!("model:    {}", summary.model);
        println!(
            "frames:   {} ({} with faces, {} faces in all), {} dropped",
            summary.frames, summary.frames_with_faces, summary.faces, summary.dropped
        );
        println!(
            "speed:    {:.1} frames/s over {:.2} s",
            summary.fps, summary.elapsed_secs
        );
        println!(
            "latency:  median {:.1} ms, p95 {:.1} ms (detect {:.1} ms, classify {:.2} ms per frame)",
            summary.latency_ms_median,
            summary.latency_ms_p95,
            summary.detect_ms_median,
            summary.infer_ms_median
        );
        if let Some(p) = &summary.csv {
            println!("csv:      {} rows in {}", summary.csv_rows, p.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn run_report(req: emocam::report::ReportRequest) -> Result<ExitCode> {
    let w = emocam::report::write_report(&req)?;
    for note in &w.notes {
        eprintln!("emocam: note: {note}");
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

fn load_split(path: &Path, usage: &str) -> Result<dataset::LabeledFaces> {
    let usage = (!path.is_dir()).then_some(usage);
    Ok(dataset::load(path, usage)?)
}

fn run_train(a: TrainArgs) -> Result<ExitCode> {
    use emocam::model::vgg::VggConfig;
    use emocam::train::{
        Augment, Distill, LossKind, NetConfig, OptimizerKind, Partner, TrainConfig,
    };
    let net = match a.arch.as_str() {
        "vgg" => {
            let mut c = VggConfig::half_width(emocam::Emotion::COUNT);
            c.dense = 256;
            c.dropout = 0.0;
            if let Some(w) = &a.widths {
                c.widths = w
                    .split(',')
                    .map(|w| w.trim().parse::<usize>())
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .with_context(|| {
                        format!("--widths {w:?}: expected comma-separated channel counts")
                    })?;
            }
            c.dense = a.dense.unwrap_or(c.dense);
            c.dropout = a.dropout.unwrap_or(c.dropout);
            NetConfig::Vgg(c)
        }
        "mini_xception" => {
            if a.widths.is_some() || a.dense.is_some() || a.dropout.is_some() {
                anyhow::bail!(
                    "--widths, --dense and --dropout shape the vgg; mini_xception has a fixed shape"
                );
            }
            // Fine-tuning keeps the batch-norm epsilon the weights were trained with.
            let bn_eps = match &a.init {
                Some(p) => emocam::model::WeightsFile::read(p)?.spec.bn_eps,
                None => 1e-3,
            };
            NetConfig::MiniXception {
                classes: emocam::Emotion::COUNT,
                bn_eps,
            }
        }
        other => anyhow::bail!("--arch {other}: expected `vgg` or `mini_xception`"),
    };
    let out = a.out.clone().unwrap_or_else(|| {
        PathBuf::from(format!("emocam-{}.safetensors", a.arch.replace('_', "-")))
    });
    let train_set = load_split(&a.data, &a.data_usage)?;
    let val_set = load_split(&a.val, &a.val_usage)?;
    eprintln!(
        "training on {} images, validating on {} ({:?} per class)",
        train_set.len(),
        val_set.len(),
        train_set.class_counts()
    );
    let cfg = TrainConfig {
        net,
        epochs: a.epochs,
        batch_size: a.batch_size,
        lr: a.lr,
        optimizer: match a.optimizer {
            OptArg::Sgd => OptimizerKind::Sgd,
            OptArg::Adamw => OptimizerKind::AdamW,
        },
        momentum: a.momentum,
        weight_decay: a.weight_decay,
        loss: match a.loss {
            LossArg::Ce => LossKind::CrossEntropy,
            LossArg::Mse => LossKind::Mse,
        },
        warmup_epochs: a.warmup,
        class_weighting: a.class_weights,
        augment: (!a.no_augment).then(Augment::default),
        init: a.init,
        distill: a.teacher.map(|teacher| Distill {
            teacher,
            weight: a.distill_weight,
            temperature: a.temperature,
        }),
        partner: a.partner.map(|path| Partner {
            path,
            flip: a.partner_flip,
        }),
        freeze: a.freeze,
        patience: a.patience,
        out,
        seed: a.seed,
        resume: a.resume,
        stop_after: a.stop_after,
        threads: a.threads,
        progress: true,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        data_description: format!(
            "train {} ({} images), val {} ({} images)",
            a.data.display(),
            train_set.len(),
            a.val.display(),
            val_set.len()
        ),
    };
    let s = emocam::train::train(&train_set, &val_set, &cfg)?;
    println!(
        "best val accuracy {:.4} at epoch {} of {}{}; weights in {}",
        s.best_val_acc,
        s.best_epoch,
        s.epochs_run,
        if s.stopped_early {
            " (stopped early)"
        } else {
            ""
        },
        s.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
