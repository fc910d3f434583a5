//! An imported ONNX model against the native candle path: the shipped mini-Xception, exported
//! as ONNX in the setup and imported again (tract-onnx), against the same weights run natively;
//! and the default ensemble both ways. One face, and a batch of eight. The imported models run
//! on one core, as the native ones here; `mini_xception_onnx_parallel` splits the faces across
//! the cores, as an imported model does by default.
//! `cargo bench --bench onnx`.

use std::path::Path;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use emocam::Classifier;
use emocam::model::onnx::{ExportOptions, FaceCrop, OnnxNet, OnnxOptions, export_onnx_bytes};
use emocam::model::{BUILTIN_LABEL, BUILTIN_WEIGHTS, WeightsFile};
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

/// `file` exported and imported again.
fn imported(file: &WeightsFile, label: &str) -> OnnxNet {
    let bytes = export_onnx_bytes(file, &ExportOptions::default()).expect("export");
    OnnxNet::from_bytes(Path::new(label), &bytes, &OnnxOptions::default()).expect("import")
}

fn onnx(c: &mut Criterion) {
    emocam::runtime::init_cpu_runtime();
    let mini_path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/mini-xception-fer2013.safetensors");
    let mini_file = WeightsFile::read(&mini_path).expect("shipped mini-Xception reads");
    let builtin_file =
        WeightsFile::parse(BUILTIN_WEIGHTS, Path::new(BUILTIN_LABEL)).expect("built-in parses");
    let mini_onnx_parallel = imported(&mini_file, "mini-xception.onnx");
    let mut mini_onnx = imported(&mini_file, "mini-xception.onnx");
    mini_onnx.set_parallel(false);
    let mut mini_onnx_tract = imported(&mini_file, "mini-xception.onnx");
    mini_onnx_tract.set_parallel(false);
    mini_onnx_tract.set_native(false);
    let mut builtin_onnx = imported(&builtin_file, "emocam-fer2013.onnx");
    builtin_onnx.set_parallel(false);
    let mini_native = Classifier::load(&mini_path).expect("shipped mini-Xception loads");
    // One core, as the ONNX graph runs its passes one after the other.
    let mut builtin_native = Classifier::builtin().expect("built-in loads");
    builtin_native.set_parallel(false);

    let mut g = c.benchmark_group("onnx");
    for n in [1usize, 8] {
        let batch = faces(n);
        let crops: Vec<FaceCrop> = batch.iter().map(FaceCrop::Gray).collect();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(
            BenchmarkId::new("mini_xception_native", n),
            &batch,
            |b, x| b.iter(|| mini_native.classify(x).expect("classify")),
        );
        g.bench_with_input(BenchmarkId::new("mini_xception_onnx", n), &crops, |b, x| {
            b.iter(|| mini_onnx.probs(x).expect("probs"))
        });
        g.bench_with_input(
            BenchmarkId::new("mini_xception_onnx_tract", n),
            &crops,
            |b, x| b.iter(|| mini_onnx_tract.probs(x).expect("probs")),
        );
        g.bench_with_input(
            BenchmarkId::new("mini_xception_onnx_parallel", n),
            &crops,
            |b, x| b.iter(|| mini_onnx_parallel.probs(x).expect("probs")),
        );
        g.bench_with_input(
            BenchmarkId::new("default_native_one_core", n),
            &batch,
            |b, x| b.iter(|| builtin_native.classify(x).expect("classify")),
        );
        g.bench_with_input(BenchmarkId::new("default_onnx", n), &crops, |b, x| {
            b.iter(|| builtin_onnx.probs(x).expect("probs"))
        });
    }
    g.finish();
}

criterion_group!(benches, onnx);
criterion_main!(benches);
