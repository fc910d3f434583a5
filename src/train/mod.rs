//! Training emotion classifiers with candle: data in memory, augmentation, SGD with momentum or
//! AdamW, a warm-up + cosine learning-rate schedule, class weighting, per-epoch validation, a
//! CSV log, the best checkpoint by validation accuracy, early stopping and `--resume`.
//!
//! The output is a weights file with the metadata the app needs, which `Classifier::load` (and
//! the app's Open weights menu) reads unchanged.

pub mod augment;
pub mod curves;
mod init;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::backprop::GradStore;
use candle_core::{D, DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use crate::dataset::LabeledFaces;
use crate::emotion::Emotion;
use crate::error::{Error, Result};
use crate::model::mini_xception_train::TrainableMiniXception;
use crate::model::vgg::{Vgg, VggConfig};
use crate::model::{Architecture, Classifier, InputScaling, ModelSpec, meta, preprocess, weights};
pub use crate::rng::Rng;
pub use augment::Augment;

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
    /// The VGG-style CNN ([`Vgg`]).
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

    fn architecture(&self) -> Architecture {
        match self {
            NetConfig::Vgg(_) => Architecture::Vgg,
            NetConfig::MiniXception { .. } => Architecture::MiniXception,
        }
    }

    fn bn_eps(&self) -> f64 {
        match self {
            NetConfig::Vgg(c) => c.bn_eps,
            NetConfig::MiniXception { bn_eps, .. } => *bn_eps,
        }
    }

    fn build(&self, vb: VarBuilder) -> candle_core::Result<TrainNet> {
        Ok(match self {
            NetConfig::Vgg(c) => TrainNet::Vgg(Vgg::new(vb, c)?),
            NetConfig::MiniXception { classes, bn_eps } => {
                TrainNet::MiniXception(TrainableMiniXception::new(vb, *classes, *bn_eps)?)
            }
        })
    }

    /// A short name for the model, e.g. `vgg 16-32-64-128`.
    fn label(&self) -> String {
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

/// A network being trained.
enum TrainNet {
    Vgg(Vgg),
    MiniXception(TrainableMiniXception),
}

impl TrainNet {
    /// Logits in inference mode (running statistics, no dropout), for validation.
    fn forward_eval(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            TrainNet::Vgg(m) => candle_core::Module::forward(m, x),
            TrainNet::MiniXception(m) => m.forward_t(x, false),
        }
    }

    /// Logits in training mode; `dropout_seed` decides the dropout masks.
    fn forward_train(&self, x: &Tensor, dropout_seed: u64) -> candle_core::Result<Tensor> {
        match self {
            TrainNet::Vgg(m) => m.forward_train(x, dropout_seed),
            TrainNet::MiniXception(m) => m.forward_t(x, true),
        }
    }

    /// Fold the batch statistics gathered by the last training passes into the running ones.
    fn commit_batch_norm_stats(&self) -> candle_core::Result<()> {
        let bns = match self {
            TrainNet::Vgg(m) => m.batch_norms(),
            TrainNet::MiniXception(m) => m.batch_norms(),
        };
        bns.into_iter().try_for_each(|bn| bn.commit_stats())
    }

    fn num_blocks(&self) -> usize {
        match self {
            TrainNet::Vgg(m) => m.num_blocks(),
            TrainNet::MiniXception(m) => m.num_blocks(),
        }
    }

    fn freeze(&mut self, n: usize) {
        match self {
            TrainNet::Vgg(m) => m.freeze(n),
            TrainNet::MiniXception(m) => m.freeze(n),
        }
    }

    /// Tensor-name prefixes of the first `n` blocks.
    fn frozen_prefixes(&self, n: usize) -> Vec<String> {
        match self {
            TrainNet::Vgg(_) => (1..=n).map(|i| format!("block{i}.")).collect(),
            TrainNet::MiniXception(_) => TrainableMiniXception::PARTS[..n]
                .iter()
                .map(|p| p.to_string())
                .collect(),
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
    /// Or a teacher table ([`save_teacher_table`]) holding such labels made elsewhere.
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

/// The teacher's softened probabilities for one batch, rows in batch order.
#[derive(Clone, Copy)]
struct SoftTargets<'a> {
    probs: &'a [f32],
    weight: f64,
    temperature: f64,
}

/// Run `f` on each `chunk`-long range of `0..len` on a thread of its own (named `{name}-{i}`);
/// the results come back in order, `Err` with a message for a thread that could not start or
/// panicked.
fn on_threads<T: Send>(
    len: usize,
    chunk: usize,
    name: &str,
    f: impl Fn(std::ops::Range<usize>) -> T + Sync,
) -> Vec<std::result::Result<T, String>> {
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..len)
            .step_by(chunk.max(1))
            .enumerate()
            .map(|(i, start)| {
                let range = start..(start + chunk).min(len);
                std::thread::Builder::new()
                    .name(format!("{name}-{i}"))
                    .spawn_scoped(s, move || f(range))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| match h {
                Ok(h) => h.join().map_err(|_| format!("a {name} thread panicked")),
                Err(e) => Err(format!("cannot start a {name} thread: {e}")),
            })
            .collect()
    })
}

/// Load a model that helps training (`flag` names the option, for messages); it must score
/// every class the net learns.
fn load_helper(flag: &str, path: &Path, classes: &[Emotion]) -> Result<Classifier> {
    let mut model = Classifier::load(path)?;
    // Its tables are filled on `--threads` threads already.
    model.set_parallel(false);
    if let Some(missing) = classes.iter().find(|c| !model.spec().classes.contains(c)) {
        return Err(Error::InvalidInput {
            what: format!("{flag} {}", path.display()),
            reason: format!(
                "it has no '{missing}' class; it must score every class the net learns"
            ),
        });
    }
    Ok(model)
}

/// `model`'s probabilities for every image of `set`, `classes.len()` per image in the net's
/// class order, on `threads` threads; `tta` averages each image with its mirror image.
fn probability_table(
    model: &Classifier,
    set: &LabeledFaces,
    classes: &[Emotion],
    threads: usize,
    tta: bool,
) -> Result<Vec<f32>> {
    let chunk = set.len().div_ceil(threads.max(1)).max(1);
    let parts = on_threads(set.len(), chunk, "scorer", |r| {
        let mut out = Vec::with_capacity(r.len() * classes.len());
        for faces in set.images[r].chunks(64) {
            let scores = if tta {
                model.classify_tta(faces)?
            } else {
                model.classify(faces)?
            };
            for s in scores {
                out.extend(classes.iter().map(|c| s.of(*c)));
            }
        }
        Ok::<_, Error>(out)
    });
    let mut probs = Vec::with_capacity(set.len() * classes.len());
    for p in parts {
        probs.extend(p.map_err(|reason| Error::InvalidInput {
            what: model.name().to_string(),
            reason,
        })??);
    }
    Ok(probs)
}

/// Rows of probabilities softened by temperature `t`: p^(1/t), renormalised (the softmax of
/// log p / t). Never 0, so that logarithms of them stay finite.
fn soften(probs: &mut [f32], classes: usize, t: f64) {
    for row in probs.chunks_mut(classes) {
        row.iter_mut()
            .for_each(|p| *p = p.max(1e-8).powf(1.0 / t as f32));
        let sum: f32 = row.iter().sum();
        row.iter_mut().for_each(|p| *p /= sum);
    }
}

/// A helper model's probability tables, one per `(set, tta)` (see [`probability_table`]),
/// computed once per run: they are kept in `cache` with a fingerprint of what they depend on
/// (the model file's bytes, the images, the classes, the mirroring), so that `--resume` does
/// not score every image again (minutes for a large teacher). A cache that is missing,
/// unreadable or made for anything else is replaced. Returns the model's name, the tables and
/// whether they came from the cache.
fn helper_tables(
    flag: &str,
    path: &Path,
    cache: &Path,
    sets: &[(&LabeledFaces, bool)],
    classes: &[Emotion],
    threads: usize,
) -> Result<(String, Vec<Vec<f32>>, bool)> {
    let model = load_helper(flag, path, classes)?;
    let name = model.name().to_string();
    let key = table_key(path, sets, classes)?;
    if let Some(tables) = read_tables(cache, &key, sets.len()) {
        return Ok((name, tables, true));
    }
    let tables = sets
        .iter()
        .map(|(set, tta)| probability_table(&model, set, classes, threads, *tta))
        .collect::<Result<Vec<_>>>()?;
    let named: HashMap<String, Tensor> = tables
        .iter()
        .enumerate()
        .map(|(i, t)| {
            Ok((
                format!("table{i}"),
                Tensor::new(t.as_slice(), &Device::Cpu)?,
            ))
        })
        .collect::<candle_core::Result<_>>()?;
    let meta = HashMap::from([(TABLE_KEY.to_string(), key)]);
    let bytes = safetensors::serialize(&named, Some(meta))
        .map_err(|e| Error::weights(cache, format!("cannot serialise: {e}")))?;
    weights::write_replacing(cache, &bytes)?;
    Ok((name, tables, false))
}

/// Metadata entry of a table cache holding the fingerprint it was made for.
const TABLE_KEY: &str = "emocam_table_key";

/// FNV-1a over everything a helper's tables depend on, as hex.
fn table_key(path: &Path, sets: &[(&LabeledFaces, bool)], classes: &[Emotion]) -> Result<String> {
    let mut h = crate::rng::FNV_OFFSET;
    let mut eat = |bytes: &[u8]| h = crate::rng::fnv1a(h, bytes);
    eat(&std::fs::read(path).map_err(|e| Error::io(path, e))?);
    for c in classes {
        eat(c.name().as_bytes());
    }
    for (set, tta) in sets {
        eat(&[u8::from(*tta)]);
        eat(&(set.len() as u64).to_le_bytes());
        for img in &set.images {
            eat(&img.width().to_le_bytes());
            eat(&img.height().to_le_bytes());
            eat(img.as_raw());
        }
    }
    Ok(format!("{h:016x}"))
}

/// The tables in `cache` if it holds `count` of them made for `key`.
fn read_tables(cache: &Path, key: &str, count: usize) -> Option<Vec<Vec<f32>>> {
    let bytes = std::fs::read(cache).ok()?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).ok()?;
    if header.metadata().as_ref()?.get(TABLE_KEY)? != key {
        return None;
    }
    let mut saved = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).ok()?;
    (0..count)
        .map(|i| saved.remove(&format!("table{i}"))?.to_vec1::<f32>().ok())
        .collect()
}

