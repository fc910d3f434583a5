//! `emocam report`: recordings with known scores in, figures, HTML, PNG and errors out.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use emocam::record::{Row, csv_header};
use emocam::report::{self, Recording, Summary, TimeAxis};
use emocam::{Classes, Emotion, FaceBox, Scores};

const FER: [&str; 7] = [
    "angry", "disgust", "fear", "happy", "sad", "surprise", "neutral",
];

/// A recording in the newer form (`source_ms`, `detected`, `source`), written as CSV text.
struct Gen {
    classes: Vec<&'static str>,
    text: String,
}

impl Gen {
    fn new(classes: &[&'static str]) -> Self {
        let text = format!(
            "timestamp,elapsed_ms,source_ms,frame,face_id,detected,x,y,w,h,{},top_emotion,model,source\n",
            classes.join(",")
        );
        Self {
            classes: classes.to_vec(),
            text,
        }
    }

    /// One row at 30 fps: the frame's time is its number / 30 s.
    fn row(&mut self, frame: u64, face: u64, detected: bool, scores: &[f32]) {
        assert_eq!(scores.len(), self.classes.len());
        let t_ms = frame as f64 * 1000.0 / 30.0;
        let ts = humantime::format_rfc3339_millis(
            SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_000_000_000 + t_ms as u64),
        );
        let top = (0..scores.len()).fold(0, |b, i| if scores[i] > scores[b] { i } else { b });
        let s: Vec<String> = scores.iter().map(|p| format!("{p:.6}")).collect();
        self.text += &format!(
            "{ts},{:.1},{t_ms:.3},{frame},{face},{},{},{},{},{},{},{},\"mini <b>Xception</b>, v2\",\"cam, <left> & \"\"quoted\"\"\"\n",
            t_ms + 5.0,
            u8::from(detected),
            10 + face * 100,
            20,
            80,
            80,
            s.join(","),
            self.classes[top]
        );
    }

    fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, &self.text).unwrap();
        p
    }
}

/// FER scores with `main` at `p` and the rest shared out.
fn fer(main: Emotion, p: f32) -> Vec<f32> {
    let rest = (1.0 - p) / 6.0;
    let mut v = vec![rest; 7];
    v[main.index()] = p;
    v
}

/// Face 0: 20 s, happy on top for the first 12 s (with three spikes and a decoy beside the
/// first), neutral for 8 s, every 10th frame carried by the tracker. Face 1: 10 s from frame
/// 100, sad for 7.5 s then surprise. Face 2: 10 rows (a third of a second).
fn two_faces() -> Gen {
    let mut g = Gen::new(&FER);
    for frame in 0..600u64 {
        let mut s0 = if frame < 360 {
            fer(Emotion::Happy, 0.7)
        } else {
            fer(Emotion::Neutral, 0.6)
        };
        match frame {
            30 => s0 = fer(Emotion::Happy, 0.95),
            31 => s0 = fer(Emotion::Happy, 0.949),
            150 => s0 = fer(Emotion::Happy, 0.93),
            300 => s0 = fer(Emotion::Happy, 0.91),
            _ => {}
        }
        g.row(frame, 0, frame % 10 != 0, &s0);
        if (100..400).contains(&frame) {
            let s1 = if frame < 325 {
                fer(Emotion::Sad, 0.5)
            } else {
                fer(Emotion::Surprise, 0.8)
            };
            g.row(frame, 1, true, &s1);
        }
        if (500..510).contains(&frame) {
            g.row(frame, 2, true, &fer(Emotion::Angry, 0.9));
        }
    }
    g
}

fn summary_of(g: &Gen) -> Summary {
    let rec = Recording::from_reader(Path::new("session.csv"), g.text.as_bytes()).unwrap();
    Summary::from(&rec)
}

fn class(s: &Summary, name: &str) -> usize {
    s.classes.iter().position(|c| c.name == name).unwrap()
}

