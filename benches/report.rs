//! `emocam report` on a big session: 108,000 rows (two faces in every frame for 30 minutes at
//! 30 fps, i.e. an hour of face-frames) from the file to the HTML string, and the PNG summary.
//!
//! Run with `cargo bench --bench report`; it also prints the HTML's size. With
//! `EMOCAM_BENCH_CSV=PATH` it also leaves its recording at PATH, to time `emocam report` on it.

use std::hint::black_box;
use std::io::Write;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use emocam::report::{self, Recording, Summary};

const CLASSES: [&str; 7] = [
    "angry", "disgust", "fear", "happy", "sad", "surprise", "neutral",
];

/// Rows of the newer CSV form with scores that drift and jitter as a model's do.
fn recording(rows: u64) -> String {
    let mut out = String::with_capacity(rows as usize * 190);
    out += "timestamp,elapsed_ms,source_ms,frame,face_id,detected,x,y,w,h,";
    out += &CLASSES.join(",");
    out += ",top_emotion,model,source\n";
    let mut x = 0x9e37_79b9u32;
    for i in 0..rows {
        let (frame, face) = (i / 2, i % 2);
        let t = frame as f64 * 1000.0 / 30.0;
        let mut s = [0f32; 7];
        let mut sum = 0.0;
        for (c, v) in s.iter_mut().enumerate() {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let drift = ((t / 20_000.0 + c as f64 + face as f64 * 3.0).sin() + 1.2) as f32;
            *v = drift + (x % 1000) as f32 / 2000.0;
            sum += *v;
        }
        s.iter_mut().for_each(|v| *v /= sum);
        let top = (0..7).fold(0, |b, c| if s[c] > s[b] { c } else { b });
        let ts = humantime::format_rfc3339_millis(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_764_000_000_000 + t as u64),
        );
        let scores: Vec<String> = s.iter().map(|p| format!("{p:.6}")).collect();
        out += &format!(
            "{ts},{:.1},{t:.1},{frame},{face},{},{},120,90,90,{},{},\"emocam FER2013\",demo\n",
            t + 3.0,
            u8::from(frame % 7 != 0),
            100 + face * 300,
            scores.join(","),
            CLASSES[top]
        );
    }
    out
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("session.csv");
    let text = recording(108_000);
    std::fs::File::create(&path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .expect("write the recording");
    if let Some(keep) = std::env::var_os("EMOCAM_BENCH_CSV") {
        std::fs::write(&keep, &text).expect("write EMOCAM_BENCH_CSV");
    }
    let summary = Summary::from(&Recording::read(&path).expect("read"));
    let html = report::html(&summary);
    println!(
        "108,000 rows: CSV {:.1} MB, HTML {:.2} MB ({} bytes)",
        text.len() as f64 / 1e6,
        html.len() as f64 / 1e6,
        html.len()
    );
    let mut g = c.benchmark_group("report");
    g.sample_size(10);
    g.bench_function("108k_rows_file_to_html", |b| {
        b.iter(|| {
            let rec = Recording::read(black_box(Path::new(&path))).expect("read");
            let s = Summary::from(&rec);
            black_box(report::html(&s).len())
        })
    });
    g.bench_function("108k_rows_read", |b| {
        b.iter(|| black_box(Recording::read(&path).expect("read").rows))
    });
    g.bench_function("108k_rows_png", |b| {
        b.iter(|| black_box(report::png_bytes(&summary).expect("png").len()))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
