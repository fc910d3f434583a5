//! One training step (forward and backward passes over a batch, split over worker threads) and
//! the validation pass.

use candle_core::backprop::GradStore;
use candle_core::{D, Device, Tensor, Var};

use super::config::LossKind;
use super::loss::{SoftTargets, distillation_term, judged_log_probs, loss_denominator, loss_fn};
use super::network::{TrainNet, stack};
use crate::dataset::LabeledFaces;
use crate::emotion::Emotion;
use crate::error::Result;

/// Run `f` on each `chunk`-long range of `0..len` on a thread of its own (named `{name}-{i}`);
/// the results come back in order, `Err` with a message for a thread that could not start or
/// panicked.
pub(super) fn on_threads<T: Send>(
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

/// What every step of a run shares: the net, how it is fed and judged, and how the work is
/// split.
pub(super) struct StepContext<'a> {
    pub model: &'a TrainNet,
    /// Side of the square input.
    pub size: u32,
    pub loss: LossKind,
    /// Per-class weights of the loss (length = classes).
    pub class_weights: &'a Tensor,
    /// The variables whose gradients are wanted.
    pub vars: &'a [Var],
    /// Worker threads a batch is split over.
    pub threads: usize,
}

/// One batch: its (augmented) faces, their class indices, and what helps judge them.
pub(super) struct Batch<'a> {
    pub images: &'a [&'a image::GrayImage],
    pub labels: &'a [u32],
    /// The teacher's softened probabilities for these images.
    pub soft: Option<SoftTargets<'a>>,
    /// The partner's probabilities for these images (rows of `classes`).
    pub partner: Option<&'a [f32]>,
    /// Decides the dropout masks.
    pub dropout_seed: u64,
}

/// What a step computed: the batch's loss, the predicted classes and the gradients.
pub(super) struct StepResult {
    pub loss: f64,
    pub predicted: Vec<u32>,
    pub grads: GradStore,
}

impl StepContext<'_> {
    /// Forward and backward passes over `batch`, split into `threads` parts that run on their
    /// own threads (data-parallel: each part normalises with its own batch statistics). Every
    /// part divides by the whole batch's loss denominator, so the parts' gradients sum to the
    /// batch's.
    pub(super) fn forward_backward(&self, batch: &Batch) -> candle_core::Result<StepResult> {
        let denom = loss_denominator(
            self.loss,
            batch.labels,
            &self.class_weights.to_vec1::<f32>()?,
        );
        let n = batch.images.len();
        let parts = self.threads.clamp(1, n.max(1));
        let result = if parts == 1 {
            self.part(batch, 0..n, denom)
        } else {
            let results = on_threads(n, n.div_ceil(parts), "train-worker", |r| {
                self.part(batch, r, denom)
            });
            let mut done = Vec::with_capacity(results.len());
            for r in results {
                done.push(r.map_err(candle_core::Error::Msg)??);
            }
            self.pool(done)
        };
        // Batch-norm running statistics: one update from the whole batch, whatever the split.
        self.model.commit_batch_norm_stats()?;
        result
    }

    /// The loss, predictions and gradients of the images `rows` of `batch`.
    fn part(
        &self,
        batch: &Batch,
        rows: std::ops::Range<usize>,
        denom: f64,
    ) -> candle_core::Result<StepResult> {
        let dev = Device::Cpu;
        let first = rows.start;
        let x = stack(&batch.images[rows.clone()], self.size, &dev)?;
        let y = Tensor::new(&batch.labels[rows.clone()], &dev)?;
        // Each part's masks depend on where it starts, not on which thread runs it.
        let logits = self
            .model
            .forward_train(&x, batch.dropout_seed ^ ((first as u64) << 20))?;
        let c = logits.dim(1)?;
        let mine = rows.start * c..rows.end * c;
        let mate = batch.partner.map(|p| &p[mine.clone()]);
        let logp = judged_log_probs(&logits, mate, 1.0)?;
        let mut loss = loss_fn(self.loss, &logp, &y, self.class_weights, Some(denom))?;
        if let Some(s) = batch.soft {
            let q = Tensor::from_slice(&s.probs[mine], (rows.len(), c), &dev)?;
            let t = s.temperature;
            let logp_t = judged_log_probs(&logits, mate, t)?;
            let kd = distillation_term(&q, &logp_t, t, batch.images.len())?;
            loss = ((loss * (1.0 - s.weight))? + (kd * s.weight)?)?;
        }
        Ok(StepResult {
            predicted: logp.argmax(D::Minus1)?.to_vec1()?,
            loss: loss.to_scalar::<f32>()? as f64,
            grads: loss.backward()?,
        })
    }

    /// The parts' results as one: losses and gradients summed, predictions in order.
    fn pool(&self, parts: Vec<StepResult>) -> candle_core::Result<StepResult> {
        let loss = parts.iter().map(|p| p.loss).sum::<f64>();
        let predicted: Vec<u32> = parts.iter().flat_map(|p| p.predicted.clone()).collect();
        let mut stores: Vec<GradStore> = parts.into_iter().map(|p| p.grads).collect();
        if stores.is_empty() {
            candle_core::bail!("a batch of no images has no gradients");
        }
        let mut grads = stores.remove(0);
        for v in self.vars {
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
        Ok(StepResult {
            loss,
            predicted,
            grads,
        })
    }

    /// Validation loss and accuracy (inference mode); with a partner's probabilities for
    /// `set`, those of the pair.
    pub(super) fn evaluate(
        &self,
        set: &LabeledFaces,
        classes: &[Emotion],
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
            let x = stack(&refs, self.size, &dev)?;
            let ids: Vec<u32> = labels
                .iter()
                .map(|l| classes.iter().position(|c| c == l).unwrap_or(0) as u32)
                .collect();
            let y = Tensor::new(ids.as_slice(), &dev)?;
            let logits = self.model.forward_eval(&x)?;
            let c = classes.len();
            let mate = partner.map(|m| &m[k * chunk * c..(k * chunk + imgs.len()) * c]);
            let logp = judged_log_probs(&logits, mate, 1.0)?;
            loss_sum += loss_fn(self.loss, &logp, &y, self.class_weights, None)?
                .to_scalar::<f32>()? as f64
                * imgs.len() as f64;
            let pred: Vec<u32> = logp.argmax(D::Minus1)?.to_vec1()?;
            correct += pred.iter().zip(&ids).filter(|(p, l)| p == l).count();
        }
        Ok((
            loss_sum / set.len() as f64,
            correct as f64 / set.len() as f64,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_threads_covers_the_range_in_order_on_named_threads() {
        let parts = on_threads(10, 4, "probe", |r| {
            (r, std::thread::current().name().map(str::to_string))
        });
        let got: Vec<_> = parts.into_iter().map(|p| p.expect("thread ran")).collect();
        assert_eq!(
            got.iter().map(|(r, _)| r.clone()).collect::<Vec<_>>(),
            vec![0..4, 4..8, 8..10]
        );
        assert_eq!(got[2].1.as_deref(), Some("probe-2"));
        assert!(on_threads(0, 4, "none", |r| r).is_empty());
    }
}