#[test]
fn two_faces_get_two_sections_with_the_generated_figures() {
    let s = summary_of(&two_faces());
    assert_eq!(s.rows, 600 + 300 + 10);
    assert_eq!(s.frames, 600);
    assert_eq!(s.time_axis, TimeAxis::Source);
    assert_eq!(s.face_count(), 3);
    let ids: Vec<u64> = s.detailed().map(|f| f.id).collect();
    assert_eq!(ids, [0, 1]);
    let (f0, f1) = (&s.faces[0], &s.faces[1]);
    let (happy, neutral, sad, surprise) = (
        class(&s, "happy"),
        class(&s, "neutral"),
        class(&s, "sad"),
        class(&s, "surprise"),
    );
    assert!((f0.shares[happy] - 0.6).abs() < 1e-3, "{:?}", f0.shares);
    assert!((f0.shares[neutral] - 0.4).abs() < 1e-3, "{:?}", f0.shares);
    assert!((f1.shares[sad] - 0.75).abs() < 1e-3, "{:?}", f1.shares);
    assert!((f1.shares[surprise] - 0.25).abs() < 1e-3, "{:?}", f1.shares);
    assert!((f0.seen_ms - 20_000.0).abs() < 1.0, "{}", f0.seen_ms);
    assert!((f1.seen_ms - 10_000.0).abs() < 1.0, "{}", f1.seen_ms);
    assert_eq!(f0.carried, Some(60));
    assert_eq!(f1.carried, Some(0));
    // The strongest happy moments are the three spikes; the decoy beside the first is not a
    // moment of its own.
    let frames: Vec<u64> = f0.moments[happy].iter().map(|m| m.frame).collect();
    assert_eq!(frames, [30, 150, 300]);
    assert!((f0.moments[happy][0].score - 0.95).abs() < 1e-6);
    assert!((f0.moments[happy][1].t_ms - 5000.0).abs() < 0.01);
    // The third face was seen briefly.
    assert_eq!(s.brief.faces, 1);
    assert_eq!(s.brief.rows, 10);
    assert_eq!(s.brief.ids, [2]);

    let page = report::html(&s);
    assert_eq!(
        page.matches("<section class=\"face\" id=\"face-").count(),
        2
    );
    assert!(page.contains("id=\"face-0\"") && page.contains("id=\"face-1\""));
    assert!(!page.contains("id=\"face-2\""));
    assert!(page.contains("Seen briefly") && page.contains("#2") && page.contains("10 rows"));
    assert!(page.contains("frame 30") && page.contains("frame 150") && page.contains("frame 300"));
    assert!(page.contains("carried by the tracker in 60"));
    // Strings from the CSV are escaped wherever they appear.
    assert!(
        page.contains("cam, &lt;left&gt; &amp; &quot;quoted&quot;"),
        "source"
    );
    assert!(
        page.contains("mini &lt;b&gt;Xception&lt;/b&gt;, v2"),
        "model"
    );
    assert!(!page.contains("<left>") && !page.contains("<b>Xception"));
    // Self-contained: nothing is fetched or run.
    for bad in [
        "<script", "http://", "https://", "<img", "<link", "@import", "url(",
    ] {
        assert!(!page.contains(bad), "{bad}");
    }
    // Date from the first timestamp.
    assert!(page.contains("2025-11-24 16:00:00 UTC"), "date");
}

#[test]
fn an_eight_class_recording_with_contempt_reports() {
    let classes = [
        "neutral", "happy", "sad", "surprise", "fear", "disgust", "angry", "contempt",
    ];
    let mut g = Gen::new(&classes);
    for frame in 0..90 {
        let mut s = vec![0.05f32; 8];
        s[if frame < 60 { 7 } else { 1 }] = 0.65;
        g.row(frame, 4, true, &s);
    }
    let s = summary_of(&g);
    assert_eq!(s.classes.len(), 8);
    let contempt = class(&s, "contempt");
    assert!((s.faces[0].shares[contempt] - 2.0 / 3.0).abs() < 1e-3);
    let page = report::html(&s);
    assert!(page.contains("id=\"face-4\""));
    assert!(page.contains("#00968c"), "contempt has its own colour");
    assert!(page.contains("#fabe28"), "happy keeps the app's colour");
}

