//! Trainable batch norm for channel-major activations, shared by the nets that `emocam train`
//! trains.

use candle_core::{Result, Tensor, Var};
use candle_nn::{Init, VarBuilder};

use super::ops::batch_norm_train;

/// Weight of the current batch in the running statistics.
pub const BN_MOMENTUM: f64 = 0.1;

/// Batch norm for activations laid out `(C, cols)`: statistics per row (channel).
///
/// Training normalises with the batch statistics and updates the running ones (momentum 0.1,
/// unbiased variance, as PyTorch); inference uses the running statistics. Tensor names:
/// `weight`, `bias`, `running_mean`, `running_var`.
pub struct BatchNorm2d {
    weight: Tensor,
    bias: Tensor,
    running_mean: Var,
    running_var: Var,
    eps: f64,
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
        })
    }

    /// Batch norm, then ReLU if `relu`; training uses the fused kernel [`batch_norm_train`].
    pub fn forward_t(&self, x: &Tensor, train: bool, relu: bool) -> Result<Tensor> {
        if !train {
            let y = self.forward_eval(x)?;
            return if relu { y.relu() } else { Ok(y) };
        }
        let n = x.dim(1)? as f64;
        let (y, (means, vars)) = batch_norm_train(x, &self.weight, &self.bias, self.eps, relu)?;
        let dev = x.device();
        let m = BN_MOMENTUM;
        let mean = Tensor::new(means.as_slice(), dev)?;
        let unbiased = (Tensor::new(vars.as_slice(), dev)? * (n / (n - 1.0).max(1.0)))?;
        self.running_mean
            .set(&((self.running_mean.as_tensor() * (1.0 - m))? + (mean * m)?)?)?;
        self.running_var
            .set(&((self.running_var.as_tensor() * (1.0 - m))? + (unbiased * m)?)?)?;
        Ok(y)
    }

    /// Inference: normalise with the running statistics.
    fn forward_eval(&self, x: &Tensor) -> Result<Tensor> {
        let (w, b) = (self.weight.unsqueeze(1)?, self.bias.unsqueeze(1)?);
        let scale = (self.running_var.as_tensor() + self.eps)?
            .sqrt()?
            .recip()?
            .unsqueeze(1)?
            .broadcast_mul(&w)?;
        let shift = b.broadcast_sub(
            &self
                .running_mean
                .as_tensor()
                .unsqueeze(1)?
                .broadcast_mul(&scale)?,
        )?;
        x.broadcast_mul(&scale)?.broadcast_add(&shift)
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
                let a = ours
                    .forward_t(&rows, train, relu)?
                    .reshape((3, 4, 5, 5))?
                    .transpose(0, 1)?;
                let b = theirs.forward_t(&x, train)?;
                let b = if relu { b.relu()? } else { b };
                let d = (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
                assert!(d < 1e-4, "train={train} relu={relu}: differs by {d}");
            }
        }
        Ok(())
    }
}
