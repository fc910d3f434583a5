//! Training speed: one step (forward, backward, AdamW) on a batch of 32 random faces, for each
//! architecture `emocam train` trains, on one thread and split over two; criterion reports
//! images per second.
//! `cargo bench --bench train`

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use emocam::model::vgg::VggConfig;
use emocam::train::{NetConfig, bench_step};

fn train_step(c: &mut Criterion) {
    emocam::runtime::init_cpu_runtime();
    let batch = 32;
    let nets = [
        ("mini_xception_64", NetConfig::mini_xception(7)),
        (
            "vgg_16-32-64-128_48",
            NetConfig::Vgg(VggConfig::training_default(7)),
        ),
    ];
    let mut g = c.benchmark_group("train_step");
    g.sample_size(20);
    g.throughput(Throughput::Elements(batch as u64));
    for (name, net) in nets {
        for threads in [1, 2] {
            let mut step = bench_step(&net, batch, threads).expect("net builds");
            g.bench_function(BenchmarkId::new(name, format!("{threads}-thread")), |b| {
                b.iter(|| step().expect("training step"))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, train_step);
criterion_main!(benches);
