//! Elementwise kernels: bias + activation and residual adds in place, and seeded dropout.

use candle_core::{CpuStorage, Layout, Result, Tensor, bail};

use super::f32_slice;
use super::simd::with_avx2;

/// `y += residual`, in `y`'s own storage (so `y` must be a fresh result nothing else shares).
pub(super) fn add_in_place(y: &Tensor, residual: &Tensor) -> Result<()> {
    y.inplace_op2(&residual.contiguous()?, &AddInPlace)
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
}