/// A teacher table's probabilities for every image of `set`, `classes.len()` per image in the
/// net's class order, and the table's name; `None` when `path` is not a teacher table (it is
/// then loaded as a model). Rows are matched to images by their last two path components
/// (`class/file`), so the table may list them in any order and list more.
fn read_teacher_table(
    path: &Path,
    set: &LabeledFaces,
    classes: &[Emotion],
) -> Result<Option<(String, Vec<f32>)>> {
    let bad = |reason: String| Error::weights(path, reason);
    // Only the header: a teacher that is a model is read again, whole, by the model loader,
    // which also says what is wrong with a file that is not safetensors.
    let Some(meta) = safetensors_metadata(path) else {
        return Ok(None);
    };
    if meta.get(meta::ARCHITECTURE).map(String::as_str) != Some(crate::model::TEACHER_TABLE) {
        return Ok(None);
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let table_classes = crate::model::parse_classes(meta.get(meta::CLASSES).ok_or_else(|| {
        bad("a teacher table needs a \"classes\" metadata entry (JSON list of names)".into())
    })?)
    .map_err(bad)?;
    let names: Vec<String> = match meta.get(TABLE_IMAGES) {
        None => {
            return Err(bad(format!(
                "a teacher table needs an \"{TABLE_IMAGES}\" metadata entry: a JSON list of 'class/file' names"
            )));
        }
        Some(s) => serde_json::from_str(s).map_err(|e| {
            bad(format!(
                "metadata \"{TABLE_IMAGES}\" is not a JSON list of 'class/file' names: {e}"
            ))
        })?,
    };
    let probs = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
        .map_err(|e| bad(format!("cannot read: {e}")))?
        .remove("probs")
        .ok_or_else(|| bad("a teacher table needs a tensor \"probs\" (images x classes)".into()))?;
    let k = table_classes.len();
    if probs.dims() != [names.len(), k] {
        return Err(bad(format!(
            "tensor \"probs\" is {:?}, expected [{}, {k}] ({} images, {k} classes)",
            probs.dims(),
            names.len(),
            names.len()
        )));
    }
    let probs = probs
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let columns = classes
        .iter()
        .map(|c| {
            table_classes.iter().position(|t| t == c).ok_or_else(|| {
                bad(format!(
                    "it has no '{c}' class; it must score every class the net learns"
                ))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut rows: HashMap<&str, usize> = HashMap::with_capacity(names.len());
    for (i, n) in names.iter().enumerate() {
        if rows.insert(n.as_str(), i).is_some() {
            return Err(bad(format!(
                "image {n:?} is listed twice; each image needs one row"
            )));
        }
    }
    if set.sources.len() < set.len() {
        return Err(bad(format!(
            "the training set names {} of its {} images, so they cannot be matched to the table's rows",
            set.sources.len(),
            set.len()
        )));
    }
    let mut out = Vec::with_capacity(set.len() * classes.len());
    for (source, label) in set.sources.iter().zip(&set.labels) {
        if Path::new(source)
            .parent()
            .is_none_or(|d| d.as_os_str().is_empty())
        {
            return Err(bad(format!(
                "training image {source:?} has no file name to match: a table's rows are matched to class-folder images by 'class/file' (CSV rows have none)"
            )));
        }
        let key = table_image_name(source, *label);
        let row = *rows.get(key.as_str()).ok_or_else(|| {
            bad(format!(
                "it has no scores for training image {source} (looked for {key:?}); a table must cover every training image"
            ))
        })?;
        let p = &probs[row * k..(row + 1) * k];
        if let Some(v) = p.iter().find(|v| !(v.is_finite() && **v >= 0.0)) {
            return Err(bad(format!(
                "row {row} ({key}) holds {v}: expected probabilities, finite and at least 0"
            )));
        }
        let picked: Vec<f32> = columns.iter().map(|&c| p[c]).collect();
        let sum: f32 = picked.iter().sum();
        if sum <= 0.0 {
            return Err(bad(format!(
                "row {row} ({key}) gives the net's classes no probability: {p:?}"
            )));
        }
        out.extend(picked.iter().map(|v| v / sum));
    }
    let name = meta
        .get(meta::NAME)
        .cloned()
        .unwrap_or_else(|| path.display().to_string());
    Ok(Some((name, out)))
}

/// Write a teacher table that `--teacher` reads instead of a model: `probs` holds
/// `classes.len()` probabilities per image, one row per name of `images` (`class/file`, see
/// [`table_image_name`]). Tables made outside emocam (`weights/teacher/oof_table.py`) have the
/// same layout.
pub fn save_teacher_table(
    path: &Path,
    name: &str,
    classes: &[Emotion],
    images: &[String],
    probs: &[f32],
) -> Result<()> {
    if probs.len() != images.len() * classes.len() {
        return Err(Error::InvalidInput {
            what: format!("teacher table {}", path.display()),
            reason: format!(
                "{} probabilities for {} images of {} classes",
                probs.len(),
                images.len(),
                classes.len()
            ),
        });
    }
    let tensor = Tensor::from_slice(probs, (images.len(), classes.len()), &Device::Cpu)?;
    let class_names: Vec<&str> = classes.iter().map(|c| c.name()).collect();
    let meta = HashMap::from([
        (
            meta::ARCHITECTURE.to_string(),
            crate::model::TEACHER_TABLE.to_string(),
        ),
        (meta::NAME.to_string(), name.to_string()),
        (
            meta::CLASSES.to_string(),
            serde_json::to_string(&class_names).unwrap_or_default(),
        ),
        (
            TABLE_IMAGES.to_string(),
            serde_json::to_string(images).unwrap_or_default(),
        ),
    ]);
    let bytes = safetensors::serialize(HashMap::from([("probs".to_string(), tensor)]), Some(meta))
        .map_err(|e| Error::weights(path, format!("cannot serialise: {e}")))?;
    weights::write_replacing(path, &bytes)
}

/// Metadata entry of a teacher table: its rows' image names, as a JSON list.
pub const TABLE_IMAGES: &str = "images";

/// The name a teacher table gives a training image: its class and file name (`happy/1.jpg`).
pub fn table_image_name(source: &str, class: Emotion) -> String {
    let file = Path::new(source)
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("{}/{file}", class.name())
}

/// The `__metadata__` of a safetensors file, read from its header alone; `None` when the file
/// cannot be read or is not safetensors.
fn safetensors_metadata(path: &Path) -> Option<HashMap<String, String>> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).ok()?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).ok()?;
    let len = usize::try_from(u64::from_le_bytes(len)).ok()?;
    // safetensors' own limit on a header's size.
    if len > 100_000_000 {
        return None;
    }
    let mut header = vec![0u8; len];
    f.read_exact(&mut header).ok()?;
    let mut json: serde_json::Value = serde_json::from_slice(&header).ok()?;
    serde_json::from_value(json.get_mut("__metadata__")?.take()).ok()
}

/// Softened teacher probabilities for every training image, `classes.len()` per image in the
/// student's class order, and whether they came from the cache beside `out`.
fn teacher_targets(
    d: &Distill,
    set: &LabeledFaces,
    classes: &[Emotion],
    threads: usize,
    out: &Path,
    progress: bool,
) -> Result<(Vec<f32>, bool)> {
    let t0 = Instant::now();
    if let Some((name, mut probs)) = read_teacher_table(&d.teacher, set, classes)? {
        soften(&mut probs, classes.len(), d.temperature);
        if progress {
            eprintln!(
                "teacher {name}: {} training images read from the table {}",
                set.len(),
                d.teacher.display()
            );
        }
        return Ok((probs, false));
    }
    let cache = side_path(out, ".teacher.safetensors");
    let (name, mut tables, reused) = helper_tables(
        "--teacher",
        &d.teacher,
        &cache,
        &[(set, true)],
        classes,
        threads,
    )?;
    let mut probs = tables.pop().unwrap_or_default();
    soften(&mut probs, classes.len(), d.temperature);
    if progress {
        eprintln!(
            "teacher {name}: {} training images {} in {:.0} s",
            set.len(),
            if reused {
                format!("labelled earlier ({})", cache.display())
            } else {
                "labelled".to_string()
            },
            t0.elapsed().as_secs_f64()
        );
    }
    Ok((probs, reused))
}

/// A partner's probabilities: for the training images averaged with their mirror images (so
/// that flipped augmentations keep them), for the validation images exactly as the pair's
/// ensemble will compute them.
struct PartnerTables {
    train: Vec<f32>,
    val: Vec<f32>,
}

/// The partner's tables, and whether they came from the cache beside `out`.
fn partner_tables(
    p: &Partner,
    train_set: &LabeledFaces,
    val_set: &LabeledFaces,
    classes: &[Emotion],
    threads: usize,
    out: &Path,
    progress: bool,
) -> Result<(PartnerTables, bool)> {
    let t0 = Instant::now();
    let (name, mut tables, reused) = helper_tables(
        "--partner",
        &p.path,
        &side_path(out, ".partner.safetensors"),
        &[(train_set, true), (val_set, p.flip)],
        classes,
        threads,
    )?;
    let (val, train) = (tables.pop(), tables.pop());
    if progress {
        eprintln!(
            "partner {name}: training and validation images {} in {:.0} s; losses and \
             accuracies below are those of the pair",
            if reused { "scored earlier" } else { "scored" },
            t0.elapsed().as_secs_f64()
        );
    }
    let tables = PartnerTables {
        train: train.unwrap_or_default(),
        val: val.unwrap_or_default(),
    };
    Ok((tables, reused))
}

/// The rows of `table` (`classes` values per image) for the images `idx` of a batch, in order.
fn batch_rows(table: &[f32], idx: &[usize], classes: usize) -> Vec<f32> {
    idx.iter()
        .flat_map(|&i| table[i * classes..(i + 1) * classes].iter().copied())
        .collect()
}

/// Per-epoch figures.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EpochLog {
    pub epoch: usize,
    pub lr: f64,
    pub train_loss: f64,
    pub train_acc: f64,
    pub val_loss: f64,
    pub val_acc: f64,
    pub secs: f64,
    pub images_per_sec: f64,
}

impl EpochLog {
    /// The row in `<out>.log.csv`.
    fn csv_row(&self) -> String {
        format!(
            "{},{:.6},{:.5},{:.5},{:.5},{:.5},{:.2},{:.1}",
            self.epoch,
            self.lr,
            self.train_loss,
            self.train_acc,
            self.val_loss,
            self.val_acc,
            self.secs,
            self.images_per_sec
        )
    }
}

/// What `--resume` needs to continue.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct TrainState {
    pub epochs_done: usize,
    pub best_val_acc: f64,
    pub best_epoch: usize,
    pub history: Vec<EpochLog>,
    /// Worker threads per step (absent in states from before it was recorded).
    #[serde(default)]
    pub threads: Option<usize>,
}

