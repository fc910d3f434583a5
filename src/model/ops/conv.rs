//! 3x3 convolutions: depthwise (with its backward pass), direct for few-channel stems, and the
//! im2col unfold whose fold is its gradient.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor, bail};

use super::f32_slice;
use super::simd::{madd, with_avx2};

/// Depthwise 3x3 convolution, stride 1, zero padding 1 ("same"), no bias.
///
/// `x` is `(C, N, H, W)` and `kernel` is `(C, 1, 3, 3)` as PyTorch/candle store depthwise kernels.
pub fn depthwise_conv3x3(x: &Tensor, kernel: &Tensor) -> Result<Tensor> {
    x.contiguous()?
        .apply_op2(&kernel.contiguous()?, Depthwise3x3)
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
        let (c, n, h, w) = l1.shape().dims4()?;
        if l2.shape().dims() != [c, 1, 3, 3] {
            bail!(
                "depthwise kernel has shape {:?}, expected [{c}, 1, 3, 3]",
                l2.shape().dims()
            );
        }
        let xs = f32_slice(s1, l1, self.name())?;
        let ks = f32_slice(s2, l2, self.name())?;
        let plane = h * w;
        let mut out = Vec::with_capacity(c * n * plane);
        let pw = w + 2;
        let mut padded = vec![0f32; (h + 2) * pw];
        let mut wide = vec![0f32; wide_len(h, w, pw)];
        for i in 0..c * n {
            let k = &ks[(i / n) * 9..][..9];
            pad_plane(&xs[i * plane..][..plane], &mut padded, h, w);
            taps_wide(&padded, pw, k, &mut wide, false);
            compact(&wide, &mut out, w, pw);
        }
        Ok((CpuStorage::F32(out), Shape::from((c, n, h, w))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        kernel: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (c, n, h, w) = x.dims4()?;
        let all = x.contiguous()?.apply_op3_no_bwd(
            &grad.contiguous()?,
            &kernel.contiguous()?,
            &DepthwiseGrad,
        )?;
        let dx = all.narrow(0, 0, c * n * h * w)?.reshape((c, n, h, w))?;
        let dk = all.narrow(0, c * n * h * w, c * 9)?.reshape((c, 1, 3, 3))?;
        Ok((Some(dx), Some(dk)))
    }
}

/// Gradients of [`Depthwise3x3`]: `[dx (C*N*H*W) | dkernel (C*9)]` from `x`, `dy` and the kernel.
/// The input gradient is the same "same" convolution of `dy` with the kernel turned by 180
/// degrees; each kernel tap's gradient is the dot product of `dy` with the shifted input.
struct DepthwiseGrad;

impl candle_core::CustomOp3 for DepthwiseGrad {
    fn name(&self) -> &'static str {
        "depthwise-conv3x3-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (c, n, h, w) = l1.shape().dims4()?;
        let xs = f32_slice(s1, l1, self.name())?;
        let dys = f32_slice(s2, l2, self.name())?;
        let ks = f32_slice(s3, l3, self.name())?;
        if dys.len() != xs.len() || ks.len() != c * 9 {
            bail!("depthwise-conv3x3-grad: shapes do not fit ({c}, {n}, {h}, {w})");
        }
        let plane = h * w;
        let pw = w + 2;
        let wl = wide_len(h, w, pw);
        let mut out = Vec::with_capacity(c * n * plane + c * 9);
        let mut dk = vec![0f32; c * 9];
        let mut padded_x = vec![0f32; (h + 2) * pw];
        let mut padded_dy = vec![0f32; (h + 2) * pw];
        let mut wide = vec![0f32; wl];
        // `dy` at row stride `pw`, zero in the two wrap-around columns, for the tap dot products.
        let mut dy_wide = vec![0f32; wl];
        for i in 0..c * n {
            let ch = i / n;
            let k = &ks[ch * 9..][..9];
            let flipped: [f32; 9] = std::array::from_fn(|t| k[8 - t]);
            let dy = &dys[i * plane..][..plane];
            pad_plane(dy, &mut padded_dy, h, w);
            taps_wide(&padded_dy, pw, &flipped, &mut wide, false);
            compact(&wide, &mut out, w, pw);
            pad_plane(&xs[i * plane..][..plane], &mut padded_x, h, w);
            dy_wide.copy_from_slice(&padded_dy[pw + 1..][..wl]);
            taps_dot(&padded_x, pw, &dy_wide, &mut dk[ch * 9..][..9]);
        }
        out.extend_from_slice(&dk);
        Ok((CpuStorage::F32(out), Shape::from(c * n * plane + c * 9)))
    }
}

