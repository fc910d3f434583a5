//! Training-mode batch norm (+ ReLU): one fused pass forward, two backward, with one-pass
//! vectorised statistics.

use candle_core::{CpuStorage, Layout, Result, Shape, Tensor, bail};

use super::f32_slice;
use super::simd::{madd, with_avx2};

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
mod tests {
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
