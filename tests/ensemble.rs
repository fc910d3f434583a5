//! Ensembles: `emocam ensemble` files load like any weights, average their members (each fed at
//! its own input size), and bad combinations are refused with the file named.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use emocam::model::ensemble::combine;
use emocam::model::vgg::{Vgg, VggConfig};
use emocam::model::{Architecture, InputScaling, ModelSpec, weights};
use emocam::{Classifier, Emotion, Scores};
use image::GrayImage;

fn shipped() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/mini-xception-fer2013.safetensors")
}

/// A freshly initialised 48x48 VGG with `classes` outputs, saved to `path`.
fn vgg_file(path: &Path, classes: usize) {
    let varmap = VarMap::new();
    let cfg = VggConfig {
        widths: vec![4, 8],
        dense: 8,
        classes,
        input_size: 48,
        dropout: 0.0,
        bn_eps: 1e-5,
    };
    Vgg::new(
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
        &cfg,
    )
    .unwrap();
    let spec = ModelSpec {
        architecture: Architecture::Vgg,
        input_size: 48,
        scaling: InputScaling::MinusOneToOne,
        classes: Emotion::ALL[..classes].to_vec(),
        name: "tiny vgg".into(),
        bn_eps: 1e-5,
        flip_average: false,
        metadata: cfg.to_metadata(),
    };
    let tensors: HashMap<_, _> = varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect();
    weights::save(path, &tensors, spec.to_metadata()).unwrap();
}

fn faces() -> Vec<GrayImage> {
    (0..3u32)
        .map(|k| {
            GrayImage::from_fn(48, 48, |x, y| {
                image::Luma([((x * 5 + y * 3 + k * 40) % 256) as u8])
            })
        })
        .collect()
}

/// Scores for all `faces`, every class of every face within 1e-5 of `want(face, class)`.
fn assert_scores_close(got: &[Scores], faces: usize, want: impl Fn(usize, usize) -> f32) {
    assert_eq!(got.len(), faces);
    for (i, s) in got.iter().enumerate() {
        for k in 0..s.probs().len() {
            assert!(
                (s.probs()[k] - want(i, k)).abs() < 1e-5,
                "face {i} class {k}"
            );
        }
    }
}

#[test]
fn an_ensemble_averages_its_members_at_their_own_input_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let vgg = dir.path().join("vgg.safetensors");
    vgg_file(&vgg, 7);
    let out = dir.path().join("both.safetensors");
    let spec = combine(&[shipped().as_path(), vgg.as_path()], &out, "both", &[]).unwrap();
    assert_eq!(spec.input_size, 64, "the largest member's input");

    let ens = Classifier::load(&out).unwrap();
    assert_eq!(ens.spec().architecture, Architecture::Ensemble);
    assert_eq!(ens.name(), "both");
    let (a, b) = (
        Classifier::load(&shipped()).unwrap(),
        Classifier::load(&vgg).unwrap(),
    );
    let faces = faces();
    let (sa, sb, se) = (
        a.classify(&faces).unwrap(),
        b.classify(&faces).unwrap(),
        ens.classify(&faces).unwrap(),
    );
    assert_scores_close(&se, faces.len(), |i, k| {
        (sa[i].probs()[k] + sb[i].probs()[k]) / 2.0
    });
    // Flip TTA works on ensembles too.
    assert_eq!(ens.classify_tta(&faces).unwrap().len(), 3);
}

#[test]
fn a_flip_averaged_member_sees_each_face_and_its_mirror() {
    let dir = tempfile::tempdir().unwrap();
    let vgg = dir.path().join("vgg.safetensors");
    vgg_file(&vgg, 7);
    let out = dir.path().join("flip.safetensors");
    combine(&[shipped().as_path(), vgg.as_path()], &out, "flip", &[0]).unwrap();
    let ens = Classifier::load(&out).unwrap();
    let members = emocam::model::ensemble::member_specs(ens.spec()).unwrap();
    assert!(members[0].flip_average && !members[1].flip_average);

    let (a, b) = (
        Classifier::load(&shipped()).unwrap(),
        Classifier::load(&vgg).unwrap(),
    );
    let faces = faces();
    let mirrored: Vec<GrayImage> = faces.iter().map(image::imageops::flip_horizontal).collect();
    let (sa, sm, sb, se) = (
        a.classify(&faces).unwrap(),
        a.classify(&mirrored).unwrap(),
        b.classify(&faces).unwrap(),
        ens.classify(&faces).unwrap(),
    );
    assert_scores_close(&se, faces.len(), |i, k| {
        ((sa[i].probs()[k] + sm[i].probs()[k]) / 2.0 + sb[i].probs()[k]) / 2.0
    });
    // The faces are not mirror-symmetric, so flipping changed the first member's answer.
    assert!((0..faces.len()).any(|i| (sa[i].probs()[0] - sm[i].probs()[0]).abs() > 1e-4));

    let e = combine(&[shipped().as_path(), vgg.as_path()], &out, "x", &[2])
        .unwrap_err()
        .to_string();
    assert!(e.contains("member 3"), "{e}");
}

