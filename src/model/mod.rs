//! Emotion classifiers in candle: architectures, self-describing weights and inference.
//!
//! A weights file names its architecture, input size, input scaling and classes in its
//! safetensors `__metadata__` ([`ModelSpec`]); [`Classifier::load`] picks the network from that,
//! never from the file name, and checks every tensor before anything runs.

pub mod batch_norm;
pub mod ensemble;
pub mod mini_xception;
pub mod mini_xception_train;
pub mod onnx;
pub mod ops;
pub mod preprocess;
pub mod vgg;
pub mod weights;

mod classifier;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;

use crate::emotion::Emotion;
pub use classifier::{Classifier, FaceCrops, describe_source};
pub use mini_xception::MiniXception;
pub use onnx::OnnxOptions as LoadOptions;
pub use weights::WeightsFile;

/// The default model (see `weights/README.md`), compiled into the binary so that `emocam` runs
/// from any folder.
pub const BUILTIN_WEIGHTS: &[u8] = include_bytes!("../../weights/emocam-fer2013.safetensors");

/// Faces per network pass: larger batches run in chunks of this size, whose activations stay in
/// the CPU's L2 cache (a batch of 8 in one pass is slower per face than two at a time).
pub const FORWARD_CHUNK: usize = 2;

/// Label used in place of a path for [`BUILTIN_WEIGHTS`].
pub const BUILTIN_LABEL: &str = "<built-in emocam-fer2013>";

/// Metadata keys of a weights file.
pub mod meta {
    /// Architecture name, e.g. `mini_xception`.
    pub const ARCHITECTURE: &str = "architecture";
    /// Side of the square grayscale input in pixels, e.g. `64`.
    pub const INPUT_SIZE: &str = "input_size";
    /// How pixels are scaled: `minus_one_to_one` or `zero_to_one`.
    pub const INPUT_SCALING: &str = "input_scaling";
    /// JSON array of class names in output order.
    pub const CLASSES: &str = "classes";
    /// Human-readable model name shown in the app and written to CSV rows.
    pub const NAME: &str = "name";
    /// Batch-norm epsilon used in training (Keras 1e-3, PyTorch 1e-5).
    pub const BN_EPS: &str = "bn_eps";
    /// `true`: every face is classified together with its mirror image and the two averaged
    /// (test-time augmentation built into the model). Default `false`.
    pub const FLIP_AVERAGE: &str = "flip_average";
}

/// Network architectures this build knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// mini-Xception (Arriaga et al. 2017): 64x64 input, separable residual blocks.
    MiniXception,
    /// Our VGG-style CNN for 48x48 input ([`vgg::Vgg`]), trained with `emocam train`.
    Vgg,
    /// Several models whose probabilities are averaged, each on its own input size; made by
    /// `emocam ensemble` (see [`ensemble`]).
    Ensemble,
    /// An imported ONNX graph ([`onnx::OnnxNet`]); never named in a safetensors file, so not
    /// in [`Architecture::ALL`].
    Onnx,
}

impl Architecture {
    /// Every known architecture.
    pub const ALL: [Architecture; 3] = [
        Architecture::MiniXception,
        Architecture::Vgg,
        Architecture::Ensemble,
    ];

    /// The name written in weights metadata and accepted on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Architecture::MiniXception => "mini_xception",
            Architecture::Vgg => "vgg",
            Architecture::Ensemble => "ensemble",
            Architecture::Onnx => "onnx",
        }
    }

    /// Look up an architecture by its metadata name.
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == s)
    }

    fn default_input_size(self) -> u32 {
        match self {
            Architecture::MiniXception | Architecture::Ensemble | Architecture::Onnx => 64,
            Architecture::Vgg => 48,
        }
    }

    fn default_bn_eps(self) -> f64 {
        match self {
            Architecture::MiniXception | Architecture::Ensemble | Architecture::Onnx => 1e-3,
            Architecture::Vgg => 1e-5,
        }
    }
}

impl fmt::Display for Architecture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How 8-bit pixels become network input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputScaling {
    /// `x = (p / 255 - 0.5) * 2`, in [-1, 1] (the Keras mini-Xception).
    MinusOneToOne,
    /// `x = p / 255`, in [0, 1].
    ZeroToOne,
}

impl InputScaling {
    /// The metadata spelling.
    pub fn name(self) -> &'static str {
        match self {
            InputScaling::MinusOneToOne => "minus_one_to_one",
            InputScaling::ZeroToOne => "zero_to_one",
        }
    }

    /// Parse the metadata spelling.
    pub fn from_name(s: &str) -> Option<Self> {
        [InputScaling::MinusOneToOne, InputScaling::ZeroToOne]
            .into_iter()
            .find(|v| v.name() == s)
    }

    /// `(multiplier, offset)` such that `x = p * multiplier + offset`.
    pub fn affine(self) -> (f64, f64) {
        match self {
            InputScaling::MinusOneToOne => (2.0 / 255.0, -1.0),
            InputScaling::ZeroToOne => (1.0 / 255.0, 0.0),
        }
    }
}

