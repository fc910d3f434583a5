//! Tensor operations the candle CPU backend lacks or runs slowly, written for the nets here.
//!
//! candle's grouped `conv2d` (groups = channels) runs one tiny convolution per channel, about 20x
//! slower than the nine shifted multiply-adds of [`depthwise_conv3x3`]. The tests check that both
//! agree.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

/// Depthwise 3x3 convolution, stride 1, zero padding 1 ("same"), no bias.
///
/// `x` is `(N, C, H, W)` and `kernel` is `(C, 1, 3, 3)` as PyTorch/candle store depthwise kernels.
pub fn depthwise_conv3x3(x: &Tensor, kernel: &Tensor) -> Result<Tensor> {
    let x = x.contiguous()?;
    let kernel = kernel.contiguous()?;
    x.apply_op2_no_bwd(&kernel, &Depthwise3x3)
}

struct Depthwise3x3;

impl CustomOp2 for Depthwise3x3 {
    fn name(&self) -> &'static str {
        "depthwise-conv3x3"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l1.shape().dims4()?;
        let (kc, one, kh, kw) = l2.shape().dims4()?;
        if kc != c || one != 1 || kh != 3 || kw != 3 {
            candle_core::bail!(
                "depthwise kernel has shape {:?}, expected [{c}, 1, 3, 3]",
                l2.shape().dims()
            );
        }
        let (CpuStorage::F32(xs), CpuStorage::F32(ks)) = (s1, s2) else {
            candle_core::bail!("depthwise-conv3x3 supports f32 only");
        };
        let (Some((x0, x1)), Some((k0, k1))) = (l1.contiguous_offsets(), l2.contiguous_offsets())
        else {
            candle_core::bail!("depthwise-conv3x3 needs contiguous inputs");
        };
        let xs = &xs[x0..x1];
        let ks = &ks[k0..k1];
        let plane = h * w;
        let mut out = vec![0f32; n * c * plane];
        for (i, out_plane) in out.chunks_exact_mut(plane).enumerate() {
            let ch = i % c;
            let inp = &xs[i * plane..][..plane];
            let k = &ks[ch * 9..][..9];
            depthwise_plane(inp, k, out_plane, h, w);
        }
        Ok((CpuStorage::F32(out), Shape::from((n, c, h, w))))
    }
}

/// One channel: `out[y][x] = sum k[dy][dx] * inp[y+dy-1][x+dx-1]` with zeros outside.
fn depthwise_plane(inp: &[f32], k: &[f32], out: &mut [f32], h: usize, w: usize) {
    for y in 0..h {
        let orow = &mut out[y * w..][..w];
        for dy in 0..3 {
            let iy = y as isize + dy as isize - 1;
            if iy < 0 || iy >= h as isize {
                continue;
            }
            let irow = &inp[iy as usize * w..][..w];
            // dx = 0 reads x-1, dx = 1 reads x, dx = 2 reads x+1.
            let (k0, k1, k2) = (k[dy * 3], k[dy * 3 + 1], k[dy * 3 + 2]);
            for (o, i) in orow[1..].iter_mut().zip(&irow[..w - 1]) {
                *o += k0 * i;
            }
            for (o, i) in orow.iter_mut().zip(irow) {
                *o += k1 * i;
            }
            for (o, i) in orow[..w - 1].iter_mut().zip(&irow[1..]) {
                *o += k2 * i;
            }
        }
    }
}

/// Max pooling with a 3x3 window and stride 2 and TensorFlow's "same" padding.
///
/// TensorFlow pads `max((ceil(H/2) - 1) * 2 + 3 - H, 0)` rows in total and puts the odd one at
/// the bottom (and right). PyTorch-style symmetric padding gives the same output shape but
/// shifts every window by one pixel, which costs mini-Xception 8 points of accuracy.
pub fn max_pool3x3_s2_same(x: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let pads = |n: usize| {
        let total = ((n.div_ceil(2) - 1) * 2 + 3).saturating_sub(n);
        (total / 2, total - total / 2)
    };
    let (top, bottom) = pads(h);
    let (left, right) = pads(w);
    // Replicating the edge equals -inf padding here: the replicated value is inside the window.
    let x = x
        .pad_with_same(2, top, bottom)?
        .pad_with_same(3, left, right)?;
    x.max_pool2d_with_stride(3, 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn depthwise_matches_candle_grouped_conv() -> Result<()> {
        let dev = Device::Cpu;
        for &(n, c, h, w) in &[(1, 8, 60, 60), (3, 16, 15, 15), (2, 4, 1, 1), (1, 2, 2, 5)] {
            let x = Tensor::randn(0f32, 1.0, (n, c, h, w), &dev)?;
            let k = Tensor::randn(0f32, 1.0, (c, 1, 3, 3), &dev)?;
            let ours = depthwise_conv3x3(&x, &k)?;
            let theirs = x.conv2d(&k, 1, 1, 1, c)?;
            let diff = (ours - theirs)?
                .abs()?
                .flatten_all()?
                .max(0)?
                .to_scalar::<f32>()?;
            assert!(diff < 1e-4, "({n},{c},{h},{w}): max diff {diff}");
        }
        Ok(())
    }

    #[test]
    fn tf_same_pool_pads_bottom_right() -> Result<()> {
        let dev = Device::Cpu;
        // A 4x4 ramp: TF gives 2x2 windows rows {0,1,2},{2,3,(pad)} -> maxima at rows 2 and 3.
        let x = Tensor::arange(0f32, 16.0, &dev)?.reshape((1, 1, 4, 4))?;
        let y = max_pool3x3_s2_same(&x)?;
        assert_eq!(
            y.flatten_all()?.to_vec1::<f32>()?,
            vec![10.0, 11.0, 14.0, 15.0]
        );
        // Odd size 15 pads one on each side and yields 8.
        let x = Tensor::zeros((1, 1, 15, 15), candle_core::DType::F32, &dev)?;
        assert_eq!(max_pool3x3_s2_same(&x)?.dims4()?, (1, 1, 8, 8));
        Ok(())
    }
}
