//! Video sources and the H.264 writer, on real clips (tests/fixtures/video, made by its make.sh
//! with ffmpeg; expected.json holds what ffprobe read from each at generation time).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use emocam::capture::video::VideoSource;
use emocam::capture::{self, FrameSource, Pacing, SourceOptions, SourceSpec};
use image::RgbImage;
use serde_json::Value;

fn clip(name: &str) -> PathBuf {
    common::fixture(&format!("video/{name}"))
}

fn expected(name: &str) -> Value {
    let text = std::fs::read_to_string(clip("expected.json")).unwrap();
    let all: Value = serde_json::from_str(&text).unwrap();
    all[name].clone()
}

fn expected_pts(name: &str) -> Vec<f64> {
    expected(name)["pts_ms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect()
}

fn unpaced() -> SourceOptions {
    SourceOptions::at_fps(0.0)
}

/// Every frame of a source (at most `limit`), with its time.
fn frames(src: &mut dyn FrameSource, limit: usize) -> Vec<(RgbImage, f64)> {
    let mut out = Vec::new();
    while out.len() < limit {
        match src.next_frame().unwrap() {
            Some(f) => out.push((f.rgb, f.source_ms.expect("video frames carry their time"))),
            None => break,
        }
    }
    out
}

/// Column of the photo's left edge on the clips' green canvas: the first column that is not
/// green in most of the middle rows.
fn edge_x(rgb: &RgbImage) -> u32 {
    let (w, h) = rgb.dimensions();
    let rows = h / 4..3 * h / 4;
    let n = rows.len() as u32;
    (0..w)
        .find(|&x| {
            let photo = rows
                .clone()
                .filter(|&y| {
                    let [r, g, b] = rgb.get_pixel(x, y).0;
                    !(g > 140 && r < 90 && b < 90)
                })
                .count() as u32;
            photo * 2 > n
        })
        .unwrap_or(w)
}

/// Where the photo's edge should be at `ms`, from the pan make.sh applied.
fn edge_at(name: &str, ms: f64) -> f64 {
    let e = expected(name);
    e["edge_x0"].as_f64().unwrap() - e["speed_px_per_s"].as_f64().unwrap() * ms / 1e3
}

/// Assert the frames are the clip's, in presentation order, at ffprobe's times.
fn assert_matches_ffprobe(name: &str, got: &[(RgbImage, f64)]) {
    let want = expected_pts(name);
    assert_eq!(got.len(), want.len(), "{name}: frame count");
    let e = expected(name);
    for (i, ((rgb, ms), want_ms)) in got.iter().zip(&want).enumerate() {
        assert_eq!(
            rgb.dimensions(),
            (
                e["width"].as_u64().unwrap() as u32,
                e["height"].as_u64().unwrap() as u32
            ),
            "{name}: frame {i} size"
        );
        assert!(
            (ms - want_ms).abs() < 0.5,
            "{name}: frame {i} at {ms} ms, ffprobe says {want_ms} ms"
        );
        // The content is the one shown at that time: pictures are in presentation order.
        let edge = edge_x(rgb) as f64;
        let should = edge_at(name, *want_ms);
        assert!(
            (edge - should).abs() <= 3.0,
            "{name}: frame {i} ({want_ms} ms) shows the photo's edge at x={edge}, expected {should:.1}"
        );
    }
}

fn open(name: &str) -> VideoSource {
    VideoSource::open(&clip(name), unpaced()).unwrap()
}

fn have_ffmpeg(why: &str) -> bool {
    match emocam::capture::video::Ffmpeg::find() {
        Ok(_) => true,
        Err(e) => {
            println!("SKIPPED: {why}: no FFmpeg ({e})");
            false
        }
    }
}

#[test]
fn high_profile_b_frames_decode_built_in_at_the_containers_times() {
    let name = "high_bframes.mp4";
    let e = expected(name);
    assert!(
        e["pict_types"].as_str().unwrap().contains('B'),
        "the fixture has B-frames"
    );
    assert_eq!(e["profile"], "High");
    let mut src = open(name);
    assert_eq!(src.decoder(), "openh264");
    assert_eq!(src.frame_count(), Some(48));
    assert_eq!(src.pacing(), Pacing::Unpaced);
    let len = src.duration_ms().unwrap();
    assert!((len - 2000.0).abs() < 0.5, "48 frames at 24 fps: {len} ms");
    assert!(src.describe().contains("640x360"), "{}", src.describe());
    let got = frames(&mut src, 1000);
    assert_matches_ffprobe(name, &got);
    // Presentation order: the photo moves left in every frame.
    for w in got.windows(2) {
        assert!(edge_x(&w[1].0) < edge_x(&w[0].0));
    }
    assert!(src.next_frame().unwrap().is_none(), "it stays ended");
}

#[test]
fn the_last_pictures_held_for_reordering_are_drained() {
    let got = frames(&mut open("high_bframes.mp4"), 1000);
    let want = expected_pts("high_bframes.mp4");
    // The final B/P pictures leave the decoder only when it is flushed.
    let tail: Vec<f64> = got[got.len() - 3..].iter().map(|f| f.1).collect();
    for (t, w) in tail.iter().zip(&want[want.len() - 3..]) {
        assert!((t - w).abs() < 0.5, "{tail:?}");
    }
}

#[test]
fn baseline_variable_frame_rate_and_mov_clips_match_ffprobe() {
    for name in ["baseline.mp4", "vfr.mp4", "clip.mov"] {
        let mut src = open(name);
        assert_eq!(src.decoder(), "openh264", "{name}");
        let want = expected_pts(name);
        assert_eq!(src.frame_count(), Some(want.len() as u64), "{name}");
        let got = frames(&mut src, 1000);
        assert_matches_ffprobe(name, &got);
    }
    // The variable rate is kept: gaps grow by 4 ms a frame.
    let got = frames(&mut open("vfr.mp4"), 1000);
    let gaps: Vec<f64> = got.windows(2).map(|w| w[1].1 - w[0].1).collect();
    assert!(gaps[0] < 25.0 && gaps[gaps.len() - 1] > 150.0, "{gaps:?}");
}

#[test]
fn seeking_lands_on_the_key_frame_at_or_before_the_time_asked() {
    let name = "high_bframes.mp4";
    let mut src = open(name);
    let keys = src.key_frames_ms().unwrap();
    assert_eq!(keys.len(), 4, "a key frame every 12 frames: {keys:?}");
    let want_keys: Vec<f64> = expected(name)["key_frames_ms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    for (k, w) in keys.iter().zip(&want_keys) {
        assert!((k - w).abs() < 0.5, "{keys:?} vs {want_keys:?}");
    }
    let pts = expected_pts(name);
    for target in [0.0, 10.0, 499.0, 500.0, 777.0, 1200.0, 1999.0] {
        src.seek(target).unwrap();
        let f = src.next_frame().unwrap().unwrap();
        let ms = f.source_ms.unwrap();
        let key = keys
            .iter()
            .copied()
            .filter(|&k| k <= target)
            .fold(0.0, f64::max);
        assert!(
            (ms - key).abs() < 0.5,
            "seek to {target} ms gave {ms} ms, expected the key frame at {key}"
        );
        assert!(
            (edge_x(&f.rgb) as f64 - edge_at(name, ms)).abs() <= 3.0,
            "the picture is that frame's"
        );
        // Decoding goes on from there in order, to the end.
        let rest = frames(&mut src, 1000);
        let from = pts.iter().position(|&p| (p - key).abs() < 0.5).unwrap();
        assert_eq!(
            rest.len(),
            pts.len() - from - 1,
            "after seeking to {target}"
        );
    }
    // Out of range: refused, and the position stays.
    src.seek(500.0).unwrap();
    for bad in [-1.0, f64::NAN, 1e9] {
        let e = src.seek(bad).unwrap_err().to_string();
        assert!(
            e.contains("high_bframes.mp4") && e.contains("cannot seek"),
            "{e}"
        );
    }
    let f = src.next_frame().unwrap().unwrap();
    assert!((f.source_ms.unwrap() - 500.0).abs() < 0.5);
}

#[test]
fn looping_starts_again_and_time_keeps_growing() {
    let mut src = VideoSource::open(
        &clip("baseline.mp4"),
        SourceOptions {
            fps: Some(0.0),
            looping: true,
        },
    )
    .unwrap();
    assert!(src.describe().contains("looping"));
    let want = expected_pts("baseline.mp4");
    let n = want.len();
    let len = src.duration_ms().unwrap();
    let got = frames(&mut src, 2 * n + 5);
    assert_eq!(got.len(), 2 * n + 5, "a looping video does not end");
    for w in got.windows(2) {
        assert!(w[1].1 > w[0].1, "times grow across loops");
    }
    for (i, (rgb, ms)) in got.iter().enumerate() {
        let want_ms = want[i % n] + (i / n) as f64 * len;
        assert!((ms - want_ms).abs() < 0.5, "frame {i}: {ms} vs {want_ms}");
        assert!((edge_x(rgb) as f64 - edge_at("baseline.mp4", want[i % n])).abs() <= 3.0);
    }
}

#[test]
fn a_truncated_file_gives_the_frames_before_the_damage_then_an_error() {
    let mut src = open("truncated.mp4");
    let mut delivered = Vec::new();
    let err = loop {
        match src.next_frame() {
            Ok(Some(f)) => delivered.push(f.source_ms.unwrap()),
            Ok(None) => panic!("a truncated file must not end quietly"),
            Err(e) => break e.to_string(),
        }
    };
    assert!(
        delivered.len() >= 10 && delivered.len() < 48,
        "{} frames before the damage",
        delivered.len()
    );
    // They are the clip's first frames, at their times.
    let want = expected_pts("high_bframes.mp4");
    for (got, want) in delivered.iter().zip(&want) {
        assert!((got - want).abs() < 0.5, "{delivered:?}");
    }
    assert!(err.contains("truncated.mp4"), "{err}");
    let frame: usize = err
        .split("frame ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the error names the frame: {err}"));
    assert!(
        frame >= delivered.len() && frame < 48,
        "stopped at frame {frame} after delivering {}: {err}",
        delivered.len()
    );
    assert!(err.contains("truncated"), "{err}");
}

