//! What a training run is asked to do ([`TrainConfig`]), which network ([`NetConfig`]), and
//! [`TrainConfig::validate`], which refuses settings that cannot train.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::augment::Augment;
use crate::error::{Error, Result};
use crate::model::Architecture;
use crate::model::mini_xception_train::TrainableMiniXception;
use crate::model::vgg::VggConfig;

/// Which optimiser.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OptimizerKind {
    Sgd,
    AdamW,
}

/// Which loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LossKind {
    /// Cross-entropy on the logits.
    CrossEntropy,
    /// Mean squared error between the softmax and the one-hot target.
    Mse,
}

/// Which network to train, and its shape.
#[derive(Debug, Clone, PartialEq)]
pub enum NetConfig {
    /// The VGG-style CNN ([`crate::model::vgg::Vgg`]).
    Vgg(VggConfig),
    /// mini-Xception ([`TrainableMiniXception`]), 64x64 input.
    MiniXception { classes: usize, bn_eps: f64 },
}

impl NetConfig {
    /// mini-Xception with the shipped model's batch-norm epsilon (Keras' 1e-3).
    pub fn mini_xception(classes: usize) -> Self {
        NetConfig::MiniXception {
            classes,
            bn_eps: 1e-3,
        }
    }

    /// Number of output classes.
    pub fn classes(&self) -> usize {
        match self {
            NetConfig::Vgg(c) => c.classes,
            NetConfig::MiniXception { classes, .. } => *classes,
        }
    }

    /// Side of the square input.
    pub fn input_size(&self) -> usize {
        match self {
            NetConfig::Vgg(c) => c.input_size,
            NetConfig::MiniXception { .. } => 64,
        }
    }

    /// Number of blocks `--freeze` can keep fixed.
    pub fn num_blocks(&self) -> usize {
        match self {
            NetConfig::Vgg(c) => c.widths.len(),
            NetConfig::MiniXception { .. } => TrainableMiniXception::PARTS.len(),
        }
    }

    pub(super) fn architecture(&self) -> Architecture {
        match self {
            NetConfig::Vgg(_) => Architecture::Vgg,
            NetConfig::MiniXception { .. } => Architecture::MiniXception,
        }
    }

    pub(super) fn bn_eps(&self) -> f64 {
        match self {
            NetConfig::Vgg(c) => c.bn_eps,
            NetConfig::MiniXception { bn_eps, .. } => *bn_eps,
        }
    }

    /// A short name for the model, e.g. `vgg 16-32-64-128`.
    pub(super) fn label(&self) -> String {
        match self {
            NetConfig::Vgg(c) => format!(
                "vgg {}",
                c.widths
                    .iter()
                    .map(|w| w.to_string())
                    .collect::<Vec<_>>()
                    .join("-")
            ),
            NetConfig::MiniXception { .. } => "mini-Xception".into(),
        }
    }
}

/// Everything a training run needs.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    pub net: NetConfig,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub optimizer: OptimizerKind,
    pub momentum: f64,
    pub weight_decay: f64,
    pub loss: LossKind,
    /// Epochs of linear learning-rate warm-up before the cosine decay.
    pub warmup_epochs: usize,
    /// Weight each class by the inverse of its frequency (helps the rare 'disgust').
    pub class_weighting: bool,
    /// `None` trains without augmentation.
    pub augment: Option<Augment>,
    /// Start from these weights (fine-tuning); a new head is made if the class count differs.
    pub init: Option<PathBuf>,
    /// Learn from a trained model's probabilities as well as from the labels.
    pub distill: Option<Distill>,
    /// Train the net to complement another model.
    pub partner: Option<Partner>,
    /// Keep the first N blocks fixed.
    pub freeze: usize,
    /// Stop after this many epochs without a better validation accuracy.
    pub patience: usize,
    /// Best weights go here; `<out>.log.csv`, `<out>.curves.png`, `<out>.last.safetensors` and
    /// `<out>.state.json` beside it.
    pub out: PathBuf,
    pub seed: u64,
    /// Continue from `<out>.last.safetensors`, `<out>.opt.safetensors` and `<out>.state.json`.
    pub resume: bool,
    /// End this invocation after this many epochs (the run can go on with `resume`), for
    /// machines that cut long jobs off.
    pub stop_after: Option<usize>,
    /// Threads per step: each takes a slice of the batch (with its own batch-norm
    /// statistics). One thread per core nearly doubles throughput on two cores. `None`: the
    /// count a resumed run used (so that it goes on exactly), else one per core.
    pub threads: Option<usize>,
    /// Shown progress bars.
    pub progress: bool,
    /// The command line, recorded in the weights metadata.
    pub command: String,
    /// Where the training data came from, recorded in the metadata.
    pub data_description: String,
}

