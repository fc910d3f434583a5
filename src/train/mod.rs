//! Training emotion classifiers with candle: data in memory, augmentation, SGD with momentum or
//! AdamW, a warm-up + cosine learning-rate schedule, class weighting, per-epoch validation, a
//! CSV log, the best checkpoint by validation accuracy, early stopping and `--resume`.
//!
//! The output is a weights file with the metadata the app needs, which `Classifier::load` (and
//! the app's Open weights menu) reads unchanged.
//!
//! By concern: `config` (what a run is asked to do, and its validation), `memory` (what a
//! step needs), `network` (the net being trained), `optim` (optimisers and schedule), `loss`,
//! `step` (one step over a batch, and validation), `helpers` and `teacher` (the probabilities
//! of a teacher or partner), `checkpoint` (files beside the output, `--init` and `--resume`),
//! `progress` (log and bars), [`curves`] and [`augment`]; the loop is here.

pub mod augment;
mod checkpoint;
mod config;
pub mod curves;
mod helpers;
mod init;
mod loss;
mod memory;
mod network;
mod optim;
mod progress;
mod step;
mod teacher;

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use serde::Serialize;

use crate::dataset::LabeledFaces;
use crate::emotion::Emotion;
use crate::error::{Error, Result};
pub use crate::rng::Rng;
pub use augment::Augment;
pub use checkpoint::TrainState;
pub use config::{Distill, LossKind, NetConfig, OptimizerKind, Partner, TrainConfig};
pub use optim::schedule;
pub use progress::EpochLog;
pub use teacher::{TABLE_IMAGES, save_teacher_table, table_image_name};

use checkpoint::Paths;
use helpers::{PartnerTables, batch_rows};
use loss::SoftTargets;
use network::TrainNet;
use optim::Opt;
use step::{Batch, StepContext};

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

/// Train on `train`, select on `val`; writes the best weights, a CSV log, a last checkpoint and
/// a resume state beside `cfg.out`.
pub fn train(
    train_set: &LabeledFaces,
    val_set: &LabeledFaces,
    cfg: &TrainConfig,
) -> Result<TrainSummary> {
    cfg.validate()?;
    let classes = net_classes(train_set, val_set, cfg)?;
    let paths = Paths::beside(&cfg.out);
    let dev = Device::Cpu;

    let varmap = VarMap::new();
    let mut model = TrainNet::new(&cfg.net, init::seeded_var_builder(&varmap, cfg.seed, &dev))?;
    model.freeze(cfg.freeze);
    let mut state = if cfg.resume {
        checkpoint::resume_weights(&varmap, &paths)?
    } else {
        if let Some(init) = &cfg.init {
            checkpoint::load_into(&varmap, init, false)?;
        }
        TrainState::default()
    };
    // Frozen blocks and batch-norm running statistics are not optimised.
    let named = network::trainable_vars(&varmap, &model.frozen_prefixes(cfg.freeze))?;
    let mut opt = Opt::new(named, cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay)?;
    if cfg.resume {
        checkpoint::restore_optimiser(&mut opt, &paths.opt, state.epochs_done, cfg.progress);
    }
    let class_weights = class_weights(train_set, &classes, cfg.class_weighting)?;
    let threads = worker_threads(cfg, &state);
    state.threads = Some(threads);
    let mut log = progress::Log::create(&paths.log, &state.history)?;

    let patience_spent = |s: &TrainState| {
        cfg.patience > 0 && s.best_epoch > 0 && s.epochs_done - s.best_epoch >= cfg.patience
    };
    let last_epoch = match cfg.stop_after {
        Some(n) => cfg.epochs.min(state.epochs_done + n),
        None => cfg.epochs,
    };
    // Labelled only when an epoch will train (a finished or early-stopped run resumed skips it).
    let will_train = state.epochs_done < last_epoch && !patience_spent(&state);
    let helpers = if will_train {
        Helpers::load(cfg, (train_set, val_set), &classes, threads, &paths)?
    } else {
        Helpers::default()
    };

    let trainable: Vec<Var> = opt.vars().cloned().collect();
    let ctx = StepContext {
        model: &model,
        size: cfg.net.input_size() as u32,
        loss: cfg.loss,
        class_weights: &class_weights,
        vars: &trainable,
        threads,
    };
    let run = Run {
        cfg,
        train_set,
        classes: &classes,
        helpers: &helpers,
    };
    for epoch in state.epochs_done..last_epoch {
        // Checked first, so that resuming a run that stopped early trains nothing more.
        if patience_spent(&state) {
            break;
        }
        let t0 = Instant::now();
        let row = run.epoch(&ctx, &mut opt, epoch)?;
        let (val_loss, val_acc) = ctx.evaluate(
            val_set,
            &classes,
            helpers.partner.as_ref().map(|p| p.val.as_slice()),
        )?;
        let row = EpochLog {
            val_loss,
            val_acc,
            secs: t0.elapsed().as_secs_f64(),
            ..row
        };
        // Before anything of this epoch is written: the checkpoints of the last good epoch
        // stay as they are.
        check_finite_epoch(&row, &varmap)?;
        log.append(&row)?;
        if cfg.progress {
            eprintln!("{}", row.summary(cfg.epochs));
        }
        state.history.push(row);
        state.epochs_done = epoch + 1;
        let is_best = val_acc > state.best_val_acc || state.best_epoch == 0;
        if is_best {
            state.best_val_acc = val_acc;
            state.best_epoch = epoch + 1;
        }
        checkpoint::save_epoch(&varmap, &opt, &state, is_best, cfg, &classes, &paths)?;
        curves::save(&state.history, &paths.curves)?;
    }
    let stopped_early = patience_spent(&state) && state.epochs_done < cfg.epochs;
    Ok(TrainSummary {
        out: cfg.out.clone(),
        best_val_acc: state.best_val_acc,
        best_epoch: state.best_epoch,
        epochs_run: state.epochs_done,
        stopped_early,
        history: state.history,
        tables_reused: helpers.reused,
    })
}