#[test]
fn capture_open_takes_videos_by_extension_any_case_and_by_their_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let upper = dir.path().join("CLIP.MP4");
    std::fs::copy(clip("baseline.mp4"), &upper).unwrap();
    // A video named like an image is still a video.
    let misnamed = dir.path().join("clip.png");
    std::fs::copy(clip("baseline.mp4"), &misnamed).unwrap();
    for p in [&upper, &misnamed] {
        let spec: SourceSpec = p.to_str().unwrap().parse().unwrap();
        let mut src = capture::open(&spec, unpaced()).unwrap();
        assert_eq!(src.frame_count(), Some(36), "{}", p.display());
        assert_eq!(frames(src.as_mut(), 1000).len(), 36);
    }
    // A played video paces itself by its own times.
    let src = capture::open(&SourceSpec::Path(upper), SourceOptions::default()).unwrap();
    assert_eq!(src.pacing(), Pacing::SourceTime);
}

#[test]
fn stream_urls_parse_and_print_back() {
    for url in [
        "rtsp://camera.local:554/stream1",
        "rtsps://cam/x",
        "http://127.0.0.1:8080/live.mjpg",
        "HTTPS://example.org/a.webm",
    ] {
        let spec: SourceSpec = url.parse().unwrap();
        assert_eq!(spec, SourceSpec::Url(url.into()));
        assert_eq!(spec.to_string(), url);
        assert_eq!(spec.to_string().parse::<SourceSpec>().unwrap(), spec);
    }
    assert!(matches!(
        "clips/a.mp4".parse::<SourceSpec>().unwrap(),
        SourceSpec::Path(_)
    ));
}