/// Knowledge distillation: the loss also pulls the net towards a teacher's probabilities,
/// which carry what the labels cannot (how alike two expressions look, and a second opinion
/// on FER2013's mislabelled faces), so a small net can learn what a larger ensemble knows.
#[derive(Debug, Clone)]
pub struct Distill {
    /// Any weights file the app loads, an ensemble included. It labels every training image
    /// once, averaged with the mirror image so that flipped augmentations keep their target.
    /// Or a teacher table ([`super::save_teacher_table`]) holding such labels made elsewhere.
    pub teacher: PathBuf,
    /// Share of the loss that follows the teacher (0 to 1); the rest follows the labels.
    pub weight: f64,
    /// Both distributions are softened by this temperature (> 0; above 1 brings out the
    /// teacher's ranking of the unlikely classes). The teacher's term is scaled by its square
    /// so that its gradients keep their size.
    pub temperature: f64,
}

/// A model the trained net will be paired with (`emocam ensemble OUT PARTNER`): every loss, and
/// the validation accuracy that picks the best epoch, are those of the average of the two
/// nets' probabilities, so the net learns what the partner gets wrong instead of repeating what
/// it already knows.
#[derive(Debug, Clone)]
pub struct Partner {
    /// Any weights file the app loads.
    pub path: PathBuf,
    /// The pair will average the partner's scores of each face with its mirror image's
    /// (`ensemble --flip`): validation scores it that way too. (Training images are always
    /// mirror-averaged, since flipped augmentations must keep their scores.)
    pub flip: bool,
}

impl TrainConfig {
    /// `Err` for settings that cannot train; [`super::train`] calls it first.
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 || self.epochs == 0 || !(self.lr > 0.0 && self.lr < 10.0) {
            return Err(invalid(
                "training settings",
                format!(
                    "batch size {}, epochs {}, lr {}: expected positive values and lr < 10",
                    self.batch_size, self.epochs, self.lr
                ),
            ));
        }
        if let Some(d) = &self.distill
            && !((0.0..=1.0).contains(&d.weight) && d.temperature > 0.0 && d.temperature <= 100.0)
        {
            return Err(invalid(
                "distillation settings",
                format!(
                    "weight {}, temperature {}: expected a weight from 0 to 1 and a temperature \
                     above 0 (at most 100)",
                    d.weight, d.temperature
                ),
            ));
        }
        if let NetConfig::Vgg(v) = &self.net
            && v.input_size >> v.widths.len() == 0
        {
            return Err(invalid(
                "--widths",
                format!(
                    "{} blocks halve a {}-pixel input to nothing; use at most {}",
                    v.widths.len(),
                    v.input_size,
                    v.input_size.max(1).ilog2()
                ),
            ));
        }
        if self.stop_after == Some(0) {
            return Err(invalid(
                "--stop-after",
                "0 epochs: expected at least 1".into(),
            ));
        }
        if self.freeze > self.net.num_blocks() {
            return Err(invalid(
                "--freeze",
                format!(
                    "{} blocks asked, the net has {}",
                    self.freeze,
                    self.net.num_blocks()
                ),
            ));
        }
        Ok(())
    }
}

fn invalid(what: &str, reason: String) -> Error {
    Error::InvalidInput {
        what: what.into(),
        reason,
    }
}
