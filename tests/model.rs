//! The candle port of mini-Xception against the reference outputs; the default model (compiled
//! in) against its file; both models' accuracy on FER2013 val.

mod common;

use candle_core::{Device, Tensor};
use emocam::model::Classifier;
use emocam::{dataset, eval};
use image::GrayImage;

/// The default model's accuracy on FER2013 PublicTest, as weights/README.md reports it.
const DEFAULT_VAL_ACCURACY: f64 = 0.6910;

#[test]
fn port_reproduces_golden_probabilities() {
    let Some(golden) = common::shared("weights/fer-mini-xception/golden.safetensors") else {
        return;
    };
    let clf = Classifier::load(&common::mini_xception_weights()).unwrap();
    let g = candle_core::safetensors::load(&golden, &Device::Cpu).unwrap();
    let input: &Tensor = &g["input"];
    let want = g["probs"].to_vec2::<f32>().unwrap();
    let got = clf.forward(input).unwrap().to_vec2::<f32>().unwrap();
    assert_eq!(got.len(), 14);
    let mut worst = 0f32;
    for (a, b) in got.iter().zip(&want) {
        for (x, y) in a.iter().zip(b) {
            worst = worst.max((x - y).abs());
        }
    }
    println!("largest difference from the reference: {worst:e}");
    assert!(worst < 1e-4, "largest difference {worst} exceeds 1e-4");
    // The batch-1 path gives the same numbers as the batch.
    let one = clf
        .forward(&input.narrow(0, 5, 1).unwrap())
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    for (x, y) in one[0].iter().zip(&want[5]) {
        assert!((x - y).abs() < 1e-4);
    }
}

/// The committed fixture (tests/fixtures/golden, made by make_golden.py there from an
/// independent numpy forward pass) checks the port on any clone, without ../shared.
#[test]
fn port_reproduces_the_committed_numpy_reference() {
    let path = common::fixture("golden/mini_xception_golden.safetensors");
    let g = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    let faces = g["faces"].to_dtype(candle_core::DType::U8).unwrap();
    let (n, h, w) = faces.dims3().unwrap();
    let want = g["probs"].to_vec2::<f32>().unwrap();
    assert_eq!((n, h, w, want.len()), (6, 64, 64, 6));
    let crops: Vec<GrayImage> = (0..n)
        .map(|i| {
            let px = faces
                .get(i)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<u8>()
                .unwrap();
            GrayImage::from_raw(w as u32, h as u32, px).unwrap()
        })
        .collect();
    let clf = Classifier::load(&common::mini_xception_weights()).unwrap();
    // Through the whole public path: crops in, scores out (one batch, then one at a time).
    let batch = clf.classify(&crops).unwrap();
    let mut worst = 0f32;
    for (i, (s, r)) in batch.iter().zip(&want).enumerate() {
        let one = clf.classify(std::slice::from_ref(&crops[i])).unwrap();
        for ((a, b), c) in s.probs().iter().zip(r).zip(one[0].probs()) {
            worst = worst.max((a - b).abs()).max((c - b).abs());
        }
    }
    println!("largest difference from the numpy reference: {worst:e}");
    assert!(worst < 1e-4, "largest difference {worst} exceeds 1e-4");
}

#[test]
fn builtin_and_shipped_file_are_the_same_model() {
    let a = Classifier::builtin().unwrap();
    let b = Classifier::load(&common::default_weights()).unwrap();
    assert_eq!(a.spec(), b.spec());
    assert_eq!(a.input_size(), 64);
    let faces: Vec<GrayImage> = (0..2u32)
        .map(|k| {
            GrayImage::from_fn(64, 64, |x, y| {
                image::Luma([((x * 7 + y * 3 + k * 50) % 256) as u8])
            })
        })
        .collect();
    let (sa, sb) = (a.classify(&faces).unwrap(), b.classify(&faces).unwrap());
    assert_eq!(sa, sb);
    for s in sa {
        assert!((s.sum() - 1.0).abs() < 1e-5);
    }
}

/// FER2013 PublicTest as JPEGs; `None` (with the reason printed) when ../shared is absent.
fn val_set() -> Option<dataset::LabeledFaces> {
    let val = common::shared("data/fer2013/val")?;
    let data = dataset::load(&val, None).unwrap();
    assert_eq!(data.len(), 3589, "FER2013 PublicTest has 3589 images");
    Some(data)
}

#[test]
fn default_model_beats_the_borrowed_one_on_fer2013_val() {
    let Some(data) = val_set() else {
        return;
    };
    let clf = Classifier::builtin().unwrap();
    let report = eval::evaluate(&clf, &data, false).unwrap();
    println!("{report}");
    assert!(
        report.accuracy >= DEFAULT_VAL_ACCURACY - 0.002,
        "accuracy {:.4}, the model card says {DEFAULT_VAL_ACCURACY}",
        report.accuracy
    );
    assert!(
        report.accuracy > 0.6534,
        "no better than the borrowed mini-Xception"
    );
}

#[test]
fn borrowed_mini_xception_reaches_65_percent_on_fer2013_val() {
    let Some(data) = val_set() else {
        return;
    };
    let clf = Classifier::load(&common::mini_xception_weights()).unwrap();
    let report = eval::evaluate(&clf, &data, false).unwrap();
    println!("{report}");
    assert!(
        report.accuracy >= 0.65,
        "accuracy {:.4} < 0.65",
        report.accuracy
    );
}