/// Smallest and largest accepted input side, in pixels.
pub const INPUT_SIZE_RANGE: std::ops::RangeInclusive<u32> = 16..=256;

/// What a weights file says about its model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    pub architecture: Architecture,
    /// Side of the square grayscale input.
    pub input_size: u32,
    pub scaling: InputScaling,
    /// Output classes, in the network's output order.
    pub classes: Vec<Emotion>,
    /// Display name.
    pub name: String,
    pub bn_eps: f64,
    /// Average each face's probabilities with its mirror image's ([`meta::FLIP_AVERAGE`]).
    pub flip_average: bool,
    /// Every metadata entry of the file, including ones this build does not read.
    pub metadata: HashMap<String, String>,
}

/// The `architecture` of a file that holds no model but a teacher's probabilities for each
/// training image (made elsewhere, e.g. by teachers that never saw the image), which
/// `emocam train --teacher` reads instead of labelling the images itself.
pub const TEACHER_TABLE: &str = "teacher_table";

impl ModelSpec {
    /// Read a spec from safetensors metadata; the error says which key is wrong and what it expects.
    pub fn from_metadata(m: &HashMap<String, String>) -> Result<Self, String> {
        let known = Architecture::ALL.map(|a| a.name()).join(", ");
        let arch_name = m.get(meta::ARCHITECTURE).ok_or_else(|| {
            format!(
                "metadata has no \"{}\" entry (expected one of: {known})",
                meta::ARCHITECTURE
            )
        })?;
        if arch_name == TEACHER_TABLE {
            return Err(format!(
                "this is a teacher table (scores of training images, for `emocam train --teacher`), not a model (expected one of: {known})"
            ));
        }
        let architecture = Architecture::from_name(arch_name).ok_or_else(|| {
            format!("unknown architecture {arch_name:?} (this build knows: {known})")
        })?;
        let input_size = match m.get(meta::INPUT_SIZE) {
            None => architecture.default_input_size(),
            Some(s) => {
                let v: u32 = s.trim().parse().map_err(|_| {
                    format!(
                        "metadata {} is {s:?}, expected a whole number of pixels",
                        meta::INPUT_SIZE
                    )
                })?;
                if !INPUT_SIZE_RANGE.contains(&v) {
                    return Err(format!(
                        "metadata {} is {v}, expected {}..={} pixels",
                        meta::INPUT_SIZE,
                        INPUT_SIZE_RANGE.start(),
                        INPUT_SIZE_RANGE.end()
                    ));
                }
                v
            }
        };
        let scaling = match m.get(meta::INPUT_SCALING) {
            None => InputScaling::MinusOneToOne,
            Some(s) => InputScaling::from_name(s.trim()).ok_or_else(|| {
                format!(
                    "metadata {} is {s:?}, expected minus_one_to_one or zero_to_one",
                    meta::INPUT_SCALING
                )
            })?,
        };
        let classes = match m.get(meta::CLASSES) {
            None => Emotion::ALL.to_vec(),
            Some(s) => parse_classes(s)?,
        };
        let bn_eps = match m.get(meta::BN_EPS) {
            None => architecture.default_bn_eps(),
            Some(s) => s
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|v| *v > 0.0 && *v < 1.0)
                .ok_or_else(|| {
                    format!(
                        "metadata {} is {s:?}, expected a number in (0, 1)",
                        meta::BN_EPS
                    )
                })?,
        };
        let flip_average = match m.get(meta::FLIP_AVERAGE).map(|s| s.trim()) {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(format!(
                    "metadata {} is {other:?}, expected true or false",
                    meta::FLIP_AVERAGE
                ));
            }
        };
        let name = m
            .get(meta::NAME)
            .cloned()
            .unwrap_or_else(|| architecture.name().to_string());
        Ok(Self {
            architecture,
            input_size,
            scaling,
            classes,
            name,
            bn_eps,
            flip_average,
            metadata: m.clone(),
        })
    }

    /// The metadata to write for this spec (its extra entries are kept).
    pub fn to_metadata(&self) -> HashMap<String, String> {
        let mut m = self.metadata.clone();
        m.insert(meta::ARCHITECTURE.into(), self.architecture.name().into());
        m.insert(meta::INPUT_SIZE.into(), self.input_size.to_string());
        m.insert(meta::INPUT_SCALING.into(), self.scaling.name().into());
        let names: Vec<&str> = self.classes.iter().map(|c| c.name()).collect();
        m.insert(
            meta::CLASSES.into(),
            serde_json::to_string(&names).unwrap_or_default(),
        );
        m.insert(meta::NAME.into(), self.name.clone());
        m.insert(meta::BN_EPS.into(), self.bn_eps.to_string());
        m.insert(meta::FLIP_AVERAGE.into(), self.flip_average.to_string());
        m
    }
}

