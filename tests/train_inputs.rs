//! Training refuses what cannot train, before it allocates or writes anything: settings out of
//! range or not numbers, shapes too large (or zero), weights that are not finite; and a run
//! whose loss stops being a number ends with a message, never saving its weights.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use emocam::Emotion;
use emocam::dataset::LabeledFaces;
use emocam::model::vgg::VggConfig;
use emocam::train::{Distill, LossKind, NetConfig, OptimizerKind, Rng, TrainConfig, train};
use image::GrayImage;

/// Class k has a bright horizontal band in the k-th third of a noisy 16x16 image.
fn dataset(n_per_class: usize, seed: u64) -> LabeledFaces {
    let mut rng = Rng::new(seed);
    let mut set = LabeledFaces::default();
    for (k, class) in [Emotion::Angry, Emotion::Disgust, Emotion::Fear]
        .into_iter()
        .enumerate()
    {
        for i in 0..n_per_class {
            let band = (k * 5 + 1) as u32..(k * 5 + 5) as u32;
            let img = GrayImage::from_fn(16, 16, |_, y| {
                let base = if band.contains(&y) { 200.0 } else { 60.0 };
                image::Luma([(base + rng.unit() * 50.0 - 25.0) as u8])
            });
            set.images.push(img);
            set.labels.push(class);
            set.sources.push(format!("{}/{i}.png", class.name()));
        }
    }
    set
}

fn config(out: PathBuf) -> TrainConfig {
    TrainConfig {
        net: NetConfig::Vgg(VggConfig {
            widths: vec![8, 16],
            dense: 16,
            classes: 3,
            input_size: 16,
            dropout: 0.0,
            bn_eps: 1e-5,
        }),
        epochs: 3,
        batch_size: 16,
        lr: 0.01,
        optimizer: OptimizerKind::AdamW,
        momentum: 0.9,
        weight_decay: 1e-4,
        loss: LossKind::CrossEntropy,
        warmup_epochs: 1,
        class_weighting: false,
        augment: None,
        init: None,
        distill: None,
        partner: None,
        freeze: 0,
        patience: 0,
        out,
        seed: 5,
        resume: false,
        stop_after: None,
        threads: Some(1),
        progress: false,
        command: "test".into(),
        data_description: "generated bands".into(),
    }
}

/// Names of the files in `dir`.
fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Each setting out of range, or not a number, is refused naming its option and what it
/// accepts, before anything is written beside the output.
#[test]
fn settings_out_of_range_are_refused_up_front_naming_the_option() {
    let dir = tempfile::tempdir().unwrap();
    let (tr, val) = (dataset(4, 1), dataset(2, 2));
    // Never read: the settings are refused first.
    fn teacher(weight: f64, temperature: f64) -> Option<Distill> {
        Some(Distill {
            teacher: "absent-teacher.safetensors".into(),
            weight,
            temperature,
        })
    }
    type Change = Box<dyn Fn(&mut TrainConfig)>;
    let cases: Vec<(&str, &str, Change)> = vec![
        (
            "--momentum: NaN",
            "from 0 up to",
            Box::new(|c| c.momentum = f64::NAN),
        ),
        (
            "--momentum: 1.5",
            "from 0 up to",
            Box::new(|c| c.momentum = 1.5),
        ),
        (
            "--weight-decay: NaN",
            "from 0 to 1",
            Box::new(|c| c.weight_decay = f64::NAN),
        ),
        (
            "--lr: NaN",
            "above 0 and below 10",
            Box::new(|c| c.lr = f64::NAN),
        ),
        (
            "--lr: inf",
            "above 0 and below 10",
            Box::new(|c| c.lr = f64::INFINITY),
        ),
        (
            "--lr: -1",
            "above 0 and below 10",
            Box::new(|c| c.lr = -1.0),
        ),
        (
            "--batch-size: 0",
            "expected 1 to",
            Box::new(|c| c.batch_size = 0),
        ),
        ("--epochs: 0", "expected 1 to", Box::new(|c| c.epochs = 0)),
        (
            "--distill-weight: NaN",
            "from 0 to 1",
            Box::new(|c| c.distill = teacher(f64::NAN, 2.0)),
        ),
        (
            "--distill-weight: -0.5",
            "from 0 to 1",
            Box::new(|c| c.distill = teacher(-0.5, 2.0)),
        ),
        (
            "--temperature: NaN",
            "above 0, at most 100",
            Box::new(|c| c.distill = teacher(0.5, f64::NAN)),
        ),
        (
            "--temperature: 1000",
            "above 0, at most 100",
            Box::new(|c| c.distill = teacher(0.5, 1000.0)),
        ),
    ];
    for (i, (named, range, change)) in cases.into_iter().enumerate() {
        let out = dir.path().join(format!("run{i}.safetensors"));
        let mut cfg = config(out);
        change(&mut cfg);
        let err = train(&tr, &val, &cfg).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("invalid {named}")) && err.contains(range),
            "expected 'invalid {named}...{range}', got: {err}"
        );
    }
    assert!(
        files(dir.path()).is_empty(),
        "something was written: {:?}",
        files(dir.path())
    );
}

