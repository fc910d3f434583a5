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
//! - demo_frame: one 640x480 frame of the built-in demo (what stands in for a camera here);
//! - mp4_read_sample: the mp4 crate's per-sample reader over every sample of a variable-rate
//!   track, at two lengths, to show why the sample table is flattened once instead.
//!
//! Everything but the FFmpeg comparison is timed in CPU time of this process
//! (`CLOCK_PROCESS_CPUTIME_ID`), not wall time: the machines these figures come from are shared,
//! and a busy neighbour stretches wall time but not the CPU time the work takes. The work is
//! single-threaded, so CPU time is what it takes on one free core. The FFmpeg comparison runs
//! in a child process, so it is timed on the wall clock, both sides alike.

use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use emocam::capture::video::{Ffmpeg, VideoSource};
use emocam::capture::{FrameSource, SourceOptions};
use emocam::video_out::Mp4Writer;
use image::RgbImage;
use openh264::formats::YUVSource;

/// CPU time used by this process, in nanoseconds.
struct CpuTime;

fn cpu_ns() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: plain syscall writing one timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 * 1e9 + ts.tv_nsec as f64
}

impl Measurement for CpuTime {
    type Intermediate = f64;
    type Value = f64;
    fn start(&self) -> f64 {
        cpu_ns()
    }
    fn end(&self, start: f64) -> f64 {
        cpu_ns() - start
    }
    fn add(&self, a: &f64, b: &f64) -> f64 {
        a + b
    }
    fn zero(&self) -> f64 {
        0.0
    }
    fn to_f64(&self, v: &f64) -> f64 {
        *v
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &CpuFormatter
    }
}

struct CpuFormatter;

impl ValueFormatter for CpuFormatter {
    fn scale_values(&self, typical_ns: f64, values: &mut [f64]) -> &'static str {
        let (div, unit) = match typical_ns {
            t if t < 1e3 => (1.0, "ns cpu"),
            t if t < 1e6 => (1e3, "µs cpu"),
            t if t < 1e9 => (1e6, "ms cpu"),
            _ => (1e9, "s cpu"),
        };
        values.iter_mut().for_each(|v| *v /= div);
        unit
    }

    fn scale_throughputs(&self, _typical: f64, t: &Throughput, values: &mut [f64]) -> &'static str {
        let n = match t {
            Throughput::Elements(n) | Throughput::Bytes(n) | Throughput::BytesDecimal(n) => *n,
            _ => 1,
        } as f64;
        values.iter_mut().for_each(|v| *v = n * 1e9 / *v);
        "elem/cpu-s"
    }

    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

fn cpu_criterion() -> Criterion<CpuTime> {
    Criterion::default().with_measurement(CpuTime)
}

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

fn decode(c: &mut Criterion<CpuTime>) {
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
}

fn builtin_vs_ffmpeg(c: &mut Criterion) {
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

fn yuv2rgb(c: &mut Criterion<CpuTime>) {
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

fn encode(c: &mut Criterion<CpuTime>) {
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

fn mp4_read_sample(c: &mut Criterion<CpuTime>) {
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

fn demo_frame(c: &mut Criterion<CpuTime>) {
    let demo = emocam::capture::demo::DemoSource::new(Some("astronaut"), SourceOptions::default())
        .expect("demo");
    let mut i = 0u64;
    c.bench_function("demo_frame_640x480", |b| {
        b.iter(|| {
            i += 1;
            demo.render(i % 150)
        })
    });
}

criterion_group! {
    name = cpu;
    config = cpu_criterion();
    targets = decode, yuv2rgb, encode, demo_frame, mp4_read_sample
}
criterion_group!(wall, builtin_vs_ffmpeg);
criterion_main!(cpu, wall);
