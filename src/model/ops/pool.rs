//! Max-pools (TF-"same" 3x3 stride 2, and 2x2) and the stride-2 sampling, with their backward
//! passes.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor, bail};

use super::elementwise::add_in_place;
use super::f32_slice;
use super::simd::with_avx2;

with_avx2!(max_pool_plane, max_pool_plane_generic, (plane: &[f32], out: &mut [f32], h: usize, w: usize, tmp: &mut [f32]));

/// Every other row and column starting at 0: `(C, N, H, W)` -> `(C, N, ceil(H/2), ceil(W/2))`,
/// the sampling of a 1x1 stride-2 convolution.
pub fn subsample2(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(Subsample2)
}

struct Subsample2;

impl CustomOp1 for Subsample2 {
    fn name(&self) -> &'static str {
        "subsample2"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (c, n, h, w) = l.shape().dims4()?;
        let (ho, wo) = (h.div_ceil(2), w.div_ceil(2));
        let xs = f32_slice(s, l, self.name())?;
        let mut out = Vec::with_capacity(c * n * ho * wo);
        for plane in xs.chunks_exact(h * w) {
            for y in (0..h).step_by(2) {
                out.extend(plane[y * w..][..w].iter().step_by(2));
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((c, n, ho, wo))))
    }

    /// Each sampled pixel gets its gradient back; the others get zero.
    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let (_, _, h, w) = arg.dims4()?;
        Ok(Some(
            grad.contiguous()?
                .apply_op1_no_bwd(&Unsubsample2 { h, w })?,
        ))
    }
}

/// The adjoint of [`Subsample2`]: `(C, N, ceil(H/2), ceil(W/2))` -> `(C, N, H, W)`.
struct Unsubsample2 {
    h: usize,
    w: usize,
}

impl CustomOp1 for Unsubsample2 {
    fn name(&self) -> &'static str {
        "unsubsample2"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (c, n, ho, wo) = l.shape().dims4()?;
        let (h, w) = (self.h, self.w);
        if (h.div_ceil(2), w.div_ceil(2)) != (ho, wo) {
            bail!("unsubsample2: {ho}x{wo} is not the subsampling of {h}x{w}");
        }
        let gs = f32_slice(s, l, self.name())?;
        let mut out = vec![0f32; c * n * h * w];
        for (g, o) in gs.chunks_exact(ho * wo).zip(out.chunks_exact_mut(h * w)) {
            for (oy, grow) in g.chunks_exact(wo).enumerate() {
                let orow = &mut o[oy * 2 * w..][..w];
                for (ox, &v) in grow.iter().enumerate() {
                    orow[ox * 2] = v;
                }
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((c, n, h, w))))
    }
}

/// Max pooling with a 3x3 window and stride 2 and TensorFlow's "same" padding, per plane
/// (works for either layout).
///
/// TensorFlow pads `max((ceil(H/2) - 1) * 2 + 3 - H, 0)` rows in total and puts the odd one at
/// the bottom (and right). PyTorch-style symmetric padding gives the same output shape but
/// shifts every window by one pixel, which costs mini-Xception 8 points of accuracy.
pub fn max_pool3x3_s2_same(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(MaxPoolSame)
}

/// `max_pool3x3_s2_same(x) + residual` in one pass (the end of every mini-Xception block).
pub fn max_pool3x3_s2_same_add(x: &Tensor, residual: &Tensor) -> Result<Tensor> {
    let y = max_pool3x3_s2_same(x)?;
    if y.shape() != residual.shape() {
        bail!(
            "pooled {:?} and residual {:?} differ in shape",
            y.dims(),
            residual.dims()
        );
    }
    add_in_place(&y, residual)?;
    Ok(y)
}

/// 2x2 max pool, stride 2 (odd last rows and columns dropped, as candle's `max_pool2d(2)`),
/// for any 4-D contiguous layout. Its own op rather than candle's because candle's backward
/// pass scales each gradient by the share of maxima in its window: a window with one maximum
/// passes a quarter of its gradient on. Here the (first) maximum gets all of it.
pub fn max_pool2x2(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(MaxPool2)
}

struct MaxPool2;