/// Shapes of zero, beyond what a weights file may declare or hold, or too large for memory are
/// refused with a message naming the option, without allocating them.
#[test]
fn absurd_and_empty_shapes_are_refused_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let (tr, val) = (dataset(4, 1), dataset(2, 2));
    let vgg = |widths: Vec<usize>, dense: usize| {
        NetConfig::Vgg(VggConfig {
            widths,
            dense,
            classes: 3,
            input_size: 16,
            dropout: 0.0,
            bn_eps: 1e-5,
        })
    };
    for (net, batch, named, said) in [
        (vgg(vec![100_000], 16), 16, "--widths", "expected 1 to 1024"),
        (vgg(vec![0, 0], 16), 16, "--widths", "a block of 0 channels"),
        (
            vgg(vec![8], 100_000_000),
            16,
            "--dense",
            "expected a width of 1 to 8192",
        ),
        (vgg(vec![8], 0), 16, "--dense", "0: expected a width"),
        (
            vgg(vec![1024; 4], 16),
            60_000,
            "network and batch size",
            "needs about",
        ),
        (
            vgg(vec![1024; 4], 8192),
            16,
            "network size",
            "more than the 256 MiB a weights file may have",
        ),
    ] {
        let mut cfg = config(dir.path().join("big.safetensors"));
        cfg.net = net;
        cfg.batch_size = batch;
        let t0 = Instant::now();
        let err = train(&tr, &val, &cfg).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("invalid {named}")) && err.contains(said),
            "expected 'invalid {named}...{said}', got: {err}"
        );
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "took {:?}",
            t0.elapsed()
        );
    }
    assert!(files(dir.path()).is_empty());
}

/// Writes a tiny folder dataset (two classes of 48x48 PNGs) for the command line.
fn image_folders(root: &Path) -> (PathBuf, PathBuf) {
    let mut rng = Rng::new(7);
    for split in ["train", "val"] {
        for class in ["angry", "happy"] {
            let d = root.join(split).join(class);
            std::fs::create_dir_all(&d).unwrap();
            for i in 0..3 {
                let img =
                    GrayImage::from_fn(48, 48, |_, _| image::Luma([(rng.next_u64() >> 56) as u8]));
                img.save(d.join(format!("{i}.png"))).unwrap();
            }
        }
    }
    (root.join("train"), root.join("val"))
}

/// The command line once aborted (SIGABRT) trying to allocate hundreds of gigabytes for
/// `--widths 100000` or `--dense 100000000`, and failed inside candle for `--widths 0,0` and
/// `--dense 0`; each now exits with status 1 and a message naming the option.
#[test]
fn the_command_line_refuses_absurd_shapes_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let (data, val) = image_folders(dir.path());
    for (args, said) in [
        (&["--widths", "100000"][..], "--widths"),
        (&["--widths", "0,0"][..], "a block of 0 channels"),
        (&["--dense", "100000000"][..], "--dense"),
        (&["--dense", "0"][..], "--dense"),
        (&["--momentum", "NaN"][..], "--momentum: NaN"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_emocam"))
            .arg("train")
            .arg("--data")
            .arg(&data)
            .arg("--val")
            .arg(&val)
            .args(["--epochs", "1", "--threads", "1"])
            .arg("--out")
            .arg(dir.path().join("cli.safetensors"))
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{args:?}: {:?} {stderr}",
            out.status
        );
        assert!(stderr.contains(said), "{args:?}: {stderr}");
        assert!(
            !dir.path().join("cli.log.csv").exists(),
            "{args:?} started training"
        );
    }
}

/// A tensor's name, shape and values.
type Named = (String, Vec<usize>, Vec<f32>);

/// The metadata and tensors of a safetensors file of f32 tensors, in name order.
fn read(path: &Path) -> (HashMap<String, String>, Vec<Named>) {
    let bytes = std::fs::read(path).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let values = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            (name, view.shape().to_vec(), values)
        })
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    (header.metadata().clone().unwrap_or_default(), tensors)
}