/// Key of the epoch count saved with the optimiser state.
const OPT_EPOCHS: &str = "epochs_done";

/// The epoch count saved with an optimiser state, if any.
fn saved_epochs(saved: &HashMap<String, Tensor>) -> Option<usize> {
    let v = saved
        .get(OPT_EPOCHS)?
        .flatten_all()
        .ok()?
        .to_vec1::<f64>()
        .ok()?;
    v.first().map(|&n| n as usize)
}

/// A resumed run's last checkpoint must be of the epoch its state says is done (a run cut off
/// between saving the two would otherwise repeat or skip an epoch without a word).
fn check_checkpoint_epoch(
    spec: &ModelSpec,
    last: &Path,
    state_path: &Path,
    done: usize,
) -> Result<()> {
    let epochs = spec.metadata.get("train_epochs").cloned();
    if epochs.as_deref() == Some(done.to_string().as_str()) {
        return Ok(());
    }
    Err(Error::weights(
        last,
        format!(
            "holds epoch {}, but {} says {done} epochs are done: the run was cut off while \
             saving; start it again without --resume",
            epochs.as_deref().unwrap_or("(unrecorded)"),
            state_path.display()
        ),
    ))
}

/// The result of a run.
#[derive(Debug, Clone, Serialize)]
pub struct TrainSummary {
    pub out: PathBuf,
    pub best_val_acc: f64,
    pub best_epoch: usize,
    pub epochs_run: usize,
    pub stopped_early: bool,
    pub history: Vec<EpochLog>,
    /// How many helper models' (teacher, partner) probabilities were read from the caches
    /// beside `out` instead of computed.
    pub tables_reused: usize,
}

