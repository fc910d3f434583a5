//! What a training run is asked to do ([`TrainConfig`]), which network ([`NetConfig`]), and
//! [`TrainConfig::validate`], which refuses settings that cannot train before anything is
//! allocated.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::augment::Augment;
use super::memory;
use crate::emotion::Emotion;
use crate::error::{Error, Result};
use crate::model::mini_xception_train::TrainableMiniXception;
use crate::model::vgg::VggConfig;
use crate::model::weights::MAX_WEIGHTS_BYTES;
use crate::model::{Architecture, INPUT_SIZE_RANGE};

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

/// The largest VGG shapes a weights file may declare (`VggConfig::from_metadata`): a net
/// trained beyond them could not be loaded again.
pub(super) const VGG_MAX_BLOCKS: usize = 6;
pub(super) const VGG_MAX_WIDTH: usize = 1024;
pub(super) const VGG_MAX_DENSE: usize = 8192;

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

    /// `Err` unless the shape can be built, trained and loaded again.
    fn validate(&self) -> Result<()> {
        let classes = self.classes();
        if !(2..=Emotion::COUNT).contains(&classes) {
            return Err(invalid(
                "class count",
                format!("{classes}: expected 2 to {} classes", Emotion::COUNT),
            ));
        }
        let eps = self.bn_eps();
        if !(eps > 0.0 && eps <= 1.0) {
            return Err(invalid(
                "batch-norm epsilon",
                format!("{eps}: expected a number above 0, at most 1"),
            ));
        }
        let NetConfig::Vgg(v) = self else {
            return Ok(());
        };
        let size = v.input_size;
        if !u32::try_from(size).is_ok_and(|s| INPUT_SIZE_RANGE.contains(&s)) {
            return Err(invalid(
                "input size",
                format!(
                    "{size} pixels: expected {} to {}",
                    INPUT_SIZE_RANGE.start(),
                    INPUT_SIZE_RANGE.end()
                ),
            ));
        }
        let widths = v
            .widths
            .iter()
            .map(|w| w.to_string())
            .collect::<Vec<_>>()
            .join(",");
        if v.widths.is_empty() || v.widths.len() > VGG_MAX_BLOCKS {
            return Err(invalid(
                "--widths",
                format!("{widths:?}: expected 1 to {VGG_MAX_BLOCKS} blocks"),
            ));
        }
        if let Some(w) = v.widths.iter().find(|w| !(1..=VGG_MAX_WIDTH).contains(*w)) {
            return Err(invalid(
                "--widths",
                format!("a block of {w} channels: expected 1 to {VGG_MAX_WIDTH} per block"),
            ));
        }
        if size >> v.widths.len() == 0 {
            return Err(invalid(
                "--widths",
                format!(
                    "{} blocks halve a {size}-pixel input to nothing; expected at most {}",
                    v.widths.len(),
                    size.max(1).ilog2()
                ),
            ));
        }
        if !(1..=VGG_MAX_DENSE).contains(&v.dense) {
            return Err(invalid(
                "--dense",
                format!("{}: expected a width of 1 to {VGG_MAX_DENSE}", v.dense),
            ));
        }
        if !(0.0..1.0).contains(&v.dropout) {
            return Err(invalid(
                "--dropout",
                format!(
                    "{}: expected a probability from 0 up to (not including) 1",
                    v.dropout
                ),
            ));
        }
        Ok(())
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

/// Largest accepted `--epochs`: keeps the step count (epochs x steps per epoch) far from
/// overflowing.
const MAX_EPOCHS: usize = 100_000;
/// Largest accepted `--batch-size` (the memory estimate usually refuses less).
const MAX_BATCH: usize = 65_536;
/// Largest accepted `--threads`.
const MAX_THREADS: usize = 1024;
/// Learning rates at or above this only diverge.
const MAX_LR: f64 = 10.0;
/// Largest accepted `--temperature`.
const MAX_TEMPERATURE: f64 = 100.0;

impl TrainConfig {
    /// `Err` naming the option and the accepted range for any setting that cannot train: a
    /// value out of range or not a number, a network shape that cannot be built or loaded
    /// again (its weights file too large included), or a step that would need more memory than
    /// this machine has
    /// ([`Self::step_memory_bytes`]). Checks the settings alone, before anything is read or
    /// allocated; [`super::train`] calls it first.
    pub fn validate(&self) -> Result<()> {
        self.validate_settings()?;
        let file = memory::weights_file_bytes(&self.net);
        if file > MAX_WEIGHTS_BYTES {
            return Err(invalid(
                "network size",
                format!(
                    "{}{}: its weights would take {}, more than the {} a weights file may \
                     have, so the result could not be loaded; use smaller --widths or --dense",
                    self.net.label(),
                    match &self.net {
                        NetConfig::Vgg(v) => format!(", dense {}", v.dense),
                        NetConfig::MiniXception { .. } => String::new(),
                    },
                    memory::human(file),
                    memory::human(MAX_WEIGHTS_BYTES)
                ),
            ));
        }
        let limit = memory::limit();
        let need = self.step_memory_bytes();
        if need > limit.bytes {
            return Err(invalid(
                "network and batch size",
                format!(
                    "a training step of {} with --batch-size {} needs about {} (weights, \
                     gradients, optimiser state and the batch's activations), more than the {} \
                     allowed ({}): use a smaller --batch-size, --widths or --dense",
                    self.net.label(),
                    self.batch_size,
                    memory::human(need),
                    memory::human(limit.bytes),
                    limit.source
                ),
            ));
        }
        Ok(())
    }

    /// About how many bytes one training step holds at its peak: the weights with their
    /// gradients (one set per thread) and optimiser state, and the activations of a batch,
    /// forward and backward. An estimate from the network's shape, computed without allocating.
    pub fn step_memory_bytes(&self) -> u64 {
        // `None` is one thread per core, or a resumed run's count (not known here).
        let threads = self
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .clamp(1, self.batch_size.max(1));
        memory::step_bytes(&self.net, self.batch_size, self.optimizer, threads)
    }

    /// Every check of [`Self::validate`] but the memory estimate.
    fn validate_settings(&self) -> Result<()> {
        if !(1..=MAX_EPOCHS).contains(&self.epochs) {
            return Err(invalid(
                "--epochs",
                format!("{}: expected 1 to {MAX_EPOCHS}", self.epochs),
            ));
        }
        if !(1..=MAX_BATCH).contains(&self.batch_size) {
            return Err(invalid(
                "--batch-size",
                format!("{}: expected 1 to {MAX_BATCH} images", self.batch_size),
            ));
        }
        if !(self.lr > 0.0 && self.lr < MAX_LR) {
            return Err(invalid(
                "--lr",
                format!("{}: expected a number above 0 and below {MAX_LR}", self.lr),
            ));
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return Err(invalid(
                "--momentum",
                format!(
                    "{}: expected a number from 0 up to (not including) 1",
                    self.momentum
                ),
            ));
        }
        if !(0.0..=1.0).contains(&self.weight_decay) {
            return Err(invalid(
                "--weight-decay",
                format!("{}: expected a number from 0 to 1", self.weight_decay),
            ));
        }
        // Each step keeps `1 - lr * weight_decay` of every weight: at 1 or more it flips signs.
        if self.lr * self.weight_decay >= 1.0 {
            return Err(invalid(
                "--weight-decay",
                format!(
                    "{} with --lr {}: each step would keep {} of every weight; expected \
                     --lr x --weight-decay below 1",
                    self.weight_decay,
                    self.lr,
                    1.0 - self.lr * self.weight_decay
                ),
            ));
        }
        if let Some(d) = &self.distill {
            if !(0.0..=1.0).contains(&d.weight) {
                return Err(invalid(
                    "--distill-weight",
                    format!("{}: expected a share from 0 to 1", d.weight),
                ));
            }
            if !(d.temperature > 0.0 && d.temperature <= MAX_TEMPERATURE) {
                return Err(invalid(
                    "--temperature",
                    format!(
                        "{}: expected a number above 0, at most {MAX_TEMPERATURE}",
                        d.temperature
                    ),
                ));
            }
        }
        if self.stop_after == Some(0) {
            return Err(invalid(
                "--stop-after",
                "0 epochs: expected at least 1".into(),
            ));
        }
        if let Some(t) = self.threads
            && !(1..=MAX_THREADS).contains(&t)
        {
            return Err(invalid(
                "--threads",
                format!("{t}: expected 1 to {MAX_THREADS}"),
            ));
        }
        self.net.validate()?;
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
        if let Some(a) = &self.augment {
            validate_augment(a, self.net.input_size())?;
        }
        Ok(())
    }
}

/// `Err` unless every strength of `a` is a number in its range.
fn validate_augment(a: &Augment, input_size: usize) -> Result<()> {
    let share = |v: f32| (0.0..=1.0).contains(&v);
    let checks = [
        ("flip", share(a.flip), "a probability from 0 to 1"),
        ("brightness", share(a.brightness), "a share from 0 to 1"),
        ("contrast", share(a.contrast), "a share from 0 to 1"),
        (
            "rotation",
            (0.0..=180.0).contains(&a.rotate_deg),
            "0 to 180 degrees",
        ),
        (
            "shift",
            usize::try_from(a.shift).is_ok_and(|s| s <= input_size / 2),
            "0 pixels up to half the input",
        ),
    ];
    match checks.iter().find(|(_, ok, _)| !ok) {
        Some((what, _, expected)) => Err(invalid(
            &format!("augmentation {what}"),
            format!("{a:?}: expected {expected}"),
        )),
        None => Ok(()),
    }
}

fn invalid(what: &str, reason: String) -> Error {
    Error::InvalidInput {
        what: what.into(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> TrainConfig {
        TrainConfig {
            net: NetConfig::Vgg(VggConfig {
                dense: 256,
                dropout: 0.0,
                ..VggConfig::half_width(7)
            }),
            epochs: 30,
            batch_size: 64,
            lr: 2e-3,
            optimizer: OptimizerKind::AdamW,
            momentum: 0.9,
            weight_decay: 1e-4,
            loss: LossKind::CrossEntropy,
            warmup_epochs: 1,
            class_weighting: false,
            augment: Some(Augment::default()),
            init: None,
            distill: Some(Distill {
                teacher: "t.safetensors".into(),
                weight: 0.7,
                temperature: 2.0,
            }),
            partner: None,
            freeze: 0,
            patience: 8,
            out: "out.safetensors".into(),
            seed: 1,
            resume: false,
            stop_after: None,
            threads: Some(2),
            progress: false,
            command: String::new(),
            data_description: String::new(),
        }
    }

    /// The message of the error `validate_settings` gives after `change`.
    fn refusal(change: impl FnOnce(&mut TrainConfig)) -> String {
        let mut c = config();
        change(&mut c);
        match c.validate_settings() {
            Ok(()) => "accepted".into(),
            Err(e) => e.to_string(),
        }
    }

    fn vgg(c: &mut TrainConfig) -> &mut VggConfig {
        match &mut c.net {
            NetConfig::Vgg(v) => v,
            NetConfig::MiniXception { .. } => unreachable!("the test config is a VGG"),
        }
    }

    fn distill(c: &mut TrainConfig) -> &mut Distill {
        c.distill.as_mut().expect("the test config distils")
    }

    #[test]
    fn the_default_recipes_are_accepted() {
        assert_eq!(refusal(|_| {}), "accepted");
        assert!(config().validate().is_ok());
        let mut c = config();
        c.net = NetConfig::mini_xception(7);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn each_refusal_names_the_option_and_its_range() {
        type Change = Box<dyn FnOnce(&mut TrainConfig)>;
        let cases: Vec<(&str, Change)> = vec![
            ("--momentum: NaN", Box::new(|c| c.momentum = f64::NAN)),
            ("--momentum: 1:", Box::new(|c| c.momentum = 1.0)),
            (
                "--weight-decay: NaN",
                Box::new(|c| c.weight_decay = f64::NAN),
            ),
            ("--weight-decay: -0.1", Box::new(|c| c.weight_decay = -0.1)),
            ("--lr: NaN", Box::new(|c| c.lr = f64::NAN)),
            ("--lr: inf", Box::new(|c| c.lr = f64::INFINITY)),
            ("--lr: 0:", Box::new(|c| c.lr = 0.0)),
            ("--batch-size: 0", Box::new(|c| c.batch_size = 0)),
            ("--epochs: 0", Box::new(|c| c.epochs = 0)),
            ("--threads: 0", Box::new(|c| c.threads = Some(0))),
            ("--stop-after", Box::new(|c| c.stop_after = Some(0))),
            ("--freeze", Box::new(|c| c.freeze = 5)),
            (
                "--distill-weight: NaN",
                Box::new(|c| distill(c).weight = f64::NAN),
            ),
            (
                "--distill-weight: 1.5",
                Box::new(|c| distill(c).weight = 1.5),
            ),
            (
                "--temperature: NaN",
                Box::new(|c| distill(c).temperature = f64::NAN),
            ),
            (
                "--temperature: 0:",
                Box::new(|c| distill(c).temperature = 0.0),
            ),
            (
                "--widths: a block of 0 channels",
                Box::new(|c| vgg(c).widths = vec![0, 0]),
            ),
            (
                "--widths: a block of 100000",
                Box::new(|c| vgg(c).widths = vec![100_000]),
            ),
            ("--widths: \"\"", Box::new(|c| vgg(c).widths = vec![])),
            (
                "--widths: 6 blocks halve",
                Box::new(|c| vgg(c).widths = vec![8; 6]),
            ),
            ("--dense: 0", Box::new(|c| vgg(c).dense = 0)),
            (
                "--dense: 100000000",
                Box::new(|c| vgg(c).dense = 100_000_000),
            ),
            ("--dropout: NaN", Box::new(|c| vgg(c).dropout = f32::NAN)),
            ("class count: 9", Box::new(|c| vgg(c).classes = 9)),
            ("input size: 8 pixels", Box::new(|c| vgg(c).input_size = 8)),
            (
                "augmentation flip",
                Box::new(|c| c.augment.as_mut().expect("augmented").flip = f32::NAN),
            ),
        ];
        for (expected, change) in cases {
            let msg = refusal(change);
            assert!(
                msg.starts_with(&format!("invalid {expected}")),
                "expected 'invalid {expected}...', got: {msg}"
            );
            assert!(
                msg.contains("expected") || msg.contains("asked"),
                "{msg}: says what is accepted"
            );
        }
    }

    #[test]
    fn weight_decay_may_not_flip_the_weights_sign() {
        let msg = refusal(|c| {
            c.lr = 5.0;
            c.weight_decay = 0.5;
        });
        assert!(msg.contains("below 1"), "{msg}");
        assert_eq!(
            refusal(|c| {
                c.lr = 5.0;
                c.weight_decay = 0.1;
            }),
            "accepted"
        );
    }

    /// The shape limits are the loader's: a net at the limits loads, one beyond is refused by
    /// both.
    #[test]
    fn the_vgg_limits_are_the_loaders() {
        let at = VggConfig {
            widths: vec![VGG_MAX_WIDTH; VGG_MAX_BLOCKS],
            dense: VGG_MAX_DENSE,
            input_size: 64,
            ..VggConfig::half_width(7)
        };
        let reload = |c: &VggConfig| VggConfig::from_metadata(&c.to_metadata(), 7, 64, 1e-5);
        assert_eq!(reload(&at).as_ref(), Ok(&at));
        assert!(NetConfig::Vgg(at.clone()).validate().is_ok());
        for beyond in [
            VggConfig {
                widths: vec![VGG_MAX_WIDTH + 1],
                ..at.clone()
            },
            VggConfig {
                widths: vec![8; VGG_MAX_BLOCKS + 1],
                input_size: 256,
                ..at.clone()
            },
            VggConfig {
                dense: VGG_MAX_DENSE + 1,
                ..at.clone()
            },
        ] {
            assert!(reload(&beyond).is_err(), "{beyond:?} loads");
            assert!(NetConfig::Vgg(beyond).validate().is_err());
        }
    }

    /// A net whose weights file the app would refuse (over 256 MiB) is refused before
    /// training, even where memory would allow it.
    #[test]
    fn a_net_too_large_to_load_again_is_refused() {
        let mut c = config();
        vgg(&mut c).widths = vec![1024, 1024];
        vgg(&mut c).dense = VGG_MAX_DENSE;
        c.batch_size = 1;
        assert!(c.validate_settings().is_ok());
        let msg = c.validate().unwrap_err().to_string();
        assert!(
            msg.starts_with("invalid network size: vgg 1024-1024, dense 8192")
                && msg.contains("more than the 256 MiB"),
            "{msg}"
        );
    }

    #[test]
    fn a_step_too_large_for_memory_is_refused_before_allocating() {
        let mut c = config();
        vgg(&mut c).widths = vec![512; 4];
        c.batch_size = 4096;
        assert!(c.validate_settings().is_ok());
        assert!(c.step_memory_bytes() > 1 << 40, "{}", c.step_memory_bytes());
        let msg = c.validate().unwrap_err().to_string();
        assert!(
            msg.contains("--batch-size 4096") && msg.contains("needs about"),
            "{msg}"
        );
    }
}