/// Rewrite `path` with `change` applied to the values of the tensors it picks.
fn rewrite(path: &Path, pick: impl Fn(&str) -> bool, change: impl Fn(f32) -> f32) {
    let (meta, tensors) = read(path);
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(name, shape, values)| {
            let values: Vec<f32> = if pick(&name) {
                values.into_iter().map(&change).collect()
            } else {
                values
            };
            let b = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            (name, shape, b)
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = bytes
        .iter()
        .map(|(n, s, b)| {
            let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                .unwrap();
            (n.clone(), view)
        })
        .collect();
    safetensors::serialize_to_file(views, Some(meta), path).unwrap();
}

/// Starting weights (`--init`) and a resumed checkpoint holding a NaN or an infinity are
/// refused naming the file and the tensor, before anything trains.
#[test]
fn weights_that_are_not_finite_are_refused_naming_file_and_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let (tr, val) = (dataset(6, 1), dataset(3, 2));
    let out = dir.path().join("run.safetensors");
    let mut cfg = config(out.clone());
    cfg.stop_after = Some(1);
    train(&tr, &val, &cfg).unwrap();

    for (bad, name) in [
        (f32::NAN, "nan-init.safetensors"),
        (f32::INFINITY, "inf-init.safetensors"),
    ] {
        let init = dir.path().join(name);
        std::fs::copy(&out, &init).unwrap();
        rewrite(
            &init,
            |n| n == "block2.conv1.weight",
            |v| if v > 0.0 { bad } else { v },
        );
        let mut fine_tune = config(dir.path().join("tuned.safetensors"));
        fine_tune.init = Some(init);
        let err = train(&tr, &val, &fine_tune).unwrap_err().to_string();
        assert!(
            err.contains(name) && err.contains("block2.conv1.weight"),
            "{err}"
        );
        assert!(!dir.path().join("tuned.safetensors").exists());
    }

    let last = dir.path().join("run.last.safetensors");
    rewrite(&last, |n| n == "head.fc1.bias", |_| f32::NAN);
    let tampered = std::fs::read(&last).unwrap();
    cfg.resume = true;
    cfg.stop_after = None;
    let err = train(&tr, &val, &cfg).unwrap_err().to_string();
    assert!(
        err.contains("run.last.safetensors") && err.contains("head.fc1.bias"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&last).unwrap(),
        tampered,
        "the checkpoint was touched"
    );
}

/// Weights so large that the logits overflow make the loss NaN at the first step: the run
/// stops saying when, and leaves the previous epoch's checkpoints as they were (no NaN ever
/// saved as the best or the last weights).
#[test]
fn a_loss_that_stops_being_a_number_ends_the_run_and_keeps_the_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let (tr, val) = (dataset(6, 1), dataset(3, 2));
    let out = dir.path().join("run.safetensors");
    let mut cfg = config(out.clone());
    cfg.stop_after = Some(1);
    train(&tr, &val, &cfg).unwrap();

    let last = dir.path().join("run.last.safetensors");
    rewrite(
        &last,
        |n| n.starts_with("head.") && n.ends_with(".weight"),
        |v| v * 1e30,
    );
    let before: Vec<(String, Vec<u8>)> = files(dir.path())
        .into_iter()
        .filter(|f| !f.ends_with(".log.csv"))
        .map(|f| (f.clone(), std::fs::read(dir.path().join(&f)).unwrap()))
        .collect();
    cfg.resume = true;
    cfg.stop_after = None;
    let err = train(&tr, &val, &cfg).unwrap_err().to_string();
    assert!(
        err.contains("loss became") && err.contains("epoch 2, step 1 of 2"),
        "{err}"
    );
    assert!(err.contains("checkpoints of epoch 1 are kept"), "{err}");
    for (name, bytes) in &before {
        assert_eq!(
            &std::fs::read(dir.path().join(name)).unwrap(),
            bytes,
            "{name} changed"
        );
    }
    let log = std::fs::read_to_string(dir.path().join("run.log.csv")).unwrap();
    assert_eq!(log.lines().count(), 2, "only epoch 1 is logged: {log}");
    let (_, best) = read(&out);
    assert!(best.iter().all(|(_, _, v)| v.iter().all(|x| x.is_finite())));

    // From scratch the same weights stop the first epoch, and nothing is saved.
    let mut fresh = config(dir.path().join("fresh.safetensors"));
    fresh.init = Some(last);
    let err = train(&tr, &val, &fresh).unwrap_err().to_string();
    assert!(
        err.contains("epoch 1, step 1") && err.contains("nothing was saved"),
        "{err}"
    );
    assert!(!dir.path().join("fresh.safetensors").exists());
    assert!(!dir.path().join("fresh.last.safetensors").exists());
}
