//! Face detection on a 640x480 webcam-sized frame with one face, live settings.
//! `cargo bench --bench detect`

use criterion::{Criterion, criterion_group, criterion_main};
use emocam::imaging::{load_rgb, to_gray};
use emocam::{DetectorConfig, FaceDetector};
use image::{GrayImage, imageops};

fn frame() -> GrayImage {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/astronaut.png");
    let face = to_gray(&load_rgb(std::path::Path::new(path)).expect("fixture"));
    let face = imageops::resize(&face, 400, 400, imageops::FilterType::Triangle);
    let mut frame = GrayImage::from_pixel(640, 480, image::Luma([90]));
    imageops::overlay(&mut frame, &face, 120, 40);
    frame
}

fn detect(c: &mut Criterion) {
    emocam::runtime::init_cpu_runtime();
    let frame = frame();
    let mut det = FaceDetector::new(DetectorConfig::live()).expect("detector");
    assert_eq!(det.detect(&frame).len(), 1);
    c.bench_function("detect_640x480_one_face", |b| b.iter(|| det.detect(&frame)));
}

criterion_group!(benches, detect);
criterion_main!(benches);
