//! CPU kernels for the nets here, on activations laid out channel-major as `(C, N, H, W)`.
//!
//! With channels first, a 1x1 convolution over a whole batch is one `(Cout, Cin) x (Cin, N*H*W)`
//! matmul, and a 3x3 convolution is one matmul after [`im2col3x3`]; no per-sample loops and no
//! broadcast batch matmuls. candle's grouped `conv2d` (groups = channels) runs one tiny
//! convolution per channel, about 20x slower than the nine shifted multiply-adds of
//! [`depthwise_conv3x3`]; the tests check both against candle's own convolutions.
//!
//! By kind: `conv` (depthwise, direct 3x3, im2col and its fold), `pool` (max-pools and the
//! stride-2 sampling), `elementwise` (bias + activation, residual add, seeded dropout) and
//! `batch_norm` (training-mode batch norm); `simd` holds the AVX dispatch they share. Each
//! kernel is re-exported here, and its tests sit beside it.

mod batch_norm;
mod conv;
mod elementwise;
mod pool;
mod simd;

pub use batch_norm::{BatchStats, batch_norm_train};
pub use conv::{conv3x3_direct, depthwise_conv3x3, im2col3x3};
pub use elementwise::{bias_act_in_place, dropout_seeded};
pub use pool::{
    max_pool2x2, max_pool3x3_s2_same, max_pool3x3_s2_same_add, subsample2, tf_same_pool_geometry,
};

use candle_core::{CpuStorage, Layout, Result, bail};

fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        bail!("{op} supports f32 only")
    };
    let Some((a, b)) = l.contiguous_offsets() else {
        bail!("{op} needs a contiguous input")
    };
    Ok(&v[a..b])
}

/// The largest absolute difference between two tensors of the same shape, for the kernels' tests.
#[cfg(test)]
fn max_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}
