//! The network being trained ([`TrainNet`], either architecture behind one interface), its
//! trainable variables, and the input batches it is fed.

use candle_core::{Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};

use super::config::NetConfig;
use crate::error::{Error, Result};
use crate::model::mini_xception_train::TrainableMiniXception;
use crate::model::vgg::Vgg;
use crate::model::{InputScaling, preprocess};

/// The input scaling every trained model uses (and its metadata records).
pub(super) const TRAIN_SCALING: InputScaling = InputScaling::MinusOneToOne;

/// A network being trained.
pub(super) enum TrainNet {
    Vgg(Vgg),
    MiniXception(TrainableMiniXception),
}

impl TrainNet {
    /// Build the net `cfg` describes, its variables made by `vb`.
    pub(super) fn new(cfg: &NetConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(match cfg {
            NetConfig::Vgg(c) => TrainNet::Vgg(Vgg::new(vb, c)?),
            NetConfig::MiniXception { classes, bn_eps } => {
                TrainNet::MiniXception(TrainableMiniXception::new(vb, *classes, *bn_eps)?)
            }
        })
    }

    /// Logits in inference mode (running statistics, no dropout), for validation.
    pub(super) fn forward_eval(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            TrainNet::Vgg(m) => candle_core::Module::forward(m, x),
            TrainNet::MiniXception(m) => m.forward_t(x, false),
        }
    }

    /// Logits in training mode; `dropout_seed` decides the dropout masks.
    pub(super) fn forward_train(
        &self,
        x: &Tensor,
        dropout_seed: u64,
    ) -> candle_core::Result<Tensor> {
        match self {
            TrainNet::Vgg(m) => m.forward_train(x, dropout_seed),
            TrainNet::MiniXception(m) => m.forward_t(x, true),
        }
    }

    /// Fold the batch statistics gathered by the last training passes into the running ones.
    pub(super) fn commit_batch_norm_stats(&self) -> candle_core::Result<()> {
        let bns = match self {
            TrainNet::Vgg(m) => m.batch_norms(),
            TrainNet::MiniXception(m) => m.batch_norms(),
        };
        bns.into_iter().try_for_each(|bn| bn.commit_stats())
    }

    /// Keep the first `n` blocks fixed (their batch-norm statistics included).
    pub(super) fn freeze(&mut self, n: usize) {
        match self {
            TrainNet::Vgg(m) => m.freeze(n),
            TrainNet::MiniXception(m) => m.freeze(n),
        }
    }

    /// Tensor-name prefixes of the first `n` blocks.
    pub(super) fn frozen_prefixes(&self, n: usize) -> Vec<String> {
        match self {
            TrainNet::Vgg(_) => (1..=n).map(|i| format!("block{i}.")).collect(),
            TrainNet::MiniXception(_) => TrainableMiniXception::PARTS[..n]
                .iter()
                .map(|p| p.to_string())
                .collect(),
        }
    }
}

/// The variables of `varmap` the optimiser moves, by name in name order: all but batch-norm
/// running statistics and those under a `frozen` prefix.
pub(super) fn trainable_vars(varmap: &VarMap, frozen: &[String]) -> Result<Vec<(String, Var)>> {
    let data = varmap.data().lock().map_err(|_| Error::InvalidInput {
        what: "model".into(),
        reason: "poisoned variable map".into(),
    })?;
    let mut named: Vec<(String, Var)> = data
        .iter()
        .filter(|(n, _)| !n.contains("running_") && !frozen.iter().any(|f| n.starts_with(f)))
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(named)
}

/// Stack faces into `(N, 1, S, S)` with the training scaling.
pub(super) fn stack(
    images: &[&image::GrayImage],
    size: u32,
    dev: &Device,
) -> candle_core::Result<Tensor> {
    preprocess::stack(
        images.iter().copied(),
        images.len(),
        size,
        TRAIN_SCALING,
        dev,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::vgg::VggConfig;
    use candle_core::DType;

    #[test]
    fn frozen_blocks_and_running_statistics_are_not_trainable() -> Result<()> {
        let map = VarMap::new();
        let cfg = NetConfig::Vgg(VggConfig {
            widths: vec![4, 4],
            dense: 8,
            input_size: 16,
            ..VggConfig::half_width(3)
        });
        let net = TrainNet::new(
            &cfg,
            VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu),
        )?;
        let all = trainable_vars(&map, &[])?;
        let names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
        assert!(names.windows(2).all(|w| w[0] < w[1]), "sorted: {names:?}");
        assert!(names.contains(&"block1.conv1.weight") && names.contains(&"head.fc2.bias"));
        assert!(!names.iter().any(|n| n.contains("running_")));
        let prefixes = net.frozen_prefixes(1);
        assert_eq!(prefixes, vec!["block1.".to_string()]);
        let thawed = trainable_vars(&map, &prefixes)?;
        assert!(thawed.iter().all(|(n, _)| !n.starts_with("block1.")));
        // Two convs, and two batch norms' scale and shift.
        assert_eq!(all.len() - thawed.len(), 6);
        Ok(())
    }
}