#[test]
fn audio_only_empty_and_non_video_files_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.mp4");
    std::fs::write(&empty, b"").unwrap();
    let text = dir.path().join("notes.mkv");
    std::fs::write(&text, b"these are my notes, not a film\n").unwrap();
    let photo = dir.path().join("photo.mov");
    std::fs::copy(common::fixture("astronaut.png"), &photo).unwrap();
    let cases: [(&Path, &str); 4] = [
        (&clip("audio_only.mp4"), "no video stream"),
        (&empty, "empty"),
        (&text, "not a video"),
        (&photo, "not a video"),
    ];
    for (path, why) in cases {
        let err = VideoSource::open(path, unpaced())
            .err()
            .unwrap()
            .to_string();
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(err.contains(name) && err.contains(why), "{err}");
    }
    let missing = dir.path().join("missing.mp4");
    let err = VideoSource::open(&missing, unpaced())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("missing.mp4"), "{err}");
}

/// Offset of the first `avc1` sample entry's width field in an MP4's bytes.
fn avc1_width_offset(bytes: &[u8]) -> usize {
    // The sample entry, not the `avc1` brand in the file type box.
    let stsd = bytes.windows(4).position(|w| w == b"stsd").unwrap();
    let at = stsd + bytes[stsd..].windows(4).position(|w| w == b"avc1").unwrap();
    // fourcc, 6 reserved, 2 data reference index, 16 pre-defined/reserved
    at + 4 + 24
}