#[test]
fn a_five_class_recording_with_unknown_classes_reports() {
    let classes = ["calm", "joy", "anger", "awe", "boredom"];
    let mut g = Gen::new(&classes);
    for frame in 0..60 {
        g.row(frame, 0, true, &[0.1, 0.6, 0.1, 0.1, 0.1]);
    }
    let s = summary_of(&g);
    let colours: std::collections::HashSet<_> = s.classes.iter().map(|c| c.color).collect();
    assert_eq!(colours.len(), 5, "unknown classes get distinct colours");
    assert!(report::html(&s).contains("mostly joy"));
}

/// The header of recordings made before `source_ms`, `detected` and `source` existed.
const OLD_HEADER: &str = "timestamp,elapsed_ms,frame,face_id,x,y,w,h,angry,disgust,fear,happy,sad,surprise,neutral,top_emotion,model";

/// The header the recorder writes now, for the seven FER classes.
fn header() -> String {
    csv_header(&Classes::fer()).join(",")
}

#[test]
fn an_old_format_recording_reports() {
    let mut text = format!("{OLD_HEADER}\n");
    for frame in 0..60u64 {
        text += &format!(
            "2023-11-14T22:13:{:02}.{:03}Z,{:.1},{frame},7,1,2,30,30,0.05,0.05,0.05,0.6,0.1,0.05,0.1,happy,\"emocam, FER2013\"\n",
            20 + frame * 33 / 1000,
            frame * 33 % 1000,
            frame as f64 * 33.3
        );
    }
    let rec = Recording::from_reader(Path::new("old.csv"), text.as_bytes()).unwrap();
    assert_eq!(rec.time_axis, TimeAxis::Elapsed);
    assert!(!rec.has_detected);
    assert_eq!(rec.models, ["emocam, FER2013"]);
    let s = Summary::from(&rec);
    assert_eq!(s.faces[0].carried, None);
    assert_eq!(s.faces[0].shares[class(&s, "happy")], 1.0);
    let page = report::html(&s);
    assert!(page.contains("id=\"face-7\"") && !page.contains("carried by the tracker"));
    assert!(
        page.contains("<small>not recorded</small>"),
        "no source column"
    );
}

#[test]
fn a_recording_written_by_the_recorder_reports_on_video_time() {
    let mut text = format!("{}\n", header());
    for frame in 0..60u64 {
        let row = Row {
            timestamp: SystemTime::UNIX_EPOCH
                + Duration::from_millis(1_700_000_000_000 + frame * 33),
            elapsed_ms: frame as f64 * 10.0,
            source_ms: Some(frame as f64 * 40.0),
            frame,
            face_id: 7,
            detected: frame % 10 != 0,
            bbox: FaceBox {
                x: 1,
                y: 2,
                w: 30,
                h: 30,
                score: 3.0,
            },
            scores: Scores::fer([0.05, 0.05, 0.05, 0.6, 0.1, 0.05, 0.1]),
            model: "emocam, FER2013".into(),
            source: "clip.mp4".into(),
        };
        text += &String::from_utf8(row.to_csv()).unwrap();
    }
    let rec = Recording::from_reader(Path::new("new.csv"), text.as_bytes()).unwrap();
    assert_eq!(rec.time_axis, TimeAxis::Source);
    assert!(rec.has_detected);
    let s = Summary::from(&rec);
    assert_eq!(s.faces[0].carried, Some(6));
    let page = report::html(&s);
    assert!(page.contains("clip.mp4"), "the source column is shown");
    // 60 frames 40 ms apart on the video's clock: the face is seen for 2.4 s, not 0.6.
    assert!(s.faces[0].seen_ms > 2000.0, "{}", s.faces[0].seen_ms);
}

fn read_err(text: &str) -> String {
    Recording::from_reader(Path::new("bad.csv"), text.as_bytes())
        .unwrap_err()
        .to_string()
}

