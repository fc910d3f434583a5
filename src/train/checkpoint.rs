//! What a run keeps on disk: the best and last weights, the optimiser's state and the resume
//! state beside the output, how each is written whole, and how `--init` and `--resume` read
//! them back.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};

use super::config::{NetConfig, Partner, TrainConfig};
use super::network::TRAIN_SCALING;
use super::optim::Opt;
use super::progress::EpochLog;
use crate::emotion::Emotion;
use crate::error::{Error, Result};
use crate::model::{ModelSpec, meta, weights};
use crate::outfile::{self, OutputPolicy};

/// Replace `path` with `bytes` whole (a temporary file beside it, then a rename), so that a
/// run cut off midway leaves the old file, never a truncated one; a device, FIFO or folder at
/// `path` is refused, never renamed over (see [`crate::outfile`]). Every file training writes
/// but the CSV log goes through here; each epoch replaces the last one's files.
pub(super) fn replace_whole(path: &Path, bytes: &[u8]) -> Result<()> {
    outfile::write_bytes_atomically(path, bytes, &OutputPolicy::new().with_overwrite(true))
}

/// The files beside a run's output (`<out>` = `dir/name.safetensors`).
pub(super) struct Paths {
    /// `name.log.csv`: one row per epoch.
    pub log: PathBuf,
    /// `name.last.safetensors`: the last epoch's weights.
    pub last: PathBuf,
    /// `name.state.json`: what `--resume` needs.
    pub state: PathBuf,
    /// `name.opt.safetensors`: the optimiser's state.
    pub opt: PathBuf,
    /// `name.curves.png`.
    pub curves: PathBuf,
    /// `name.teacher.safetensors`: a teacher model's probabilities.
    pub teacher_cache: PathBuf,
    /// `name.partner.safetensors`: a partner's probabilities.
    pub partner_cache: PathBuf,
}

impl Paths {
    pub(super) fn beside(out: &Path) -> Self {
        let side = |suffix: &str| {
            let stem = out
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "model".into());
            out.with_file_name(format!("{stem}{suffix}"))
        };
        Self {
            log: side(".log.csv"),
            last: side(".last.safetensors"),
            state: side(".state.json"),
            opt: side(".opt.safetensors"),
            curves: side(".curves.png"),
            teacher_cache: side(".teacher.safetensors"),
            partner_cache: side(".partner.safetensors"),
        }
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

impl TrainState {
    /// Read a state written by [`save_epoch`].
    fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        serde_json::from_str(&text).map_err(|e| Error::Dataset {
            path: path.to_path_buf(),
            reason: format!("not a training state: {e}"),
        })
    }
}

/// Key of the epoch count saved with the optimiser state.
const OPT_EPOCHS: &str = "epochs_done";

/// The epoch count saved with an optimiser state, if any.
fn saved_epochs(saved: &HashMap<String, Tensor>) -> Option<usize> {
    let v = saved
        .get(OPT_EPOCHS)?
        .flatten_all()
        .ok()?
        .to_dtype(candle_core::DType::F64)
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

/// The state of an interrupted run, its last weights copied into `varmap`.
pub(super) fn resume_weights(varmap: &VarMap, paths: &Paths) -> Result<TrainState> {
    let state = TrainState::read(&paths.state)?;
    let last = load_into(varmap, &paths.last, true)?;
    check_checkpoint_epoch(&last, &paths.last, &paths.state, state.epochs_done)?;
    Ok(state)
}

/// Give `opt` the state saved beside the last checkpoint of `epochs_done`. A state that is
/// missing, of another epoch, another optimiser or not finite leaves `opt` fresh, with a word
/// when `progress` (runs from before the state was saved resume this way).
pub(super) fn restore_optimiser(opt: &mut Opt, path: &Path, epochs_done: usize, progress: bool) {
    let restored = match weights::read_tensors(path) {
        Ok(saved) => match saved_epochs(&saved.tensors) {
            Some(n) if n != epochs_done => Err(format!(
                "it is of epoch {n}, the run has done {epochs_done}"
            )),
            Some(_) => weights::check_finite(path, &saved.tensors)
                .map_err(|e| e.to_string())
                .and_then(|()| opt.restore(&saved.tensors)),
            None => Err(format!("it has no {OPT_EPOCHS} entry")),
        },
        Err(e) => Err(e.to_string()),
    };
    if let Err(why) = restored
        && progress
    {
        eprintln!(
            "resuming without the optimiser state of {} ({why}): it starts afresh",
            path.display()
        );
    }
}

/// Write what an epoch leaves: the best weights if this epoch is the best (`state` already
/// records it), the last weights, the optimiser's state and `state`, each replaced whole and
/// the state last: a run cut off while saving leaves either the previous epoch's set or a
/// mismatch that `--resume` detects by the epoch each file records.
pub(super) fn save_epoch(
    varmap: &VarMap,
    opt: &Opt,
    state: &TrainState,
    is_best: bool,
    cfg: &TrainConfig,
    classes: &[Emotion],
    paths: &Paths,
) -> Result<()> {
    let spec = output_spec(cfg, classes, state);
    if is_best {
        save_varmap(varmap, &cfg.out, &spec)?;
    }
    save_varmap(varmap, &paths.last, &spec)?;
    let mut opt_state = opt.state()?;
    opt_state.insert(
        OPT_EPOCHS.into(),
        Tensor::new(&[state.epochs_done as f64], &Device::Cpu)?,
    );
    replace_whole(
        &paths.opt,
        &weights::encode_tensors(&paths.opt, &opt_state, None)?,
    )?;
    let json = serde_json::to_string_pretty(state).map_err(|e| Error::InvalidInput {
        what: "training state".into(),
        reason: e.to_string(),
    })?;
    replace_whole(&paths.state, json.as_bytes())
}

/// The description written into the weights: what the app needs to load them, and how they
/// were trained.
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

/// The variables of `varmap`, with `spec`'s metadata, written whole to `path`.
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
    replace_whole(
        path,
        &weights::encode_tensors(path, &tensors, Some(spec.to_metadata()))?,
    )
}

