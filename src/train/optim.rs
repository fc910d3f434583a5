//! The optimisers (SGD with momentum, AdamW), their saved state, and the learning-rate
//! schedule.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var};

use super::config::OptimizerKind;

/// Learning rate at `step` of `total` steps: linear warm-up, then cosine decay to 1% of `lr`.
pub fn schedule(lr: f64, step: usize, warmup: usize, total: usize) -> f64 {
    if step < warmup {
        return lr * (step + 1) as f64 / warmup as f64;
    }
    let t = (step - warmup) as f64 / (total.saturating_sub(warmup)).max(1) as f64;
    lr * (0.01 + 0.99 * 0.5 * (1.0 + (std::f64::consts::PI * t.min(1.0)).cos()))
}

/// SGD with momentum and decoupled weight decay.
struct Sgd {
    velocity: Vec<Tensor>,
    momentum: f64,
}

/// AdamW (Loshchilov & Hutter), the same update as candle_nn's, whose moments can be saved
/// and restored so that `--resume` continues a run exactly (candle_nn keeps them private).
struct AdamW {
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    /// Steps taken, for the bias correction.
    t: u64,
}

const ADAM_BETA1: f64 = 0.9;
const ADAM_BETA2: f64 = 0.999;
const ADAM_EPS: f64 = 1e-8;

enum OptKind {
    Sgd(Sgd),
    AdamW(AdamW),
}

/// The optimiser of a training run: its trainable variables by name, and its state.
pub(super) struct Opt {
    vars: Vec<(String, Var)>,
    lr: f64,
    weight_decay: f64,
    kind: OptKind,
}

impl Opt {
    pub(super) fn new(
        vars: Vec<(String, Var)>,
        optimizer: OptimizerKind,
        lr: f64,
        momentum: f64,
        weight_decay: f64,
    ) -> candle_core::Result<Self> {
        let zeros = || {
            vars.iter()
                .map(|(_, v)| v.as_tensor().zeros_like())
                .collect::<candle_core::Result<Vec<_>>>()
        };
        let kind = match optimizer {
            OptimizerKind::Sgd => OptKind::Sgd(Sgd {
                velocity: zeros()?,
                momentum,
            }),
            OptimizerKind::AdamW => OptKind::AdamW(AdamW {
                m: zeros()?,
                v: zeros()?,
                t: 0,
            }),
        };
        Ok(Self {
            vars,
            lr,
            weight_decay,
            kind,
        })
    }

    /// The variables this optimiser moves, in its order.
    pub(super) fn vars(&self) -> impl Iterator<Item = &Var> {
        self.vars.iter().map(|(_, v)| v)
    }

