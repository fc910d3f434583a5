//! mini-Xception in training form: the same tensor names as [`super::mini_xception`], but with
//! batch norm kept apart from the convolutions (batch statistics while training, running ones
//! otherwise) and every kernel differentiable, so `emocam train --arch mini_xception` can train
//! it from scratch or fine-tune the shipped weights. The file it saves loads into the inference
//! form unchanged, which folds the batch norms again.

use candle_core::{D, Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::batch_norm::BatchNorm2d;
use super::mini_xception::{BLOCK_CHANNELS, STEM_CHANNELS};
use super::ops::{depthwise_conv3x3, im2col3x3, max_pool3x3_s2_same, subsample2};

fn kaiming() -> candle_nn::Init {
    candle_nn::init::DEFAULT_KAIMING_NORMAL
}

/// `(Cout, K) x (K, cols)` as a `(Cout, n, h, w)` map.
fn conv_matmul(w: &Tensor, cols: &Tensor) -> Result<Tensor> {
    let cout = w.dim(0)?;
    w.reshape((cout, cols.dim(0)?))?.matmul(cols)
}

/// A 3x3 "valid" convolution, batch norm and ReLU (the stem).
pub struct StemConv {
    weight: Tensor,
    bn: BatchNorm2d,
}

impl StemConv {
    fn new(vb: &VarBuilder, j: usize, cin: usize, cout: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: vb.pp(format!("conv{j}")).get_with_hints(
                (cout, cin, 3, 3),
                "weight",
                kaiming(),
            )?,
            bn: BatchNorm2d::new(vb.pp(format!("bn{j}")), cout, eps)?,
        })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (_, n, h, w) = x.dims4()?;
        let y = conv_matmul(&self.weight, &im2col3x3(x, 0)?)?;
        let cout = y.dim(0)?;
        self.bn
            .forward_t(&y, train, true)?
            .reshape((cout, n, h - 2, w - 2))
    }
}

/// The residual branch: 1x1 convolution with stride 2, then batch norm.
pub struct ResidualBranch {
    weight: Tensor,
    bn: BatchNorm2d,
}

impl ResidualBranch {
    fn new(vb: VarBuilder, cin: usize, cout: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: vb
                .pp("conv")
                .get_with_hints((cout, cin, 1, 1), "weight", kaiming())?,
            bn: BatchNorm2d::new(vb.pp("bn"), cout, eps)?,
        })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let s = subsample2(x)?;
        let (c, n, h, w) = s.dims4()?;
        let y = conv_matmul(&self.weight, &s.reshape((c, n * h * w))?)?;
        let cout = y.dim(0)?;
        self.bn
            .forward_t(&y, train, false)?
            .reshape((cout, n, h, w))
    }
}

/// Separable 3x3 convolution (depthwise, then pointwise) and batch norm, ReLU if asked.
pub struct Separable {
    depthwise: Tensor,
    pointwise: Tensor,
    bn: BatchNorm2d,
    relu: bool,
}

impl Separable {
    fn new(vb: VarBuilder, cin: usize, cout: usize, relu: bool, eps: f64) -> Result<Self> {
        Ok(Self {
            depthwise: vb
                .pp("depthwise")
                .get_with_hints((cin, 1, 3, 3), "weight", kaiming())?,
            pointwise: vb
                .pp("pointwise")
                .get_with_hints((cout, cin, 1, 1), "weight", kaiming())?,
            bn: BatchNorm2d::new(vb.pp("bn"), cout, eps)?,
            relu,
        })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (c, n, h, w) = x.dims4()?;
        let d = depthwise_conv3x3(x, &self.depthwise)?.reshape((c, n * h * w))?;
        let y = conv_matmul(&self.pointwise, &d)?;
        let cout = y.dim(0)?;
        self.bn
            .forward_t(&y, train, self.relu)?
            .reshape((cout, n, h, w))
    }
}

/// One residual block: `maxpool(sep2(sep1(x))) + residual(x)`.
pub struct Block {
    residual: ResidualBranch,
    sep1: Separable,
    sep2: Separable,
}

impl Block {
    fn new(vb: VarBuilder, cin: usize, cout: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            residual: ResidualBranch::new(vb.pp("residual"), cin, cout, eps)?,
            sep1: Separable::new(vb.pp("sep1"), cin, cout, true, eps)?,
            sep2: Separable::new(vb.pp("sep2"), cout, cout, false, eps)?,
        })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let r = self.residual.forward_t(x, train)?;
        let y = self
            .sep2
            .forward_t(&self.sep1.forward_t(x, train)?, train)?;
        max_pool3x3_s2_same(&y)? + r
    }
}

/// The trainable network. Its parts, in the order `--freeze N` counts them: the stem, then the
/// four residual blocks (the head is always trained).
pub struct TrainableMiniXception {
    stem1: StemConv,
    stem2: StemConv,
    blocks: Vec<Block>,
    /// `(classes, 128, 3, 3)`.
    head_weight: Tensor,
    /// `(classes)`.
    head_bias: Tensor,
    frozen: usize,
}