#[test]
fn bad_combinations_are_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let three = dir.path().join("three.safetensors");
    vgg_file(&three, 3);
    let out = dir.path().join("bad.safetensors");
    let e = combine(&[shipped().as_path(), three.as_path()], &out, "x", &[])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("three.safetensors") && e.contains("classes"),
        "{e}"
    );

    let e = combine(&[shipped().as_path()], &out, "x", &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("expected 2 to"), "{e}");

    let broken = dir.path().join("broken.safetensors");
    std::fs::write(&broken, b"not weights").unwrap();
    let e = combine(&[shipped().as_path(), broken.as_path()], &out, "x", &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("broken.safetensors"), "{e}");

    let pair = dir.path().join("pair.safetensors");
    combine(
        &[shipped().as_path(), shipped().as_path()],
        &pair,
        "pair",
        &[],
    )
    .unwrap();
    let e = combine(&[pair.as_path(), shipped().as_path()], &out, "x", &[])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("pair.safetensors") && e.contains("ensemble"),
        "{e}"
    );
    assert!(!out.exists(), "nothing written for a refused combination");
}

#[test]
fn flip_tta_and_forward_match_mirroring_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    let faces = faces();
    let mirrored: Vec<GrayImage> = faces.iter().map(image::imageops::flip_horizontal).collect();

    // Test-time augmentation of an ensemble whose first member already flip-averages: that
    // member runs once, and the result is still the mean over each face and its mirror.
    let vgg = dir.path().join("vgg.safetensors");
    vgg_file(&vgg, 7);
    let out = dir.path().join("flip.safetensors");
    combine(&[shipped().as_path(), vgg.as_path()], &out, "flip", &[0]).unwrap();
    let ens = Classifier::load(&out).unwrap();
    let (s, sm, tta) = (
        ens.classify(&faces).unwrap(),
        ens.classify(&mirrored).unwrap(),
        ens.classify_tta(&faces).unwrap(),
    );
    assert_scores_close(&tta, faces.len(), |i, k| {
        (s[i].probs()[k] + sm[i].probs()[k]) / 2.0
    });

    // `forward` on a preprocessed batch honours a single model's flip_average, as classify does.
    let plain = Classifier::load(&shipped()).unwrap();
    let mut spec = plain.spec().clone();
    spec.flip_average = true;
    let tensors = candle_core::safetensors::load(shipped(), &Device::Cpu).unwrap();
    let flipped_file = dir.path().join("mx-flip.safetensors");
    weights::save(&flipped_file, &tensors, spec.to_metadata()).unwrap();
    let flipped = Classifier::load(&flipped_file).unwrap();
    let x = emocam::model::preprocess::batch_tensor(&faces, plain.spec(), &Device::Cpu).unwrap();
    let (f, p) = (
        flipped.forward(&x).unwrap().to_vec2::<f32>().unwrap(),
        plain.forward(&x).unwrap().to_vec2::<f32>().unwrap(),
    );
    let (c, cm) = (
        plain.classify(&faces).unwrap(),
        plain.classify(&mirrored).unwrap(),
    );
    for i in 0..faces.len() {
        for (k, e) in plain.spec().classes.iter().enumerate() {
            let want = (c[i].of(*e) + cm[i].of(*e)) / 2.0;
            assert!((f[i][k] - want).abs() < 1e-5, "face {i} class {k}");
        }
    }
    assert!(
        f.iter()
            .flatten()
            .zip(p.iter().flatten())
            .any(|(a, b)| (a - b).abs() > 1e-4),
        "the faces are not mirror-symmetric, so flip averaging must change the answer"
    );
}

#[test]
fn passes_side_by_side_score_exactly_as_one_after_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let vgg = dir.path().join("vgg.safetensors");
    vgg_file(&vgg, 7);
    let out = dir.path().join("both-flip.safetensors");
    // Four passes per face: each member on the face and on its mirror image.
    combine(&[shipped().as_path(), vgg.as_path()], &out, "both", &[0, 1]).unwrap();
    let parallel = Classifier::load(&out).unwrap();
    let mut serial = Classifier::load(&out).unwrap();
    serial.set_parallel(false);
    let cores = std::thread::available_parallelism().unwrap().get();
    assert_eq!(parallel.helper_threads(), cores.min(4) - 1);
    assert_eq!(serial.helper_threads(), 0);
    let faces = faces();
    let mirrored: Vec<GrayImage> = faces.iter().map(image::imageops::flip_horizontal).collect();
    assert_eq!(
        parallel.classify(&faces).unwrap(),
        serial.classify(&faces).unwrap()
    );
    assert_eq!(
        parallel.classify_tta(&faces[..1]).unwrap(),
        serial.classify_tta(&faces[..1]).unwrap()
    );
    // Two threads sharing one classifier each get their own faces' scores back.
    let (want_a, want_b) = (
        serial.classify(&faces).unwrap(),
        serial.classify(&mirrored).unwrap(),
    );
    std::thread::scope(|s| {
        let a = s.spawn(|| {
            (0..20)
                .map(|_| parallel.classify(&faces).unwrap())
                .collect::<Vec<_>>()
        });
        let b = s.spawn(|| {
            (0..20)
                .map(|_| parallel.classify(&mirrored).unwrap())
                .collect::<Vec<_>>()
        });
        assert!(a.join().unwrap().iter().all(|s| *s == want_a));
        assert!(b.join().unwrap().iter().all(|s| *s == want_b));
    });
    // Turning it off and on again keeps the answers.
    let mut again = parallel;
    again.set_parallel(false);
    assert_eq!(again.helper_threads(), 0);
    again.set_parallel(true);
    assert_eq!(again.helper_threads(), cores.min(4) - 1);
    assert_eq!(again.classify(&faces).unwrap(), want_a);
    // One network without a mirror pass has nothing to run side by side.
    assert_eq!(Classifier::load(&vgg).unwrap().helper_threads(), 0);
}
