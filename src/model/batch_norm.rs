//! Trainable batch norm for channel-major activations, shared by the nets that `emocam train`
//! trains.

use std::sync::Mutex;

use candle_core::{Result, Tensor, Var};
use candle_nn::{Init, VarBuilder};

use super::ops::batch_norm_train;

/// Weight of the current batch in the running statistics.
pub const BN_MOMENTUM: f64 = 0.1;

/// Per-channel means and biased variances of one training pass, and its element count.
type PartStats = (Vec<f32>, Vec<f32>, usize);

/// Batch norm for activations laid out `(C, cols)`: statistics per row (channel).
///
/// Training normalises with the batch statistics, which [`BatchNorm2d::commit_stats`] then
/// folds into the running ones (momentum 0.1, unbiased variance, as PyTorch); inference uses
/// the running statistics. Tensor names: `weight`, `bias`, `running_mean`, `running_var`.
pub struct BatchNorm2d {
    weight: Tensor,
    bias: Tensor,
    running_mean: Var,
    running_var: Var,
    eps: f64,
    /// Batch statistics `(means, biased variances, count)` of the training passes since the
    /// last commit: one per worker when a batch is split over threads.
    pending: Mutex<Vec<PartStats>>,
}

impl BatchNorm2d {
    /// `c` channels; fresh ones start as the identity.
    pub fn new(vb: VarBuilder, c: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: vb.get_with_hints(c, "weight", Init::Const(1.0))?,
            bias: vb.get_with_hints(c, "bias", Init::Const(0.0))?,
            running_mean: Var::from_tensor(&vb.get_with_hints(
                c,
                "running_mean",
                Init::Const(0.0),
            )?)?,
            running_var: Var::from_tensor(&vb.get_with_hints(
                c,
                "running_var",
                Init::Const(1.0),
            )?)?,
            eps,
            pending: Mutex::new(Vec::new()),
        })
    }

    /// Batch norm, then ReLU if `relu`; training uses the fused kernel [`batch_norm_train`].
    pub fn forward_t(&self, x: &Tensor, train: bool, relu: bool) -> Result<Tensor> {
        if !train {
            let y = self.forward_eval(x)?;
            return if relu { y.relu() } else { Ok(y) };
        }
        let (y, (means, vars)) = batch_norm_train(x, &self.weight, &self.bias, self.eps, relu)?;
        self.pending
            .lock()
            .map_err(|_| candle_core::Error::Msg("poisoned batch-norm statistics".into()))?
            .push((means, vars, x.dim(1)?));
        Ok(y)
    }

    /// Fold the batch statistics of the training passes since the last call into the running
    /// ones, as one update: parts of a batch are pooled (in a fixed order, so a split batch
    /// gives the same running statistics on every run).
    pub fn commit_stats(&self) -> Result<()> {
        let mut parts = std::mem::take(
            &mut *self
                .pending
                .lock()
                .map_err(|_| candle_core::Error::Msg("poisoned batch-norm statistics".into()))?,
        );
        if parts.is_empty() {
            return Ok(());
        }
        parts.sort_by(|a, b| {
            (a.2, a.0.first().map(|v| v.to_bits())).cmp(&(b.2, b.0.first().map(|v| v.to_bits())))
        });
        let c = parts[0].0.len();
        let total: usize = parts.iter().map(|p| p.2).sum();
        let nt = total as f64;
        let (mut mean, mut var) = (vec![0f32; c], vec![0f32; c]);
        for ch in 0..c {
            let m = parts
                .iter()
                .map(|(ms, _, n)| ms[ch] as f64 * *n as f64)
                .sum::<f64>()
                / nt;
            // Pooled biased variance: within-part variance plus the spread of the part means.
            let v = parts
                .iter()
                .map(|(ms, vs, n)| *n as f64 * (vs[ch] as f64 + (ms[ch] as f64 - m).powi(2)))
                .sum::<f64>()
                / nt;
            mean[ch] = m as f32;
            var[ch] = (v * nt / (nt - 1.0).max(1.0)) as f32;
        }
        let dev = self.running_mean.device();
        let k = BN_MOMENTUM;
        let mean = Tensor::new(mean.as_slice(), dev)?;
        let unbiased = Tensor::new(var.as_slice(), dev)?;
        self.running_mean
            .set(&((self.running_mean.as_tensor() * (1.0 - k))? + (mean * k)?)?)?;
        self.running_var
            .set(&((self.running_var.as_tensor() * (1.0 - k))? + (unbiased * k)?)?)?;
        Ok(())
    }

    /// The inference form `y = x * scale + shift`: `(scale, shift)`, each `(C)`.
    pub fn folded(&self) -> Result<(Tensor, Tensor)> {
        let scale = (self.running_var.as_tensor() + self.eps)?
            .sqrt()?
            .recip()?
            .mul(&self.weight)?;
        let shift = (&self.bias - self.running_mean.as_tensor().mul(&scale)?)?;
        Ok((scale, shift))
    }

    /// Inference: normalise with the running statistics.
    fn forward_eval(&self, x: &Tensor) -> Result<Tensor> {
        let (scale, shift) = self.folded()?;
        x.broadcast_mul(&scale.unsqueeze(1)?)?
            .broadcast_add(&shift.unsqueeze(1)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, ModuleT};
    use candle_nn::VarMap;

    #[test]
    fn channel_major_batch_norm_matches_candle_nn() -> Result<()> {
        let dev = Device::Cpu;
        let x = ((Tensor::randn(0f32, 1.0, (4, 3, 5, 5), &dev)? * 2.0)? + 0.5)?;
        let ours_map = VarMap::new();
        let ours = BatchNorm2d::new(
            VarBuilder::from_varmap(&ours_map, DType::F32, &dev),
            3,
            1e-5,
        )?;
        let theirs_map = VarMap::new();
        let theirs = candle_nn::batch_norm(
            3,
            1e-5,
            VarBuilder::from_varmap(&theirs_map, DType::F32, &dev),
        )?;
        // (N, C, H, W) -> (C, N*H*W) for ours.
        let rows = x.transpose(0, 1)?.contiguous()?.reshape((3, 100))?;
        for relu in [true, false] {
            for train in [true, false] {
                let a = ours.forward_t(&rows, train, relu)?;
                ours.commit_stats()?;
                let a = a.reshape((3, 4, 5, 5))?.transpose(0, 1)?;
                let b = theirs.forward_t(&x, train)?;
                let b = if relu { b.relu()? } else { b };
                let d = (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
                assert!(d < 1e-4, "train={train} relu={relu}: differs by {d}");
            }
        }
        Ok(())
    }
}