/// `acc[dy*3+dx] += sum_i g[i] * src[i + dy*pw + dx]`: the nine tap gradients of a 3x3 filter.
#[inline(always)]
fn taps_dot_generic<const FMA: bool>(src: &[f32], pw: usize, g: &[f32], acc: &mut [f32]) {
    const L: usize = 8;
    let len = g.len();
    let offs: [usize; 9] = std::array::from_fn(|t| (t / 3) * pw + t % 3);
    let mut lanes = [[0f32; L]; 9];
    let whole = len / L * L;
    for i in (0..whole).step_by(L) {
        let gv = &g[i..i + L];
        for (t, lane) in lanes.iter_mut().enumerate() {
            let sv = &src[offs[t] + i..][..L];
            for j in 0..L {
                lane[j] = madd::<FMA>(gv[j], sv[j], lane[j]);
            }
        }
    }
    for (t, lane) in lanes.iter().enumerate() {
        let tail: f32 = (whole..len).map(|i| g[i] * src[offs[t] + i]).sum();
        acc[t] += lane.iter().sum::<f32>() + tail;
    }
}

with_avx2!(taps_wide, taps_wide_generic, (src: &[f32], pw: usize, k: &[f32], dst: &mut [f32], accumulate: bool));
with_avx2!(taps_dot, taps_dot_generic, (src: &[f32], pw: usize, g: &[f32], acc: &mut [f32]));

/// The 3x3 filter over a plane of row length `pw`, treated as one long row:
/// `dst[i] = (dst[i] if accumulate else 0) + sum k[dy*3+dx] * src[i + dy*pw + dx]`.
///
/// Output row `y` lives at `dst[y*pw .. y*pw + wo]`; the two columns after it are wrapped-around
/// garbage that [`compact`] skips. One long loop has no per-row tails, which cost a third of
/// the time on 60-pixel rows.
#[inline(always)]
fn taps_wide_generic<const FMA: bool>(
    src: &[f32],
    pw: usize,
    k: &[f32],
    dst: &mut [f32],
    accumulate: bool,
) {
    let len = dst.len();
    let t = |off: usize| &src[off..off + len];
    let (s0, s1, s2) = (t(0), t(1), t(2));
    let (s3, s4, s5) = (t(pw), t(pw + 1), t(pw + 2));
    let (s6, s7, s8) = (t(2 * pw), t(2 * pw + 1), t(2 * pw + 2));
    let k: [f32; 9] = std::array::from_fn(|i| k[i]);
    for i in 0..len {
        let mut a = if accumulate { dst[i] } else { 0.0 };
        a = madd::<FMA>(k[0], s0[i], a);
        a = madd::<FMA>(k[1], s1[i], a);
        a = madd::<FMA>(k[2], s2[i], a);
        a = madd::<FMA>(k[3], s3[i], a);
        a = madd::<FMA>(k[4], s4[i], a);
        a = madd::<FMA>(k[5], s5[i], a);
        a = madd::<FMA>(k[6], s6[i], a);
        a = madd::<FMA>(k[7], s7[i], a);
        a = madd::<FMA>(k[8], s8[i], a);
        dst[i] = a;
    }
}

/// Length of the wide output of [`taps_wide`] for `ho` rows of `wo` values at row stride `pw`.
fn wide_len(ho: usize, wo: usize, pw: usize) -> usize {
    (ho - 1) * pw + wo
}

/// Copy `src` (`h x w`) into the middle of `padded` (`(h+2) x (w+2)`) with a zero border.
fn pad_plane(src: &[f32], padded: &mut [f32], h: usize, w: usize) {
    let pw = w + 2;
    padded[..pw].fill(0.0);
    padded[(h + 1) * pw..].fill(0.0);
    for (y, row) in src.chunks_exact(w).enumerate() {
        let p = &mut padded[(y + 1) * pw..][..pw];
        p[0] = 0.0;
        p[pw - 1] = 0.0;
        p[1..=w].copy_from_slice(row);
    }
}

