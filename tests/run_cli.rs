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

    let text = std::fs::read_to_string(&csv).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next().unwrap(), emocam::record::CSV_HEADER);
    let rows: Vec<Vec<String>> = lines.map(common::csv_fields).collect();
    // The first demo scene shows one smiling face in every frame.
    assert!(rows.len() >= 55, "only {} rows", rows.len());
    assert_eq!(rows.len() as u64, summary["faces"].as_u64().unwrap());
    let model = emocam::Classifier::builtin().unwrap().name().to_string();
    let mut last_frame = 0;
    for r in &rows {
        assert_eq!(r.len(), 17, "{r:?}");
        assert!(
            r[0].ends_with('Z') && r[0].contains('T') && r[0].contains('.'),
            "RFC 3339 with ms: {}",
            r[0]
        );
        let frame: u64 = r[2].parse().unwrap();
        assert!(frame >= last_frame && frame < 60);
        last_frame = frame;
        assert_eq!(r[3], "0", "one face keeps id 0");
        assert_eq!(
            r[16], model,
            "the model column holds the model's name, commas and all"
        );
        let sum: f64 = r[8..15].iter().map(|v| v.parse::<f64>().unwrap()).sum();
        assert!((sum - 1.0).abs() < 1e-3, "{r:?}");
    }
    let happy = rows.iter().filter(|r| r[15] == "happy").count();
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