/// Read a `classes` metadata entry: a JSON list of 2 to 7 distinct emotion names.
pub(crate) fn parse_classes(s: &str) -> Result<Vec<Emotion>, String> {
    let names: Vec<String> = serde_json::from_str(s).map_err(|_| {
        format!(
            "metadata {} is {s:?}, expected a JSON array of class names",
            meta::CLASSES
        )
    })?;
    let mut classes = Vec::with_capacity(names.len());
    for n in &names {
        let e: Emotion = n
            .parse()
            .map_err(|e| format!("metadata {}: {e}", meta::CLASSES))?;
        if classes.contains(&e) {
            return Err(format!("metadata {} names {n:?} twice", meta::CLASSES));
        }
        classes.push(e);
    }
    if classes.len() < 2 {
        return Err(format!(
            "metadata {} has {} classes, expected 2 to 7",
            meta::CLASSES,
            classes.len()
        ));
    }
    Ok(classes)
}

/// The networks this build can run.
enum Net {
    MiniXception(MiniXception),
    Vgg(vgg::Vgg),
    /// Boxed: an ONNX model's plans and metadata outweigh the candle nets' few tensors.
    Onnx(Box<onnx::OnnxNet>),
}

impl Net {
    /// Build the single network `spec` describes from `vb`; the error is the reason only.
    fn build(vb: VarBuilder, spec: &ModelSpec) -> std::result::Result<Net, NetError> {
        Ok(match spec.architecture {
            Architecture::MiniXception => {
                Net::MiniXception(MiniXception::new(vb, spec.classes.len(), spec.bn_eps)?)
            }
            Architecture::Vgg => {
                let cfg = vgg::VggConfig::from_metadata(
                    &spec.metadata,
                    spec.classes.len(),
                    spec.input_size as usize,
                    spec.bn_eps,
                )
                .map_err(NetError::Spec)?;
                let mut net = vgg::Vgg::new(vb, &cfg)?;
                net.fold_batch_norms()?;
                Net::Vgg(net)
            }
            Architecture::Ensemble => {
                return Err(NetError::Spec(
                    "an ensemble cannot be a member of an ensemble".into(),
                ));
            }
            Architecture::Onnx => {
                return Err(NetError::Spec(
                    "an ONNX model cannot be an ensemble member (combine safetensors files)".into(),
                ));
            }
        })
    }
}

/// The networks a spec describes, each with its own spec: an ensemble's members (never nested),
/// or the one network of any other file.
fn build_members(
    vb: VarBuilder,
    spec: &ModelSpec,
) -> std::result::Result<Vec<Arc<Member>>, NetError> {
    if spec.architecture != Architecture::Ensemble {
        let net = Net::build(vb, spec)?;
        return Ok(vec![Arc::new(Member {
            net,
            spec: spec.clone(),
        })]);
    }
    let specs = ensemble::member_specs(spec).map_err(NetError::Spec)?;
    let mut members = Vec::with_capacity(specs.len());
    for (i, m) in specs.into_iter().enumerate() {
        if m.architecture == Architecture::Ensemble {
            return Err(NetError::Spec(format!(
                "ensemble member {i} is itself an ensemble"
            )));
        }
        let net = Net::build(vb.pp(ensemble::member_prefix(i)), &m)?;
        members.push(Arc::new(Member { net, spec: m }));
    }
    Ok(members)
}

/// One network of an ensemble, with its own spec.
struct Member {
    net: Net,
    /// Input size, scaling, classes and whether the member also sees the mirror image.
    spec: ModelSpec,
}

/// Why a network could not be built: a bad metadata entry, or a tensor problem.
enum NetError {
    Spec(String),
    Tensor(candle_core::Error),
}

impl From<candle_core::Error> for NetError {
    fn from(e: candle_core::Error) -> Self {
        NetError::Tensor(e)
    }
}

impl Module for Net {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Net::MiniXception(m) => m.forward(xs),
            Net::Vgg(m) => m.forward(xs),
            Net::Onnx(m) => candle_core::bail!(
                "{}: an ONNX model takes face crops, not a tensor",
                m.path().display()
            ),
        }
    }
}
