//! Classification speed of the default model: one face, and a batch of eight.
//! `cargo bench --bench classify`

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use emocam::Classifier;
use image::GrayImage;

fn faces(n: usize) -> Vec<GrayImage> {
    (0..n)
        .map(|k| {
            GrayImage::from_fn(64, 64, |x, y| {
                image::Luma([((x * 3 + y * 5 + k as u32 * 7) % 256) as u8])
            })
        })
        .collect()
}

fn classify(c: &mut Criterion) {
    emocam::model::init_cpu_runtime();
    let clf = Classifier::builtin().expect("built-in weights load");
    let mut g = c.benchmark_group("classify");
    for n in [1usize, 8] {
        let batch = faces(n);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(
            BenchmarkId::new("mini_xception_64", n),
            &batch,
            |b, batch| b.iter(|| clf.classify(batch).expect("classify")),
        );
    }
    g.finish();
}

criterion_group!(benches, classify);
criterion_main!(benches);