    pub(super) fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    /// Move every variable that has a gradient in `grads` one step.
    pub(super) fn step(&mut self, grads: &GradStore) -> candle_core::Result<()> {
        let (lr, decay) = (self.lr, 1.0 - self.lr * self.weight_decay);
        match &mut self.kind {
            OptKind::Sgd(s) => {
                for ((_, v), vel) in self.vars.iter().zip(s.velocity.iter_mut()) {
                    if let Some(g) = grads.get(v) {
                        *vel = ((&*vel * s.momentum)? + g)?;
                        v.set(&((v.as_tensor() * decay)? - (&*vel * lr)?)?)?;
                    }
                }
            }
            OptKind::AdamW(a) => {
                a.t += 1;
                let scale_m = 1.0 / (1.0 - ADAM_BETA1.powi(a.t as i32));
                let scale_v = 1.0 / (1.0 - ADAM_BETA2.powi(a.t as i32));
                for (((_, v), m), sq) in self.vars.iter().zip(&mut a.m).zip(&mut a.v) {
                    if let Some(g) = grads.get(v) {
                        *m = ((&*m * ADAM_BETA1)? + (g * (1.0 - ADAM_BETA1))?)?;
                        *sq = ((&*sq * ADAM_BETA2)? + (g.sqr()? * (1.0 - ADAM_BETA2))?)?;
                        let step = ((&*m * scale_m)? / ((&*sq * scale_v)?.sqrt()? + ADAM_EPS)?)?;
                        v.set(&((v.as_tensor() * decay)? - (step * lr)?)?)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The state to save beside the last checkpoint, by tensor name.
    pub(super) fn state(&self) -> candle_core::Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        match &self.kind {
            OptKind::Sgd(s) => {
                for ((name, _), t) in self.vars.iter().zip(&s.velocity) {
                    out.insert(format!("sgd.velocity.{name}"), t.clone());
                }
            }
            OptKind::AdamW(a) => {
                for (((name, _), m), v) in self.vars.iter().zip(&a.m).zip(&a.v) {
                    out.insert(format!("adamw.m.{name}"), m.clone());
                    out.insert(format!("adamw.v.{name}"), v.clone());
                }
                out.insert(
                    "adamw.step".into(),
                    Tensor::new(&[a.t as f64], &Device::Cpu)?,
                );
            }
        }
        Ok(out)
    }

    /// Take the saved state back; `Err` (with the reason) if it is not this optimiser's, in
    /// which case nothing changes.
    pub(super) fn restore(
        &mut self,
        saved: &HashMap<String, Tensor>,
    ) -> std::result::Result<(), String> {
        let get = |key: String, like: &Tensor| -> std::result::Result<Tensor, String> {
            match saved.get(&key) {
                Some(t) if t.shape() == like.shape() => {
                    t.to_dtype(like.dtype()).map_err(|e| format!("{key}: {e}"))
                }
                Some(t) => Err(format!(
                    "{key} has shape {:?}, expected {:?}",
                    t.dims(),
                    like.dims()
                )),
                None => Err(format!("no {key} (another optimiser or net?)")),
            }
        };
        match &mut self.kind {
            OptKind::Sgd(s) => {
                let vel = self
                    .vars
                    .iter()
                    .zip(&s.velocity)
                    .map(|((n, _), t)| get(format!("sgd.velocity.{n}"), t))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                s.velocity = vel;
            }
            OptKind::AdamW(a) => {
                let t = saved
                    .get("adamw.step")
                    .and_then(|t| t.to_dtype(candle_core::DType::F64).ok())
                    .and_then(|t| t.to_vec1::<f64>().ok())
                    .and_then(|v| v.first().copied())
                    .ok_or("no adamw.step (another optimiser?)")?;
                let mut m = Vec::with_capacity(a.m.len());
                let mut v = Vec::with_capacity(a.v.len());
                for (((n, _), mt), vt) in self.vars.iter().zip(&a.m).zip(&a.v) {
                    m.push(get(format!("adamw.m.{n}"), mt)?);
                    v.push(get(format!("adamw.v.{n}"), vt)?);
                }
                (a.m, a.v, a.t) = (m, v, t as u64);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Result;

    #[test]
    fn the_schedule_warms_up_then_decays_to_a_hundredth() {
        let lr = 0.1;
        assert!((schedule(lr, 0, 4, 20) - 0.025).abs() < 1e-12);
        assert!((schedule(lr, 3, 4, 20) - 0.1).abs() < 1e-12);
        assert!(
            (schedule(lr, 4, 4, 20) - 0.1).abs() < 1e-12,
            "peak after warm-up"
        );
        // Halfway through the decay: the mean of the peak and the floor.
        let mid = schedule(lr, 12, 4, 20);
        assert!((mid - lr * (0.01 + 0.99 * 0.5)).abs() < 1e-12, "{mid}");
        assert!((schedule(lr, 20, 4, 20) - 0.001).abs() < 1e-12);
        assert!(
            (schedule(lr, 99, 4, 20) - 0.001).abs() < 1e-12,
            "stays at the floor"
        );
        let steps: Vec<f64> = (4..=20).map(|s| schedule(lr, s, 4, 20)).collect();
        assert!(steps.windows(2).all(|w| w[1] <= w[0]), "{steps:?}");
        // No warm-up, and no division by zero on a one-step run.
        assert!((schedule(lr, 0, 0, 1) - 0.1).abs() < 1e-12);
        assert!(schedule(lr, 0, 0, 0).is_finite());
    }

    /// A variable `[1, -2]` with loss `sum(w * [3, 1])`, so its gradient is `[3, 1]`.
    fn one_var() -> Result<(Var, Tensor)> {
        let dev = Device::Cpu;
        Ok((
            Var::new(&[1f32, -2.0], &dev)?,
            Tensor::new(&[3f32, 1.0], &dev)?,
        ))
    }

    fn step(opt: &mut Opt, v: &Var, k: &Tensor) -> Result<Vec<f32>> {
        let grads = (v.as_tensor() * k)?.sum_all()?.backward()?;
        opt.step(&grads)?;
        v.to_vec1::<f32>()
    }

    #[test]
    fn sgd_follows_momentum_and_decays_the_weights() -> Result<()> {
        let (v, k) = one_var()?;
        let mut opt = Opt::new(
            vec![("w".into(), v.clone())],
            OptimizerKind::Sgd,
            0.1,
            0.5,
            0.2,
        )?;
        // Velocity [3, 1]; w = w * (1 - 0.1 * 0.2) - 0.1 * velocity.
        let w1 = step(&mut opt, &v, &k)?;
        let expect1 = [1.0 * 0.98 - 0.3, -2.0 * 0.98 - 0.1];
        // Velocity [4.5, 1.5] after the second step.
        let w2 = step(&mut opt, &v, &k)?;
        let expect2 = [expect1[0] * 0.98 - 0.45, expect1[1] * 0.98 - 0.15];
        for (got, want) in w1.iter().zip(expect1).chain(w2.iter().zip(expect2)) {
            assert!((got - want as f32).abs() < 1e-6, "{w1:?} {w2:?}");
        }
        Ok(())
    }

    #[test]
    fn adamw_first_steps_move_each_weight_by_the_rate() -> Result<()> {
        let (v, k) = one_var()?;
        let mut opt = Opt::new(
            vec![("w".into(), v.clone())],
            OptimizerKind::AdamW,
            0.01,
            0.9,
            0.0,
        )?;
        // With bias correction the first steps are lr * g / |g| = lr whatever the gradient.
        let w1 = step(&mut opt, &v, &k)?;
        let w2 = step(&mut opt, &v, &k)?;
        assert!(
            (w1[0] - 0.99).abs() < 1e-6 && (w1[1] + 2.01).abs() < 1e-6,
            "{w1:?}"
        );
        assert!(
            (w2[0] - 0.98).abs() < 1e-5 && (w2[1] + 2.02).abs() < 1e-5,
            "{w2:?}"
        );
        Ok(())
    }

    /// A restored optimiser continues exactly where the saved one would have.
    #[test]
    fn saved_state_restores_the_same_next_step() -> Result<()> {
        for kind in [OptimizerKind::Sgd, OptimizerKind::AdamW] {
            let (v, k) = one_var()?;
            let mut opt = Opt::new(vec![("w".into(), v.clone())], kind, 0.01, 0.9, 0.01)?;
            step(&mut opt, &v, &k)?;
            step(&mut opt, &v, &k)?;
            let saved = opt.state()?;
            let at = v.as_tensor().copy()?;
            let next = step(&mut opt, &v, &k)?;

            let fresh = Var::from_tensor(&at)?;
            let mut again = Opt::new(vec![("w".into(), fresh.clone())], kind, 0.01, 0.9, 0.01)?;
            again.restore(&saved).map_err(candle_core::Error::Msg)?;
            assert_eq!(step(&mut again, &fresh, &k)?, next, "{kind:?}");
        }
        Ok(())
    }

    #[test]
    fn another_optimisers_state_is_refused_and_changes_nothing() -> Result<()> {
        let (v, _) = one_var()?;
        let sgd = Opt::new(
            vec![("w".into(), v.clone())],
            OptimizerKind::Sgd,
            0.1,
            0.9,
            0.0,
        )?;
        let mut adam = Opt::new(
            vec![("w".into(), v.clone())],
            OptimizerKind::AdamW,
            0.1,
            0.9,
            0.0,
        )?;
        let err = adam.restore(&sgd.state()?).unwrap_err();
        assert!(err.contains("adamw.step"), "{err}");
        let mut other = HashMap::new();
        other.insert(
            "sgd.velocity.w".to_string(),
            Tensor::zeros(3, candle_core::DType::F32, &Device::Cpu)?,
        );
        let mut sgd = sgd;
        let err = sgd.restore(&other).unwrap_err();
        assert!(err.contains("shape [3], expected [2]"), "{err}");
        Ok(())
    }
}