/// Copy tensors from a weights file into the variables of the same name and shape. With
/// `strict`, every variable must be found (resuming); otherwise mismatched ones (a new head)
/// keep their fresh initialisation. Every tensor copied must be finite. Returns what the
/// file's metadata says.
pub(super) fn load_into(varmap: &VarMap, path: &Path, strict: bool) -> Result<ModelSpec> {
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
    // Checked before any variable changes, so that a refused file leaves the net as it was.
    let mut matched = Vec::with_capacity(data.len());
    for (name, var) in data.iter() {
        match file.tensors.get(name) {
            Some(t) if t.shape() == var.shape() => matched.push((name, var, t)),
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
    if matched.is_empty() {
        return Err(Error::weights(
            path,
            "no tensor matches the network being trained (is it the same architecture?)",
        ));
    }
    weights::check_finite(path, matched.iter().map(|(name, _, t)| (*name, *t)))?;
    for (_, var, t) in matched {
        var.set(t)?;
    }
    Ok(file.spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn side_files_are_named_after_the_output() {
        let p = Paths::beside(Path::new("runs/vgg.safetensors"));
        assert_eq!(p.last, Path::new("runs/vgg.last.safetensors"));
        assert_eq!(p.state, Path::new("runs/vgg.state.json"));
        assert_eq!(p.opt, Path::new("runs/vgg.opt.safetensors"));
        assert_eq!(p.log, Path::new("runs/vgg.log.csv"));
        assert_eq!(p.curves, Path::new("runs/vgg.curves.png"));
        assert_eq!(p.teacher_cache, Path::new("runs/vgg.teacher.safetensors"));
        assert_eq!(p.partner_cache, Path::new("runs/vgg.partner.safetensors"));
    }

    #[test]
    fn the_state_round_trips_and_older_states_lack_threads() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let path = dir.path().join("run.state.json");
        let state = TrainState {
            epochs_done: 3,
            best_val_acc: 0.625,
            best_epoch: 2,
            history: vec![EpochLog {
                epoch: 1,
                lr: 0.01,
                train_loss: 1.0,
                train_acc: 0.5,
                val_loss: 1.1,
                val_acc: 0.45,
                secs: 3.5,
                images_per_sec: 200.0,
            }],
            threads: Some(2),
        };
        let json = serde_json::to_string_pretty(&state).map_err(|e| Error::InvalidInput {
            what: "state".into(),
            reason: e.to_string(),
        })?;
        replace_whole(&path, json.as_bytes())?;
        let back = TrainState::read(&path)?;
        assert_eq!(
            (back.epochs_done, back.best_epoch, back.threads),
            (3, 2, Some(2))
        );
        assert_eq!(back.history, state.history);
        assert!(!dir.path().join("run.state.json.partial").exists());

        let old = r#"{"epochs_done": 1, "best_val_acc": 0.5, "best_epoch": 1, "history": []}"#;
        replace_whole(&path, old.as_bytes())?;
        assert_eq!(TrainState::read(&path)?.threads, None);
        replace_whole(&path, b"{}")?;
        let err = TrainState::read(&path).unwrap_err().to_string();
        assert!(
            err.contains("run.state.json") && err.contains("not a training state"),
            "{err}"
        );
        Ok(())
    }

    #[test]
    fn replacing_a_file_that_cannot_be_written_leaves_no_partial_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("missing-dir").join("x.safetensors");
        let err = replace_whole(&target, b"bytes").unwrap_err().to_string();
        assert!(err.contains("x.safetensors"), "{err}");
        assert!(!dir.path().join("missing-dir").exists());
    }

    #[test]
    fn the_optimisers_epoch_count_is_read_back() -> candle_core::Result<()> {
        let mut saved = HashMap::new();
        assert_eq!(saved_epochs(&saved), None);
        saved.insert(OPT_EPOCHS.to_string(), Tensor::new(&[4f64], &Device::Cpu)?);
        assert_eq!(saved_epochs(&saved), Some(4));
        Ok(())
    }
}