fn side_path(out: &Path, suffix: &str) -> PathBuf {
    let stem = out
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    out.with_file_name(format!("{stem}{suffix}"))
}

/// Learning rate at `step` of `total` steps: linear warm-up, then cosine decay to 1% of `lr`.
pub fn schedule(lr: f64, step: usize, warmup: usize, total: usize) -> f64 {
    if step < warmup {
        return lr * (step + 1) as f64 / warmup as f64;
    }
    let t = (step - warmup) as f64 / (total.saturating_sub(warmup)).max(1) as f64;
    lr * (0.01 + 0.99 * 0.5 * (1.0 + (std::f64::consts::PI * t.min(1.0)).cos()))
}

/// SGD with momentum and decoupled weight decay.
struct Sgd {
    velocity: Vec<Tensor>,
    momentum: f64,
}

/// AdamW (Loshchilov & Hutter), the same update as candle_nn's, whose moments can be saved
/// and restored so that `--resume` continues a run exactly (candle_nn keeps them private).
struct AdamW {
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    /// Steps taken, for the bias correction.
    t: u64,
}

const ADAM_BETA1: f64 = 0.9;
const ADAM_BETA2: f64 = 0.999;
const ADAM_EPS: f64 = 1e-8;

enum OptKind {
    Sgd(Sgd),
    AdamW(AdamW),
}

/// The optimiser of a training run: its trainable variables by name, and its state.
struct Opt {
    vars: Vec<(String, Var)>,
    lr: f64,
    weight_decay: f64,
    kind: OptKind,
}

