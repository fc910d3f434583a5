//! Seeded weight initialisation: `--seed` decides a new net's starting weights, so that a
//! training run can be repeated exactly (candle's own CPU initialisers draw from an unseeded
//! generator, and `Device::set_seed` is not supported on the CPU).

use candle_core::{DType, Device, Result, Shape, Tensor, Var};
use candle_nn::init::{Init, NormalOrUniform};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{VarBuilder, VarMap};

use crate::rng::{FNV_OFFSET, Rng, fnv1a};

/// A [`VarBuilder`] that stores new variables in `map`, as [`VarBuilder::from_varmap`] does,
/// but draws each one's initial values from a generator seeded by `seed` and the variable's
/// name, following the layer's initialisation hint (constant, uniform, normal or Kaiming). A
/// variable's values do not depend on the order in which the model creates them.
pub fn seeded_var_builder(map: &VarMap, seed: u64, dev: &Device) -> VarBuilder<'static> {
    let backend = Seeded {
        map: map.clone(),
        seed,
    };
    VarBuilder::from_backend(Box::new(backend), DType::F32, dev.clone())
}

struct Seeded {
    /// Shares its variables with the caller's map (a `VarMap` clone is a handle).
    map: VarMap,
    seed: u64,
}

impl SimpleBackend for Seeded {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        // Held across look-up, draw and insertion, as `VarMap::get` does.
        let mut vars = self
            .map
            .data()
            .lock()
            .map_err(|_| candle_core::Error::Msg("poisoned variable map".into()))?;
        if let Some(v) = vars.get(name) {
            if v.shape() != &s {
                candle_core::bail!("shape mismatch on {name}: {s:?} <> {:?}", v.shape());
            }
            return Ok(v.as_tensor().clone());
        }
        let mut rng = Rng::new(self.seed ^ fnv1a(FNV_OFFSET, name.as_bytes()));
        let values = sample(&s, h, &mut rng);
        let var = Var::from_tensor(&Tensor::from_vec(values, s, dev)?.to_dtype(dtype)?)?;
        let tensor = var.as_tensor().clone();
        vars.insert(name.to_string(), var);
        Ok(tensor)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> Result<Tensor> {
        candle_core::bail!("new variable {name} needs a shape")
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.map.data().lock().is_ok_and(|d| d.contains_key(name))
    }
}

/// Initial values for a variable of shape `s`, as candle's `Init::var` would draw them.
fn sample(s: &Shape, h: Init, rng: &mut Rng) -> Vec<f32> {
    let n = s.elem_count();
    let uniform = |rng: &mut Rng, lo: f64, up: f64| -> Vec<f32> {
        (0..n)
            .map(|_| (lo + (up - lo) * rng.unit_f64()) as f32)
            .collect()
    };
    let normal = |rng: &mut Rng, mean: f64, std: f64| -> Vec<f32> {
        (0..n).map(|_| (mean + std * rng.normal()) as f32).collect()
    };
    match h {
        Init::Const(v) => vec![v as f32; n],
        Init::Uniform { lo, up } => uniform(rng, lo, up),
        Init::Randn { mean, stdev } => normal(rng, mean, stdev),
        Init::Kaiming {
            dist,
            fan,
            non_linearity,
        } => {
            let std = non_linearity.gain() / (fan.for_shape(s) as f64).sqrt();
            match dist {
                NormalOrUniform::Uniform => {
                    let bound = 3f64.sqrt() * std;
                    uniform(rng, -bound, bound)
                }
                NormalOrUniform::Normal => normal(rng, 0.0, std),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weights(seed: u64) -> (VarMap, Vec<f32>, Vec<f32>) {
        let map = VarMap::new();
        let vb = seeded_var_builder(&map, seed, &Device::Cpu);
        let w = vb
            .get_with_hints(
                (64, 32, 3, 3),
                "conv.weight",
                candle_nn::init::DEFAULT_KAIMING_NORMAL,
            )
            .unwrap();
        let b = vb
            .get_with_hints(64, "fc.bias", Init::Uniform { lo: -0.5, up: 0.5 })
            .unwrap();
        let w = w.flatten_all().unwrap().to_vec1().unwrap();
        let b = b.to_vec1().unwrap();
        (map, w, b)
    }

    #[test]
    fn the_seed_decides_the_weights_and_their_distribution_follows_the_hint() {
        let (map, w1, b1) = weights(7);
        let (_, w2, b2) = weights(7);
        let (_, w3, _) = weights(8);
        assert_eq!((&w1, &b1), (&w2, &b2));
        assert_ne!(w1, w3);
        // Stored in the caller's map, where the trainer finds its variables.
        assert!(map.data().lock().unwrap().contains_key("conv.weight"));
        // Kaiming normal for fan-in 32*9 and ReLU: standard deviation sqrt(2/288).
        let n = w1.len() as f64;
        let mean = w1.iter().map(|v| *v as f64).sum::<f64>() / n;
        let std = (w1.iter().map(|v| (*v as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
        let want = (2.0f64 / 288.0).sqrt();
        assert!(mean.abs() < 0.1 * want, "mean {mean}");
        assert!((std / want - 1.0).abs() < 0.03, "std {std}, want {want}");
        // Normal, not uniform of the same spread: a uniform draw never passes sqrt(3) std.
        let widest = w1.iter().fold(0f64, |m, v| m.max((*v as f64).abs()));
        assert!(widest > 3f64.sqrt() * want * 1.2, "widest {widest}");
        assert!(b1.iter().all(|v| (-0.5..0.5).contains(v)));
        let spread = b1.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(spread > 0.4, "uniform draws fill the range: {spread}");
        // Batch-norm style constants stay constants.
        let vb = seeded_var_builder(&map, 7, &Device::Cpu);
        let ones = vb.get_with_hints(5, "bn.weight", Init::Const(1.0)).unwrap();
        assert_eq!(ones.to_vec1::<f32>().unwrap(), vec![1.0; 5]);
        // An existing variable is returned, not drawn again; a wrong shape is refused.
        let again = vb
            .get_with_hints((64, 32, 3, 3), "conv.weight", Init::Const(0.0))
            .unwrap();
        assert_eq!(again.flatten_all().unwrap().to_vec1::<f32>().unwrap(), w1);
        assert!(
            vb.get_with_hints(3, "conv.weight", Init::Const(0.0))
                .is_err()
        );
    }
}
