//! Every kind of bad weights file gives a clear error that names the file (and the tensor at
//! fault), and never panics; a network that overflows on a face gives an error, not NaN scores.

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
        &["cannot open a weights file"],
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
fn a_directory_fifo_or_device_is_not_a_weights_file() {
    let dir = tempfile::tempdir().unwrap();
    assert_error(dir.path(), &["is a directory, expected a regular file"]);
    let link = tmp(&dir, "zero.safetensors");
    std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
    assert_error(&link, &["is a character device, expected a regular file"]);
    let fifo = tmp(&dir, "pipe.safetensors");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    // Refused at once, not after waiting for a writer that never comes.
    assert_error(&fifo, &["is a FIFO (named pipe), expected a regular file"]);
}

/// One tensor as f32 values: name, shape, values.
type F32Tensor = (String, Vec<usize>, Vec<f32>);

/// One header entry as written by hand: name, dtype, shape, data offsets.
type HeaderEntry<'a> = (&'a str, &'a str, Vec<u64>, [u64; 2]);

/// The shipped mini-Xception's tensors as f32 values, to be altered by each case.
fn shipped_f32() -> (HashMap<String, String>, Vec<F32Tensor>) {
    let (meta, raw) = shipped();
    let tensors = raw
        .into_iter()
        .map(|(name, _, shape, bytes)| {
            let values = bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            (name, shape, values)
        })
        .collect();
    (meta, tensors)
}

/// Write f32 tensors and metadata with the safetensors crate.
fn write_f32(path: &Path, meta: &HashMap<String, String>, tensors: &[F32Tensor]) {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, shape, v)| {
            (
                n.clone(),
                shape.clone(),
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = bytes
        .iter()
        .map(|(n, shape, b)| {
            let view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), b)
                    .unwrap();
            (n.clone(), view)
        })
        .collect();
    let out = safetensors::serialize(views, Some(meta.clone())).unwrap();
    std::fs::write(path, out).unwrap();
}

/// The shipped model with one value of one tensor changed.
fn with_value(path: &Path, tensor: &str, index: usize, value: f32) {
    let (meta, mut tensors) = shipped_f32();
    let t = tensors.iter_mut().find(|t| t.0 == tensor).unwrap();
    t.2[index] = value;
    write_f32(path, &meta, &tensors);
}