#[test]
fn damaged_recordings_are_refused_naming_the_line_and_what_was_expected() {
    let good = two_faces().text;
    let lines: Vec<&str> = good.lines().collect();
    let with = |line_no: usize, new: String| {
        let mut v: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        v[line_no - 1] = new;
        v.join("\n") + "\n"
    };
    // A field that is not a number, on line 5.
    let e = read_err(&with(5, lines[4].replacen(",3,0,1,", ",3,zero,1,", 1)));
    assert!(e.starts_with("bad.csv: line 5: column face_id"), "{e}");
    assert!(e.contains("\"zero\""), "{e}");
    // A probability outside [0, 1], on line 9.
    let fields: Vec<&str> = lines[8].split(',').collect();
    let mut f = fields.clone();
    f[13] = "1.5";
    let e = read_err(&with(9, f.join(",")));
    assert!(
        e.contains("line 9: column happy: expected a probability in [0, 1], found \"1.5\""),
        "{e}"
    );
    // A row with the wrong number of fields, on line 12.
    let e = read_err(&with(12, "1,2,3".into()));
    assert!(e.contains("line 12: 3 fields, expected"), "{e}");
    // A missing column, by name, on the header line.
    let e = read_err(&good.replacen(",face_id,", ",face,", 1));
    assert!(
        e.contains("line 1: the header has no column \"face_id\""),
        "{e}"
    );
    // A top emotion that is no class column.
    let e = read_err(&with(3, lines[2].replacen(",happy,", ",joy,", 1)));
    assert!(
        e.contains("line 3: column top_emotion") && e.contains("\"joy\""),
        "{e}"
    );
    // One class column only.
    let e = read_err("elapsed_ms,frame,face_id,x,y,w,h,happy,top_emotion\n");
    assert!(e.contains("at least two"), "{e}");
    // Not a recording at all.
    let e = read_err("name,age\nTom,3\n");
    assert!(
        e.contains("line 1: the header has no column \"elapsed_ms\""),
        "{e}"
    );
}

#[test]
fn an_empty_file_is_refused_and_a_header_only_file_reports_no_faces() {
    let e = read_err("");
    assert!(
        e.contains("bad.csv: empty file, expected a header") && e.contains("elapsed_ms"),
        "{e}"
    );
    let rec =
        Recording::from_reader(Path::new("h.csv"), format!("{}\n", header()).as_bytes()).unwrap();
    let s = Summary::from(&rec);
    assert_eq!((s.rows, s.face_count()), (0, 0));
    let page = report::html(&s);
    assert!(page.contains("No faces were recorded"));
    assert!(!page.contains("class=\"face\""));
    let png = report::png_bytes(&s).unwrap();
    let img = image::load_from_memory(&png).unwrap();
    assert_eq!((img.width(), img.height()), report::PNG_SIZE);
}