#[test]
fn an_absurd_picture_size_is_refused_before_decoding() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(clip("baseline.mp4")).unwrap();
    let at = avc1_width_offset(&bytes);
    bytes[at..at + 4].copy_from_slice(&[0x4E, 0x20, 0x4E, 0x20]); // 20000x20000
    let huge = dir.path().join("huge.mp4");
    std::fs::write(&huge, &bytes).unwrap();
    let err = VideoSource::open(&huge, unpaced())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("huge.mp4") && err.contains("20000x20000") && err.contains("8192"),
        "{err}"
    );
    // A zero size too.
    bytes[at..at + 4].copy_from_slice(&[0, 0, 0, 0]);
    std::fs::write(&huge, &bytes).unwrap();
    let err = VideoSource::open(&huge, unpaced())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("0x0"), "{err}");
}

#[test]
fn a_video_track_without_frames_is_refused() {
    // An MP4 whose H.264 track holds no samples, written with the mp4 crate.
    let src = std::fs::read(clip("baseline.mp4")).unwrap();
    let reader = mp4::Mp4Reader::read_header(std::io::Cursor::new(&src), src.len() as u64).unwrap();
    let track = reader.tracks().values().next().unwrap();
    let (sps, pps) = (
        track.sequence_parameter_set().unwrap().to_vec(),
        track.picture_parameter_set().unwrap().to_vec(),
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no_frames.mp4");
    let file = std::fs::File::create(&path).unwrap();
    let mut w = mp4::Mp4Writer::write_start(
        file,
        &mp4::Mp4Config {
            major_brand: "isom".parse().unwrap(),
            minor_version: 512,
            compatible_brands: vec!["isom".parse().unwrap(), "avc1".parse().unwrap()],
            timescale: 1000,
        },
    )
    .unwrap();
    w.add_track(&mp4::TrackConfig {
        track_type: mp4::TrackType::Video,
        timescale: 15360,
        language: "und".into(),
        media_conf: mp4::MediaConfig::AvcConfig(mp4::AvcConfig {
            width: 320,
            height: 180,
            seq_param_set: sps,
            pic_param_set: pps,
        }),
    })
    .unwrap();
    w.write_end().unwrap();
    let err = VideoSource::open(&path, unpaced())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("no_frames.mp4") && err.contains("no frames"),
        "{err}"
    );
}

#[test]
fn other_codecs_play_through_ffmpeg() {
    if !have_ffmpeg("VP9/WebM and MPEG-4 Part 2/AVI decode through FFmpeg") {
        return;
    }
    for (name, codec) in [("clip.avi", "mpeg4"), ("clip.webm", "vp9")] {
        let mut src = open(name);
        assert_eq!(src.decoder(), "ffmpeg");
        assert!(src.describe().contains(codec), "{}", src.describe());
        assert_eq!(src.size(), (320, 180));
        let got = frames(&mut src, 1000);
        assert_matches_ffprobe(name, &got);
        assert!(src.next_frame().unwrap().is_none());
    }
}

