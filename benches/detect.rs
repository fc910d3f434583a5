//! Face detection on a 640x480 webcam-sized frame with one 140 px face (the astronaut photo on a
//! plain background), as the pipeline searches it: the whole frame for new faces at the scale
//! the default smallest face (40 px) needs, the region around a followed face on the small copy
//! tried first and on the larger one tried when that finds nothing, and the thorough settings
//! of still images; and turning the colour frame gray, which comes first.
//! `cargo bench --bench detect`

use criterion::{Criterion, criterion_group, criterion_main};
use emocam::detect::Region;
use emocam::imaging::{load_rgb, to_gray};
use emocam::{DetectorConfig, FaceBox, FaceDetector};
use image::{GrayImage, imageops};

fn frame() -> GrayImage {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/astronaut.png");
    let photo = to_gray(&load_rgb(std::path::Path::new(path)).expect("fixture"));
    // The photo's face is about 96 px of its 512: at 746 px it is about 140 px.
    let photo = imageops::resize(&photo, 746, 746, imageops::FilterType::Triangle);
    let mut frame = GrayImage::from_pixel(640, 480, image::Luma([90]));
    imageops::overlay(&mut frame, &photo, -100, -40);
    frame
}

fn detect(c: &mut Criterion) {
    emocam::runtime::init_cpu_runtime();
    emocam::runtime::use_own_rayon_pool();
    let frame = frame();
    let whole = Region::whole(frame.width(), frame.height());
    let mut det = FaceDetector::new(DetectorConfig::tracking()).expect("detector");
    // 44 px over the default smallest face, 40 px (face_stage::full_search_scale).
    let full_scale = 44.0 / 40.0;
    let found: Vec<FaceBox> = det.detect_region(&frame, whole, full_scale);
    assert_eq!(found.len(), 1, "{found:?}");
    let face = found[0];
    let region = Region::around(&face, 0.4, frame.width(), frame.height()).expect("region");
    let mut g = c.benchmark_group("detect");
    // Every frame of the live pipeline is turned gray before anything is searched.
    let rgb = image::RgbImage::from_fn(640, 480, |x, y| image::Rgb([x as u8, y as u8, 77]));
    g.bench_function("to_gray_640x480", |b| b.iter(|| to_gray(&rgb)));
    g.bench_function("whole_frame_640x480_live", |b| {
        b.iter(|| det.detect_region(&frame, whole, full_scale))
    });
    for side in [44.0f32, 56.0] {
        let scale = side / face.w as f32;
        assert_eq!(det.detect_region(&frame, region, scale).len(), 1);
        g.bench_function(format!("region_around_face_{side}px"), |b| {
            b.iter(|| det.detect_region(&frame, region, scale))
        });
    }
    let mut thorough = FaceDetector::new(DetectorConfig::thorough()).expect("detector");
    g.bench_function("whole_frame_640x480_thorough", |b| {
        b.iter(|| thorough.detect(&frame))
    });
    g.finish();
}

criterion_group!(benches, detect);
criterion_main!(benches);
