//! Video decode and encode speed, one core (openh264 and the YUV converters run single-threaded).
//! `cargo bench --bench video`
//!
//! - decode: every frame of the committed High-profile B-frame clips, built in (mp4 crate +
//!   openh264 + yuv), frames/s = 48 (640x360) or 12 (1920x1080) per iteration;
//! - open+decode: the same 640x360 clip built in, and through ffmpeg (remuxed to MKV, which
//!   sends it down the FFmpeg path), process start included; skipped without ffmpeg;
//! - yuv2rgb: openh264's own converter (reachable only from its safe decoder, so on a Baseline
//!   stream) against the `yuv` crate's, on the same 640x360 picture;
//! - encode: `Mp4Writer` at 640x360;
//! - mp4_read_sample: the mp4 crate's per-sample reader over every sample of a variable-rate
//!   track, at two lengths, to show why the sample table is flattened once instead.

use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use emocam::capture::video::{Ffmpeg, VideoSource};
use emocam::capture::{FrameSource, SourceOptions};
use emocam::video_out::Mp4Writer;
use image::RgbImage;
use openh264::formats::YUVSource;

fn clip(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/video")
        .join(name)
}

fn decode_all(path: &Path) -> usize {
    let mut src = VideoSource::open(path, SourceOptions::at_fps(0.0)).expect("open");
    let mut n = 0;
    while let Some(f) = src.next_frame().expect("decode") {
        std::hint::black_box(&f.rgb);
        n += 1;
    }
    n
}

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode");
    g.sample_size(20).measurement_time(Duration::from_secs(8));
    for (name, n) in [("high_bframes.mp4", 48), ("high_1080p.mp4", 12)] {
        let path = clip(name);
        assert_eq!(decode_all(&path), n);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(BenchmarkId::new("builtin", name), |b| {
            b.iter(|| decode_all(&path))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("open_decode_640x360");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    g.throughput(Throughput::Elements(48));
    let mp4 = clip("high_bframes.mp4");
    g.bench_function("builtin_mp4", |b| b.iter(|| decode_all(&mp4)));
    let dir = tempfile::tempdir().expect("tempdir");
    let mkv = dir.path().join("high_bframes.mkv");
    match Ffmpeg::find() {
        Ok(tools) => {
            let ok = std::process::Command::new(&tools.ffmpeg)
                .args(["-v", "error", "-y", "-i"])
                .arg(&mp4)
                .args(["-c", "copy"])
                .arg(&mkv)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "remux to MKV");
            assert_eq!(decode_all(&mkv), 48);
            g.bench_function("ffmpeg_mkv", |b| b.iter(|| decode_all(&mkv)));
        }
        Err(e) => println!("SKIPPED: open_decode_640x360/ffmpeg_mkv: {e}"),
    }
    g.finish();
}

/// 48 frames of the 640x360 clip, decoded.
fn clip_frames() -> Vec<RgbImage> {
    let mut src =
        VideoSource::open(&clip("high_bframes.mp4"), SourceOptions::at_fps(0.0)).expect("open");
    let mut v = Vec::new();
    while let Some(f) = src.next_frame().expect("decode") {
        v.push(f.rgb);
    }
    v
}

fn yuv2rgb(c: &mut Criterion) {
    use openh264::decoder::Decoder;
    use openh264::encoder::Encoder;
    use openh264::formats::{RgbSliceU8, YUVBuffer};
    // A Baseline stream (openh264's encoder makes no B-frames), which its safe decoder reads.
    let frame = clip_frames().swap_remove(20);
    let (w, h) = (frame.width() as usize, frame.height() as usize);
    let mut enc = Encoder::new().expect("encoder");
    let bitstream = enc
        .encode(&YUVBuffer::from_rgb8_source(RgbSliceU8::new(
            frame.as_raw(),
            (w, h),
        )))
        .expect("encode")
        .to_vec();
    let mut dec = Decoder::new().expect("decoder");
    let yuv = dec.decode(&bitstream).expect("decode").expect("a picture");
    let mut out = vec![0u8; w * h * 3];
    let mut g = c.benchmark_group("yuv2rgb_640x360");
    g.throughput(Throughput::Elements(1));
    g.bench_function("openh264_write_rgb8", |b| {
        b.iter(|| yuv.write_rgb8(&mut out))
    });
    let (sy, su, sv) = yuv.strides();
    g.bench_function("yuv_crate", |b| {
        b.iter(|| {
            let planar = yuv::YuvPlanarImage {
                y_plane: yuv.y(),
                y_stride: sy as u32,
                u_plane: yuv.u(),
                u_stride: su as u32,
                v_plane: yuv.v(),
                v_stride: sv as u32,
                width: w as u32,
                height: h as u32,
            };
            yuv::yuv420_to_rgb(
                &planar,
                &mut out,
                w as u32 * 3,
                yuv::YuvRange::Limited,
                yuv::YuvStandardMatrix::Bt601,
            )
            .expect("convert")
        })
    });
    g.finish();
}

fn encode(c: &mut Criterion) {
    let frames = clip_frames();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("out.mp4");
    let mut g = c.benchmark_group("encode");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    g.throughput(Throughput::Elements(frames.len() as u64));
    g.bench_function("mp4writer_640x360", |b| {
        b.iter(|| {
            let mut w = Mp4Writer::create(&path, 640, 360).expect("create");
            for (i, f) in frames.iter().enumerate() {
                w.write(f, i as f64 * 1e3 / 24.0).expect("write");
            }
            w.finish().expect("finish")
        })
    });
    g.finish();
}

/// A tiny video of `n` frames at irregular times (one time-to-sample entry per frame).
fn long_vfr(dir: &Path, n: usize) -> PathBuf {
    let path = dir.join(format!("vfr_{n}.mp4"));
    let frame = RgbImage::from_pixel(32, 32, image::Rgb([90, 90, 90]));
    let mut w = Mp4Writer::create(&path, 32, 32).expect("create");
    let mut t = 0.0;
    for i in 0..n {
        w.write(&frame, t).expect("write");
        t += 30.0 + (i % 7) as f64;
    }
    w.finish().expect("finish");
    path
}

fn mp4_read_sample(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut g = c.benchmark_group("mp4_read_sample_all");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    for n in [2_000usize, 8_000] {
        let path = long_vfr(dir.path(), n);
        let bytes = std::fs::read(&path).expect("read");
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| {
                let mut r =
                    mp4::Mp4Reader::read_header(std::io::Cursor::new(&bytes), bytes.len() as u64)
                        .expect("header");
                for s in 1..=n as u32 {
                    std::hint::black_box(r.read_sample(1, s).expect("sample"));
                }
            })
        });
        g.bench_function(BenchmarkId::new("emocam_open_decode", n), |b| {
            b.iter(|| decode_all(&path))
        });
    }
    g.finish();
}

criterion_group!(benches, decode, yuv2rgb, encode, mp4_read_sample);
criterion_main!(benches);