#[test]
fn ffmpeg_sources_seek_and_loop() {
    if !have_ffmpeg("seeking through FFmpeg") {
        return;
    }
    let name = "clip.avi";
    let keys: Vec<f64> = expected(name)["key_frames_ms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(keys.len(), 2, "{keys:?}");
    let mut src = open(name);
    for target in [700.0, 300.0, 0.0] {
        src.seek(target).unwrap();
        let f = src.next_frame().unwrap().unwrap();
        let ms = f.source_ms.unwrap();
        let key = keys
            .iter()
            .copied()
            .filter(|&k| k <= target)
            .fold(0.0, f64::max);
        assert!(
            (ms - key).abs() < 0.5,
            "seek to {target} gave {ms}, key {key}"
        );
        assert!((edge_x(&f.rgb) as f64 - edge_at(name, ms)).abs() <= 3.0);
    }
    let mut looping = VideoSource::open(
        &clip(name),
        SourceOptions {
            fps: Some(0.0),
            looping: true,
        },
    )
    .unwrap();
    let got = frames(&mut looping, 30);
    assert_eq!(got.len(), 30);
    for w in got.windows(2) {
        assert!(w[1].1 > w[0].1);
    }
    assert!(
        (got[24].1 - 1000.0).abs() < 0.5,
        "second loop at {}",
        got[24].1
    );
}

#[test]
fn the_megamind_trailer_plays_through_ffmpeg() {
    let Some(path) = common::shared("data/video/Megamind.avi") else {
        return;
    };
    if !have_ffmpeg("Megamind.avi is MPEG-4 Part 2") {
        return;
    }
    let mut src = VideoSource::open(&path, unpaced()).unwrap();
    assert_eq!(src.size(), (720, 528));
    let n = src.frame_count();
    let got = frames(&mut src, 10_000);
    assert_eq!(Some(got.len() as u64), n, "every frame the container lists");
    assert!(got.len() >= 250, "{} frames", got.len());
    for w in got.windows(2) {
        let gap = w[1].1 - w[0].1;
        assert!((gap - 1001.0 / 24.0).abs() < 0.5, "23.976 fps: gap {gap}");
    }
}

/// Run this test binary again for one test with `EMOCAM_FFMPEG` set, so the environment of the
/// other tests, running in parallel threads, is left alone. Returns true in the child.
fn in_child_with_ffmpeg(test: &str, ffmpeg: &str) -> bool {
    if std::env::var("EMOCAM_VIDEO_TEST_CHILD").is_ok() {
        return true;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env("EMOCAM_VIDEO_TEST_CHILD", "1")
        .env("EMOCAM_FFMPEG", ffmpeg)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{test} with EMOCAM_FFMPEG={ffmpeg}:\n{text}"
    );
    assert!(text.contains("1 passed"), "{text}");
    false
}

#[test]
fn without_ffmpeg_the_error_names_the_file_the_codec_and_the_fix() {
    if !in_child_with_ffmpeg(
        "without_ffmpeg_the_error_names_the_file_the_codec_and_the_fix",
        "/nonexistent/ffmpeg",
    ) {
        return;
    }
    for (name, codec) in [
        ("clip.avi", "FMP4 (MPEG-4 Part 2)"),
        ("clip.webm", "V_VP9 (VP9)"),
    ] {
        let err = VideoSource::open(&clip(name), unpaced())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains(name), "{err}");
        assert!(err.contains(codec), "{err}");
        assert!(
            err.contains("apt-get install ffmpeg") && err.contains("EMOCAM_FFMPEG"),
            "{err}"
        );
    }
    // H.264 in MP4 needs nothing.
    assert_eq!(frames(&mut open("high_bframes.mp4"), 1000).len(), 48);
    let err = VideoSource::open_url("rtsp://camera.local/stream", unpaced())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("rtsp://camera.local/stream") && err.contains("FFmpeg"),
        "{err}"
    );
}

