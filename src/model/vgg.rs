//! A VGG-style CNN for 48x48 faces, trained with `emocam train`: blocks of two
//! conv3x3 + batch norm + ReLU, a 2x2 max-pool and dropout, then a dense layer with ReLU and
//! dropout and a dense output layer (softmax is applied by [`super::Classifier`]).
//!
//! The same struct trains (`forward_train(x, seed)`: batch statistics, dropout masks drawn from
//! the seed) and infers (`forward`: running statistics, no dropout). Activations are kept
//! channel-major `(C, N, H, W)`, so each convolution over a batch is one matmul and batch norm
//! works on 2-D `(C, N*H*W)` rows; with candle's own `conv2d` training ran 2-4x slower. Tensor
//! names: `block{i}.conv{j}.weight`, `block{i}.bn{j}.{weight,bias,running_mean,running_var}`,
//! `head.fc1.{weight,bias}`, `head.fc2.{weight,bias}`.

use std::collections::HashMap;

use candle_core::{Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder};

use super::batch_norm::BatchNorm2d;
use super::ops::{bias_act_in_place, dropout_seeded, im2col3x3, max_pool2x2};

/// Metadata key for the block widths, e.g. `16,32,64,128`.
pub const META_WIDTHS: &str = "vgg_widths";
/// Metadata key for the width of the hidden dense layer.
pub const META_DENSE: &str = "vgg_dense";

/// Shape of a [`Vgg`].
#[derive(Debug, Clone, PartialEq)]
pub struct VggConfig {
    /// Output channels of each block; each block halves the resolution.
    pub widths: Vec<usize>,
    /// Width of the hidden dense layer.
    pub dense: usize,
    pub classes: usize,
    pub input_size: usize,
    /// Dropout probability after each block and after the hidden layer (training only).
    pub dropout: f32,
    pub bn_eps: f64,
}

impl VggConfig {
    /// The half-width net: 16-32-64-128 channels, dense 128.
    pub fn half_width(classes: usize) -> Self {
        Self {
            widths: vec![16, 32, 64, 128],
            dense: 128,
            classes,
            input_size: 48,
            dropout: 0.25,
            bn_eps: 1e-5,
        }
    }

    /// What `emocam train --arch vgg` trains unless told otherwise: the half-width blocks with
    /// a 256-wide dense layer and no dropout (from scratch on FER2013 with augmentation, dropout
    /// 0.25 everywhere barely learned; see docs/training.md).
    pub fn training_default(classes: usize) -> Self {
        Self {
            dense: 256,
            dropout: 0.0,
            ..Self::half_width(classes)
        }
    }

    /// Read widths from weights metadata (defaults: the half-width net).
    pub fn from_metadata(
        m: &HashMap<String, String>,
        classes: usize,
        input_size: usize,
        bn_eps: f64,
    ) -> std::result::Result<Self, String> {
        let mut c = Self::half_width(classes);
        c.input_size = input_size;
        c.bn_eps = bn_eps;
        if let Some(w) = m.get(META_WIDTHS) {
            c.widths = w
                .split(',')
                .map(|v| v.trim().parse::<usize>().ok().filter(|n| (1..=1024).contains(n)))
                .collect::<Option<Vec<_>>>()
                .filter(|v| !v.is_empty() && v.len() <= 6)
                .ok_or_else(|| format!("metadata {META_WIDTHS} is {w:?}, expected 1 to 6 comma-separated channel counts"))?;
        }
        if let Some(d) = m.get(META_DENSE) {
            c.dense = d
                .trim()
                .parse()
                .ok()
                .filter(|n| (1..=8192).contains(n))
                .ok_or_else(|| {
                    format!("metadata {META_DENSE} is {d:?}, expected a width of 1 to 8192")
                })?;
        }
        if input_size >> c.widths.len() == 0 {
            return Err(format!(
                "input size {input_size} is too small for {} pooling blocks",
                c.widths.len()
            ));
        }
        Ok(c)
    }

    /// Metadata entries describing the shape.
    pub fn to_metadata(&self) -> HashMap<String, String> {
        let widths: Vec<String> = self.widths.iter().map(|w| w.to_string()).collect();
        HashMap::from([
            (META_WIDTHS.to_string(), widths.join(",")),
            (META_DENSE.to_string(), self.dense.to_string()),
        ])
    }

    fn flat_features(&self) -> usize {
        let side = self.input_size >> self.widths.len();
        self.widths.last().copied().unwrap_or(1) * side * side
    }
}

/// conv3x3 (padding 1, no bias) + batch norm + ReLU on `(C, N, H, W)` activations: the conv
/// is one matmul over the unfolded patches ([`im2col3x3`]), whose backward pass is a fold.
pub struct ConvBnRelu {
    /// `(Cout, Cin, 3, 3)`.
    weight: Tensor,
    bn: BatchNorm2d,
    /// Kernel `(Cout, Cin*9)` with batch norm folded in, and the shift `(Cout, 1)`: fixed once
    /// a loaded net only runs inference ([`Vgg::fold_batch_norms`]).
    folded: Option<(Tensor, Tensor)>,
}

impl ConvBnRelu {
    fn new(vb: &VarBuilder, j: usize, cin: usize, cout: usize, eps: f64) -> Result<Self> {
        let weight = vb.pp(format!("conv{j}")).get_with_hints(
            (cout, cin, 3, 3),
            "weight",
            candle_nn::init::DEFAULT_KAIMING_NORMAL,
        )?;
        let bn = BatchNorm2d::new(vb.pp(format!("bn{j}")), cout, eps)?;
        Ok(Self {
            weight,
            bn,
            folded: None,
        })
    }