/// Append the valid `wo` columns of each wide row to `out`, as a dense plane.
fn compact(wide: &[f32], out: &mut Vec<f32>, wo: usize, pw: usize) {
    for row in wide.chunks(pw) {
        out.extend_from_slice(&row[..wo]);
    }
}

/// Dense 3x3 convolution, stride 1, computed directly: `(Cin, N, H, W)` with kernel
/// `(Cout, Cin, 3, 3)` and bias `(Cout)` -> `(Cout, N, Ho, Wo)`, then ReLU if asked.
///
/// For the few-channel stem this beats im2col + matmul: the unfolded input would be 9x the
/// activations (8 MB for a batch of eight 62x62x8 maps) and spill out of cache.
pub fn conv3x3_direct(
    x: &Tensor,
    kernel: &Tensor,
    bias: &Tensor,
    pad: usize,
    relu: bool,
) -> Result<Tensor> {
    let x = x.contiguous()?;
    let kb = Tensor::cat(&[kernel.flatten_all()?, bias.flatten_all()?], 0)?;
    x.apply_op2_no_bwd(
        &kb,
        &ConvDirect {
            cout: kernel.dim(0)?,
            pad,
            relu,
        },
    )
}

struct ConvDirect {
    cout: usize,
    pad: usize,
    relu: bool,
}

impl CustomOp2 for ConvDirect {
    fn name(&self) -> &'static str {
        "conv3x3-direct"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (cin, n, h, w) = l1.shape().dims4()?;
        let (cout, p) = (self.cout, self.pad);
        if l2.shape().elem_count() != cout * cin * 9 + cout {
            bail!("conv3x3-direct: kernel and bias do not fit {cin} -> {cout} channels");
        }
        if p > 1 {
            bail!("conv3x3-direct: padding {p} is not supported (0 or 1)");
        }
        if h + 2 * p < 3 || w + 2 * p < 3 {
            bail!("conv3x3-direct: input {h}x{w} with padding {p} is smaller than the kernel");
        }
        let xs = f32_slice(s1, l1, self.name())?;
        let kb = f32_slice(s2, l2, self.name())?;
        let (ks, bs) = kb.split_at(cout * cin * 9);
        let (ph, pw) = (h + 2 * p, w + 2 * p);
        let (ho, wo) = (ph - 2, pw - 2);
        let wl = wide_len(ho, wo, pw);
        // Pad every input plane once, then accumulate each output plane over the inputs.
        let padded: Vec<f32> = if p == 0 {
            xs.to_vec()
        } else {
            let mut all = vec![0f32; cin * n * ph * pw];
            for (src, dst) in xs.chunks_exact(h * w).zip(all.chunks_exact_mut(ph * pw)) {
                pad_plane(src, dst, h, w);
            }
            all
        };
        let mut out = Vec::with_capacity(cout * n * ho * wo);
        let mut acc = vec![0f32; wl];
        for co in 0..cout {
            for ni in 0..n {
                for ci in 0..cin {
                    let k = &ks[(co * cin + ci) * 9..][..9];
                    taps_wide(
                        &padded[(ci * n + ni) * ph * pw..][..ph * pw],
                        pw,
                        k,
                        &mut acc,
                        ci > 0,
                    );
                }
                let start = out.len();
                compact(&acc, &mut out, wo, pw);
                out[start..].iter_mut().for_each(|v| *v += bs[co]);
            }
        }
        if self.relu {
            out.iter_mut().for_each(|v| *v = v.max(0.0));
        }
        Ok((CpuStorage::F32(out), Shape::from((cout, n, ho, wo))))
    }
}

/// Unfold 3x3 patches: `(C, N, H, W)` -> `(C*9, N*Ho*Wo)` with zero padding `pad` (0 or 1),
/// row `c*9 + dy*3 + dx`, so that an OIHW kernel reshaped to `(Cout, C*9)` multiplies it.
pub fn im2col3x3(x: &Tensor, pad: usize) -> Result<Tensor> {
    x.contiguous()?.apply_op1(Im2Col3x3 { pad })
}

