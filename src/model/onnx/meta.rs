//! What an imported ONNX classifier is, beyond its graph: its name, class names and input
//! scaling, read from the file's `metadata_props`, else from a sidecar JSON beside it, with the
//! caller's overrides winning over both.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::emotion::Emotion;

/// Metadata key: display name.
pub const NAME: &str = "name";
/// Metadata key: JSON list of class names, in output order.
pub const CLASSES: &str = "classes";
/// Metadata key: how pixels are scaled ([`OnnxScaling`]).
pub const INPUT_SCALING: &str = "input_scaling";
/// Metadata key: per-channel means of `mean_std` scaling (JSON list, on the 0..1 scale).
pub const MEAN: &str = "mean";
/// Metadata key: per-channel standard deviations of `mean_std` scaling (JSON list).
pub const STD: &str = "std";

/// Largest sidecar JSON we agree to read.
pub const MAX_SIDECAR_BYTES: u64 = 1024 * 1024;

/// Most classes a model may have.
pub const MAX_CLASSES: usize = 64;

/// How 8-bit pixels `p` become an imported model's input.
#[derive(Debug, Clone, PartialEq)]
pub enum OnnxScaling {
    /// `p / 255 * 2 - 1`, in [-1, 1].
    MinusOneToOne,
    /// `p / 255`, in [0, 1].
    ZeroToOne,
    /// `p` itself, in [0, 255].
    ZeroTo255,
    /// `(p / 255 - mean[c]) / std[c]` per channel (one value each, or one per channel).
    MeanStd { mean: Vec<f32>, std: Vec<f32> },
}

impl OnnxScaling {
    /// The spellings accepted, for messages.
    pub const EXPECTED: &'static str = "minus_one_to_one, zero_to_one, zero_to_255, or mean_std with \"mean\" and \"std\" lists (on the command line: mean_std:M1,M2,M3:S1,S2,S3)";

    /// Parse the command-line form: a name, or `mean_std:MEANS:STDS` with comma lists.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Some(rest) = s.strip_prefix("mean_std:") {
            let (mean, std) = rest.split_once(':').ok_or_else(|| {
                format!("input scaling {s:?}: expected mean_std:MEANS:STDS, e.g. mean_std:0.5:0.25")
            })?;
            let list = |v: &str| {
                v.split(',')
                    .map(|x| x.trim().parse::<f32>())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| format!("input scaling {s:?}: {v:?} is not a list of numbers"))
            };
            return Self::mean_std(list(mean)?, list(std)?);
        }
        Self::from_entries(s, None, None)
    }

    /// From metadata entries: the `input_scaling` value and, for `mean_std`, the `mean` and `std`
    /// JSON lists.
    pub fn from_entries(
        scaling: &str,
        mean: Option<&str>,
        std: Option<&str>,
    ) -> Result<Self, String> {
        match scaling.trim() {
            "minus_one_to_one" => Ok(Self::MinusOneToOne),
            "zero_to_one" => Ok(Self::ZeroToOne),
            "zero_to_255" => Ok(Self::ZeroTo255),
            "mean_std" => {
                let list = |key: &str, v: Option<&str>| -> Result<Vec<f32>, String> {
                    let v = v.ok_or_else(|| {
                        format!("{INPUT_SCALING} is mean_std but there is no \"{key}\" list")
                    })?;
                    serde_json::from_str::<Vec<f32>>(v)
                        .map_err(|_| format!("\"{key}\" is {v:?}, expected a JSON list of numbers"))
                };
                Self::mean_std(list(MEAN, mean)?, list(STD, std)?)
            }
            other => Err(format!(
                "{INPUT_SCALING} is {other:?}, expected {}",
                Self::EXPECTED
            )),
        }
    }

    fn mean_std(mean: Vec<f32>, std: Vec<f32>) -> Result<Self, String> {
        let ok_len = |v: &[f32]| v.len() == 1 || v.len() == 3;
        if !ok_len(&mean) || !ok_len(&std) {
            return Err(format!(
                "mean_std has {} means and {} stds, expected 1 or 3 of each",
                mean.len(),
                std.len()
            ));
        }
        if mean.iter().any(|m| !m.is_finite()) {
            return Err(format!("mean_std means {mean:?} are not all finite"));
        }
        if std.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(format!("mean_std stds {std:?} are not all positive"));
        }
        Ok(Self::MeanStd { mean, std })
    }

    /// `(multiplier, offset)` per channel such that `x = p * multiplier + offset`.
    pub fn affine(&self, channels: usize) -> Result<Vec<(f32, f32)>, String> {
        let one = |m: f32, a: f32| vec![(m, a); channels];
        Ok(match self {
            Self::MinusOneToOne => one(2.0 / 255.0, -1.0),
            Self::ZeroToOne => one(1.0 / 255.0, 0.0),
            Self::ZeroTo255 => one(1.0, 0.0),
            Self::MeanStd { mean, std } => {
                for (what, v) in [("means", mean), ("stds", std)] {
                    if v.len() != 1 && v.len() != channels {
                        return Err(format!(
                            "mean_std has {} {what}, but the model takes {channels} channel(s)",
                            v.len()
                        ));
                    }
                }
                (0..channels)
                    .map(|c| {
                        let (m, s) = (mean[c.min(mean.len() - 1)], std[c.min(std.len() - 1)]);
                        (1.0 / (255.0 * s), -m / s)
                    })
                    .collect()
            }
        })
    }

    /// The metadata spelling (`mean_std` with its lists inline).
    pub fn describe(&self) -> String {
        match self {
            Self::MinusOneToOne => "minus_one_to_one".into(),
            Self::ZeroToOne => "zero_to_one".into(),
            Self::ZeroTo255 => "zero_to_255".into(),
            Self::MeanStd { mean, std } => format!("mean_std (mean {mean:?}, std {std:?})"),
        }
    }
}

