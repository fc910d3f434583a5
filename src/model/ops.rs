//! CPU kernels for the nets here, on activations laid out channel-major as `(C, N, H, W)`.
//!
//! With channels first, a 1x1 convolution over a whole batch is one `(Cout, Cin) x (Cin, N*H*W)`
//! matmul, and a 3x3 convolution is one matmul after [`im2col3x3`]; no per-sample loops and no
//! broadcast batch matmuls. candle's grouped `conv2d` (groups = channels) runs one tiny
//! convolution per channel, about 20x slower than the nine shifted multiply-adds of
//! [`depthwise_conv3x3`]; the tests check both against candle's own convolutions.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor, bail};

fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        bail!("{op} supports f32 only")
    };
    let Some((a, b)) = l.contiguous_offsets() else {
        bail!("{op} needs a contiguous input")
    };
    Ok(&v[a..b])
}

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

/// Define `$name` to run `$generic::<true>` compiled for AVX-512 or AVX2 (+ FMA) when the CPU
/// has them (the crate is built for baseline x86-64, whose SSE2 code runs these loops at half the
/// speed), else `$generic::<false>` as built. The const parameter says whether fused multiply-add is cheap.
macro_rules! with_avx2 {
    ($name:ident, $generic:ident, ($($arg:ident: $ty:ty),*)) => {
        fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                fn avx512($($arg: $ty),*) {
                    $generic::<true>($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) {
                    $generic::<true>($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU supports AVX-512F and FMA, checked just above.
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU supports AVX2 and FMA, checked just above.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $generic::<false>($($arg),*)
        }
    };
}

with_avx2!(taps_wide, taps_wide_generic, (src: &[f32], pw: usize, k: &[f32], dst: &mut [f32], accumulate: bool));
with_avx2!(taps_dot, taps_dot_generic, (src: &[f32], pw: usize, g: &[f32], acc: &mut [f32]));
with_avx2!(max_pool_plane, max_pool_plane_generic, (plane: &[f32], out: &mut [f32], h: usize, w: usize, tmp: &mut [f32]));

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

/// `a + k * v`, fused where the CPU has FMA.
#[inline(always)]
fn madd<const FMA: bool>(k: f32, v: f32, a: f32) -> f32 {
    if FMA { k.mul_add(v, a) } else { a + k * v }
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
    y.inplace_op2(&residual.contiguous()?, &AddInPlace)?;
    Ok(y)
}

struct AddInPlace;

impl candle_core::InplaceOp2 for AddInPlace {
    fn name(&self) -> &'static str {
        "add-in-place"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        let r = f32_slice(s2, l2, "add-in-place")?;
        let (CpuStorage::F32(v), Some((a, b))) = (s1, l1.contiguous_offsets()) else {
            bail!("add-in-place needs a contiguous f32 input");
        };
        v[a..b].iter_mut().zip(r).for_each(|(x, y)| *x += y);
        Ok(())
    }
}

/// Dropout with a mask drawn from `seed` (candle's own draws from an unseeded generator):
/// zeroes each element with probability `p` and scales the rest by `1 / (1 - p)`, so that a
/// training run repeats exactly under the same seed.
pub fn dropout_seeded(x: &Tensor, p: f32, seed: u64) -> Result<Tensor> {
    if !(0.0..1.0).contains(&p) {
        bail!("dropout probability {p}, expected 0 <= p < 1");
    }
    let keep = 1.0 / (1.0 - p);
    let mut rng = crate::rng::Rng::new(seed);
    let mask: Vec<f32> = (0..x.elem_count())
        .map(|_| if rng.unit() < p { 0.0 } else { keep })
        .collect();
    let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
    x.mul(&mask)
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

/// `x + bias[c]` over `(C, cols)`, then ReLU if asked, computed in place in one pass.
///
/// `x` must be a fresh result (a matmul's output) that nothing else shares: its storage is
/// overwritten, so every clone of it would see the change.
pub fn bias_act_in_place(x: Tensor, bias: &Tensor, relu: bool) -> Result<Tensor> {
    let y = if x.is_contiguous() {
        x
    } else {
        x.contiguous()?
    };
    y.inplace_op2(&bias.contiguous()?, &BiasAct { relu })?;
    Ok(y)
}

struct BiasAct {
    relu: bool,
}

impl candle_core::InplaceOp2 for BiasAct {
    fn name(&self) -> &'static str {
        "bias-act"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        let (c, cols) = l1.shape().dims2()?;
        if l2.shape().elem_count() != c {
            bail!(
                "bias has shape {:?}, expected {c} values",
                l2.shape().dims()
            );
        }
        let bs = f32_slice(s2, l2, "bias-act")?;
        let (CpuStorage::F32(v), Some((a, b))) = (s1, l1.contiguous_offsets()) else {
            bail!("bias-act needs a contiguous f32 input");
        };
        bias_rows(&mut v[a..b], bs, cols, self.relu);
        Ok(())
    }
}

with_avx2!(bias_rows, bias_rows_generic, (out: &mut [f32], bias: &[f32], cols: usize, relu: bool));

#[inline(always)]
fn bias_rows_generic<const FMA: bool>(out: &mut [f32], bias: &[f32], cols: usize, relu: bool) {
    for (row, &b) in out.chunks_exact_mut(cols).zip(bias) {
        if relu {
            row.iter_mut().for_each(|v| *v = (*v + b).max(0.0));
        } else {
            row.iter_mut().for_each(|v| *v += b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn seeded_dropout_repeats_under_its_seed_and_keeps_the_expected_share() {
        let x = Tensor::ones((4, 10_000), candle_core::DType::F32, &Device::Cpu).unwrap();
        let a = dropout_seeded(&x, 0.25, 9).unwrap();
        let b = dropout_seeded(&x, 0.25, 9).unwrap();
        let c = dropout_seeded(&x, 0.25, 10).unwrap();
        let v: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(v, b.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        assert_ne!(v, c.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        let dropped = v.iter().filter(|&&e| e == 0.0).count() as f64 / v.len() as f64;
        assert!((dropped - 0.25).abs() < 0.01, "dropped {dropped}");
        // Kept values are scaled so that the expected sum is unchanged.
        assert!(v.iter().all(|&e| e == 0.0 || (e - 1.0 / 0.75).abs() < 1e-6));
        assert_eq!(a.dims(), x.dims());
        assert!(dropout_seeded(&x, 1.0, 1).is_err());
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
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
    fn bias_act_adds_per_row_and_clamps() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::new(&[[1f32, -2.0], [-3.0, 4.0]], &dev)?;
        let b = Tensor::new(&[[1f32], [-1.0]], &dev)?;
        assert_eq!(
            bias_act_in_place(x.copy()?, &b, false)?.to_vec2::<f32>()?,
            vec![vec![2.0, -1.0], vec![-4.0, 3.0]]
        );
        assert_eq!(
            bias_act_in_place(x.copy()?, &b, true)?.to_vec2::<f32>()?,
            vec![vec![2.0, 0.0], vec![0.0, 3.0]]
        );
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

/// Batch statistics of one call of [`batch_norm_train`]: per-channel mean and biased variance.
pub type BatchStats = (Vec<f32>, Vec<f32>);

/// Training-mode batch norm, followed by ReLU if `relu`, over `(C, cols)` rows, in one pass
/// forward and two backward (candle's elementwise ops took a fifth of a training step). `gamma`
/// and `beta` are `(C)`. Also returns the batch statistics, for the running averages.
pub fn batch_norm_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
    relu: bool,
) -> Result<(Tensor, BatchStats)> {
    let stats = std::sync::Arc::new(std::sync::Mutex::new((Vec::new(), Vec::new())));
    let op = BnRelu {
        eps,
        relu,
        stats: stats.clone(),
    };
    let y = x
        .contiguous()?
        .apply_op3(&gamma.contiguous()?, &beta.contiguous()?, op)?;
    let s = stats.lock().map(|s| s.clone()).unwrap_or_default();
    Ok((y, s))
}

/// Per-row mean, biased variance and `1/sqrt(var + eps)`, in one pass: sums of `row - row[0]`
/// (shifted, so a large mean does not cancel the variance away) in f32 lanes per block of 4096
/// and in f64 across blocks.
fn row_stats(row: &[f32], eps: f64) -> (f32, f32, f32) {
    let n = row.len().max(1) as f64;
    let pivot = row.first().copied().unwrap_or(0.0);
    let (mut s, mut q) = (0f64, 0f64);
    let mut out = [0f32; 2];
    for block in row.chunks(4096) {
        shifted_sums(block, pivot, &mut out);
        s += out[0] as f64;
        q += out[1] as f64;
    }
    let m = s / n;
    let var = (q / n - m * m).max(0.0);
    (
        (pivot as f64 + m) as f32,
        var as f32,
        (1.0 / (var + eps).sqrt()) as f32,
    )
}

/// `out = [sum(v - pivot), sum((v - pivot)^2)]` over `block`.
#[inline(always)]
fn shifted_sums_generic<const FMA: bool>(block: &[f32], pivot: f32, out: &mut [f32; 2]) {
    const L: usize = 8;
    let (mut s, mut q) = ([0f32; L], [0f32; L]);
    let chunks = block.chunks_exact(L);
    let rem = chunks.remainder();
    for c in chunks {
        for j in 0..L {
            let d = c[j] - pivot;
            s[j] += d;
            q[j] = madd::<FMA>(d, d, q[j]);
        }
    }
    let (mut ts, mut tq) = (s.iter().sum::<f32>(), q.iter().sum::<f32>());
    for &v in rem {
        let d = v - pivot;
        ts += d;
        tq += d * d;
    }
    *out = [ts, tq];
}

/// Append `row * scale + shift` (then ReLU if asked) to `out`.
#[inline(always)]
fn bn_apply_generic<const FMA: bool>(
    row: &[f32],
    scale: f32,
    shift: f32,
    relu: bool,
    out: &mut Vec<f32>,
) {
    if relu {
        out.extend(row.iter().map(|&v| madd::<FMA>(v, scale, shift).max(0.0)));
    } else {
        out.extend(row.iter().map(|&v| madd::<FMA>(v, scale, shift)));
    }
}

/// First backward pass of one channel: `dx = dy` masked by the ReLU (if any), and returns
/// `[sum(dx), sum(dx * xhat)]` in `sums`.
#[inline(always)]
fn bn_grad_pass1_generic<const FMA: bool>(
    row: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    (mean, inv, g, b): (f32, f32, f32, f32),
    relu: bool,
    sums: &mut [f32; 2],
) {
    const L: usize = 8;
    let (mut sg, mut sgx) = ([0f32; L], [0f32; L]);
    // Without a ReLU every element passes: a threshold nothing reaches.
    let floor = if relu { 0.0 } else { f32::NEG_INFINITY };
    let chunks = row
        .chunks_exact(L)
        .zip(dy.chunks_exact(L))
        .zip(dx.chunks_exact_mut(L));
    for ((r, d), o) in chunks {
        for j in 0..L {
            let xhat = (r[j] - mean) * inv;
            // A multiply by the 0/1 mask, not a branch: the ReLU pattern is unpredictable.
            let gi = d[j] * f32::from(u8::from(madd::<FMA>(g, xhat, b) > floor));
            o[j] = gi;
            sg[j] += gi;
            sgx[j] = madd::<FMA>(gi, xhat, sgx[j]);
        }
    }
    let (mut a, mut c) = (sg.iter().sum::<f32>(), sgx.iter().sum::<f32>());
    let whole = row.len() / L * L;
    for i in whole..row.len() {
        let xhat = (row[i] - mean) * inv;
        let gi = if madd::<FMA>(g, xhat, b) > floor {
            dy[i]
        } else {
            0.0
        };
        dx[i] = gi;
        a += gi;
        c += gi * xhat;
    }
    *sums = [a, c];
}

/// Second backward pass: `dx = k * (n * dx - sum_g - xhat * sum_gx)`.
#[inline(always)]
fn bn_grad_pass2_generic<const FMA: bool>(
    row: &[f32],
    dx: &mut [f32],
    (mean, inv, k): (f32, f32, f32),
    (sum_g, sum_gx): (f32, f32),
) {
    let n = row.len() as f32;
    for (d, &v) in dx.iter_mut().zip(row) {
        let xhat = (v - mean) * inv;
        *d = k * (n * *d - sum_g - xhat * sum_gx);
    }
}

with_avx2!(shifted_sums, shifted_sums_generic, (block: &[f32], pivot: f32, out: &mut [f32; 2]));
with_avx2!(bn_apply, bn_apply_generic, (row: &[f32], scale: f32, shift: f32, relu: bool, out: &mut Vec<f32>));
with_avx2!(bn_grad_pass1, bn_grad_pass1_generic, (row: &[f32], dy: &[f32], dx: &mut [f32], p: (f32, f32, f32, f32), relu: bool, sums: &mut [f32; 2]));
with_avx2!(bn_grad_pass2, bn_grad_pass2_generic, (row: &[f32], dx: &mut [f32], p: (f32, f32, f32), s: (f32, f32)));

struct BnRelu {
    eps: f64,
    relu: bool,
    stats: std::sync::Arc<std::sync::Mutex<BatchStats>>,
}

impl candle_core::CustomOp3 for BnRelu {
    fn name(&self) -> &'static str {
        "batch-norm-relu"
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
        let (c, cols) = l1.shape().dims2()?;
        let xs = f32_slice(s1, l1, self.name())?;
        let (g, b) = (
            f32_slice(s2, l2, self.name())?,
            f32_slice(s3, l3, self.name())?,
        );
        if g.len() != c || b.len() != c {
            bail!(
                "batch-norm-relu: {} scales and {} shifts for {c} channels",
                g.len(),
                b.len()
            );
        }
        let mut out = Vec::with_capacity(c * cols);
        let (mut means, mut vars) = (Vec::with_capacity(c), Vec::with_capacity(c));
        for (ch, row) in xs.chunks_exact(cols).enumerate() {
            let (mean, var, inv) = row_stats(row, self.eps);
            let (scale, shift) = (g[ch] * inv, b[ch] - mean * g[ch] * inv);
            bn_apply(row, scale, shift, self.relu, &mut out);
            means.push(mean);
            vars.push(var);
        }
        if let Ok(mut s) = self.stats.lock() {
            *s = (means, vars);
        }
        Ok((CpuStorage::F32(out), Shape::from((c, cols))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (c, cols) = x.dims2()?;
        let params = Tensor::cat(&[gamma.flatten_all()?, beta.flatten_all()?], 0)?;
        let all = x.contiguous()?.apply_op3_no_bwd(
            &grad.contiguous()?,
            &params,
            &BnReluGrad {
                eps: self.eps,
                relu: self.relu,
            },
        )?;
        let dx = all.narrow(0, 0, c * cols)?.reshape((c, cols))?;
        let dgamma = all.narrow(0, c * cols, c)?;
        let dbeta = all.narrow(0, c * cols + c, c)?;
        Ok((Some(dx), Some(dgamma), Some(dbeta)))
    }
}

/// Gradients of [`BnRelu`]: `[dx (C*cols) | dgamma (C) | dbeta (C)]` from `x`, `dy` and
/// `[gamma | beta]`.
struct BnReluGrad {
    eps: f64,
    relu: bool,
}

impl candle_core::CustomOp3 for BnReluGrad {
    fn name(&self) -> &'static str {
        "batch-norm-relu-grad"
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
        let (c, cols) = l1.shape().dims2()?;
        let xs = f32_slice(s1, l1, self.name())?;
        let dys = f32_slice(s2, l2, self.name())?;
        let params = f32_slice(s3, l3, self.name())?;
        if dys.len() != c * cols || params.len() != 2 * c {
            bail!("batch-norm-relu-grad: shapes do not fit {c} x {cols}");
        }
        let (gs, bs) = params.split_at(c);
        let mut out = vec![0f32; c * cols + 2 * c];
        let (dx_all, rest) = out.split_at_mut(c * cols);
        let (dgamma, dbeta) = rest.split_at_mut(c);
        let n = cols as f32;
        for ch in 0..c {
            let row = &xs[ch * cols..][..cols];
            let dy = &dys[ch * cols..][..cols];
            let dx = &mut dx_all[ch * cols..][..cols];
            let (mean, _, inv) = row_stats(row, self.eps);
            let (g, b) = (gs[ch], bs[ch]);
            // f32 lanes within blocks, f64 across them, as in `row_stats`.
            let (mut sum_g, mut sum_gx) = (0f64, 0f64);
            let mut sums = [0f32; 2];
            for ((rb, db), xb) in row
                .chunks(4096)
                .zip(dy.chunks(4096))
                .zip(dx.chunks_mut(4096))
            {
                bn_grad_pass1(rb, db, xb, (mean, inv, g, b), self.relu, &mut sums);
                sum_g += sums[0] as f64;
                sum_gx += sums[1] as f64;
            }
            let (sum_g, sum_gx) = (sum_g as f32, sum_gx as f32);
            dgamma[ch] = sum_gx;
            dbeta[ch] = sum_g;
            bn_grad_pass2(row, dx, (mean, inv, g * inv / n), (sum_g, sum_gx));
        }
        Ok((CpuStorage::F32(out), Shape::from(c * cols + 2 * c)))
    }
}

#[cfg(test)]
mod bn_tests {
    use super::*;
    use candle_core::{D, Device, Var};

    #[test]
    fn fused_batch_norm_relu_matches_candle_autograd() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&((Tensor::randn(0f32, 1.0, (3, 50), &dev)? * 1.5)? + 0.3)?)?;
        let g = Var::from_tensor(&Tensor::new(&[1.2f32, 0.7, -0.4], &dev)?)?;
        let b = Var::from_tensor(&Tensor::new(&[0.1f32, -0.2, 0.05], &dev)?)?;
        let up = Tensor::randn(0f32, 1.0, (3, 50), &dev)?;
        let eps = 1e-5;
        let (ours, (means, vars)) = batch_norm_train(&x, &g, &b, eps, true)?;
        let gr1 = (&ours * &up)?.sum_all()?.backward()?;
        // The same with candle's ops.
        let mean = x.mean_keepdim(D::Minus1)?;
        let xc = x.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
        let xhat = xc.broadcast_div(&(&var + eps)?.sqrt()?)?;
        let theirs = xhat
            .broadcast_mul(&g.unsqueeze(1)?)?
            .broadcast_add(&b.unsqueeze(1)?)?
            .relu()?;
        let gr2 = (&theirs * &up)?.sum_all()?.backward()?;
        let diff = |a: &Tensor, b: &Tensor| -> f32 {
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
        };
        assert!(diff(&ours, &theirs) < 1e-5);
        for v in [x.as_tensor(), g.as_tensor(), b.as_tensor()] {
            let d = diff(gr1.get(v).unwrap(), gr2.get(v).unwrap());
            assert!(d < 1e-4, "gradient differs by {d}");
        }
        assert!((means[0] - mean.flatten_all()?.to_vec1::<f32>()?[0]).abs() < 1e-5);
        assert!((vars[2] - var.flatten_all()?.to_vec1::<f32>()?[2]).abs() < 1e-5);
        Ok(())
    }
}