impl CustomOp1 for MaxPool2 {
    fn name(&self) -> &'static str {
        "max-pool2x2"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (a, b, h, w) = l.shape().dims4()?;
        let (ho, wo) = (h / 2, w / 2);
        let xs = f32_slice(s, l, self.name())?;
        let mut out = Vec::with_capacity(a * b * ho * wo);
        for plane in xs.chunks_exact(h * w) {
            for oy in 0..ho {
                let (r0, r1) = (&plane[2 * oy * w..][..w], &plane[(2 * oy + 1) * w..][..w]);
                out.extend(
                    r0.chunks_exact(2)
                        .zip(r1.chunks_exact(2))
                        .take(wo)
                        .map(|(p, q)| p[0].max(p[1]).max(q[0].max(q[1]))),
                );
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((a, b, ho, wo))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            arg.contiguous()?
                .apply_op2_no_bwd(&grad.contiguous()?, &MaxPool2Grad)?,
        ))
    }
}

/// Gradient of [`MaxPool2`] with respect to its input, from the input and `dy`: each window's
/// gradient goes to its first largest input in row-major order.
struct MaxPool2Grad;

impl CustomOp2 for MaxPool2Grad {
    fn name(&self) -> &'static str {
        "max-pool2x2-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (a, b, h, w) = l1.shape().dims4()?;
        let (ho, wo) = (h / 2, w / 2);
        if l2.shape().dims() != [a, b, ho, wo] {
            bail!(
                "max-pool2x2 grad: gradient {:?} does not fit input {:?}",
                l2.shape().dims(),
                l1.shape().dims()
            );
        }
        let xs = f32_slice(s1, l1, self.name())?;
        let dys = f32_slice(s2, l2, self.name())?;
        let mut out = vec![0f32; xs.len()];
        for ((plane, dy), o) in xs
            .chunks_exact(h * w)
            .zip(dys.chunks_exact(ho * wo))
            .zip(out.chunks_exact_mut(h * w))
        {
            for (oy, dyrow) in dy.chunks_exact(wo).enumerate() {
                let top = 2 * oy * w;
                for (ox, &g) in dyrow.iter().enumerate() {
                    let i = top + 2 * ox;
                    let mut at = i;
                    for j in [i + 1, i + w, i + w + 1] {
                        if plane[j] > plane[at] {
                            at = j;
                        }
                    }
                    o[at] = g;
                }
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((a, b, h, w))))
    }
}

/// `(output size, padding before)` of TF "same" 3x3 stride-2 pooling along one axis.
pub fn tf_same_pool_geometry(n: usize) -> (usize, usize) {
    let out = n.div_ceil(2);
    let total = ((out - 1) * 2 + 3).saturating_sub(n);
    (out, total / 2)
}

struct MaxPoolSame;

impl CustomOp1 for MaxPoolSame {
    fn name(&self) -> &'static str {
        "max-pool3x3-s2-same"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (a, b, h, w) = l.shape().dims4()?;
        let (ho, _) = tf_same_pool_geometry(h);
        let (wo, _) = tf_same_pool_geometry(w);
        let xs = f32_slice(s, l, self.name())?;
        let mut out = vec![0f32; a * b * ho * wo];
        let mut tmp = vec![0f32; ho * (w + 2)];
        for (plane, o) in xs.chunks_exact(h * w).zip(out.chunks_exact_mut(ho * wo)) {
            max_pool_plane(plane, o, h, w, &mut tmp);
        }
        Ok((CpuStorage::F32(out), Shape::from((a, b, ho, wo))))
    }

    /// Each window's gradient goes to its (first) largest input.
    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            arg.contiguous()?
                .apply_op2_no_bwd(&grad.contiguous()?, &MaxPoolSameGrad)?,
        ))
    }
}

/// Gradient of [`MaxPoolSame`] with respect to its input, from the input and `dy`.
struct MaxPoolSameGrad;