/// What the caller says about a model, winning over the file and its sidecar (`--classes`,
/// `--input-scaling`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OnnxOptions {
    /// Class names in output order.
    pub classes: Option<Vec<String>>,
    pub input_scaling: Option<OnnxScaling>,
}

/// Where a model's description came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The caller's override.
    Override,
    /// The ONNX file's `metadata_props`.
    File,
    /// The sidecar JSON beside the file.
    Sidecar,
    /// Nothing said it: a default (the file name, FER2013 order).
    Assumed,
}

impl Origin {
    /// A short word for descriptions.
    pub fn word(self) -> &'static str {
        match self {
            Origin::Override => "override",
            Origin::File => "file metadata",
            Origin::Sidecar => "sidecar",
            Origin::Assumed => "assumed",
        }
    }
}

/// A model's name, classes and scaling, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct OnnxMeta {
    pub name: String,
    /// Class names in output order (lower case).
    pub classes: Vec<String>,
    pub classes_from: Origin,
    pub scaling: OnnxScaling,
    pub scaling_from: Origin,
}

/// The sidecar JSON of `model`: `model.onnx` -> `model.json`.
pub fn sidecar_path(model: &Path) -> PathBuf {
    model.with_extension("json")
}

/// Read the sidecar of `model` as string entries (lists as JSON text); `Ok(None)` when there is
/// none. The error is the whole message, naming the sidecar.
pub fn read_sidecar(model: &Path) -> Result<Option<HashMap<String, String>>, String> {
    let path = sidecar_path(model);
    let meta = match std::fs::metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("sidecar {}: {e}", path.display())),
    };
    if !meta.is_file() {
        return Err(format!("sidecar {} is not a file", path.display()));
    }
    if meta.len() > MAX_SIDECAR_BYTES {
        return Err(format!(
            "sidecar {} is {} bytes, more than the {MAX_SIDECAR_BYTES} a sidecar may have",
            path.display(),
            meta.len()
        ));
    }
    let text =
        std::fs::read_to_string(&path).map_err(|e| format!("sidecar {}: {e}", path.display()))?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| format!("sidecar {} is not valid JSON: {e}", path.display()))?;
    let serde_json::Value::Object(map) = value else {
        return Err(format!(
            "sidecar {} is not a JSON object (expected keys {NAME}, {CLASSES}, {INPUT_SCALING})",
            path.display()
        ));
    };
    Ok(Some(
        map.into_iter()
            .map(|(k, v)| {
                let v = match v {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                };
                (k, v)
            })
            .collect(),
    ))
}

