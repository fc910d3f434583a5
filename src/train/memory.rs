//! How much memory a training step needs, estimated from the network's shape before anything
//! is allocated, and how much this machine allows: a net or batch too large for it is refused
//! with a message instead of aborting the process when an allocation fails.

use super::config::{NetConfig, OptimizerKind};
use crate::model::mini_xception::{BLOCK_CHANNELS, STEM_CHANNELS};
use crate::model::vgg::VggConfig;

/// Bytes of one f32.
const F32: f64 = 4.0;

/// Activations are held about this many times over at a step's peak: the forward pass's
/// tensors are kept for the backward pass, which makes a gradient of each and temporaries
/// beside them. With these factors the estimate is 1.1 to 1.4 times the peak resident memory
/// measured for both architectures at batches of 8 to 256 (see `docs/training.md`).
const ACTIVATION_COPIES: f64 = 3.0;

/// Beyond the weights themselves and the optimiser's state: their gradients, and the
/// temporaries of an update.
const PARAMETER_COPIES: f64 = 3.0;

/// Bytes one training step of `net` on `batch` images split over `threads` workers holds at its
/// peak, estimated from the shapes (see the constants above).
pub(super) fn step_bytes(
    net: &NetConfig,
    batch: usize,
    optimizer: OptimizerKind,
    threads: usize,
) -> u64 {
    let (params, per_image) = match net {
        NetConfig::Vgg(c) => vgg_sizes(c),
        NetConfig::MiniXception { classes, .. } => mini_xception_sizes(*classes),
    };
    let state = match optimizer {
        OptimizerKind::Sgd => 1.0,
        OptimizerKind::AdamW => 2.0,
    };
    // Each worker's gradients are whole until they are summed.
    let parameter_bytes = params * F32 * (1.0 + state + PARAMETER_COPIES + threads as f64 - 1.0);
    let activation_bytes = per_image * batch as f64 * F32 * ACTIVATION_COPIES;
    // In f64, so that absurd shapes cannot overflow; the cast saturates at u64::MAX.
    (parameter_bytes + activation_bytes) as u64
}

/// Bytes of the weights file of `net` (every variable, batch-norm statistics included, as f32).
pub(super) fn weights_file_bytes(net: &NetConfig) -> u64 {
    let params = match net {
        NetConfig::Vgg(c) => vgg_sizes(c).0,
        NetConfig::MiniXception { classes, .. } => mini_xception_sizes(*classes).0,
    };
    (params * F32) as u64
}

/// `(parameters, activation values per image in the forward pass)` of a VGG.
fn vgg_sizes(c: &VggConfig) -> (f64, f64) {
    let (mut params, mut acts) = (0f64, 0f64);
    let mut cin = 1f64;
    let mut side = c.input_size as f64;
    let input = side * side;
    for &w in &c.widths {
        let w = w as f64;
        let px = side * side;
        // Two conv + batch-norm layers (weights, gamma, beta, running mean and variance).
        params += 9.0 * cin * w + 9.0 * w * w + 8.0 * w;
        // Per layer the unfolded patches, the conv output and the batch norm's; then the pool
        // and the dropout's mask and output.
        let pooled = w * (side / 2.0).floor().powi(2);
        acts += px * (9.0 * cin + 2.0 * w) + px * (9.0 * w + 2.0 * w) + 3.0 * pooled;
        cin = w;
        side = (side / 2.0).floor();
    }
    let flat = cin * side * side;
    let (dense, classes) = (c.dense as f64, c.classes as f64);
    params += flat * dense + dense + dense * classes + classes;
    acts += input + 2.0 * flat + 4.0 * dense + 4.0 * classes;
    (params, acts)
}

/// `(parameters, activation values per image in the forward pass)` of mini-Xception.
fn mini_xception_sizes(classes: usize) -> (f64, f64) {
    let (mut params, mut acts) = (0f64, 0f64);
    let stem = STEM_CHANNELS as f64;
    let mut side = 64f64;
    let mut cin = 1f64;
    // The two "valid" stem convolutions.
    for _ in 0..2 {
        side -= 2.0;
        params += 9.0 * cin * stem + 4.0 * stem;
        acts += side * side * (9.0 * cin + 2.0 * stem);
        cin = stem;
    }
    for &cout in &BLOCK_CHANNELS {
        let cout = cout as f64;
        let px = side * side;
        let half = (side / 2.0).ceil();
        let half_px = half * half;
        // Residual: 1x1 stride-2 conv + batch norm; two separable convs + batch norm; pool, add.
        params += cin * cout + 4.0 * cout;
        params += 9.0 * cin + cin * cout + 4.0 * cout;
        params += 9.0 * cout + cout * cout + 4.0 * cout;
        acts += half_px * (cin + 2.0 * cout);
        acts += px * (cin + 2.0 * cout) + px * (3.0 * cout);
        acts += 2.0 * half_px * cout;
        cin = cout;
        side = half;
    }
    let classes = classes as f64;
    params += 9.0 * cin * classes + classes;
    acts += side * side * (9.0 * cin + 2.0 * classes) + 4.0 * classes;
    (params, acts + 64.0 * 64.0)
}

