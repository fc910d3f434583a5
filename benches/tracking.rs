//! The live pipeline end to end (capture, face stage with tracking, inference), unpaced, over
//! composed clips: one face moving across 1920x1080, one face in 640x480, six faces in
//! 1280x886. Throughput is in frames (elements) per second.
//! `cargo bench --bench tracking`

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use emocam::capture::{FrameSource, Pacing, SourceFrame};
use emocam::imaging::{FaceBox, load_rgb, to_gray};
use emocam::pipeline::{Pipeline, PipelineConfig};
use emocam::{Classifier, DetectorConfig, FaceDetector};
use image::{Rgb, RgbImage, imageops};

const FRAMES: u64 = 120;

/// A photo cut to its face and half a face around it, scaled so the face is `px` wide.
fn tile(name: &str, px: u32) -> RgbImage {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let photo = load_rgb(std::path::Path::new(&path)).expect("fixture");
    let mut det = FaceDetector::new(DetectorConfig::thorough()).expect("detector");
    let found: Vec<FaceBox> = det.detect(&to_gray(&photo));
    let f = found.iter().max_by_key(|b| b.w).expect("a face");
    let (x, y) = ((f.x - f.w as i32 / 2).max(0), (f.y - f.h as i32 / 2).max(0));
    let side = (f.w * 2)
        .min(photo.width() - x as u32)
        .min(photo.height() - y as u32);
    let face = imageops::crop_imm(&photo, x as u32, y as u32, side, side).to_image();
    imageops::resize(&face, px * 2, px * 2, imageops::FilterType::Triangle)
}

struct Clip {
    frames: Arc<Vec<RgbImage>>,
    i: usize,
}

impl FrameSource for Clip {
    fn describe(&self) -> String {
        "composed clip".into()
    }
    fn next_frame(&mut self) -> emocam::Result<Option<SourceFrame>> {
        let Some(f) = self.frames.get(self.i) else {
            return Ok(None);
        };
        let sf = SourceFrame {
            rgb: f.clone(),
            source_ms: Some(self.i as f64 * 1000.0 / 30.0),
        };
        self.i += 1;
        Ok(Some(sf))
    }
    fn pacing(&self) -> Pacing {
        Pacing::Unpaced
    }
}

/// Run the clip through a fresh pipeline; the time, the frames with `want` faces found, and
/// the mean face-stage and inference milliseconds per frame.
fn run_clip(frames: &Arc<Vec<RgbImage>>, want: usize) -> (Duration, u64, f32, f32) {
    let p = Pipeline::start(
        Box::new(Clip {
            frames: frames.clone(),
            i: 0,
        }),
        Classifier::builtin().expect("model"),
        PipelineConfig::default(),
        Arc::new(|| {}),
    )
    .expect("pipeline");
    let t0 = Instant::now();
    let (mut good, mut detect, mut infer) = (0, 0.0, 0.0);
    for _ in 0..frames.len() {
        let s = p.results().recv().expect("a result per frame");
        good += u64::from(s.faces.iter().filter(|f| f.detected).count() >= want);
        detect += s.detect_ms;
        infer += s.infer_ms;
    }
    let took = t0.elapsed();
    p.shutdown();
    let n = frames.len() as f32;
    (took, good, detect / n, infer / n)
}

fn clip_1080p() -> Vec<RgbImage> {
    let face = tile("astronaut.png", 120);
    (0..FRAMES)
        .map(|i| {
            let mut c = RgbImage::from_pixel(1920, 1080, Rgb([96, 96, 96]));
            let y = 400 + (100.0 * (i as f64 / 10.0).sin()) as i64;
            imageops::overlay(&mut c, &face, 40 + i as i64 * 14, y);
            c
        })
        .collect()
}

fn clip_640() -> Vec<RgbImage> {
    let face = tile("astronaut.png", 140);
    (0..FRAMES)
        .map(|i| {
            let mut c = RgbImage::from_pixel(640, 480, Rgb([96, 96, 96]));
            let dx = (30.0 * (i as f64 / 15.0).sin()) as i64;
            imageops::overlay(&mut c, &face, 180 + dx, 90);
            c
        })
        .collect()
}

fn clip_group() -> Vec<RgbImage> {
    let tiles = [tile("astronaut.png", 110), tile("camera.png", 110)];
    (0..FRAMES)
        .map(|i| {
            let mut c = RgbImage::from_pixel(1280, 886, Rgb([96, 96, 96]));
            let dx = (20.0 * (i as f64 / 12.0).sin()) as i64;
            for k in 0..6i64 {
                let (col, row) = (k % 3, k / 3);
                let t = &tiles[(k % 2) as usize];
                imageops::overlay(&mut c, t, 80 + col * 400 + dx, 120 + row * 380);
            }
            c
        })
        .collect()
}

fn pipeline(c: &mut Criterion) {
    emocam::runtime::init_cpu_runtime();
    let mut g = c.benchmark_group("pipeline_tracking");
    g.sample_size(10).throughput(Throughput::Elements(FRAMES));
    for (name, frames, want) in [
        ("1920x1080_one_face", clip_1080p(), 1),
        ("640x480_one_face", clip_640(), 1),
        ("1280x886_six_faces", clip_group(), 6),
    ] {
        let frames = Arc::new(frames);
        let (took, good, detect, infer) = run_clip(&frames, want);
        println!(
            "{name}: {want} face(s) found in {good} of {FRAMES} frames, {:.0} frames/s, \
             face stage {detect:.1} ms and inference {infer:.1} ms a frame",
            FRAMES as f64 / took.as_secs_f64()
        );
        g.bench_function(name, |b| {
            b.iter_custom(|iters| (0..iters).map(|_| run_clip(&frames, want).0).sum())
        });
    }
    g.finish();
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
