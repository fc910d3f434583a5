//! End to end: `emocam run` on the demo source writes the CSV the README documents.

mod common;

use std::process::Command;

#[test]
fn run_on_the_demo_writes_a_csv_and_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("session.csv");
    let out = Command::new(env!("CARGO_BIN_EXE_emocam"))
        .args([
            "run",
            "--source",
            "demo",
            "--max-frames",
            "60",
            "--fps",
            "0",
            "--json",
            "--csv",
        ])
        .arg(&csv)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["frames"], 60);
    for key in ["faces", "fps", "latency_ms_median", "dropped"] {
        assert!(summary[key].is_number(), "{key} missing in {summary}");
    }
    assert!(summary["fps"].as_f64().unwrap() > 1.0);

    let (header, rows) = common::read_csv(&csv);
    let model_classes = emocam::Classifier::builtin().unwrap().classes().clone();
    assert_eq!(header, emocam::record::csv_header(&model_classes));
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    // The first demo scene shows one smiling face in every frame.
    assert!(rows.len() >= 55, "only {} rows", rows.len());
    assert_eq!(rows.len() as u64, summary["faces"].as_u64().unwrap());
    let model = emocam::Classifier::builtin().unwrap().name().to_string();
    let mut last_frame = 0;
    for r in &rows {
        assert_eq!(r.len(), header.len(), "{r:?}");
        let ts = &r[col("timestamp")];
        assert!(
            ts.ends_with('Z') && ts.contains('T') && ts.contains('.'),
            "RFC 3339 with ms: {ts}"
        );
        let frame: u64 = r[col("frame")].parse().unwrap();
        assert!(frame >= last_frame && frame < 60);
        last_frame = frame;
        assert_eq!(r[col("face_id")], "0", "one face keeps id 0");
        assert_eq!(r[col("detected")], "1");
        assert_eq!(
            r[col("model")],
            model,
            "the model column holds the model's name, commas and all"
        );
        assert!(r[col("source")].starts_with("demo"), "{r:?}");
        let sum: f64 = model_classes
            .names()
            .iter()
            .map(|c| r[col(c)].parse::<f64>().unwrap())
            .sum();
        assert!((sum - 1.0).abs() < 1e-3, "{r:?}");
    }
    let happy = rows
        .iter()
        .filter(|r| r[col("top_emotion")] == "happy")
        .count();
    assert!(
        happy * 10 >= rows.len() * 9,
        "the astronaut smiles: {happy} of {}",
        rows.len()
    );
}

#[test]
fn run_reports_a_bad_source() {
    let out = Command::new(env!("CARGO_BIN_EXE_emocam"))
        .args(["run", "--source", "/no/such/folder", "--max-frames", "5"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/no/such/folder"));
}

fn emocam() -> Command {
    Command::new(env!("CARGO_BIN_EXE_emocam"))
}

/// Start `emocam run` on the endless demo, let it record for a while, then send `signal`: it
/// must stop cleanly, keep every processed row whole, print its summary and exit 128 + signal.
fn stop_with(signal: i32, code: i32) {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("session.csv");
    let child = emocam()
        .args(["run", "--source", "demo", "--fps", "30", "--json", "--csv"])
        .arg(&csv)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until rows reach the file (they are written every second), then a little more so
    // that some rows are still buffered when the signal comes.
    let t0 = std::time::Instant::now();
    while std::fs::metadata(&csv).map_or(0, |m| m.len()) < 2000 {
        assert!(
            t0.elapsed().as_secs() < 60,
            "no rows reached {}",
            csv.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(600));
    // SAFETY: sends a signal to our own child process.
    assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(code),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let text = std::fs::read_to_string(&csv).unwrap();
    assert!(text.ends_with('\n'), "the CSV ends on a whole line");
    let (header, rows) = common::read_csv(&csv);
    assert!(rows.iter().all(|r| r.len() == header.len()));
    assert!(rows.len() > 20, "{} rows", rows.len());
    assert_eq!(
        rows.len() as u64,
        summary["csv_rows"].as_u64().unwrap(),
        "every row the summary counts is in the file"
    );
    assert_eq!(
        summary["faces"], summary["csv_rows"],
        "every processed face was recorded: {summary}"
    );
    let sig = if signal == libc::SIGINT {
        "SIGINT"
    } else {
        "SIGTERM"
    };
    assert_eq!(summary["stopped_by"], sig);
}

#[test]
fn ctrl_c_during_run_keeps_every_row_and_prints_the_summary() {
    stop_with(libc::SIGINT, 130);
}

#[test]
fn sigterm_during_run_keeps_every_row_and_prints_the_summary() {
    stop_with(libc::SIGTERM, 143);
}

#[test]
fn an_existing_csv_is_refused_unless_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("keep.csv");
    std::fs::write(&csv, "precious\n").unwrap();
    let run = |extra: &[&str]| {
        emocam()
            .args(["run", "--source", "demo", "--fps", "0", "--max-frames", "3"])
            .args(extra)
            .arg("--csv")
            .arg(&csv)
            .output()
            .unwrap()
    };
    let out = run(&[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("keep.csv") && err.contains("--overwrite"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&csv).unwrap(), "precious\n");
    let out = run(&["--overwrite"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        std::fs::read_to_string(&csv)
            .unwrap()
            .starts_with("timestamp,")
    );
}

#[test]
fn a_still_image_is_searched_thoroughly() {
    // The live settings find none of the 29 small faces of this 1666x1136 photograph.
    let out = emocam()
        .args(["run", "--json", "--source"])
        .arg(common::fixture("solvay_1927_scientists.jpg"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["frames"], 1);
    let faces = summary["faces"].as_u64().unwrap();
    assert!(faces >= 25, "{faces} faces of about 29");
}

#[test]
fn several_sources_give_one_csv_and_one_json_line_each() {
    let dir = tempfile::tempdir().unwrap();
    let out = emocam()
        .args(["run", "--json", "--fps", "0", "--max-frames", "4"])
        .args(["--source", "demo:astronaut", "--source"])
        .arg(common::fixture("astronaut.png"))
        .arg("--out-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    for (line, name) in lines.iter().zip(["demo-astronaut.csv", "astronaut.csv"]) {
        let csv = dir.path().join(name);
        assert_eq!(line["csv"], csv.display().to_string());
        let (_, rows) = common::read_csv(&csv);
        assert_eq!(rows.len() as u64, line["csv_rows"].as_u64().unwrap());
        assert!(!rows.is_empty(), "{name}");
    }
}

#[test]
fn an_empty_source_is_refused_with_a_clear_message() {
    let out = emocam().args(["run", "--source", ""]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the source is empty"), "{err}");
}