struct Im2Col3x3 {
    pad: usize,
}

impl CustomOp1 for Im2Col3x3 {
    fn name(&self) -> &'static str {
        "im2col3x3"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (c, n, h, w) = l.shape().dims4()?;
        let p = self.pad;
        if h + 2 * p < 3 || w + 2 * p < 3 {
            bail!("im2col3x3: input {h}x{w} with padding {p} is smaller than the 3x3 kernel");
        }
        let (ho, wo) = (h + 2 * p - 2, w + 2 * p - 2);
        let xs = f32_slice(s, l, self.name())?;
        let cols = n * ho * wo;
        // Written strictly in order (row = ci*9 + dy*3 + dx, then ni, oy, ox) so that only the
        // padding is zeroed: zero-filling the whole matrix first cost a sixth of a VGG's
        // inference time.
        let mut out = Vec::with_capacity(c * 9 * cols);
        let zeros = |out: &mut Vec<f32>, k: usize| out.extend(std::iter::repeat_n(0f32, k));
        for ci in 0..c {
            for dy in 0..3 {
                for dx in 0..3 {
                    // Output x range whose input column ox + dx - p lies inside 0..w.
                    let x0 = p.saturating_sub(dx).min(wo);
                    let x1 = (w + p).saturating_sub(dx).min(wo).max(x0);
                    for ni in 0..n {
                        let src = &xs[(ci * n + ni) * h * w..][..h * w];
                        if p == 1 {
                            shifted_plane(&mut out, src, h, w, dy, dx);
                            continue;
                        }
                        for oy in 0..ho {
                            let Some(iy) = (oy + dy).checked_sub(p).filter(|&iy| iy < h) else {
                                zeros(&mut out, wo);
                                continue;
                            };
                            zeros(&mut out, x0);
                            if x1 > x0 {
                                let ix0 = x0 + dx - p;
                                out.extend_from_slice(&src[iy * w + ix0..][..x1 - x0]);
                            }
                            zeros(&mut out, wo - x1);
                        }
                    }
                }
            }
        }
        debug_assert_eq!(out.len(), c * 9 * cols);
        Ok((CpuStorage::F32(out), Shape::from((c * 9, cols))))
    }

    /// The gradient of an unfold is a fold: every patch entry adds back into its pixel.
    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let (c, n, h, w) = arg.dims4()?;
        let op = Col2Im3x3 {
            pad: self.pad,
            c,
            n,
            h,
            w,
        };
        Ok(Some(grad_res.contiguous()?.apply_op1_no_bwd(&op)?))
    }
}

/// One row of a padding-1 unfold for one image and channel: the `h x w` plane shifted by
/// `(dy - 1, dx - 1)` with zeros shifted in, appended to `out`. The rows that stay inside the
/// plane are one contiguous copy (a column shift only moves the flat index by one), after which
/// the column that wrapped into the neighbouring row is zeroed: one copy per plane instead of one
/// per image row, which cost a quarter of a VGG's inference in small copies.
fn shifted_plane(out: &mut Vec<f32>, src: &[f32], h: usize, w: usize, dy: usize, dx: usize) {
    let zeros = |out: &mut Vec<f32>, k: usize| out.extend(std::iter::repeat_n(0f32, k));
    // Output rows whose input row oy + dy - 1 lies inside 0..h.
    let oy0 = 1usize.saturating_sub(dy);
    let oy1 = (h + 1).saturating_sub(dy).min(h).max(oy0);
    zeros(out, oy0 * w);
    if oy1 > oy0 {
        let start = out.len();
        let from = (oy0 + dy - 1) * w;
        let len = (oy1 - oy0) * w;
        match dx {
            0 => {
                out.push(0.0);
                out.extend_from_slice(&src[from..from + len - 1]);
                (1..oy1 - oy0).for_each(|r| out[start + r * w] = 0.0);
            }
            1 => out.extend_from_slice(&src[from..from + len]),
            _ => {
                out.extend_from_slice(&src[from + 1..from + len]);
                out.push(0.0);
                (0..oy1 - oy0).for_each(|r| out[start + r * w + w - 1] = 0.0);
            }
        }
    }
    zeros(out, (h - oy1) * w);
}

