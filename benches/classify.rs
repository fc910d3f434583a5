//! Classification speed of the default model (an ensemble) and of the borrowed mini-Xception
//! alone: one face, and a batch of eight. `default` runs its network passes side by side on the
//! machine's cores (as the app does); `default_one_core` runs them one after the other, which is
//! also its CPU time per face.
//! `cargo bench --bench classify`; set `EMOCAM_BENCH_WEIGHTS=FILE` to measure another weights
//! file as `classify/candidate`.

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
    emocam::runtime::init_cpu_runtime();
    let mut models = vec![
        (
            "default",
            Classifier::builtin().expect("built-in weights load"),
        ),
        ("default_one_core", {
            let mut clf = Classifier::builtin().expect("built-in weights load");
            clf.set_parallel(false);
            clf
        }),
        (
            "mini_xception_64",
            Classifier::load(
                &std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("weights/mini-xception-fer2013.safetensors"),
            )
            .expect("shipped mini-Xception loads"),
        ),
    ];
    // Lets a candidate model be measured before it is shipped.
    if let Some(path) = std::env::var_os("EMOCAM_BENCH_WEIGHTS") {
        let clf =
            Classifier::load(std::path::Path::new(&path)).expect("EMOCAM_BENCH_WEIGHTS loads");
        models.push(("candidate", clf));
    }
    let mut g = c.benchmark_group("classify");
    for (name, clf) in &models {
        for n in [1usize, 8] {
            let batch = faces(n);
            g.throughput(Throughput::Elements(n as u64));
            g.bench_with_input(BenchmarkId::new(*name, n), &batch, |b, batch| {
                b.iter(|| clf.classify(batch).expect("classify"))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, classify);
criterion_main!(benches);