#[test]
fn a_stalled_ffmpeg_is_given_up_on_and_killed() {
    let dir = std::env::temp_dir().join(format!("emocam-stalled-ffmpeg-{}", std::process::id()));
    if std::env::var("EMOCAM_VIDEO_TEST_CHILD").is_err() {
        // A pretend FFmpeg: ffprobe answers, ffmpeg never writes a frame.
        std::fs::create_dir_all(&dir).unwrap();
        let script = |name: &str, body: &str| {
            let p = dir.join(name);
            std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        script(
            "ffprobe",
            r#"echo '{"streams":[{"codec_name":"vp9","width":320,"height":180}],"format":{}}'"#,
        );
        script("ffmpeg", "exec sleep 300");
    }
    let fake = dir.join("ffmpeg");
    if !in_child_with_ffmpeg(
        "a_stalled_ffmpeg_is_given_up_on_and_killed",
        fake.to_str().unwrap(),
    ) {
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    let t0 = Instant::now();
    let err = VideoSource::open_with_timeout(&clip("clip.webm"), unpaced(), Duration::from_secs(1))
        .err()
        .unwrap()
        .to_string();
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    assert!(
        err.contains("clip.webm") && err.contains("no frame in 1 s"),
        "{err}"
    );
    // The sleeping child was killed: no `sleep 300` of ours is left.
    match Command::new("ps").args(["-eo", "args"]).output() {
        Ok(ps) => {
            let ps = String::from_utf8_lossy(&ps.stdout);
            assert!(!ps.lines().any(|l| l.trim() == "sleep 300"), "{ps}");
        }
        Err(e) => println!("SKIPPED: checking the child is gone needs ps: {e}"),
    }
}

/// A test frame: the photo (150 px) on the green canvas with its left edge at `x`.
fn canvas_frame(w: u32, h: u32, x: i64) -> RgbImage {
    let photo = emocam::imaging::load_rgb(&common::fixture("astronaut.png")).unwrap();
    let photo = image::imageops::resize(&photo, 150, 150, image::imageops::FilterType::Triangle);
    let mut frame = RgbImage::from_pixel(w, h, image::Rgb([0, 192, 0]));
    image::imageops::overlay(&mut frame, &photo, x, (h as i64 - 150) / 2);
    frame
}

/// Peak signal-to-noise ratio of `b` against `a` in dB, over `a`'s area.
fn psnr(a: &RgbImage, b: &RgbImage) -> f64 {
    let mut se = 0.0;
    for (x, y, p) in a.enumerate_pixels() {
        let q = b.get_pixel(x, y);
        for c in 0..3 {
            let d = p[c] as f64 - q[c] as f64;
            se += d * d;
        }
    }
    let mse = se / (a.width() * a.height() * 3) as f64;
    10.0 * (255.0 * 255.0 / mse).log10()
}

/// PSNR of the gray images the face stage sees.
fn luma_psnr(a: &RgbImage, b: &RgbImage) -> f64 {
    let (ga, gb) = (emocam::imaging::to_gray(a), emocam::imaging::to_gray(b));
    let mut se = 0.0;
    for (p, q) in ga.pixels().zip(gb.pixels()) {
        let d = p[0] as f64 - q[0] as f64;
        se += d * d;
    }
    let mse = se / (ga.width() * ga.height()) as f64;
    10.0 * (255.0 * 255.0 / mse).log10()
}

#[test]
fn the_writer_round_trips_frames_times_and_content() {
    use emocam::video_out::Mp4Writer;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("annotated.mp4");
    let (w, h) = (320, 240);
    // A variable frame rate, starting at an arbitrary time.
    let times: Vec<f64> = (0..40)
        .map(|i| 1234.5 + i as f64 * 33.4 + (i % 3) as f64 * 7.25)
        .collect();
    let originals: Vec<RgbImage> = (0..40).map(|i| canvas_frame(w, h, 160 - 3 * i)).collect();
    let mut writer = Mp4Writer::create(&path, w, h).unwrap();
    assert_eq!(writer.coded_size(), (w, h));
    for (f, t) in originals.iter().zip(&times) {
        writer.write(f, *t).unwrap();
    }
    let written = writer.finish().unwrap();
    assert_eq!((written.frames, written.width, written.height), (40, w, h));
    assert!(std::fs::metadata(&path).unwrap().len() < 400_000);

    let mut src = VideoSource::open(&path, unpaced()).unwrap();
    assert_eq!(src.decoder(), "openh264");
    assert_eq!(src.frame_count(), Some(40));
    assert_eq!(src.key_frames_ms().unwrap()[0], 0.0);
    let got = frames(&mut src, 1000);
    assert_eq!(got.len(), 40);
    for (i, ((rgb, ms), orig)) in got.iter().zip(&originals).enumerate() {
        assert_eq!(rgb.dimensions(), (w, h));
        let want = times[i] - times[0];
        assert!(
            (ms - want).abs() < 0.5,
            "frame {i}: {ms} ms, wrote {want} ms"
        );
        // Gray (what the face stage sees) is near lossless; colour loses more to 4:2:0.
        let (luma, rgb_q) = (luma_psnr(orig, rgb), psnr(orig, rgb));
        assert!(
            luma > 36.0 && rgb_q > 28.0,
            "frame {i}: PSNR {luma:.1} dB gray, {rgb_q:.1} dB RGB"
        );
        assert_eq!(
            edge_x(rgb),
            edge_x(orig),
            "frame {i} is the frame written there"
        );
    }
    // An independent decoder reads the same file.
    if have_ffmpeg("checking the written file with ffprobe") {
        let tools = emocam::capture::video::Ffmpeg::find().unwrap();
        let out = Command::new(tools.ffprobe)
            .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
            .args([
                "-show_entries",
                "stream=codec_name,width,height,nb_read_frames",
                "-of",
                "csv=p=0",
            ])
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "h264,320,240,40"
        );
    }
}

#[test]
fn the_writer_pads_odd_sizes_to_even() {
    use emocam::video_out::Mp4Writer;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("odd.mp4");
    let mut writer = Mp4Writer::create(&path, 321, 181).unwrap();
    assert_eq!(writer.coded_size(), (322, 182));
    let frame = canvas_frame(321, 181, 100);
    for i in 0..5 {
        writer.write(&frame, i as f64 * 40.0).unwrap();
    }
    let written = writer.finish().unwrap();
    assert_eq!((written.width, written.height), (322, 182));
    assert!((written.duration_ms - 200.0).abs() < 0.5, "{written:?}");
    let got = frames(&mut VideoSource::open(&path, unpaced()).unwrap(), 100);
    assert_eq!(got.len(), 5);
    let rgb = &got[4].0;
    assert_eq!(rgb.dimensions(), (322, 182));
    // The input is the top-left corner; the added column repeats the last one.
    let inner = image::imageops::crop_imm(rgb, 0, 0, 321, 181).to_image();
    assert!(luma_psnr(&frame, &inner) > 36.0);
    assert_eq!(edge_x(rgb), edge_x(&frame));
}

#[test]
fn writer_errors_name_the_file_and_what_was_expected() {
    use emocam::video_out::Mp4Writer;
    let dir = tempfile::tempdir().unwrap();
    let nowhere = dir.path().join("no/such/folder/out.mp4");
    let err = Mp4Writer::create(&nowhere, 64, 64)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("no/such/folder/out.mp4"), "{err}");
    let err = Mp4Writer::create(&dir.path().join("big.mp4"), 8000, 8000)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("big.mp4") && err.contains("8000x8000"),
        "{err}"
    );

    let path = dir.path().join("out.mp4");
    let mut w = Mp4Writer::create(&path, 64, 48).unwrap();
    let err = w
        .write(&RgbImage::new(32, 32), 0.0)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("out.mp4") && err.contains("32x32") && err.contains("64x48"),
        "{err}"
    );
    w.write(&RgbImage::new(64, 48), 10.0).unwrap();
    let err = w
        .write(&RgbImage::new(64, 48), 10.0)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("out.mp4") && err.contains("after the previous"),
        "{err}"
    );
    w.finish().unwrap();

    let empty = dir.path().join("empty.mp4");
    let err = Mp4Writer::create(&empty, 64, 48)
        .unwrap()
        .finish()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("empty.mp4") && err.contains("no frames"),
        "{err}"
    );
}

