//! The kernel calls a lowered plan is made of, on channel-major `(C, N, H, W)` maps and
//! `(N, K)` rows.

use candle_core::{D, Tensor};

use super::Slot;
use crate::model::ops::{
    bias_act_in_place, conv3x3_direct, depthwise_conv3x3, im2col3x3, max_pool2x2,
    max_pool3x3_s2_same, max_pool3x3_s2_same_add, subsample2,
};

/// Input channels up to which a dense 3x3 convolution runs directly rather than as im2col and
/// a matmul (the native mini-Xception's stem, see [`conv3x3_direct`]).
const DIRECT_MAX_CIN: usize = 8;

/// One kernel call of a plan: what it computes, and the slot its result goes to.
pub(super) struct Step {
    pub op: Op,
    pub y: Slot,
}

/// What a kernel call computes, from which slots.
pub(super) enum Op {
    /// `x * mul + add`, per channel (one value for all, or one per channel).
    Affine {
        x: Slot,
        mul: Tensor,
        add: Tensor,
    },
    /// Dense 3x3, stride 1.
    Conv3 {
        x: Slot,
        /// `(Cout, Cin, 3, 3)`.
        w: Tensor,
        /// `(Cout)`.
        b: Tensor,
        pad: usize,
        relu: bool,
    },
    /// Depthwise 3x3, stride 1, padding 1.
    Depthwise {
        x: Slot,
        /// `(C, 1, 3, 3)`.
        k: Tensor,
        /// `(C, 1, 1, 1)`.
        b: Option<Tensor>,
        relu: bool,
    },
    /// 1x1, stride 1 or 2, as one matmul.
    Pointwise {
        x: Slot,
        /// `(Cout, Cin)`.
        w: Tensor,
        /// `(Cout, 1)`.
        b: Tensor,
        stride2: bool,
        relu: bool,
    },
    MaxPool3 {
        x: Slot,
        add: Option<Slot>,
    },
    MaxPool2 {
        x: Slot,
    },
    Add {
        a: Slot,
        b: Slot,
    },
    Relu {
        x: Slot,
    },
    /// Mean over height and width: `(C, N, H, W)` -> `(C, N, 1, 1)`, or `(N, C)` when `flat`.
    Mean {
        x: Slot,
        flat: bool,
    },
    /// `(C, N, H, W)` -> `(N, C*H*W)` in NCHW order, as ONNX flattens.
    Flatten {
        x: Slot,
    },
    /// `(N, K_in) x (K_in, K) + bias`.
    Dense {
        x: Slot,
        /// `(K_in, K)`.
        w: Tensor,
        /// `(1, K)`.
        b: Option<Tensor>,
    },
    Softmax {
        x: Slot,
    },
}

impl Op {
    pub(super) fn inputs(&self) -> Vec<Slot> {
        match self {
            Op::Add { a, b, .. } => vec![*a, *b],
            Op::MaxPool3 { x, add, .. } => std::iter::once(*x).chain(*add).collect(),
            Op::Affine { x, .. }
            | Op::Conv3 { x, .. }
            | Op::Depthwise { x, .. }
            | Op::Pointwise { x, .. }
            | Op::MaxPool2 { x, .. }
            | Op::Relu { x, .. }
            | Op::Mean { x, .. }
            | Op::Flatten { x, .. }
            | Op::Dense { x, .. }
            | Op::Softmax { x, .. } => vec![*x],
        }
    }

    pub(super) fn run(&self, v: &[Option<Tensor>]) -> candle_core::Result<Tensor> {
        let get = |s: Slot| {
            v[s].as_ref()
                .ok_or_else(|| candle_core::Error::Msg(format!("value {s} is not computed")))
        };
        match self {
            Op::Affine { x, mul, add, .. } => get(*x)?.broadcast_mul(mul)?.broadcast_add(add),
            Op::Conv3 {
                x, w, b, pad, relu, ..
            } => {
                let x = get(*x)?;
                let (cin, n, h, ww) = x.dims4()?;
                if cin <= DIRECT_MAX_CIN {
                    return conv3x3_direct(x, w, b, *pad, *relu);
                }
                let cout = w.dim(0)?;
                let cols = im2col3x3(x, *pad)?;
                let out = w.reshape((cout, cin * 9))?.matmul(&cols)?;
                let (ho, wo) = (h + 2 * pad - 2, ww + 2 * pad - 2);
                bias_act_in_place(out, &b.reshape((cout, 1))?, *relu)?.reshape((cout, n, ho, wo))
            }
            Op::Depthwise { x, k, b, relu, .. } => {
                let mut y = depthwise_conv3x3(get(*x)?, k)?;
                if let Some(b) = b {
                    y = y.broadcast_add(b)?;
                }
                if *relu { y.relu() } else { Ok(y) }
            }
            Op::Pointwise {
                x,
                w,
                b,
                stride2,
                relu,
                ..
            } => {
                let x = get(*x)?;
                let s = if *stride2 { subsample2(x)? } else { x.clone() };
                let (c, n, h, ww) = s.dims4()?;
                let out = w.matmul(&s.reshape((c, n * h * ww))?)?;
                bias_act_in_place(out, b, *relu)?.reshape((w.dim(0)?, n, h, ww))
            }
            Op::MaxPool3 { x, add, .. } => match add {
                Some(r) => max_pool3x3_s2_same_add(get(*x)?, get(*r)?),
                None => max_pool3x3_s2_same(get(*x)?),
            },
            Op::MaxPool2 { x, .. } => max_pool2x2(get(*x)?),
            Op::Add { a, b, .. } => get(*a)? + get(*b)?,
            Op::Relu { x, .. } => get(*x)?.relu(),
            Op::Mean { x, flat, .. } => {
                let x = get(*x)?;
                let (c, n, h, w) = x.dims4()?;
                let m = x.reshape((c, n, h * w))?.mean(D::Minus1)?;
                if *flat {
                    m.t()?.contiguous()
                } else {
                    m.reshape((c, n, 1, 1))
                }
            }
            Op::Flatten { x, .. } => {
                let x = get(*x)?;
                let (c, n, h, w) = x.dims4()?;
                x.permute((1, 0, 2, 3))?
                    .contiguous()?
                    .reshape((n, c * h * w))
            }
            Op::Dense { x, w, b, .. } => {
                let y = get(*x)?.matmul(w)?;
                match b {
                    Some(b) => y.broadcast_add(b),
                    None => Ok(y),
                }
            }
            Op::Softmax { x, .. } => candle_nn::ops::softmax_last_dim(get(*x)?),
        }
    }
}