/// The classes the net learns, in its output order; `Err` if either set has a label outside
/// them or is empty.
fn net_classes(
    train_set: &LabeledFaces,
    val_set: &LabeledFaces,
    cfg: &TrainConfig,
) -> Result<Vec<Emotion>> {
    if train_set.is_empty() || val_set.is_empty() {
        return Err(Error::InvalidInput {
            what: "data".into(),
            reason: "the training and validation sets must not be empty".into(),
        });
    }
    let classes: Vec<Emotion> = Emotion::ALL[..cfg.net.classes().min(Emotion::COUNT)].to_vec();
    for (set, name) in [(train_set, "training"), (val_set, "validation")] {
        if let Some(l) = set.labels.iter().find(|l| !classes.contains(l)) {
            return Err(Error::InvalidInput {
                what: "data".into(),
                reason: format!(
                    "{name} set has class {l}, but the net has {} classes",
                    classes.len()
                ),
            });
        }
    }
    Ok(classes)
}

/// Per-class loss weights: 1, or with `weighting` the inverse frequency, normalised to mean 1
/// over the classes present.
fn class_weights(set: &LabeledFaces, classes: &[Emotion], weighting: bool) -> Result<Tensor> {
    let counts = set.class_counts();
    let weights: Vec<f32> = classes
        .iter()
        .map(|c| {
            let n = counts[c.index()] as f32;
            if !weighting || n == 0.0 {
                1.0
            } else {
                set.len() as f32 / (classes.len() as f32 * n)
            }
        })
        .collect();
    Ok(Tensor::new(weights.as_slice(), &Device::Cpu)?)
}

/// Worker threads per step: as asked, else the count a resumed run used, else one per core.
fn worker_threads(cfg: &TrainConfig, state: &TrainState) -> usize {
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
    threads
}

/// The helpers' probabilities for the run, and how many came from the caches.
#[derive(Default)]
struct Helpers {
    /// The teacher's softened probabilities for every training image, and its settings.
    teacher: Option<(Distill, Vec<f32>)>,
    partner: Option<PartnerTables>,
    reused: usize,
}