/// The adjoint of [`im2col3x3`]: `(C*9, N*Ho*Wo)` -> `(C, N, H, W)`, summing overlapping patches.
struct Col2Im3x3 {
    pad: usize,
    c: usize,
    n: usize,
    h: usize,
    w: usize,
}

impl CustomOp1 for Col2Im3x3 {
    fn name(&self) -> &'static str {
        "col2im3x3"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let Self { pad: p, c, n, h, w } = *self;
        let (ho, wo) = (h + 2 * p - 2, w + 2 * p - 2);
        let cols = n * ho * wo;
        if l.shape().dims() != [c * 9, cols] {
            bail!(
                "col2im3x3: gradient has shape {:?}, expected [{}, {cols}]",
                l.shape().dims(),
                c * 9
            );
        }
        let gs = f32_slice(s, l, self.name())?;
        let mut out = vec![0f32; c * n * h * w];
        for ci in 0..c {
            for dy in 0..3 {
                for dx in 0..3 {
                    let row = &gs[((ci * 9) + dy * 3 + dx) * cols..][..cols];
                    let x0 = p.saturating_sub(dx);
                    let x1 = (w + p).saturating_sub(dx).min(wo);
                    if x1 <= x0 {
                        continue;
                    }
                    for ni in 0..n {
                        let dst = &mut out[(ci * n + ni) * h * w..][..h * w];
                        for oy in 0..ho {
                            let Some(iy) = (oy + dy).checked_sub(p).filter(|&iy| iy < h) else {
                                continue;
                            };
                            let src = &row[(ni * ho + oy) * wo..][..wo];
                            let ix0 = x0 + dx - p;
                            for (d, g) in
                                dst[iy * w + ix0..][..x1 - x0].iter_mut().zip(&src[x0..x1])
                            {
                                *d += g;
                            }
                        }
                    }
                }
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((c, n, h, w))))
    }
}

#[cfg(test)]
mod tests {
    use super::super::max_diff;
    use super::*;
    use candle_core::Device;

    #[test]
    fn depthwise_matches_candle_grouped_conv() -> Result<()> {
        let dev = Device::Cpu;
        for &(n, c, h, w) in &[(1, 8, 60, 60), (3, 16, 15, 15), (2, 4, 1, 1), (1, 2, 2, 5)] {
            let x = Tensor::randn(0f32, 1.0, (n, c, h, w), &dev)?;
            let k = Tensor::randn(0f32, 1.0, (c, 1, 3, 3), &dev)?;
            let ours = depthwise_conv3x3(&x.transpose(0, 1)?, &k)?.transpose(0, 1)?;
            let theirs = x.conv2d(&k, 1, 1, 1, c)?;
            let d = max_diff(&ours, &theirs);
            assert!(d < 1e-4, "({n},{c},{h},{w}): max diff {d}");
        }
        Ok(())
    }

    #[test]
    fn depthwise_gradients_match_candle_grouped_conv() -> Result<()> {
        let dev = Device::Cpu;
        for &(n, c, h, w) in &[(2, 3, 9, 7), (1, 2, 1, 1), (3, 4, 16, 16)] {
            let x = candle_core::Var::randn(0f32, 1.0, (n, c, h, w), &dev)?;
            let k = candle_core::Var::randn(0f32, 1.0, (c, 1, 3, 3), &dev)?;
            let up = Tensor::randn(0f32, 1.0, (n, c, h, w), &dev)?;
            let ours = depthwise_conv3x3(&x.transpose(0, 1)?, &k)?.transpose(0, 1)?;
            let g1 = (ours * &up)?.sum_all()?.backward()?;
            let theirs = x.conv2d(&k, 1, 1, 1, c)?;
            let g2 = (theirs * &up)?.sum_all()?.backward()?;
            for v in [x.as_tensor(), k.as_tensor()] {
                let (a, b) = (g1.get(v).expect("grad"), g2.get(v).expect("grad"));
                assert_eq!(a.dims(), b.dims());
                let d = max_diff(a, b);
                assert!(d < 1e-3, "({n},{c},{h},{w}): gradient differs by {d}");
            }
        }
        Ok(())
    }