/// The most a step may need, and where that figure comes from.
pub(super) struct Limit {
    pub bytes: u64,
    pub source: String,
}

/// Share of the physical memory a step may take: the rest is the dataset's (decoded in
/// memory), the helpers' tables, and everything else the machine runs.
const SHARE_OF_MEMORY: f64 = 0.75;

/// Without /proc/meminfo (not Linux), this many bytes.
const FALLBACK_LIMIT: u64 = 16 << 30;

/// The limit on a step's memory: three quarters of the physical memory.
pub(super) fn limit() -> Limit {
    match std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| mem_total(&text))
    {
        Some(total) => Limit {
            bytes: (total as f64 * SHARE_OF_MEMORY) as u64,
            source: format!(
                "{:.0}% of this machine's {} of memory",
                SHARE_OF_MEMORY * 100.0,
                human(total)
            ),
        },
        None => Limit {
            bytes: FALLBACK_LIMIT,
            source: "a fixed cap, as /proc/meminfo cannot be read".into(),
        },
    }
}

/// `MemTotal` of a /proc/meminfo text, in bytes.
fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line
        .trim_start_matches("MemTotal:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

/// `bytes` for a person: `1.5 GiB`, `320 MiB`.
pub(super) fn human(bytes: u64) -> String {
    let b = bytes as f64;
    let (gib, mib) = (b / f64::from(1u32 << 30), b / f64::from(1u32 << 20));
    if gib >= 1024.0 {
        format!("{:.0} TiB", gib / 1024.0)
    } else if gib >= 1.0 {
        format!("{gib:.1} GiB")
    } else {
        format!("{mib:.0} MiB")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::{VarBuilder, VarMap};

    /// The parameter counts are the built nets' own.
    #[test]
    fn parameter_counts_match_the_built_nets() -> candle_core::Result<()> {
        let count = |net: &NetConfig| -> candle_core::Result<f64> {
            let map = VarMap::new();
            let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
            super::super::network::TrainNet::new(net, vb)?;
            let data = map
                .data()
                .lock()
                .map_err(|_| candle_core::Error::Msg("poisoned".into()))?;
            Ok(data.values().map(|v| v.elem_count() as f64).sum())
        };
        let vgg = VggConfig {
            dense: 96,
            ..VggConfig::half_width(5)
        };
        assert_eq!(vgg_sizes(&vgg).0, count(&NetConfig::Vgg(vgg.clone()))?);
        assert_eq!(
            mini_xception_sizes(7).0,
            count(&NetConfig::mini_xception(7))?
        );
        Ok(())
    }

    #[test]
    fn memory_grows_with_the_batch_and_saturates_on_absurd_shapes() {
        let net = NetConfig::Vgg(VggConfig::half_width(7));
        let one = step_bytes(&net, 1, OptimizerKind::AdamW, 1);
        let many = step_bytes(&net, 64, OptimizerKind::AdamW, 1);
        assert!(many > 30 * one && many < 64 * one, "{one} {many}");
        let absurd = NetConfig::Vgg(VggConfig {
            widths: vec![usize::MAX / 2; 6],
            dense: usize::MAX,
            ..VggConfig::half_width(7)
        });
        assert_eq!(
            step_bytes(&absurd, usize::MAX, OptimizerKind::AdamW, 1),
            u64::MAX
        );
    }

    #[test]
    fn meminfo_is_read_in_bytes() {
        let text = "MemTotal:       24600000 kB\nMemFree:         1000 kB\n";
        assert_eq!(mem_total(text), Some(24_600_000 * 1024));
        assert_eq!(mem_total("nothing here"), None);
        assert_eq!(human(3 << 30), "3.0 GiB");
        assert_eq!(human(5 << 20), "5 MiB");
    }
}
