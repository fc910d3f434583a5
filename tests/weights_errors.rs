//! Every kind of bad weights file gives a clear error that names the file, and never panics.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use emocam::model::Classifier;

/// One tensor as written by hand: name, dtype, shape, little-endian bytes.
type RawTensor = (String, &'static str, Vec<usize>, Vec<u8>);

/// Write a safetensors file by hand: `(name, dtype, shape, bytes)` tensors and a metadata map.
fn write_raw(path: &Path, meta: &HashMap<String, String>, tensors: &[RawTensor]) {
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), serde_json::to_value(meta).unwrap());
    let mut data = Vec::new();
    for (name, dtype, shape, bytes) in tensors {
        let start = data.len();
        data.extend_from_slice(bytes);
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    let mut h = serde_json::to_vec(&header).unwrap();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h);
    out.extend(data);
    std::fs::write(path, out).unwrap();
}

/// The shipped mini-Xception's tensors and metadata, to be altered by each case.
fn shipped() -> (HashMap<String, String>, Vec<RawTensor>) {
    let bytes = std::fs::read(common::mini_xception_weights()).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, m) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let tensors = st
        .iter()
        .map(|(n, v)| (n.to_string(), "F32", v.shape().to_vec(), v.data().to_vec()))
        .collect();
    (m.metadata().clone().unwrap(), tensors)
}

fn error_for(path: &Path) -> String {
    match Classifier::load(path) {
        Ok(_) => panic!("{} loaded but should not", path.display()),
        Err(e) => e.to_string(),
    }
}

fn assert_error(path: &Path, needles: &[&str]) {
    let e = error_for(path);
    println!("{e}");
    assert!(
        e.contains(&path.display().to_string()),
        "error does not name the file: {e}"
    );
    for n in needles {
        assert!(e.contains(n), "error lacks {n:?}: {e}");
    }
}

fn tmp(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}

#[test]
fn missing_file() {
    let dir = tempfile::tempdir().unwrap();
    assert_error(
        &tmp(&dir, "nope.safetensors"),
        &["cannot open weights file"],
    );
}

#[test]
fn not_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    let p = tmp(&dir, "photo.safetensors");
    std::fs::copy(common::fixture("astronaut.png"), &p).unwrap();
    assert_error(&p, &["not a safetensors file"]);
    let p = tmp(&dir, "short.safetensors");
    std::fs::write(&p, b"abc").unwrap();
    assert_error(&p, &["not a safetensors file", "3 bytes"]);
    let p = tmp(&dir, "text.safetensors");
    std::fs::write(&p, b"\x10\x00\x00\x00\x00\x00\x00\x00this is not json").unwrap();
    assert_error(&p, &["not valid JSON"]);
}

#[test]
fn truncated_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = tmp(&dir, "cut.safetensors");
    let bytes = std::fs::read(common::mini_xception_weights()).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    assert_error(&p, &["truncated"]);
}

#[test]
fn unknown_or_missing_architecture() {
    let dir = tempfile::tempdir().unwrap();
    let (mut meta, tensors) = shipped();
    meta.insert("architecture".into(), "resnet50".into());
    let p = tmp(&dir, "arch.safetensors");
    write_raw(&p, &meta, &tensors);
    assert_error(&p, &["unknown architecture \"resnet50\"", "mini_xception"]);
    meta.remove("architecture");
    write_raw(&p, &meta, &tensors);
    assert_error(&p, &["no \"architecture\" entry"]);
}

#[test]
fn missing_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let (meta, mut tensors) = shipped();
    tensors.retain(|t| t.0 != "block3.sep1.pointwise.weight");
    let p = tmp(&dir, "missing.safetensors");
    write_raw(&p, &meta, &tensors);
    assert_error(
        &p,
        &[
            "tensor block3.sep1.pointwise.weight is missing",
            "[64, 32, 1, 1]",
        ],
    );
}

#[test]
fn misshapen_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let (meta, mut tensors) = shipped();
    let t = tensors
        .iter_mut()
        .find(|t| t.0 == "block2.sep1.depthwise.weight")
        .unwrap();
    t.2 = vec![32, 1, 3, 3];
    t.3 = vec![0u8; 32 * 9 * 4];
    let p = tmp(&dir, "shape.safetensors");
    write_raw(&p, &meta, &tensors);
    assert_error(
        &p,
        &["tensor block2.sep1.depthwise.weight has shape [32, 1, 3, 3], expected [16, 1, 3, 3]"],
    );
}

#[test]
fn wrong_dtype() {
    let dir = tempfile::tempdir().unwrap();
    let (meta, mut tensors) = shipped();
    let t = tensors
        .iter_mut()
        .find(|t| t.0 == "head.conv.bias")
        .unwrap();
    t.1 = "I32";
    let p = tmp(&dir, "dtype.safetensors");
    write_raw(&p, &meta, &tensors);
    assert_error(&p, &["tensor head.conv.bias has dtype I32", "expected F32"]);
}

#[test]
fn absurd_sizes_and_bad_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let (meta, tensors) = shipped();
    let p = tmp(&dir, "meta.safetensors");
    for (key, value, needle) in [
        ("input_size", "100000", "expected 16..=256"),
        ("input_size", "big", "whole number"),
        (
            "input_scaling",
            "imagenet",
            "minus_one_to_one or zero_to_one",
        ),
        ("classes", "angry", "JSON array"),
        ("classes", "[\"angry\",\"joy\"]", "unknown emotion \"joy\""),
        ("classes", "[\"angry\",\"angry\"]", "twice"),
        ("bn_eps", "-1", "bn_eps"),
        ("flip_average", "yes", "expected true or false"),
    ] {
        let mut m = meta.clone();
        m.insert(key.into(), value.into());
        write_raw(&p, &m, &tensors);
        assert_error(&p, &[needle]);
    }
    // Fewer classes than the head has outputs: the head's shape is wrong.
    let mut m = meta.clone();
    m.insert("classes".into(), "[\"happy\",\"sad\",\"neutral\"]".into());
    write_raw(&p, &m, &tensors);
    assert_error(
        &p,
        &["tensor head.conv.weight has shape [7, 128, 3, 3], expected [3, 128, 3, 3]"],
    );
    // An input too small for the network's four poolings and 3x3 head still errors cleanly.
    let mut m = meta.clone();
    m.insert("input_size".into(), "16".into());
    write_raw(&p, &m, &tensors);
    let _ = Classifier::load(&p);
}

#[test]
fn a_directory_is_not_a_weights_file() {
    let dir = tempfile::tempdir().unwrap();
    assert_error(dir.path(), &["is not a file"]);
}
