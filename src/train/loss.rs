//! The losses: cross-entropy or MSE against the labels, the teacher's KL term, and what a
//! partner's probabilities change about what is judged.

use candle_core::{D, Tensor};

use super::config::LossKind;

/// The teacher's softened probabilities for one batch, rows in batch order.
#[derive(Clone, Copy)]
pub(super) struct SoftTargets<'a> {
    pub probs: &'a [f32],
    pub weight: f64,
    pub temperature: f64,
}

/// Rows of probabilities softened by temperature `t`: p^(1/t), renormalised (the softmax of
/// log p / t). Never 0, so that logarithms of them stay finite.
pub(super) fn soften(probs: &mut [f32], classes: usize, t: f64) {
    for row in probs.chunks_mut(classes) {
        row.iter_mut()
            .for_each(|p| *p = p.max(1e-8).powf(1.0 / t as f32));
        let sum: f32 = row.iter().sum();
        row.iter_mut().for_each(|p| *p /= sum);
    }
}

/// Log-probabilities of what training judges, at temperature `t`: the net's own, or, with a
/// partner's probabilities for the same images (rows `(N, classes)`, softened by the same `t`
/// here), those of the pair's average, whose gradients reach the net through its half.
pub(super) fn judged_log_probs(
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
pub(super) fn loss_fn(
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
pub(super) fn loss_denominator(kind: LossKind, labels: &[u32], class_weights: &[f32]) -> f64 {
    match kind {
        LossKind::CrossEntropy => labels
            .iter()
            .map(|&l| class_weights.get(l as usize).copied().unwrap_or(1.0) as f64)
            .sum(),
        LossKind::Mse => (labels.len() * class_weights.len()) as f64,
    }
}

/// The teacher's term for a part of a batch: the KL divergence from the teacher's `q` to the
/// net's `logp_t` (both at temperature `t`), summed over the part and divided by the `whole`
/// batch's size, scaled by `t²` so that its gradients keep their size. 0 when the net agrees
/// (the teacher's entropy, a constant, is taken out so the logged loss reads as disagreement;
/// `q` is never 0, see [`soften`]).
pub(super) fn distillation_term(
    q: &Tensor,
    logp_t: &Tensor,
    t: f64,
    whole: usize,
) -> candle_core::Result<Tensor> {
    (q * (q.log()? - logp_t)?)?.sum_all()? * (t * t / whole as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Result};

    fn scalar(t: &Tensor) -> Result<f64> {
        Ok(t.to_scalar::<f32>()? as f64)
    }

    #[test]
    fn the_denominator_sums_the_labels_class_weights() {
        let w = [0.5f32, 2.0, 1.0];
        assert_eq!(
            loss_denominator(LossKind::CrossEntropy, &[0, 1, 1, 2], &w),
            5.5
        );
        // A label outside the weights counts 1.
        assert_eq!(loss_denominator(LossKind::CrossEntropy, &[7], &w), 1.0);
        assert_eq!(loss_denominator(LossKind::Mse, &[0, 1, 1, 2], &w), 12.0);
    }

    /// Two parts of a batch, each divided by the whole batch's denominator, add up to the
    /// whole batch's loss.
    #[test]
    fn parts_of_a_batch_add_up_to_the_whole() -> Result<()> {
        let dev = Device::Cpu;
        let logits = Tensor::new(
            &[[2f32, 0.0, -1.0], [0.5, 0.5, 0.0], [-1.0, 3.0, 0.0]],
            &dev,
        )?;
        let labels = [0u32, 2, 1];
        let weights = Tensor::new(&[0.5f32, 2.0, 1.0], &dev)?;
        for kind in [LossKind::CrossEntropy, LossKind::Mse] {
            let logp = judged_log_probs(&logits, None, 1.0)?;
            let whole = loss_fn(kind, &logp, &Tensor::new(&labels, &dev)?, &weights, None)?;
            let d = loss_denominator(kind, &labels, &weights.to_vec1::<f32>()?);
            let part = |rows: std::ops::Range<usize>| -> Result<f64> {
                let lp = logp.narrow(0, rows.start, rows.len())?;
                let y = Tensor::new(&labels[rows], &dev)?;
                scalar(&loss_fn(kind, &lp, &y, &weights, Some(d))?)
            };
            let sum = part(0..1)? + part(1..3)?;
            assert!((sum - scalar(&whole)?).abs() < 1e-6, "{kind:?}: {sum}");
        }
        Ok(())
    }

    #[test]
    fn cross_entropy_is_the_weighted_mean_negative_log_probability() -> Result<()> {
        let dev = Device::Cpu;
        let logits = Tensor::new(&[[0f32, 0.0], [2.0, 0.0]], &dev)?;
        let logp = judged_log_probs(&logits, None, 1.0)?;
        let w = Tensor::new(&[1f32, 3.0], &dev)?;
        let loss = loss_fn(
            LossKind::CrossEntropy,
            &logp,
            &Tensor::new(&[0u32, 1], &dev)?,
            &w,
            None,
        )?;
        let p1 = (-2f64).exp() / (1.0 + (-2f64).exp());
        let expect = (2f64.ln() + 3.0 * -p1.ln()) / 4.0;
        assert!((scalar(&loss)? - expect).abs() < 1e-5);
        Ok(())
    }

    #[test]
    fn softened_rows_stay_distributions_and_flatten_with_temperature() {
        let mut rows = vec![0.7f32, 0.2, 0.1, 1.0, 0.0, 0.0];
        let mut same = rows.clone();
        soften(&mut same, 3, 1.0);
        assert!(same.iter().zip(&rows).all(|(a, b)| (a - b).abs() < 1e-6));
        soften(&mut rows, 3, 2.0);
        for row in rows.chunks(3) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
            assert!(row.iter().all(|&p| p > 0.0), "never 0: {row:?}");
        }
        assert!(rows[0] < 0.7 && rows[2] > 0.1, "flatter: {rows:?}");
    }

    /// With a partner, what is judged is the log of the two nets' average probabilities.
    #[test]
    fn a_partner_is_averaged_in() -> Result<()> {
        let dev = Device::Cpu;
        let logits = Tensor::new(&[[1f32, 0.0]], &dev)?;
        let got = judged_log_probs(&logits, Some(&[0.2, 0.8]), 1.0)?.to_vec2::<f32>()?;
        let own = 1f32.exp() / (1.0 + 1f32.exp());
        let expect = [((own + 0.2) / 2.0).ln(), ((1.0 - own + 0.8) / 2.0).ln()];
        assert!((got[0][0] - expect[0]).abs() < 1e-6 && (got[0][1] - expect[1]).abs() < 1e-6);
        Ok(())
    }

    #[test]
    fn the_teachers_term_is_zero_when_the_net_agrees() -> Result<()> {
        let dev = Device::Cpu;
        let q = Tensor::new(&[[0.25f32, 0.75]], &dev)?;
        assert!(scalar(&distillation_term(&q, &q.log()?, 2.0, 1)?)?.abs() < 1e-6);
        let other = Tensor::new(&[[0.75f32, 0.25]], &dev)?.log()?;
        let kl = 0.25 * (0.25f64 / 0.75).ln() + 0.75 * 3f64.ln();
        let got = scalar(&distillation_term(&q, &other, 2.0, 4)?)?;
        assert!((got - kl * 4.0 / 4.0).abs() < 1e-5, "{got}");
        Ok(())
    }
}
