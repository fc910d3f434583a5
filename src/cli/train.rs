//! `emocam train`: its options and how they become a `TrainConfig`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::ValueEnum;
use emocam::dataset;

/// Options of `emocam train`.
#[derive(clap::Args)]
pub struct TrainArgs {
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

fn load_split(path: &Path, usage: &str) -> Result<dataset::LabeledFaces> {
    let usage = (!path.is_dir()).then_some(usage);
    Ok(dataset::load(path, usage)?)
}

pub fn run(a: TrainArgs) -> Result<ExitCode> {
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