#[test]
fn the_pipeline_scores_every_frame_of_a_video_unpaced() {
    use emocam::pipeline::{Notice, Pipeline, PipelineConfig};
    use std::sync::Arc;
    let name = "high_bframes.mp4";
    let source = capture::open(&SourceSpec::Path(clip(name)), unpaced()).unwrap();
    let p = Pipeline::start(
        source,
        emocam::Classifier::builtin().unwrap(),
        PipelineConfig::default(),
        Arc::new(|| {}),
    )
    .unwrap();
    let want = expected_pts(name);
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.len() < want.len() && Instant::now() < deadline {
        if let Ok(s) = p.results().recv_timeout(Duration::from_millis(200)) {
            got.push(s);
        }
    }
    assert_eq!(got.len(), want.len(), "every frame is scored");
    for (i, (s, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(s.frame.index, i as u64);
        assert!((s.frame.source_ms.unwrap() - w).abs() < 0.5, "frame {i}");
    }
    let with_face = got.iter().filter(|s| s.faces.len() == 1).count();
    assert!(
        with_face * 10 >= got.len() * 8,
        "a face in {with_face} of {} frames",
        got.len()
    );
    assert_eq!(
        p.notices().recv_timeout(Duration::from_secs(5)).unwrap(),
        Notice::SourceEnded
    );
    let stats = p.stats();
    assert_eq!(
        (stats.captured, stats.scored, stats.dropped()),
        (48, 48, 0),
        "{stats:?}"
    );
    p.shutdown();
}

/// Serve `body` over HTTP on a local port until the test ends; returns the URL.
fn serve_http(body: Vec<u8>, name: &str) -> String {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/{name}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { break };
            let body = body.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                // Read the request's head up to its blank line.
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                    if line == "\r\n" || line == "\n" {
                        break;
                    }
                    line.clear();
                }
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: video/webm\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(head.as_bytes());
                let _ = conn.write_all(&body);
            });
        }
    });
    url
}