impl CustomOp2 for MaxPoolSameGrad {
    fn name(&self) -> &'static str {
        "max-pool3x3-s2-same-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (a, b, h, w) = l1.shape().dims4()?;
        let (ho, top) = tf_same_pool_geometry(h);
        let (wo, left) = tf_same_pool_geometry(w);
        if l2.shape().dims() != [a, b, ho, wo] {
            bail!(
                "max-pool grad: gradient {:?} does not fit input {:?}",
                l2.shape().dims(),
                l1.shape().dims()
            );
        }
        let xs = f32_slice(s1, l1, self.name())?;
        let dys = f32_slice(s2, l2, self.name())?;
        let mut out = vec![0f32; xs.len()];
        let cols: Vec<(usize, usize)> = (0..wo)
            .map(|ox| {
                let x0 = (ox * 2).saturating_sub(left);
                (x0, (ox * 2 + 3 - left).min(w))
            })
            .collect();
        for ((plane, dy), o) in xs
            .chunks_exact(h * w)
            .zip(dys.chunks_exact(ho * wo))
            .zip(out.chunks_exact_mut(h * w))
        {
            for (oy, dyrow) in dy.chunks_exact(wo).enumerate() {
                let y0 = (oy * 2).saturating_sub(top);
                let y1 = (oy * 2 + 3 - top).min(h);
                let rows = &plane[y0 * w..y1 * w];
                for (&(x0, x1), &g) in cols.iter().zip(dyrow) {
                    // First largest in row-major order, as the forward pass's maximum.
                    let (mut best, mut at) = (f32::NEG_INFINITY, y0 * w + x0);
                    for (ry, r) in rows.chunks_exact(w).enumerate() {
                        for (x, &v) in r[x0..x1].iter().enumerate() {
                            if v > best {
                                best = v;
                                at = (y0 + ry) * w + x0 + x;
                            }
                        }
                    }
                    o[at] += g;
                }
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((a, b, h, w))))
    }
}