impl Opt {
    fn new(
        vars: Vec<(String, Var)>,
        optimizer: OptimizerKind,
        lr: f64,
        momentum: f64,
        weight_decay: f64,
    ) -> candle_core::Result<Self> {
        let zeros = || {
            vars.iter()
                .map(|(_, v)| v.as_tensor().zeros_like())
                .collect::<candle_core::Result<Vec<_>>>()
        };
        let kind = match optimizer {
            OptimizerKind::Sgd => OptKind::Sgd(Sgd {
                velocity: zeros()?,
                momentum,
            }),
            OptimizerKind::AdamW => OptKind::AdamW(AdamW {
                m: zeros()?,
                v: zeros()?,
                t: 0,
            }),
        };
        Ok(Self {
            vars,
            lr,
            weight_decay,
            kind,
        })
    }

    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    fn step(&mut self, grads: &GradStore) -> candle_core::Result<()> {
        let (lr, decay) = (self.lr, 1.0 - self.lr * self.weight_decay);
        match &mut self.kind {
            OptKind::Sgd(s) => {
                for ((_, v), vel) in self.vars.iter().zip(s.velocity.iter_mut()) {
                    if let Some(g) = grads.get(v) {
                        *vel = ((&*vel * s.momentum)? + g)?;
                        v.set(&((v.as_tensor() * decay)? - (&*vel * lr)?)?)?;
                    }
                }
            }
            OptKind::AdamW(a) => {
                a.t += 1;
                let scale_m = 1.0 / (1.0 - ADAM_BETA1.powi(a.t as i32));
                let scale_v = 1.0 / (1.0 - ADAM_BETA2.powi(a.t as i32));
                for (((_, v), m), sq) in self.vars.iter().zip(&mut a.m).zip(&mut a.v) {
                    if let Some(g) = grads.get(v) {
                        *m = ((&*m * ADAM_BETA1)? + (g * (1.0 - ADAM_BETA1))?)?;
                        *sq = ((&*sq * ADAM_BETA2)? + (g.sqr()? * (1.0 - ADAM_BETA2))?)?;
                        let step = ((&*m * scale_m)? / ((&*sq * scale_v)?.sqrt()? + ADAM_EPS)?)?;
                        v.set(&((v.as_tensor() * decay)? - (step * lr)?)?)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The state to save beside the last checkpoint, by tensor name.
    fn state(&self) -> candle_core::Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        match &self.kind {
            OptKind::Sgd(s) => {
                for ((name, _), t) in self.vars.iter().zip(&s.velocity) {
                    out.insert(format!("sgd.velocity.{name}"), t.clone());
                }
            }
            OptKind::AdamW(a) => {
                for (((name, _), m), v) in self.vars.iter().zip(&a.m).zip(&a.v) {
                    out.insert(format!("adamw.m.{name}"), m.clone());
                    out.insert(format!("adamw.v.{name}"), v.clone());
                }
                out.insert(
                    "adamw.step".into(),
                    Tensor::new(&[a.t as f64], &Device::Cpu)?,
                );
            }
        }
        Ok(out)
    }

    /// Take the saved state back; `Err` (with the reason) if it is not this optimiser's, in
    /// which case nothing changes.
    fn restore(&mut self, saved: &HashMap<String, Tensor>) -> std::result::Result<(), String> {
        let get = |key: String, like: &Tensor| -> std::result::Result<Tensor, String> {
            match saved.get(&key) {
                Some(t) if t.shape() == like.shape() => Ok(t.clone()),
                Some(t) => Err(format!(
                    "{key} has shape {:?}, expected {:?}",
                    t.dims(),
                    like.dims()
                )),
                None => Err(format!("no {key} (another optimiser or net?)")),
            }
        };
        match &mut self.kind {
            OptKind::Sgd(s) => {
                let vel = self
                    .vars
                    .iter()
                    .zip(&s.velocity)
                    .map(|((n, _), t)| get(format!("sgd.velocity.{n}"), t))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                s.velocity = vel;
            }
            OptKind::AdamW(a) => {
                let t = saved
                    .get("adamw.step")
                    .and_then(|t| t.to_vec1::<f64>().ok())
                    .and_then(|v| v.first().copied())
                    .ok_or("no adamw.step (another optimiser?)")?;
                let mut m = Vec::with_capacity(a.m.len());
                let mut v = Vec::with_capacity(a.v.len());
                for (((n, _), mt), vt) in self.vars.iter().zip(&a.m).zip(&a.v) {
                    m.push(get(format!("adamw.m.{n}"), mt)?);
                    v.push(get(format!("adamw.v.{n}"), vt)?);
                }
                (a.m, a.v, a.t) = (m, v, t as u64);
            }
        }
        Ok(())
    }
}

/// Forward and backward passes over one batch, split into `threads` parts that run on their
/// own threads (data-parallel: each part normalises with its own batch statistics). Returns
/// the batch's loss, the predicted classes and the gradients of `vars`; every part divides by
/// the whole batch's loss denominator, so the parts' gradients sum to the batch's.
#[allow(clippy::too_many_arguments)]
fn forward_backward(
    model: &TrainNet,
    imgs: &[&image::GrayImage],
    labels: &[u32],
    size: u32,
    loss_kind: LossKind,
    weights: &Tensor,
    soft: Option<SoftTargets>,
    partner: Option<&[f32]>,
    vars: &[Var],
    threads: usize,
    dropout_seed: u64,
) -> candle_core::Result<(f64, Vec<u32>, GradStore)> {
    let dev = Device::Cpu;
    let denom = loss_denominator(loss_kind, labels, &weights.to_vec1::<f32>()?);
    let whole = imgs.len();
    let part = |imgs: &[&image::GrayImage], labels: &[u32], first: usize| {
        let x = batch(imgs, size, &dev)?;
        let y = Tensor::new(labels, &dev)?;
        // Each part's masks depend on where it starts, not on which thread runs it.
        let logits = model.forward_train(&x, dropout_seed ^ ((first as u64) << 20))?;
        let (n, c) = (imgs.len(), logits.dim(1)?);
        let mate = partner.map(|m| &m[first * c..(first + n) * c]);
        let logp = judged_log_probs(&logits, mate, 1.0)?;
        let mut loss = loss_fn(loss_kind, &logp, &y, weights, Some(denom))?;
        if let Some(s) = soft {
            let q = Tensor::from_slice(&s.probs[first * c..(first + n) * c], (n, c), &dev)?;
            let t = s.temperature;
            let logp_t = judged_log_probs(&logits, mate, t)?;
            // KL divergence from the teacher, per image of the whole batch: 0 when the net
            // agrees (the teacher's entropy, a constant, is taken out so the logged loss reads
            // as disagreement; targets are never 0, see `teacher_targets`).
            let kd = ((&q * (q.log()? - logp_t)?)?.sum_all()? * (t * t / whole as f64))?;
            loss = ((loss * (1.0 - s.weight))? + (kd * s.weight)?)?;
        }
        let pred: Vec<u32> = logp.argmax(D::Minus1)?.to_vec1()?;
        Ok::<_, candle_core::Error>((loss.to_scalar::<f32>()? as f64, pred, loss.backward()?))
    };
    let parts = threads.clamp(1, imgs.len().max(1));
    let result = if parts == 1 {
        part(imgs, labels, 0)
    } else {
        let chunk = imgs.len().div_ceil(parts);
        let results = on_threads(imgs.len(), chunk, "train-worker", |r| {
            part(&imgs[r.clone()], &labels[r.clone()], r.start)
        });
        let mut done = Vec::with_capacity(results.len());
        for r in results {
            done.push(r.map_err(candle_core::Error::Msg)??);
        }
        let loss = done.iter().map(|(l, _, _)| l).sum::<f64>();
        let pred: Vec<u32> = done.iter().flat_map(|(_, p, _)| p.clone()).collect();
        let mut stores: Vec<GradStore> = done.into_iter().map(|(_, _, g)| g).collect();
        let mut grads = stores.remove(0);
        for v in vars {
            let Some(mut sum) = grads.remove(v) else {
                continue;
            };
            for other in &stores {
                if let Some(g) = other.get(v) {
                    sum = (sum + g)?;
                }
            }
            grads.insert(v, sum);
        }
        Ok((loss, pred, grads))
    };
    // Batch-norm running statistics: one update from the whole batch, whatever the split.
    model.commit_batch_norm_stats()?;
    result
}

/// The input scaling every trained model uses (and its metadata records).
const TRAIN_SCALING: InputScaling = InputScaling::MinusOneToOne;

/// Stack faces into `(N, 1, S, S)` with the training scaling.
fn batch(images: &[&image::GrayImage], size: u32, dev: &Device) -> candle_core::Result<Tensor> {
    preprocess::stack(
        images.iter().copied(),
        images.len(),
        size,
        TRAIN_SCALING,
        dev,
    )
}

/// Log-probabilities of what training judges, at temperature `t`: the net's own, or, with a
/// partner's probabilities for the same images (rows `(N, classes)`, softened by the same `t`
/// here), those of the pair's average, whose gradients reach the net through its half.
fn judged_log_probs(
    logits: &Tensor,
    partner: Option<&[f32]>,
    t: f64,
) -> candle_core::Result<Tensor> {
    let scaled = if t == 1.0 {
        logits.clone()
    } else {
        (logits / t)?
    };
    let Some(rows) = partner else {
        return candle_nn::ops::log_softmax(&scaled, D::Minus1);
    };
    let mut rows = rows.to_vec();
    soften(&mut rows, logits.dim(1)?, t);
    let m = Tensor::from_slice(&rows, logits.dims2()?, logits.device())?;
    // Not `softmax_last_dim`: candle's fused softmax has no backward pass, and no gradient
    // would reach the net.
    let p = candle_nn::ops::log_softmax(&scaled, D::Minus1)?.exp()?;
    ((p + m)? * 0.5)?.log()
}

/// Loss over a batch from its log-probabilities `logp` (see [`judged_log_probs`]); `weights`
/// are per-class (length = classes).
fn loss_fn(
    kind: LossKind,
    logp: &Tensor,
    labels: &Tensor,
    weights: &Tensor,
    denominator: Option<f64>,
) -> candle_core::Result<Tensor> {
    match kind {
        LossKind::CrossEntropy => {
            let picked = logp.gather(&labels.unsqueeze(1)?, 1)?.squeeze(1)?;
            let w = weights.index_select(labels, 0)?;
            let denom = match denominator {
                Some(d) => d,
                None => w.sum_all()?.to_scalar::<f32>()? as f64,
            };
            (picked * &w)?.sum_all()?.neg()? / denom
        }
        LossKind::Mse => {
            let p = logp.exp()?;
            let onehot = candle_nn::encoding::one_hot(labels.clone(), logp.dim(1)?, 1f32, 0f32)?;
            let denom = denominator.unwrap_or(logp.elem_count() as f64);
            (p - onehot)?.sqr()?.sum_all()? / denom
        }
    }
}

/// What [`loss_fn`] divides by for a whole batch with these labels: the summed class weights
/// (cross-entropy) or the number of outputs (MSE). Parts of a batch divide by the whole
/// batch's figure, so their losses and gradients add up to the whole batch's.
fn loss_denominator(kind: LossKind, labels: &[u32], class_weights: &[f32]) -> f64 {
    match kind {
        LossKind::CrossEntropy => labels
            .iter()
            .map(|&l| class_weights.get(l as usize).copied().unwrap_or(1.0) as f64)
            .sum(),
        LossKind::Mse => (labels.len() * class_weights.len()) as f64,
    }
}

/// Train on `train`, select on `val`; writes the best weights, a CSV log, a last checkpoint and
/// a resume state beside `cfg.out`.
pub fn train(
    train_set: &LabeledFaces,
    val_set: &LabeledFaces,
    cfg: &TrainConfig,
) -> Result<TrainSummary> {
    let invalid = |what: &str, reason: String| Error::InvalidInput {
        what: what.into(),
        reason,
    };
    if train_set.is_empty() || val_set.is_empty() {
        return Err(invalid(
            "data",
            "the training and validation sets must not be empty".into(),
        ));
    }
    if cfg.batch_size == 0 || cfg.epochs == 0 || !(cfg.lr > 0.0 && cfg.lr < 10.0) {
        return Err(invalid(
            "training settings",
            format!(
                "batch size {}, epochs {}, lr {}: expected positive values and lr < 10",
                cfg.batch_size, cfg.epochs, cfg.lr
            ),
        ));
    }
    if let Some(d) = &cfg.distill
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
    let dev = Device::Cpu;
    let classes: Vec<Emotion> = Emotion::ALL[..cfg.net.classes().min(Emotion::COUNT)].to_vec();
    let class_index = |e: Emotion| classes.iter().position(|c| *c == e);
    for (set, name) in [(train_set, "training"), (val_set, "validation")] {
        if let Some(l) = set.labels.iter().find(|l| class_index(**l).is_none()) {
            return Err(invalid(
                "data",
                format!(
                    "{name} set has class {l}, but the net has {} classes",
                    classes.len()
                ),
            ));
        }
    }
    if let NetConfig::Vgg(v) = &cfg.net
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
    if cfg.stop_after == Some(0) {
        return Err(invalid(
            "--stop-after",
            "0 epochs: expected at least 1".into(),
        ));
    }
    let varmap = VarMap::new();
    let mut model = cfg
        .net
        .build(init::seeded_var_builder(&varmap, cfg.seed, &dev))?;
    if cfg.freeze > model.num_blocks() {
        return Err(invalid(
            "--freeze",
            format!(
                "{} blocks asked, the net has {}",
                cfg.freeze,
                model.num_blocks()
            ),
        ));
    }
    model.freeze(cfg.freeze);
    let (log_path, last_path, state_path, opt_path) = (
        side_path(&cfg.out, ".log.csv"),
        side_path(&cfg.out, ".last.safetensors"),
        side_path(&cfg.out, ".state.json"),
        side_path(&cfg.out, ".opt.safetensors"),
    );

    let mut state = TrainState::default();
    if cfg.resume {
        let text = std::fs::read_to_string(&state_path).map_err(|e| Error::io(&state_path, e))?;
        state = serde_json::from_str(&text).map_err(|e| Error::Dataset {
            path: state_path.clone(),
            reason: format!("not a training state: {e}"),
        })?;
        let last = load_into(&varmap, &last_path, true)?;
        check_checkpoint_epoch(&last, &last_path, &state_path, state.epochs_done)?;
    } else if let Some(init) = &cfg.init {
        load_into(&varmap, init, false)?;
    }

    // Frozen blocks and batch-norm running statistics are not optimised.
    let frozen = model.frozen_prefixes(cfg.freeze);
    let named: Vec<(String, Var)> = {
        let data = varmap
            .data()
            .lock()
            .map_err(|_| invalid("model", "poisoned variable map".into()))?;
        let mut named: Vec<(String, Var)> = data
            .iter()
            .filter(|(n, _)| !n.contains("running_") && !frozen.iter().any(|f| n.starts_with(f)))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        named
    };
    let trainable: Vec<Var> = named.iter().map(|(_, v)| v.clone()).collect();
    let mut opt = Opt::new(named, cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay)?;
    if cfg.resume {
        // Runs from before the optimiser state was saved resume with fresh moments.
        let restored = match candle_core::safetensors::load(&opt_path, &dev) {
            Ok(saved) => match saved_epochs(&saved) {
                Some(n) if n == state.epochs_done => opt.restore(&saved),
                Some(n) => Err(format!(
                    "it is of epoch {n}, the run has done {}",
                    state.epochs_done
                )),
                None => Err(format!("it has no {OPT_EPOCHS} entry")),
            },
            Err(e) => Err(e.to_string()),
        };
        if let Err(why) = restored
            && cfg.progress
        {
            eprintln!(
                "resuming without the optimiser state of {} ({why}): it starts afresh",
                opt_path.display()
            );
        }
    }

    // Inverse-frequency class weights, normalised to mean 1 over the classes present.
    let counts = train_set.class_counts();
    let weights: Vec<f32> = classes
        .iter()
        .map(|c| {
            let n = counts[c.index()] as f32;
            if !cfg.class_weighting || n == 0.0 {
                1.0
            } else {
                train_set.len() as f32 / (classes.len() as f32 * n)
            }
        })
        .collect();
    let weights = Tensor::new(weights.as_slice(), &dev)?;

    let threads = match (cfg.threads, state.threads) {
        (Some(n), _) | (None, Some(n)) => n,
        (None, None) => std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
    };
    if cfg.progress
        && let Some(before) = state.threads.filter(|&t| t != threads)
    {
        eprintln!(
            "resuming with {threads} threads where the run used {before}: batch-norm statistics \
             are taken per thread's slice, so it will not end exactly where an uninterrupted run would"
        );
    }
    state.threads = Some(threads);
    let size = cfg.net.input_size() as u32;
    let steps_per_epoch = train_set.len().div_ceil(cfg.batch_size);
    let total_steps = steps_per_epoch * cfg.epochs;
    // Rewritten from the state, so that rows of an epoch cut off before its checkpoint go.
    let mut log = std::fs::File::create(&log_path).map_err(|e| Error::io(&log_path, e))?;
    let header = "epoch,lr,train_loss,train_acc,val_loss,val_acc,secs,images_per_sec";
    std::iter::once(header.to_string())
        .chain(state.history.iter().map(EpochLog::csv_row))
        .try_for_each(|line| writeln!(log, "{line}"))
        .and_then(|_| log.flush())
        .map_err(|e| Error::io(&log_path, e))?;
    let patience_spent = |s: &TrainState| {
        cfg.patience > 0 && s.best_epoch > 0 && s.epochs_done - s.best_epoch >= cfg.patience
    };
    let last_epoch = match cfg.stop_after {
        Some(n) => cfg.epochs.min(state.epochs_done + n),
        None => cfg.epochs,
    };
    // Labelled only when an epoch will train (a finished or early-stopped run resumed skips it).
    let will_train = state.epochs_done < last_epoch && !patience_spent(&state);
    let mut tables_reused = 0;
    let teacher = match &cfg.distill {
        Some(d) if will_train => {
            let (table, reused) =
                teacher_targets(d, train_set, &classes, threads, &cfg.out, cfg.progress)?;
            tables_reused += usize::from(reused);
            Some((d, table))
        }
        _ => None,
    };
    let partner = match &cfg.partner {
        Some(p) if will_train => {
            let (tables, reused) = partner_tables(
                p,
                train_set,
                val_set,
                &classes,
                threads,
                &cfg.out,
                cfg.progress,
            )?;
            tables_reused += usize::from(reused);
            Some(tables)
        }
        _ => None,
    };
    for epoch in state.epochs_done..last_epoch {
        // Checked first, so that resuming a run that stopped early trains nothing more.
        if patience_spent(&state) {
            break;
        }
        let t0 = Instant::now();
        // Seeded per epoch, so that a resumed run draws what an uninterrupted one would.
        let mut rng = Rng::new(cfg.seed.wrapping_add(epoch as u64 * 7919));
        let mut order: Vec<usize> = (0..train_set.len()).collect();
        rng.shuffle(&mut order);
        let bar = progress_bar(cfg.progress, train_set.len() as u64, epoch + 1, cfg.epochs);
        let (mut loss_sum, mut correct, mut seen) = (0f64, 0usize, 0usize);
        let mut lr = cfg.lr;
        for (b, idx) in order.chunks(cfg.batch_size).enumerate() {
            lr = schedule(
                cfg.lr,
                epoch * steps_per_epoch + b,
                cfg.warmup_epochs * steps_per_epoch,
                total_steps,
            );
            opt.set_lr(lr);
            let augmented: Vec<image::GrayImage>;
            let imgs: Vec<&image::GrayImage> = match &cfg.augment {
                Some(a) => {
                    augmented = idx
                        .iter()
                        .map(|&i| a.apply(&train_set.images[i], &mut rng))
                        .collect();
                    augmented.iter().collect()
                }
                None => idx.iter().map(|&i| &train_set.images[i]).collect(),
            };
            let labels: Vec<u32> = idx
                .iter()
                .map(|&i| class_index(train_set.labels[i]).unwrap_or(0) as u32)
                .collect();
            let rows = teacher
                .as_ref()
                .map(|(_, table)| batch_rows(table, idx, classes.len()));
            let soft = teacher
                .as_ref()
                .zip(rows.as_deref())
                .map(|((d, _), probs)| SoftTargets {
                    probs,
                    weight: d.weight,
                    temperature: d.temperature,
                });
            let mate = partner
                .as_ref()
                .map(|p| batch_rows(&p.train, idx, classes.len()));
            let (loss, pred, grads) = forward_backward(
                &model,
                &imgs,
                &labels,
                size,
                cfg.loss,
                &weights,
                soft,
                mate.as_deref(),
                &trainable,
                threads,
                rng.next_u64(),
            )?;
            opt.step(&grads)?;
            correct += pred.iter().zip(&labels).filter(|(p, l)| p == l).count();
            loss_sum += loss * idx.len() as f64;
            seen += idx.len();
            if let Some(bar) = &bar {
                bar.inc(idx.len() as u64);
                bar.set_message(format!(
                    "loss {:.3} acc {:.3} lr {lr:.2e}",
                    loss_sum / seen as f64,
                    correct as f64 / seen as f64
                ));
            }
        }
        let train_secs = t0.elapsed().as_secs_f64();
        let (val_loss, val_acc) = evaluate(
            &model,
            val_set,
            &classes,
            size,
            cfg.loss,
            &weights,
            partner.as_ref().map(|p| p.val.as_slice()),
        )?;
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        let row = EpochLog {
            epoch: epoch + 1,
            lr,
            train_loss: loss_sum / seen.max(1) as f64,
            train_acc: correct as f64 / seen.max(1) as f64,
            val_loss,
            val_acc,
            secs: t0.elapsed().as_secs_f64(),
            images_per_sec: seen as f64 / train_secs.max(1e-9),
        };
        writeln!(log, "{}", row.csv_row())
            .and_then(|_| log.flush())
            .map_err(|e| Error::io(&log_path, e))?;
        if cfg.progress {
            eprintln!(
                "epoch {}/{}: train loss {:.4} acc {:.4} | val loss {:.4} acc {:.4} | {:.0} img/s",
                row.epoch,
                cfg.epochs,
                row.train_loss,
                row.train_acc,
                row.val_loss,
                row.val_acc,
                row.images_per_sec
            );
        }
        state.history.push(row);
        state.epochs_done = epoch + 1;
        let spec = output_spec(cfg, &classes, &state);
        if val_acc > state.best_val_acc || state.best_epoch == 0 {
            state.best_val_acc = val_acc;
            state.best_epoch = epoch + 1;
            save_varmap(&varmap, &cfg.out, &output_spec(cfg, &classes, &state))?;
        }
        // Each file is replaced whole (written beside, then renamed), the state last: a run cut
        // off while saving leaves either the previous epoch's set or a mismatch that `--resume`
        // detects by the epoch each file records.
        save_varmap(&varmap, &last_path, &spec)?;
        let mut opt_state = opt.state()?;
        opt_state.insert(
            OPT_EPOCHS.into(),
            Tensor::new(&[state.epochs_done as f64], &dev)?,
        );
        let opt_bytes = safetensors::serialize(&opt_state, None)
            .map_err(|e| Error::weights(&opt_path, format!("cannot serialise: {e}")))?;
        weights::write_replacing(&opt_path, &opt_bytes)?;
        let json =
            serde_json::to_string_pretty(&state).map_err(|e| invalid("state", e.to_string()))?;
        weights::write_replacing(&state_path, json.as_bytes())?;
        curves::save(&state.history, &side_path(&cfg.out, ".curves.png"))?;
    }
    let stopped_early = patience_spent(&state) && state.epochs_done < cfg.epochs;
    Ok(TrainSummary {
        out: cfg.out.clone(),
        best_val_acc: state.best_val_acc,
        best_epoch: state.best_epoch,
        epochs_run: state.epochs_done,
        stopped_early,
        history: state.history,
        tables_reused,
    })
}

/// One training step (forward, backward, AdamW) of `net` on a fixed batch of `batch` random
/// faces split over `threads` workers, for benchmarks: returns the closure to time.
pub fn bench_step(
    net: &NetConfig,
    batch: usize,
    threads: usize,
) -> Result<impl FnMut() -> candle_core::Result<()> + use<>> {
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let model = net.build(init::seeded_var_builder(&varmap, 1, &dev))?;
    let named: Vec<(String, Var)> = {
        let data = varmap.data().lock().map_err(|_| Error::InvalidInput {
            what: "model".into(),
            reason: "poisoned variable map".into(),
        })?;
        data.iter()
            .filter(|(n, _)| !n.contains("running_"))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect()
    };
    let vars: Vec<Var> = named.iter().map(|(_, v)| v.clone()).collect();
    let mut opt = Opt::new(named, OptimizerKind::AdamW, 1e-3, 0.9, 0.01)?;
    let s = net.input_size() as u32;
    let mut rng = Rng::new(1);
    let images: Vec<image::GrayImage> = (0..batch)
        .map(|_| {
            image::GrayImage::from_fn(s, s, |_, _| image::Luma([(rng.next_u64() >> 56) as u8]))
        })
        .collect();
    let labels: Vec<u32> = (0..batch as u32)
        .map(|i| i % net.classes() as u32)
        .collect();
    let weights = Tensor::ones(net.classes(), DType::F32, &dev)?;
    let mut step = 0u64;
    Ok(move || {
        step += 1;
        let refs: Vec<&image::GrayImage> = images.iter().collect();
        let (_, _, grads) = forward_backward(
            &model,
            &refs,
            &labels,
            s,
            LossKind::CrossEntropy,
            &weights,
            None,
            None,
            &vars,
            threads,
            step,
        )?;
        opt.step(&grads)
    })
}

fn progress_bar(
    show: bool,
    len: u64,
    epoch: usize,
    epochs: usize,
) -> Option<indicatif::ProgressBar> {
    if !show {
        return None;
    }
    let bar = indicatif::ProgressBar::new(len);
    let style = indicatif::ProgressStyle::with_template(&format!(
        "epoch {epoch}/{epochs} [{{bar:30}}] {{pos}}/{{len}} {{per_sec}} {{msg}}"
    ))
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    Some(bar)
}

/// Validation loss and accuracy (inference mode); with a partner's probabilities for `set`,
/// those of the pair.
fn evaluate(
    model: &TrainNet,
    set: &LabeledFaces,
    classes: &[Emotion],
    size: u32,
    kind: LossKind,
    weights: &Tensor,
    partner: Option<&[f32]>,
) -> Result<(f64, f64)> {
    let dev = Device::Cpu;
    let (mut loss_sum, mut correct) = (0f64, 0usize);
    let chunk = 128;
    for (k, (imgs, labels)) in set
        .images
        .chunks(chunk)
        .zip(set.labels.chunks(chunk))
        .enumerate()
    {
        let refs: Vec<&image::GrayImage> = imgs.iter().collect();
        let x = batch(&refs, size, &dev)?;
        let ids: Vec<u32> = labels
            .iter()
            .map(|l| classes.iter().position(|c| c == l).unwrap_or(0) as u32)
            .collect();
        let y = Tensor::new(ids.as_slice(), &dev)?;
        let logits = model.forward_eval(&x)?;
        let c = classes.len();
        let mate = partner.map(|m| &m[k * chunk * c..(k * chunk + imgs.len()) * c]);
        let logp = judged_log_probs(&logits, mate, 1.0)?;
        loss_sum +=
            loss_fn(kind, &logp, &y, weights, None)?.to_scalar::<f32>()? as f64 * imgs.len() as f64;
        let pred: Vec<u32> = logp.argmax(D::Minus1)?.to_vec1()?;
        correct += pred.iter().zip(&ids).filter(|(p, l)| p == l).count();
    }
    Ok((
        loss_sum / set.len() as f64,
        correct as f64 / set.len() as f64,
    ))
}

fn output_spec(cfg: &TrainConfig, classes: &[Emotion], state: &TrainState) -> ModelSpec {
    let mut metadata: HashMap<String, String> = match &cfg.net {
        NetConfig::Vgg(c) => c.to_metadata(),
        NetConfig::MiniXception { .. } => HashMap::new(),
    };
    metadata.insert("train_data".into(), cfg.data_description.clone());
    metadata.insert("train_epochs".into(), state.epochs_done.to_string());
    metadata.insert("best_val_acc".into(), format!("{:.4}", state.best_val_acc));
    metadata.insert("best_epoch".into(), state.best_epoch.to_string());
    metadata.insert("train_command".into(), cfg.command.clone());
    if let Some(init) = &cfg.init {
        metadata.insert("train_init".into(), init.display().to_string());
    }
    if let Some(d) = &cfg.distill {
        metadata.insert(
            "train_teacher".into(),
            format!(
                "{} (weight {}, temperature {})",
                d.teacher.display(),
                d.weight,
                d.temperature
            ),
        );
    }
    let flipped = |p: &Partner| if p.flip { " flip-averaged" } else { "" };
    if let Some(p) = &cfg.partner {
        metadata.insert(
            "train_partner".into(),
            format!("{}{}", p.path.display(), flipped(p)),
        );
    }
    let architecture = cfg.net.architecture();
    // A net trained as a partner is weaker alone than the accuracy it was chosen by.
    let scored = match &cfg.partner {
        Some(p) => format!(
            "val {:.1}% averaged with {}{}",
            100.0 * state.best_val_acc,
            p.path.file_name().map_or_else(
                || p.path.display().to_string(),
                |n| n.to_string_lossy().into_owned()
            ),
            flipped(p)
        ),
        None => format!("val {:.1}%", 100.0 * state.best_val_acc),
    };
    ModelSpec {
        architecture,
        input_size: cfg.net.input_size() as u32,
        scaling: TRAIN_SCALING,
        classes: classes.to_vec(),
        name: format!(
            "emocam {}{} ({scored})",
            cfg.net.label(),
            if cfg.init.is_some() {
                " fine-tuned"
            } else {
                ""
            },
        ),
        bn_eps: cfg.net.bn_eps(),
        flip_average: false,
        metadata: HashMap::from([(
            meta::ARCHITECTURE.to_string(),
            architecture.name().to_string(),
        )])
        .into_iter()
        .chain(metadata)
        .collect(),
    }
}

fn save_varmap(varmap: &VarMap, path: &Path, spec: &ModelSpec) -> Result<()> {
    let tensors: HashMap<String, Tensor> = {
        let data = varmap
            .data()
            .lock()
            .map_err(|_| Error::weights(path, "poisoned variable map"))?;
        data.iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect()
    };
    weights::save(path, &tensors, spec.to_metadata())
}

/// Copy tensors from a weights file into the variables of the same name and shape. With
/// `strict`, every variable must be found (resuming); otherwise mismatched ones (a new head)
/// keep their fresh initialisation. Returns what the file's metadata says.
fn load_into(varmap: &VarMap, path: &Path, strict: bool) -> Result<ModelSpec> {
    let file = weights::WeightsFile::read(path)?;
    // Training always feeds faces scaled to [-1, 1]; weights learned on another scaling would
    // start from inputs they never saw and the output would claim the wrong scaling.
    if file.spec.scaling != TRAIN_SCALING {
        return Err(Error::weights(
            path,
            format!(
                "input_scaling is {}, but training feeds faces scaled as {}",
                file.spec.scaling.name(),
                TRAIN_SCALING.name()
            ),
        ));
    }
    let data = varmap
        .data()
        .lock()
        .map_err(|_| Error::weights(path, "poisoned variable map"))?;
    let mut loaded = 0;
    for (name, var) in data.iter() {
        match file.tensors.get(name) {
            Some(t) if t.shape() == var.shape() => {
                var.set(t)?;
                loaded += 1;
            }
            other if strict => {
                return Err(Error::weights(
                    path,
                    match other {
                        Some(t) => format!(
                            "tensor {name} has shape {:?}, expected {:?}",
                            t.dims(),
                            var.dims()
                        ),
                        None => format!("tensor {name} is missing"),
                    },
                ));
            }
            _ => {}
        }
    }
    if loaded == 0 {
        return Err(Error::weights(
            path,
            "no tensor matches the network being trained (is it the same architecture?)",
        ));
    }
    Ok(file.spec)
}