/// Check and normalise class names: a non-empty list of distinct, non-empty names (trimmed,
/// lower case).
pub fn check_classes(names: &[String]) -> Result<Vec<String>, String> {
    if names.is_empty() || names.len() > MAX_CLASSES {
        return Err(format!(
            "{} class names, expected 1 to {MAX_CLASSES}",
            names.len()
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(names.len());
    for n in names {
        let t = n.trim().to_lowercase();
        if t.is_empty() {
            return Err("a class name is empty".into());
        }
        if out.contains(&t) {
            return Err(format!("class {t:?} is named twice"));
        }
        out.push(t);
    }
    Ok(out)
}

/// Parse a `classes` entry: a JSON list of distinct non-empty names.
pub fn parse_classes(s: &str) -> Result<Vec<String>, String> {
    let names: Vec<String> = serde_json::from_str(s)
        .map_err(|_| format!("{CLASSES} is {s:?}, expected a JSON list of class names"))?;
    check_classes(&names).map_err(|e| format!("{CLASSES}: {e}"))
}

/// Resolve the description of `model` (a file with `outputs` scores per face) from its
/// metadata, its sidecar and the overrides, key by key in that order of precedence:
/// override, then the file, then the sidecar. The error is the reason only.
pub fn resolve(
    model: &Path,
    file: &HashMap<String, String>,
    sidecar: Option<&HashMap<String, String>>,
    opts: &OnnxOptions,
    outputs: usize,
) -> Result<OnnxMeta, String> {
    let empty = HashMap::new();
    let side = sidecar.unwrap_or(&empty);
    let side_path = sidecar_path(model);
    // A key's value and where it was found; the file wins over the sidecar.
    let lookup = |key: &str| -> Option<(&str, Origin)> {
        file.get(key)
            .map(|v| (v.as_str(), Origin::File))
            .or_else(|| side.get(key).map(|v| (v.as_str(), Origin::Sidecar)))
    };
    let in_where = |o: Origin| match o {
        Origin::Sidecar => format!("sidecar {}", side_path.display()),
        _ => "metadata_props".to_string(),
    };

    let name = lookup(NAME)
        .map(|(v, _)| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| {
            model
                .file_stem()
                .map_or_else(|| "onnx model".into(), |s| s.to_string_lossy().into_owned())
        });

    let (classes, classes_from) = match (&opts.classes, lookup(CLASSES)) {
        (Some(c), _) => (
            check_classes(c).map_err(|e| format!("--classes: {e}"))?,
            Origin::Override,
        ),
        (None, Some((v, o))) => (
            parse_classes(v).map_err(|e| format!("{} {e}", in_where(o)))?,
            o,
        ),
        (None, None) if outputs == Emotion::COUNT => (
            Emotion::ALL.iter().map(|e| e.name().to_string()).collect(),
            Origin::Assumed,
        ),
        (None, None) => {
            return Err(format!(
                "the model gives {outputs} scores per face and names no classes: add a \
                 \"{CLASSES}\" list to its metadata_props or to the sidecar {} (or pass --classes); \
                 only a 7-output model is taken to be in FER2013 order",
                side_path.display()
            ));
        }
    };
    if classes.len() != outputs {
        let source = match classes_from {
            Origin::Sidecar => format!("in the sidecar {}", side_path.display()),
            other => format!("from the {}", other.word()),
        };
        return Err(format!(
            "the model gives {outputs} scores per face, but its classes ({source}) name {}",
            classes.len()
        ));
    }

    let (scaling, scaling_from) = match (&opts.input_scaling, lookup(INPUT_SCALING)) {
        (Some(s), _) => (s.clone(), Origin::Override),
        (None, Some((v, o))) => {
            // mean and std come from the same place as the scaling they belong to.
            let src = if o == Origin::File { file } else { side };
            let s = OnnxScaling::from_entries(
                v,
                src.get(MEAN).map(String::as_str),
                src.get(STD).map(String::as_str),
            )
            .map_err(|e| format!("{} {e}", in_where(o)))?;
            (s, o)
        }
        (None, None) => {
            return Err(format!(
                "no \"{INPUT_SCALING}\" key in the file's metadata_props, nor a sidecar saying it: \
                 write {} with e.g. {{\"{INPUT_SCALING}\": \"zero_to_one\"}} (one of {}), or pass \
                 --input-scaling; a guessed scaling would give wrong scores silently",
                side_path.display(),
                OnnxScaling::EXPECTED
            ));
        }
    };

    Ok(OnnxMeta {
        name,
        classes,
        classes_from,
        scaling,
        scaling_from,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaling_spellings() {
        assert_eq!(
            OnnxScaling::parse("zero_to_255").unwrap(),
            OnnxScaling::ZeroTo255
        );
        let ms = OnnxScaling::parse("mean_std:0.5,0.4,0.3:0.25,0.5,1").unwrap();
        let a = ms.affine(3).unwrap();
        assert!((a[0].0 - 1.0 / (255.0 * 0.25)).abs() < 1e-9 && (a[0].1 + 2.0).abs() < 1e-6);
        assert!(ms.affine(1).is_err());
        assert!(OnnxScaling::parse("mean_std:0.5:0").is_err());
        assert!(OnnxScaling::parse("zero_to_two").is_err());
        assert!(OnnxScaling::from_entries("mean_std", Some("[0.5]"), None).is_err());
    }

    #[test]
    fn classes_must_be_distinct_names() {
        assert!(parse_classes("[\"a\", \"A \"]").is_err());
        assert!(parse_classes("[\"a\", \"\"]").is_err());
        assert!(parse_classes("\"a,b\"").is_err());
        assert_eq!(
            parse_classes("[\"Happy\", \"sad\"]").unwrap(),
            ["happy", "sad"]
        );
    }
}