#[test]
fn a_network_stream_plays_live_through_ffmpeg() {
    if !have_ffmpeg("network streams are read through FFmpeg") {
        return;
    }
    let url = serve_http(std::fs::read(clip("clip.webm")).unwrap(), "clip.webm");
    let spec: SourceSpec = url.parse().unwrap();
    assert_eq!(spec, SourceSpec::Url(url.clone()));
    let mut src = capture::open(&spec, SourceOptions::default()).unwrap();
    assert_eq!(
        src.pacing(),
        Pacing::Live,
        "the pipeline never makes a stream wait"
    );
    assert!(src.describe().contains(&url), "{}", src.describe());
    let err = src.seek(100.0).unwrap_err().to_string();
    assert!(err.contains("live stream"), "{err}");
    let got = frames(src.as_mut(), 1000);
    assert_matches_ffprobe("clip.webm", &got);
}

/// Open and play `path` to its end or first error; the error text if any.
fn play_to_end(path: &Path) -> Option<String> {
    let mut src = match VideoSource::open(path, unpaced()) {
        Ok(s) => s,
        Err(e) => return Some(e.to_string()),
    };
    for _ in 0..200 {
        match src.next_frame() {
            Ok(Some(_)) => {}
            Ok(None) => return None,
            Err(e) => return Some(e.to_string()),
        }
    }
    panic!("{}: more frames than the clip has", path.display());
}

#[test]
fn cut_or_damaged_files_give_errors_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["high_bframes.mp4", "truncated.mp4", "vfr.mp4", "clip.mov"] {
        let bytes = std::fs::read(clip(name)).unwrap();
        // Cut anywhere, headers included.
        for k in 1..20 {
            let cut = bytes.len() * k / 20;
            let p = dir.path().join(format!("cut_{k}_{name}"));
            std::fs::write(&p, &bytes[..cut]).unwrap();
            if let Some(e) = play_to_end(&p) {
                assert!(e.contains(&format!("cut_{k}_{name}")), "{e}");
            }
        }
        // Bytes overwritten, in the header and in the frame data.
        for k in 1..20 {
            let mut b = bytes.clone();
            let at = b.len() * k / 20;
            for x in &mut b[at..(at + 16).min(bytes.len())] {
                *x ^= 0x5A;
            }
            let p = dir.path().join(format!("bad_{k}_{name}"));
            std::fs::write(&p, &b).unwrap();
            if let Some(e) = play_to_end(&p) {
                assert!(e.contains(&format!("bad_{k}_{name}")), "{e}");
            }
        }
    }
}
