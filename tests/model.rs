//! The candle port of mini-Xception against the reference outputs, and its accuracy on FER2013 val.

mod common;

use candle_core::{Device, Tensor};
use emocam::model::Classifier;
use emocam::{dataset, eval};

#[test]
fn port_reproduces_golden_probabilities() {
    let Some(golden) = common::shared("weights/fer-mini-xception/golden.safetensors") else {
        return;
    };
    let clf = Classifier::load(&common::default_weights()).unwrap();
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

#[test]
fn builtin_and_shipped_file_are_the_same_model() {
    let a = Classifier::builtin().unwrap();
    let b = Classifier::load(&common::default_weights()).unwrap();
    assert_eq!(a.spec(), b.spec());
    assert_eq!(a.input_size(), 64);
    let x = Tensor::randn(0f32, 0.5, (2, 1, 64, 64), &Device::Cpu).unwrap();
    let pa = a.forward(&x).unwrap().to_vec2::<f32>().unwrap();
    let pb = b.forward(&x).unwrap().to_vec2::<f32>().unwrap();
    assert_eq!(pa, pb);
    for row in pa {
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }
}

#[test]
fn default_weights_reach_65_percent_on_fer2013_val() {
    let Some(val) = common::shared("data/fer2013/val") else {
        return;
    };
    let clf = Classifier::builtin().unwrap();
    let data = dataset::load(&val, None).unwrap();
    assert_eq!(data.len(), 3589, "FER2013 PublicTest has 3589 images");
    let report = eval::evaluate(&clf, &data, false).unwrap();
    println!("{report}");
    assert!(
        report.accuracy >= 0.65,
        "accuracy {:.4} < 0.65",
        report.accuracy
    );
}