impl Helpers {
    fn load(
        cfg: &TrainConfig,
        sets: (&LabeledFaces, &LabeledFaces),
        classes: &[Emotion],
        threads: usize,
        paths: &Paths,
    ) -> Result<Self> {
        let mut out = Helpers::default();
        if let Some(d) = &cfg.distill {
            let (table, reused) = teacher::teacher_targets(
                d,
                sets.0,
                classes,
                threads,
                &paths.teacher_cache,
                cfg.progress,
            )?;
            out.reused += usize::from(reused);
            out.teacher = Some((d.clone(), table));
        }
        if let Some(p) = &cfg.partner {
            let (tables, reused) = helpers::partner_tables(
                p,
                sets,
                classes,
                threads,
                &paths.partner_cache,
                cfg.progress,
            )?;
            out.reused += usize::from(reused);
            out.partner = Some(tables);
        }
        Ok(out)
    }
}

/// What every epoch of a run reads.
struct Run<'a> {
    cfg: &'a TrainConfig,
    train_set: &'a LabeledFaces,
    classes: &'a [Emotion],
    helpers: &'a Helpers,
}

impl Run<'_> {
    /// Train one epoch (0-based `epoch`); the returned row has the training figures, its
    /// validation figures still 0 and `secs` the training time alone. `Err` if the loss stops
    /// being a number.
    fn epoch(&self, ctx: &StepContext, opt: &mut Opt, epoch: usize) -> Result<EpochLog> {
        let (cfg, set) = (self.cfg, self.train_set);
        let t0 = Instant::now();
        // Seeded per epoch, so that a resumed run draws what an uninterrupted one would.
        let mut rng = Rng::new(cfg.seed.wrapping_add(epoch as u64 * 7919));
        let mut order: Vec<usize> = (0..set.len()).collect();
        rng.shuffle(&mut order);
        let steps_per_epoch = set.len().div_ceil(cfg.batch_size);
        let bar = progress::progress_bar(cfg.progress, set.len() as u64, epoch + 1, cfg.epochs);
        let (mut loss_sum, mut correct, mut seen) = (0f64, 0usize, 0usize);
        let mut lr = cfg.lr;
        for (b, idx) in order.chunks(cfg.batch_size).enumerate() {
            lr = schedule(
                cfg.lr,
                epoch * steps_per_epoch + b,
                cfg.warmup_epochs * steps_per_epoch,
                steps_per_epoch * cfg.epochs,
            );
            opt.set_lr(lr);
            let augmented: Vec<image::GrayImage>;
            let images: Vec<&image::GrayImage> = match &cfg.augment {
                Some(a) => {
                    augmented = idx
                        .iter()
                        .map(|&i| a.apply(&set.images[i], &mut rng))
                        .collect();
                    augmented.iter().collect()
                }
                None => idx.iter().map(|&i| &set.images[i]).collect(),
            };
            let labels: Vec<u32> = idx
                .iter()
                .map(|&i| {
                    let l = set.labels[i];
                    self.classes.iter().position(|c| *c == l).unwrap_or(0) as u32
                })
                .collect();
            let k = self.classes.len();
            let teacher = self.helpers.teacher.as_ref();
            let soft_rows = teacher.map(|(_, table)| batch_rows(table, idx, k));
            let mate = self
                .helpers
                .partner
                .as_ref()
                .map(|p| batch_rows(&p.train, idx, k));
            let batch = Batch {
                images: &images,
                labels: &labels,
                soft: teacher
                    .zip(soft_rows.as_deref())
                    .map(|((d, _), probs)| SoftTargets {
                        probs,
                        weight: d.weight,
                        temperature: d.temperature,
                    }),
                partner: mate.as_deref(),
                dropout_seed: rng.next_u64(),
            };
            let step = ctx.forward_backward(&batch)?;
            if !step.loss.is_finite() {
                return Err(diverged(
                    format!(
                        "the loss became {} at epoch {}, step {} of {steps_per_epoch}",
                        step.loss,
                        epoch + 1,
                        b + 1
                    ),
                    epoch,
                ));
            }
            opt.step(&step.grads)?;
            correct += step
                .predicted
                .iter()
                .zip(&labels)
                .filter(|(p, l)| p == l)
                .count();
            loss_sum += step.loss * idx.len() as f64;
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
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        let train_secs = t0.elapsed().as_secs_f64();
        Ok(EpochLog {
            epoch: epoch + 1,
            lr,
            train_loss: loss_sum / seen.max(1) as f64,
            train_acc: correct as f64 / seen.max(1) as f64,
            val_loss: 0.0,
            val_acc: 0.0,
            secs: train_secs,
            images_per_sec: seen as f64 / train_secs.max(1e-9),
        })
    }
}