    /// The inference kernel and shift: batch norm folded into the conv.
    fn fold(&self) -> Result<(Tensor, Tensor)> {
        let (cout, cin) = (self.weight.dim(0)?, self.weight.dim(1)?);
        let (scale, shift) = self.bn.folded()?;
        let kernel = self
            .weight
            .reshape((cout, cin * 9))?
            .broadcast_mul(&scale.unsqueeze(1)?)?;
        Ok((kernel, shift.unsqueeze(1)?))
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (_, n, h, w) = x.dims4()?;
        let (cout, cin) = (self.weight.dim(0)?, self.weight.dim(1)?);
        if !train {
            // Inference: batch norm folded into the kernel and one fused bias + ReLU pass,
            // instead of three passes over the activations.
            let (kernel, shift) = match &self.folded {
                Some((k, s)) => (k.clone(), s.clone()),
                None => self.fold()?,
            };
            let y = kernel.matmul(&im2col3x3(x, 1)?)?;
            return bias_act_in_place(y, &shift, true)?.reshape((cout, n, h, w));
        }
        let kernel = self.weight.reshape((cout, cin * 9))?;
        let y = kernel.matmul(&im2col3x3(x, 1)?)?;
        self.bn.forward_t(&y, train, true)?.reshape((cout, n, h, w))
    }
}

/// Two conv-bn-relu layers, then 2x2 max-pool and dropout.
pub struct VggBlock {
    c1: ConvBnRelu,
    c2: ConvBnRelu,
}

/// The whole network.
pub struct Vgg {
    blocks: Vec<VggBlock>,
    fc1: Linear,
    fc2: Linear,
    dropout: f32,
    frozen: usize,
}

impl Vgg {
    /// Build (or load) a net of shape `cfg`.
    pub fn new(vb: VarBuilder, cfg: &VggConfig) -> Result<Self> {
        let mut blocks = Vec::with_capacity(cfg.widths.len());
        let mut cin = 1;
        for (i, &w) in cfg.widths.iter().enumerate() {
            let b = vb.pp(format!("block{}", i + 1));
            blocks.push(VggBlock {
                c1: ConvBnRelu::new(&b, 1, cin, w, cfg.bn_eps)?,
                c2: ConvBnRelu::new(&b, 2, w, w, cfg.bn_eps)?,
            });
            cin = w;
        }
        let head = vb.pp("head");
        let fc1 = candle_nn::linear(cfg.flat_features(), cfg.dense, head.pp("fc1"))?;
        let fc2 = candle_nn::linear(cfg.dense, cfg.classes, head.pp("fc2"))?;
        Ok(Self {
            blocks,
            fc1,
            fc2,
            dropout: cfg.dropout,
            frozen: 0,
        })
    }

    /// Every batch norm, in order (for [`BatchNorm2d::commit_stats`]).
    pub fn batch_norms(&self) -> Vec<&BatchNorm2d> {
        self.blocks
            .iter()
            .flat_map(|b| [&b.c1.bn, &b.c2.bn])
            .collect()
    }

    /// Number of blocks (what `--freeze N` counts).
    pub fn num_blocks(&self) -> usize {
        self.blocks.len()
    }

    /// Fold every batch norm into its conv once, for a net that will only run inference (the
    /// app, `eval`): saves re-folding on every forward pass. Training must not call this, as
    /// its statistics keep changing.
    pub fn fold_batch_norms(&mut self) -> Result<()> {
        for b in &mut self.blocks {
            for c in [&mut b.c1, &mut b.c2] {
                c.folded = Some(c.fold()?);
            }
        }
        Ok(())
    }

    /// Run the first `n` blocks in inference mode even while training, so that fine-tuning
    /// leaves them bit-identical (their batch-norm statistics included).
    pub fn freeze(&mut self, n: usize) {
        self.frozen = n;
    }
}

impl Vgg {
    /// Logits in training mode, with dropout masks drawn from `dropout_seed`: the same seed,
    /// input and weights give the same result.
    pub fn forward_train(&self, x: &Tensor, dropout_seed: u64) -> Result<Tensor> {
        self.forward_seeded(x, true, dropout_seed)
    }

    /// Logits for `(N, 1, S, S)` input; `train` uses batch statistics and dropout masks drawn
    /// from `seed`.
    fn forward_seeded(&self, x: &Tensor, train: bool, seed: u64) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        if c != 1 {
            candle_core::bail!(
                "the VGG net takes 1 grayscale channel, got input {:?}",
                x.dims()
            );
        }
        // With one channel, (N, 1, H, W) and (1, N, H, W) share their memory layout.
        let mut y = x.reshape((1, n, h, w))?;
        for (i, b) in self.blocks.iter().enumerate() {
            let train = train && i >= self.frozen;
            y = max_pool2x2(&b.c2.forward_t(&b.c1.forward_t(&y, train)?, train)?)?;
            if i + 1 == self.frozen {
                // Nothing before this point trains: no backward pass through it.
                y = y.detach();
            }
            if train && self.dropout > 0.0 {
                y = dropout_seeded(&y, self.dropout, seed.wrapping_add(i as u64 + 1))?;
            }
        }
        // (C, N, h, w) -> (N, C*h*w) for the dense layers.
        let mut y = self
            .fc1
            .forward(&y.transpose(0, 1)?.contiguous()?.flatten_from(1)?)?
            .relu()?;
        if train && self.dropout > 0.0 {
            y = dropout_seeded(&y, self.dropout, seed)?;
        }
        self.fc2.forward(&y)
    }
}

impl Module for Vgg {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_seeded(x, false, 0)
    }
}