#[test]
fn files_that_are_not_regular_are_refused_without_reading() {
    if Path::new("/dev/zero").exists() {
        let e = Recording::read(Path::new("/dev/zero"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/dev/zero: not a regular file (a device)"),
            "{e}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe.csv");
    let made = Command::new("mkfifo").arg(&fifo).status();
    if !made.is_ok_and(|s| s.success()) {
        println!("SKIPPED: the FIFO case (mkfifo is not available)");
        return;
    }
    // Opening a FIFO with no writer would block; the reader must not.
    let e = Recording::read(&fifo).unwrap_err().to_string();
    assert!(e.contains("not a regular file (a FIFO)"), "{e}");
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn the_png_summary_is_written_decodes_and_shows_the_faces() {
    let s = summary_of(&two_faces());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("summary.png");
    // An existing, world-readable file is replaced by an owner-only one.
    std::fs::write(&path, b"old").unwrap();
    report::png(&s, &path).unwrap();
    #[cfg(unix)]
    assert_eq!(mode(&path), 0o600);
    let img = image::open(&path).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), report::PNG_SIZE);
    let colours: std::collections::HashSet<[u8; 3]> = img.pixels().map(|p| p.0).collect();
    assert!(colours.len() > 200, "{} colours", colours.len());
    let share = |c: [u8; 3]| img.pixels().filter(|p| p.0 == c).count() as f64 / (1280.0 * 720.0);
    assert!(share([250, 190, 40]) > 0.002, "happy is drawn");
    assert!(share([60, 120, 220]) > 0.001, "sad is drawn");
    assert!(share([255, 255, 255]) < 0.97, "not blank");
}

#[test]
fn a_long_session_stays_small_and_a_crowded_one_too() {
    // An hour at 30 fps of one face with noisy scores: 108,000 rows.
    let mut g = Gen::new(&FER);
    let mut x = 12345u32;
    for frame in 0..108_000u64 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let main = Emotion::ALL[(frame / 900 % 7) as usize];
        g.row(
            frame,
            frame / 54_000,
            true,
            &fer(main, 0.4 + (x % 500) as f32 / 1000.0),
        );
    }
    let s = summary_of(&g);
    let page = report::html(&s);
    assert!(page.len() < 5_000_000, "{} bytes", page.len());
    for f in s.detailed() {
        assert!(f.timeline.t_ms.len() <= 1000);
    }
    // 400 faces, each for 2 s, with their top class changing every frame.
    let mut g = Gen::new(&FER);
    for face in 0..400u64 {
        for i in 0..60u64 {
            let frame = face * 30 + i;
            g.row(frame, face, true, &fer(Emotion::ALL[(i % 7) as usize], 0.5));
        }
    }
    let s = summary_of(&g);
    assert_eq!(s.faces.len(), 400);
    assert_eq!(s.detailed().count(), report::summary::MAX_SECTIONS);
    let page = report::html(&s);
    assert!(page.len() < 5_000_000, "{} bytes", page.len());
    assert_eq!(
        page.matches(" id=\"face-").count(),
        400,
        "every face has an anchor"
    );
}

fn emocam() -> Command {
    Command::new(env!("CARGO_BIN_EXE_emocam"))
}

#[test]
fn the_cli_writes_owner_only_reports_and_refuses_to_clobber() {
    let dir = tempfile::tempdir().unwrap();
    let csv = two_faces().write(dir.path(), "session.csv");
    let png = dir.path().join("summary.png");
    let out = emocam()
        .arg("report")
        .arg(&csv)
        .arg("--png")
        .arg(&png)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let html = dir.path().join("session.html");
    assert!(stdout.contains(&html.display().to_string()), "{stdout}");
    let page = std::fs::read_to_string(&html).unwrap();
    assert_eq!(page.matches("<section class=\"face\"").count(), 2);
    assert!(image::open(&png).is_ok());
    #[cfg(unix)]
    {
        assert_eq!(mode(&html), 0o600);
        assert_eq!(mode(&png), 0o600);
    }
    // Again: refused, nothing changed.
    let before = std::fs::metadata(&html).unwrap().modified().unwrap();
    let out = emocam().arg("report").arg(&csv).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("session.html") && err.contains("--overwrite"),
        "{err}"
    );
    assert_eq!(
        std::fs::metadata(&html).unwrap().modified().unwrap(),
        before
    );
    // With --overwrite, and to another name with -o.
    let out = emocam()
        .args(["report", "--overwrite", "-o"])
        .arg(dir.path().join("r.html"))
        .arg(&csv)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("r.html").exists());
    // The recording itself is never an output, not even with --overwrite.
    let out = emocam()
        .args(["report", "--overwrite", "-o"])
        .arg(&csv)
        .arg(&csv)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("is the recording"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&csv).unwrap(), two_faces().text);
    // A damaged recording: the error names the file and line, and no report is left.
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, format!("{}\n1,2,3\n", header())).unwrap();
    let out = emocam().arg("report").arg(&bad).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("bad.csv: line 2: 3 fields"),
        "{err}"
    );
    assert!(!dir.path().join("bad.html").exists());
}