impl TrainableMiniXception {
    /// Tensor-name prefixes of the freezable parts, in order.
    pub const PARTS: [&'static str; 5] = ["stem.", "block1.", "block2.", "block3.", "block4."];

    /// Build (or load) the net for `classes` outputs and batch-norm `eps`.
    pub fn new(vb: VarBuilder, classes: usize, eps: f64) -> Result<Self> {
        let stem = vb.pp("stem");
        let c = STEM_CHANNELS;
        let stem1 = StemConv::new(&stem, 1, 1, c, eps)?;
        let stem2 = StemConv::new(&stem, 2, c, c, eps)?;
        let mut blocks = Vec::with_capacity(BLOCK_CHANNELS.len());
        let mut cin = c;
        for (i, &cout) in BLOCK_CHANNELS.iter().enumerate() {
            blocks.push(Block::new(
                vb.pp(format!("block{}", i + 1)),
                cin,
                cout,
                eps,
            )?);
            cin = cout;
        }
        let head = vb.pp("head").pp("conv");
        Ok(Self {
            stem1,
            stem2,
            blocks,
            head_weight: head.get_with_hints((classes, cin, 3, 3), "weight", kaiming())?,
            head_bias: head.get_with_hints(classes, "bias", candle_nn::Init::Const(0.0))?,
            frozen: 0,
        })
    }

    /// Every batch norm, in order (for [`BatchNorm2d::commit_stats`]).
    pub fn batch_norms(&self) -> Vec<&BatchNorm2d> {
        let mut v = vec![&self.stem1.bn, &self.stem2.bn];
        for b in &self.blocks {
            v.extend([&b.residual.bn, &b.sep1.bn, &b.sep2.bn]);
        }
        v
    }

    /// Number of freezable parts (the stem and the four blocks).
    pub fn num_blocks(&self) -> usize {
        Self::PARTS.len()
    }

    /// Run the first `n` parts in inference mode even while training, so that fine-tuning
    /// leaves their batch-norm statistics untouched.
    pub fn freeze(&mut self, n: usize) {
        self.frozen = n;
    }

    /// Logits for `(N, 1, S, S)` input; `train` uses batch statistics.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        if c != 1 {
            candle_core::bail!(
                "mini-Xception takes 1 grayscale channel, got input {:?}",
                x.dims()
            );
        }
        let part = |i: usize| train && i >= self.frozen;
        // With one channel, (N, 1, H, W) and (1, N, H, W) share their memory layout.
        let y = self.stem1.forward_t(&x.reshape((1, n, h, w))?, part(0))?;
        let mut y = self.stem2.forward_t(&y, part(0))?;
        for (i, b) in self.blocks.iter().enumerate() {
            if i + 1 == self.frozen {
                // Nothing before this point trains: no backward pass through it.
                y = y.detach();
            }
            y = b.forward_t(&y, part(i + 1))?;
        }
        if self.frozen == Self::PARTS.len() {
            y = y.detach();
        }
        let (_, _, h, w) = y.dims4()?;
        let classes = self.head_weight.dim(0)?;
        conv_matmul(&self.head_weight, &im2col3x3(&y, 1)?)?
            .broadcast_add(&self.head_bias.unsqueeze(1)?)?
            .reshape((classes, n, h * w))?
            .mean(D::Minus1)?
            .t()
    }
}

impl Module for TrainableMiniXception {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_t(x, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::mini_xception::MiniXception;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    /// A fresh trainable net with non-trivial batch-norm statistics, saved and reloaded in the
    /// inference form, gives the same outputs: the two forms agree on names, shapes and maths.
    #[test]
    fn matches_the_inference_form() -> Result<()> {
        let dev = Device::Cpu;
        let map = VarMap::new();
        let net =
            TrainableMiniXception::new(VarBuilder::from_varmap(&map, DType::F32, &dev), 7, 1e-3)?;
        let x = Tensor::randn(0f32, 1.0, (3, 1, 64, 64), &dev)?;
        // A few training passes move the running statistics away from (0, 1).
        for _ in 0..3 {
            net.forward_t(&x, true)?;
            for bn in net.batch_norms() {
                bn.commit_stats()?;
            }
        }
        let ours = net.forward_t(&x, false)?;
        let tensors: std::collections::HashMap<String, Tensor> = map
            .data()
            .lock()
            .map_err(|_| candle_core::Error::Msg("poisoned".into()))?
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect();
        let inference =
            MiniXception::new(VarBuilder::from_tensors(tensors, DType::F32, &dev), 7, 1e-3)?;
        let theirs = inference.forward(&x)?;
        let d = (ours - theirs)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        assert!(d < 1e-3, "training and inference forms differ by {d}");
        Ok(())
    }
}