/// Separable TF-"same" 3x3/2 max pool of one plane: a vertical pass over whole rows into
/// `tmp` (`ho` rows of `w + 2`, bordered by -inf), then a horizontal pass with stride 2.
#[inline(always)]
fn max_pool_plane_generic<const FMA: bool>(
    plane: &[f32],
    out: &mut [f32],
    h: usize,
    w: usize,
    tmp: &mut [f32],
) {
    // f32::max, not `if b > a`: LLVM turns the latter into slow masked stores.
    let max = f32::max;
    let (ho, top) = tf_same_pool_geometry(h);
    let (wo, left) = tf_same_pool_geometry(w);
    let tw = w + 2;
    for (oy, trow) in tmp.chunks_exact_mut(tw).take(ho).enumerate() {
        let y0 = (oy * 2).saturating_sub(top);
        let y1 = (oy * 2 + 3 - top).min(h);
        trow.fill(f32::NEG_INFINITY);
        let t = &mut trow[left..left + w];
        t.copy_from_slice(&plane[y0 * w..][..w]);
        for y in y0 + 1..y1 {
            for (o, &v) in t.iter_mut().zip(&plane[y * w..][..w]) {
                *o = max(*o, v);
            }
        }
    }
    for (trow, orow) in tmp.chunks_exact(tw).zip(out.chunks_exact_mut(wo)) {
        for (ox, o) in orow.iter_mut().enumerate() {
            let win = &trow[ox * 2..ox * 2 + 3];
            *o = max(max(win[0], win[1]), win[2]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::max_diff;
    use super::*;
    use candle_core::Device;

    #[test]
    fn subsample_gradient_scatters_to_the_sampled_pixels() -> Result<()> {
        let dev = Device::Cpu;
        let x = candle_core::Var::randn(0f32, 1.0, (1, 1, 3, 4), &dev)?;
        let up = Tensor::new(&[1f32, 2.0, 3.0, 4.0], &dev)?.reshape((1, 1, 2, 2))?;
        let g = (subsample2(&x)? * up)?.sum_all()?.backward()?;
        assert_eq!(
            g.get(&x).expect("grad").flatten_all()?.to_vec1::<f32>()?,
            vec![1.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 3.0, 0.0, 4.0, 0.0]
        );
        Ok(())
    }

    /// Finite differences: away from ties, the pooled sum moves by the routed gradient.
    #[test]
    fn same_pool_gradient_matches_finite_differences() -> Result<()> {
        pool_gradient_matches_finite_differences(max_pool3x3_s2_same)
    }

    #[test]
    fn pool2x2_gradient_matches_finite_differences() -> Result<()> {
        pool_gradient_matches_finite_differences(max_pool2x2)
    }

    #[test]
    fn pool2x2_matches_candle_max_pool2d() -> Result<()> {
        let dev = Device::Cpu;
        for &(h, w) in &[(6, 8), (7, 5), (2, 2)] {
            let x = Tensor::randn(0f32, 1.0, (3, 2, h, w), &dev)?;
            assert_eq!(max_diff(&max_pool2x2(&x)?, &x.max_pool2d(2)?), 0.0);
        }
        Ok(())
    }

    fn pool_gradient_matches_finite_differences(pool: fn(&Tensor) -> Result<Tensor>) -> Result<()> {
        let dev = Device::Cpu;
        for &(h, w) in &[(7, 6), (8, 8), (5, 9)] {
            // Distinct values a whole unit apart, so a small bump never changes a window's maximum.
            let len = 2 * h * w;
            let vals: Vec<f32> = (0..len).map(|i| ((i * 37) % len) as f32).collect();
            let x = candle_core::Var::from_vec(vals, (2, 1, h, w), &dev)?;
            let out_dims = pool(x.as_tensor())?.dims().to_vec();
            let up = Tensor::randn(0f32, 1.0, out_dims, &dev)?;
            let f = |t: &Tensor| -> Result<f32> { (pool(t)? * &up)?.sum_all()?.to_scalar::<f32>() };
            let g = (pool(&x)? * &up)?.sum_all()?.backward()?;
            let g = g.get(&x).expect("grad").flatten_all()?.to_vec1::<f32>()?;
            let base = x.flatten_all()?.to_vec1::<f32>()?;
            let eps = 0.25;
            for i in 0..base.len() {
                let mut bumped = base.clone();
                bumped[i] += eps;
                let t = Tensor::from_vec(bumped, (2, 1, h, w), &dev)?;
                let numeric = (f(&t)? - f(x.as_tensor())?) / eps;
                assert!(
                    (numeric - g[i]).abs() < 1e-2,
                    "{h}x{w} pixel {i}: analytic {} numeric {numeric}",
                    g[i]
                );
            }
        }
        Ok(())
    }

    #[test]
    fn subsample_matches_strided_1x1_conv() -> Result<()> {
        let dev = Device::Cpu;
        for &(h, w) in &[(60, 60), (15, 15), (1, 3)] {
            let x = Tensor::randn(0f32, 1.0, (2, 3, h, w), &dev)?;
            let k = Tensor::randn(0f32, 1.0, (4, 3, 1, 1), &dev)?;
            let s = subsample2(&x.transpose(0, 1)?)?;
            let (_, n, ho, wo) = s.dims4()?;
            let ours = k
                .reshape((4, 3))?
                .matmul(&s.reshape((3, n * ho * wo))?)?
                .reshape((4, n, ho, wo))?
                .transpose(0, 1)?;
            let theirs = x.conv2d(&k, 0, 2, 1, 1)?;
            assert!(max_diff(&ours, &theirs) < 1e-5);
        }
        Ok(())
    }

    #[test]
    fn tf_same_pool_pads_bottom_right() -> Result<()> {
        let dev = Device::Cpu;
        // A 4x4 ramp: TF gives windows over rows {0,1,2} and {2,3,pad} -> maxima at rows 2 and 3.
        let x = Tensor::arange(0f32, 16.0, &dev)?.reshape((1, 1, 4, 4))?;
        let y = max_pool3x3_s2_same(&x)?;
        assert_eq!(
            y.flatten_all()?.to_vec1::<f32>()?,
            vec![10.0, 11.0, 14.0, 15.0]
        );
        // Odd sizes pad one on each side: 15 -> 8, and matches edge-replicate + candle's pool.
        for &(h, w) in &[(15, 15), (60, 60), (30, 30), (8, 8), (7, 12)] {
            let x = Tensor::randn(0f32, 1.0, (2, 3, h, w), &dev)?;
            let ours = max_pool3x3_s2_same(&x)?;
            let (ho, top) = tf_same_pool_geometry(h);
            let (wo, left) = tf_same_pool_geometry(w);
            let bottom = (ho - 1) * 2 + 3 - h - top;
            let right = (wo - 1) * 2 + 3 - w - left;
            let theirs = x
                .pad_with_same(2, top, bottom)?
                .pad_with_same(3, left, right)?
                .max_pool2d_with_stride(3, 2)?;
            assert_eq!(ours.dims4()?, (2, 3, ho, wo));
            assert_eq!(max_diff(&ours, &theirs), 0.0);
        }
        Ok(())
    }
}