#[test]
fn non_finite_weights_and_negative_variances_are_refused_naming_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let p = tmp(&dir, "values.safetensors");
    for (tensor, index, value, needles) in [
        (
            "block2.sep1.pointwise.weight",
            5,
            f32::NAN,
            &["NaN at index 5", "finite"][..],
        ),
        ("head.conv.bias", 0, f32::INFINITY, &["inf at index 0"][..]),
        (
            "stem.conv1.weight",
            3,
            f32::NEG_INFINITY,
            &["-inf at index 3"][..],
        ),
        (
            "stem.bn1.running_var",
            2,
            -0.5,
            &["-0.5 at index 2", "negative"][..],
        ),
        ("block4.residual.bn.running_var", 0, f32::NAN, &["NaN"][..]),
    ] {
        with_value(&p, tensor, index, value);
        let mut all = vec![format!("tensor {tensor} holds")];
        all.extend(needles.iter().map(|n| n.to_string()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        assert_error(&p, &all);
    }
    // A variance of zero is what a channel that never varied leaves, and still loads.
    with_value(&p, "stem.bn1.running_var", 2, 0.0);
    assert!(Classifier::load(&p).is_ok());
}

/// Write a safetensors file whose header gives each tensor's `(dtype, shape, offsets)` as told,
/// over `data`.
fn write_header(path: &Path, entries: &[HeaderEntry], data: &[u8]) {
    let mut header = serde_json::Map::new();
    let (meta, _) = shipped();
    header.insert("__metadata__".into(), serde_json::to_value(meta).unwrap());
    for (name, dtype, shape, offsets) in entries {
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": offsets}),
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

#[test]
fn bad_offsets_and_sizes_name_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let p = tmp(&dir, "offsets.safetensors");
    let data = vec![0u8; 64];
    let cases: [(Vec<HeaderEntry>, &str); 5] = [
        // Shape and byte range disagree.
        (
            vec![
                ("a", "F32", vec![4], [0, 16]),
                ("b", "F32", vec![8], [16, 64]),
            ],
            "tensor b of dtype F32 and shape [8] needs 32 bytes, but its data_offsets [16, 64] hold 48",
        ),
        // A gap between two tensors.
        (
            vec![
                ("a", "F32", vec![4], [0, 16]),
                ("gap", "F32", vec![4], [32, 48]),
            ],
            "tensor gap has data_offsets [32, 48], expected it to start at byte 16",
        ),
        // Offsets that end before they start.
        (
            vec![
                ("a", "F32", vec![4], [0, 16]),
                ("back", "F32", vec![0], [16, 8]),
            ],
            "tensor back has data_offsets [16, 8], which end before they start",
        ),
        // A shape too large to count.
        (
            vec![("huge", "F32", vec![u64::MAX / 2, 4], [0, 64])],
            "tensor huge has shape",
        ),
        // Sub-byte elements that end inside a byte.
        (
            vec![("nibbles", "F4", vec![3], [0, 64])],
            "tensor nibbles of dtype F4 and shape [3] does not fill whole bytes",
        ),
    ];
    for (entries, needle) in cases {
        write_header(&p, &entries, &data);
        assert_error(&p, &[needle]);
    }
}

#[test]
fn an_ensemble_refuses_a_member_with_a_nan_weight() {
    let dir = tempfile::tempdir().unwrap();
    let bad = tmp(&dir, "nan.safetensors");
    with_value(&bad, "block1.sep2.depthwise.weight", 7, f32::NAN);
    let out = tmp(&dir, "pair.safetensors");
    let good = common::mini_xception_weights();
    let e = emocam::model::ensemble::combine(&[&good, &bad], &out, "pair", &[])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("nan.safetensors")
            && e.contains("tensor block1.sep2.depthwise.weight holds NaN"),
        "{e}"
    );
    assert!(!out.exists(), "an ensemble was written");
}

#[test]
fn a_network_that_overflows_on_a_face_gives_an_error_not_nan_scores() {
    let dir = tempfile::tempdir().unwrap();
    let p = tmp(&dir, "overflow.safetensors");
    let (mut meta, mut tensors) = shipped_f32();
    meta.insert("name".into(), "overflowing\x1b[31m net".into());
    // The first (unpadded) convolution's channel 0 takes the difference of pixels two apart,
    // times 3e38: exactly 0 on the blank image the loader tries, past f32's range on stripes.
    let set = |tensors: &mut Vec<F32Tensor>, name: &str, f: &dyn Fn(&mut [f32])| {
        f(&mut tensors.iter_mut().find(|t| t.0 == name).unwrap().2)
    };
    set(&mut tensors, "stem.conv1.weight", &|w| {
        w[..9].fill(0.0);
        w[3] = 3e38;
        w[5] = -3e38;
    });
    for (name, v) in [
        ("stem.bn1.weight", 1.0),
        ("stem.bn1.bias", 0.0),
        ("stem.bn1.running_mean", 0.0),
        ("stem.bn1.running_var", 1.0),
    ] {
        set(&mut tensors, name, &|t| t[0] = v);
    }
    write_f32(&p, &meta, &tensors);
    let clf = Classifier::load(&p).expect("finite weights load, and run on a blank face");
    let stripes = image::GrayImage::from_fn(64, 64, |x, _| {
        image::Luma([if x % 4 < 2 { 0 } else { 255 }])
    });
    let blank = image::GrayImage::new(64, 64);
    assert!(clf.classify(std::slice::from_ref(&blank)).is_ok());
    let e = clf.classify(&[blank, stripes]).unwrap_err().to_string();
    println!("{e}");
    assert!(
        e.contains("overflow.safetensors") && e.contains("non-finite") && e.contains("face 2 of 2"),
        "{e}"
    );
    // The model's name reaches the message with its escape sequence shown, not obeyed.
    assert!(
        e.contains("overflowing\\u{1b}[31m net") && !e.contains('\x1b'),
        "{e}"
    );
}