/// `Err` if the epoch's validation loss or any weight (a parameter or a batch-norm running
/// statistic) is not a number: the last steps made them so, and they must not be saved.
fn check_finite_epoch(row: &EpochLog, varmap: &VarMap) -> Result<()> {
    if !row.val_loss.is_finite() {
        return Err(diverged(
            format!(
                "the validation loss became {} after epoch {}",
                row.val_loss, row.epoch
            ),
            row.epoch - 1,
        ));
    }
    let data = varmap.data().lock().map_err(|_| Error::InvalidInput {
        what: "model".into(),
        reason: "poisoned variable map".into(),
    })?;
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        if let Some((_, v)) = crate::model::weights::first_non_finite(data[name].as_tensor())? {
            return Err(diverged(
                format!(
                    "weight {name} became {v} in epoch {} (its loss stayed a number)",
                    row.epoch
                ),
                row.epoch - 1,
            ));
        }
    }
    Ok(())
}

/// The error of a run that diverged during 0-based `epoch`: `what` happened, and what was
/// kept.
fn diverged(what: String, epoch: usize) -> Error {
    let kept = if epoch == 0 {
        "nothing was saved".to_string()
    } else {
        format!("the checkpoints of epoch {epoch} are kept as they were")
    };
    Error::InvalidInput {
        what: "training run".into(),
        reason: format!(
            "{what}; training stopped and {kept}. Try a lower --lr (or --resume from the \
             last good epoch with one)"
        ),
    }
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
    let model = TrainNet::new(net, init::seeded_var_builder(&varmap, 1, &dev))?;
    let named = network::trainable_vars(&varmap, &[])?;
    let vars: Vec<Var> = named.iter().map(|(_, v)| v.clone()).collect();
    let mut opt = Opt::new(named, OptimizerKind::AdamW, 1e-3, 0.9, 0.01)?;
    let size = net.input_size() as u32;
    let mut rng = Rng::new(1);
    let images: Vec<image::GrayImage> = (0..batch)
        .map(|_| {
            image::GrayImage::from_fn(size, size, |_, _| {
                image::Luma([(rng.next_u64() >> 56) as u8])
            })
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
        let ctx = StepContext {
            model: &model,
            size,
            loss: LossKind::CrossEntropy,
            class_weights: &weights,
            vars: &vars,
            threads,
        };
        let result = ctx.forward_backward(&Batch {
            images: &refs,
            labels: &labels,
            soft: None,
            partner: None,
            dropout_seed: step,
        })?;
        opt.step(&result.grads)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(epoch: usize, val_loss: f64) -> EpochLog {
        EpochLog {
            epoch,
            lr: 0.01,
            train_loss: 1.0,
            train_acc: 0.5,
            val_loss,
            val_acc: 0.5,
            secs: 1.0,
            images_per_sec: 10.0,
        }
    }

    /// Weights can stop being numbers with a finite loss (the last step's update overflowed):
    /// the epoch is refused naming the weight, before anything is saved.
    #[test]
    fn an_epoch_that_left_weights_not_finite_is_refused_naming_them() -> Result<()> {
        let map = VarMap::new();
        let dev = Device::Cpu;
        let init = candle_nn::Init::Const(0.5);
        map.get(2, "block1.conv1.weight", init, DType::F32, &dev)?;
        map.get(3, "head.fc2.bias", init, DType::F32, &dev)?;
        check_finite_epoch(&row(3, 0.7), &map)?;

        let err = check_finite_epoch(&row(3, f64::NAN), &map)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("validation loss became NaN after epoch 3"),
            "{err}"
        );

        let data = map.data().lock().expect("not poisoned");
        data["head.fc2.bias"].set(&Tensor::new(&[0f32, f32::INFINITY, 1.0], &dev)?)?;
        drop(data);
        let err = check_finite_epoch(&row(3, 0.7), &map)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("weight head.fc2.bias became inf in epoch 3")
                && err.contains("checkpoints of epoch 2 are kept"),
            "{err}"
        );
        let first = diverged("x".into(), 0).to_string();
        assert!(first.contains("nothing was saved"), "{first}");
        Ok(())
    }
}