    #[test]
    fn im2col_matmul_matches_candle_conv2d() -> Result<()> {
        let dev = Device::Cpu;
        for &(n, cin, cout, h, w, pad) in &[
            (2, 3, 5, 9, 7, 0),
            (3, 4, 2, 6, 6, 1),
            (1, 8, 7, 4, 4, 1),
            (2, 2, 3, 1, 1, 1),
            (2, 3, 4, 2, 5, 1),
            (1, 2, 3, 7, 1, 1),
            (2, 3, 2, 5, 8, 1),
        ] {
            let x = Tensor::randn(0f32, 1.0, (n, cin, h, w), &dev)?;
            let k = Tensor::randn(0f32, 1.0, (cout, cin, 3, 3), &dev)?;
            let cols = im2col3x3(&x.transpose(0, 1)?, pad)?;
            let (ho, wo) = (h + 2 * pad - 2, w + 2 * pad - 2);
            let ours = k
                .reshape((cout, cin * 9))?
                .matmul(&cols)?
                .reshape((cout, n, ho, wo))?
                .transpose(0, 1)?;
            let theirs = x.conv2d(&k, pad, 1, 1, 1)?;
            let d = max_diff(&ours, &theirs);
            assert!(d < 1e-4, "({n},{cin},{cout},{h},{w},{pad}): max diff {d}");
        }
        Ok(())
    }

    #[test]
    fn im2col_conv_gradients_match_candle_conv2d() -> Result<()> {
        let dev = Device::Cpu;
        for &(n, cin, cout, h, w, pad) in &[(2, 3, 4, 6, 5, 1), (3, 2, 2, 4, 4, 0)] {
            let x = candle_core::Var::randn(0f32, 1.0, (n, cin, h, w), &dev)?;
            let k = candle_core::Var::randn(0f32, 1.0, (cout, cin, 3, 3), &dev)?;
            let (ho, wo) = (h + 2 * pad - 2, w + 2 * pad - 2);
            let target = Tensor::randn(0f32, 1.0, (n, cout, ho, wo), &dev)?;
            let ours = k
                .reshape((cout, cin * 9))?
                .matmul(&im2col3x3(&x.transpose(0, 1)?, pad)?)?
                .reshape((cout, n, ho, wo))?
                .transpose(0, 1)?;
            let g1 = (ours * &target)?.sum_all()?.backward()?;
            let theirs = x.conv2d(&k, pad, 1, 1, 1)?;
            let g2 = (theirs * &target)?.sum_all()?.backward()?;
            for v in [x.as_tensor(), k.as_tensor()] {
                let d = max_diff(g1.get(v).unwrap(), g2.get(v).unwrap());
                assert!(
                    d < 1e-4,
                    "({n},{cin},{cout},{h},{w},{pad}): gradient differs by {d}"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn direct_conv_matches_candle_conv2d() -> Result<()> {
        let dev = Device::Cpu;
        for &(n, cin, cout, h, w, pad) in
            &[(2, 1, 8, 10, 9, 0), (3, 8, 8, 7, 7, 0), (1, 3, 2, 5, 6, 1)]
        {
            let x = Tensor::randn(0f32, 1.0, (n, cin, h, w), &dev)?;
            let k = Tensor::randn(0f32, 1.0, (cout, cin, 3, 3), &dev)?;
            let b = Tensor::randn(0f32, 1.0, cout, &dev)?;
            for relu in [false, true] {
                let ours =
                    conv3x3_direct(&x.transpose(0, 1)?, &k, &b, pad, relu)?.transpose(0, 1)?;
                let theirs = x
                    .conv2d(&k, pad, 1, 1, 1)?
                    .broadcast_add(&b.reshape((1, cout, 1, 1))?)?;
                let theirs = if relu { theirs.relu()? } else { theirs };
                let d = max_diff(&ours, &theirs);
                assert!(d < 1e-4, "({n},{cin},{cout},{h},{w},{pad}): max diff {d}");
            }
        }
        Ok(())
    }
}
