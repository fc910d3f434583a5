//! The `emocam predict` and `emocam eval` command lines, run as a user would.

mod common;

use std::process::Command;

fn emocam() -> Command {
    Command::new(env!("CARGO_BIN_EXE_emocam"))
}

#[test]
fn predict_json_prints_one_object_per_image() {
    let astronaut = common::fixture("astronaut.png");
    let dir = tempfile::tempdir().unwrap();
    let blank = dir.path().join("blank.png");
    image::GrayImage::from_pixel(64, 64, image::Luma([200]))
        .save(&blank)
        .unwrap();
    let out = emocam()
        .args(["predict", "--format", "json"])
        .arg(&astronaut)
        .arg(&blank)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    let faces = lines[0]["faces"].as_array().unwrap();
    assert_eq!(faces.len(), 1);
    assert_eq!(faces[0]["top"], "happy");
    let scores = faces[0]["scores"].as_object().unwrap();
    let keys: Vec<&str> = scores.keys().map(|k| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"
        ]
    );
    let sum: f64 = scores.values().map(|v| v.as_f64().unwrap()).sum();
    assert!((sum - 1.0).abs() < 1e-4);
    for k in ["x", "y", "w", "h"] {
        assert!(faces[0]["box"][k].is_i64() || faces[0]["box"][k].is_u64());
    }
    assert_eq!(lines[1]["faces"].as_array().unwrap().len(), 0);
}

#[test]
fn predict_reports_unreadable_images_and_goes_on() {
    let out = emocam()
        .args(["predict", "--format", "csv", "no/such/image.jpg"])
        .arg(common::fixture("astronaut.png"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no/such/image.jpg"), "{stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<&str> = stdout.lines().collect();
    let classes = emocam::Classifier::builtin().unwrap().classes().clone();
    let header = String::from_utf8(emocam::output::predict_csv_header(&classes)).unwrap();
    assert_eq!(rows[0], header.trim_end());
    assert_eq!(rows.len(), 2, "{stdout}");
    assert!(rows[1].ends_with(",happy"), "{stdout}");
}

#[test]
fn predict_with_bad_weights_fails_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.safetensors");
    std::fs::write(&bad, b"nonsense").unwrap();
    let out = emocam()
        .args(["predict", "--weights"])
        .arg(&bad)
        .arg(common::fixture("astronaut.png"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.safetensors") && stderr.contains("not a safetensors file"),
        "{stderr}"
    );
}

#[test]
fn eval_json_on_a_fer2013_csv() {
    let Some(val) = common::shared("data/fer2013/val") else {
        return;
    };
    // A small FER2013-style CSV made from the first 10 images of each val class.
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("fer2013.csv");
    let mut text = String::from("emotion,pixels,Usage\n");
    for (id, class) in [
        "angry", "disgust", "fear", "happy", "sad", "surprise", "neutral",
    ]
    .iter()
    .enumerate()
    {
        let mut files: Vec<_> = std::fs::read_dir(val.join(class))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for (i, f) in files.iter().take(10).enumerate() {
            let img = image::open(f).unwrap().to_luma8();
            let px: Vec<String> = img.as_raw().iter().map(|v| v.to_string()).collect();
            let usage = if i % 2 == 0 {
                "PublicTest"
            } else {
                "PrivateTest"
            };
            text.push_str(&format!("{id},{},{usage}\n", px.join(" ")));
        }
    }
    std::fs::write(&csv, text).unwrap();
    let out = emocam()
        .args(["eval", "--json", "--usage", "PublicTest", "--data"])
        .arg(&csv)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["n"], 35);
    let acc = v["accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc));
    assert_eq!(v["per_class_recall"].as_object().unwrap().len(), 7);
    let confusion = v["confusion"].as_array().unwrap();
    let total: u64 = confusion
        .iter()
        .flat_map(|r| r.as_array().unwrap())
        .map(|c| c.as_u64().unwrap())
        .sum();
    assert_eq!(total, 35);
    let correct: u64 = (0..7).map(|i| confusion[i][i].as_u64().unwrap()).sum();
    assert!((acc - correct as f64 / 35.0).abs() < 1e-3);

    // The text report has the same accuracy, and a bad --usage says what it found.
    let out = emocam()
        .args(["eval", "--usage", "Nope", "--data"])
        .arg(&csv)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no samples with Usage \"Nope\""));
}

#[test]
fn a_reader_that_goes_away_ends_the_output_without_a_panic() {
    // `emocam eval ... | head -1`: stdout is a pipe whose reader has already gone.
    let dir = tempfile::tempdir().unwrap();
    for class in ["happy", "sad"] {
        std::fs::create_dir(dir.path().join(class)).unwrap();
        image::GrayImage::from_pixel(48, 48, image::Luma([120]))
            .save(dir.path().join(class).join("face.png"))
            .unwrap();
    }
    let mut child = emocam()
        .args(["eval", "--data"])
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn eval_writes_one_row_per_face_and_names_a_file_it_cannot_write() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("faces");
    for (class, value) in [("happy", 200), ("sad", 40)] {
        std::fs::create_dir_all(data.join(class)).unwrap();
        for i in 0..2 {
            image::GrayImage::from_pixel(48, 48, image::Luma([value + i]))
                .save(data.join(class).join(format!("face, {i}.png")))
                .unwrap();
        }
    }
    let csv = dir.path().join("rows.csv");
    let out = emocam()
        .args(["eval", "--data"])
        .arg(&data)
        .arg("--per-image")
        .arg(&csv)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&csv).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "source,true,predicted,correct,angry,disgust,fear,happy,sad,surprise,neutral"
    );
    assert_eq!(lines.len(), 5, "{text}");
    let mut correct = 0;
    for (line, truth) in lines[1..].iter().zip(["happy", "happy", "sad", "sad"]) {
        // The file name holds a comma, so the source is quoted.
        let (source, rest) = line[1..].split_once("\",").unwrap();
        assert!(source.ends_with(".png") && source.contains(truth), "{line}");
        let fields: Vec<&str> = rest.split(',').collect();
        assert_eq!(fields[0], truth);
        assert_eq!(fields[2], if fields[1] == truth { "1" } else { "0" });
        correct += fields[2].parse::<usize>().unwrap();
        let p: Vec<f64> = fields[3..].iter().map(|v| v.parse().unwrap()).collect();
        assert_eq!(p.len(), 7);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-3, "{line}");
    }
    // The table printed agrees with the rows written.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let want = format!("accuracy = {:.2}%", 100.0 * correct as f64 / 4.0);
    assert!(stdout.contains(&want), "{stdout}");

    let bad = dir.path().join("no-such-dir").join("rows.csv");
    let out = emocam()
        .args(["eval", "--data"])
        .arg(&data)
        .arg("--per-image")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no-such-dir"), "{err}");
    // The cause is said once.
    assert_eq!(err.matches("No such file").count(), 1, "{err}");
}
