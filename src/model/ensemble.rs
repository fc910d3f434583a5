//! Ensembles: several trained models in one weights file, whose probabilities are averaged.
//!
//! Averaging models that err differently is the cheapest accuracy there is (two FER2013 nets of
//! 65% give about 68% together) and costs one more forward pass per face. The file holds each
//! member's tensors under `member{i}.` and each member's metadata under the same prefix, plus
//! `ensemble_members` (the count); its own `input_size` is the largest member's, so the app
//! crops faces at that size and each member resizes them to its own.

use std::collections::HashMap;
use std::path::Path;

use super::{Architecture, Classifier, ModelSpec, meta, weights};
use crate::error::{Error, Result};
use crate::outfile::{self, OutputPolicy};

/// Metadata key: number of members.
pub const META_MEMBERS: &str = "ensemble_members";

/// Most members an ensemble may have.
pub const MAX_MEMBERS: usize = 8;

/// Prefix of member `i`'s tensors and metadata, without the trailing dot.
pub fn member_prefix(i: usize) -> String {
    format!("member{i}")
}

/// The members' specs, read from an ensemble spec's metadata; each must have the ensemble's
/// classes in the same order.
pub fn member_specs(spec: &ModelSpec) -> std::result::Result<Vec<ModelSpec>, String> {
    let m = &spec.metadata;
    let count: usize = m
        .get(META_MEMBERS)
        .and_then(|v| v.trim().parse().ok())
        .filter(|n| (1..=MAX_MEMBERS).contains(n))
        .ok_or_else(|| {
            format!(
                "metadata {META_MEMBERS} is {:?}, expected 1 to {MAX_MEMBERS} members",
                m.get(META_MEMBERS)
            )
        })?;
    (0..count)
        .map(|i| {
            let prefix = format!("{}.", member_prefix(i));
            let sub: HashMap<String, String> = m
                .iter()
                .filter_map(|(k, v)| k.strip_prefix(&prefix).map(|k| (k.to_string(), v.clone())))
                .collect();
            let member = ModelSpec::from_metadata(&sub).map_err(|e| format!("member {i}: {e}"))?;
            if member.classes != spec.classes {
                return Err(format!(
                    "member {i} has classes {:?}, the ensemble {:?}",
                    member.classes, spec.classes
                ));
            }
            Ok(member)
        })
        .collect()
}

/// Combine the weights files `members` into one ensemble file at `out`, named `name`. Every
/// member is loaded and checked first; they must share their classes (in the same order) and
/// not be ensembles. Members whose index (0-based) is in `flip` average each face with its
/// mirror image (see [`super::meta::FLIP_AVERAGE`]). An existing file at `out` is kept: this
/// is [`combine_with`] without overwrite.
pub fn combine(members: &[&Path], out: &Path, name: &str, flip: &[usize]) -> Result<ModelSpec> {
    combine_with(members, out, name, flip, false)
}

/// [`combine`], replacing an existing regular file at `out` when `overwrite` is set. Whatever
/// `overwrite` says, `out` may not be one of the members (however spelt) nor anything but a
/// regular file or a new path (see [`crate::outfile`]); that is checked before any member is
/// read.
pub fn combine_with(
    members: &[&Path],
    out: &Path,
    name: &str,
    flip: &[usize],
    overwrite: bool,
) -> Result<ModelSpec> {
    if !(2..=MAX_MEMBERS).contains(&members.len()) {
        return Err(Error::InvalidInput {
            what: "ensemble".into(),
            reason: format!(
                "{} weights files given, expected 2 to {MAX_MEMBERS}",
                members.len()
            ),
        });
    }
    if let Some(bad) = flip.iter().find(|&&i| i >= members.len()) {
        return Err(Error::InvalidInput {
            what: "ensemble".into(),
            reason: format!(
                "member {} to flip-average does not exist (there are {})",
                bad + 1,
                members.len()
            ),
        });
    }
    let policy = OutputPolicy::new()
        .with_overwrite(overwrite)
        .with_inputs(members.iter().copied());
    outfile::check_output(out, &policy)?;
    let mut tensors = HashMap::new();
    let mut metadata = HashMap::new();
    let mut classes = None;
    let mut input_size = 0;
    for (i, path) in members.iter().enumerate() {
        if super::onnx::is_onnx_file(path) {
            return Err(Error::weights(
                path,
                "is an ONNX model; an ensemble file can only hold safetensors members",
            ));
        }
        let file = weights::WeightsFile::read(path)?;
        // Building the net validates every tensor, so a bad member is reported by its own path.
        Classifier::from_weights(weights::WeightsFile {
            path: file.path.clone(),
            spec: file.spec.clone(),
            tensors: file.tensors.clone(),
        })?;
        if file.spec.architecture == Architecture::Ensemble {
            return Err(Error::weights(
                path,
                "is already an ensemble; list its members instead",
            ));
        }
        match &classes {
            None => classes = Some(file.spec.classes.clone()),
            Some(c) if *c != file.spec.classes => {
                return Err(Error::weights(
                    path,
                    format!(
                        "has classes {:?}, the first member {:?}",
                        file.spec.classes, c
                    ),
                ));
            }
            Some(_) => {}
        }
        input_size = input_size.max(file.spec.input_size);
        let prefix = member_prefix(i);
        let mut member = file.spec.clone();
        member.flip_average |= flip.contains(&i);
        for (k, v) in member.to_metadata() {
            metadata.insert(format!("{prefix}.{k}"), v);
        }
        for (k, t) in file.tensors {
            tensors.insert(format!("{prefix}.{k}"), t);
        }
    }
    metadata.insert(META_MEMBERS.into(), members.len().to_string());
    metadata.insert(
        meta::ARCHITECTURE.into(),
        Architecture::Ensemble.name().into(),
    );
    let spec = ModelSpec {
        architecture: Architecture::Ensemble,
        input_size,
        scaling: super::InputScaling::MinusOneToOne,
        classes: classes.unwrap_or_default(),
        name: name.to_string(),
        bn_eps: Architecture::Ensemble.default_bn_eps(),
        flip_average: false,
        metadata,
    };
    // Loaded from the very bytes to be written before anything is written, so a failed
    // combination never leaves a broken file (or spoils a good one).
    let bytes = weights::serialize(&tensors, spec.to_metadata(), out)?;
    Classifier::from_weights(weights::WeightsFile::parse(&bytes, out)?)?;
    outfile::write_bytes_atomically(out, &bytes, &policy)?;
    Ok(spec)
}
