//! Training on generated images with a learnable pattern: the loss falls, accuracy rises well
//! above chance, the saved file reloads into the same predictions, and frozen blocks stay put.

use emocam::dataset::LabeledFaces;
use emocam::model::vgg::VggConfig;
use emocam::train::{
    Augment, Distill, LossKind, NetConfig, OptimizerKind, Partner, Rng, TrainConfig, train,
};
use emocam::{Classifier, Emotion, eval};
use image::GrayImage;

/// Class k has a bright horizontal band in the k-th third of a noisy 16x16 image.
fn dataset(n_per_class: usize, seed: u64) -> LabeledFaces {
    let mut rng = Rng::new(seed);
    let mut set = LabeledFaces::default();
    for (k, class) in [Emotion::Angry, Emotion::Disgust, Emotion::Fear]
        .into_iter()
        .enumerate()
    {
        for _ in 0..n_per_class {
            let band = (k * 5 + 1) as u32..(k * 5 + 5) as u32;
            let img = GrayImage::from_fn(16, 16, |_, y| {
                let base = if band.contains(&y) { 200.0 } else { 60.0 };
                image::Luma([(base + rng.unit() * 50.0 - 25.0) as u8])
            });
            set.images.push(img);
            set.labels.push(class);
        }
    }
    set
}

fn config(out: std::path::PathBuf) -> TrainConfig {
    TrainConfig {
        net: NetConfig::Vgg(VggConfig {
            widths: vec![8, 16],
            dense: 16,
            classes: 3,
            input_size: 16,
            dropout: 0.1,
            bn_eps: 1e-5,
        }),
        epochs: 6,
        batch_size: 16,
        lr: 0.01,
        optimizer: OptimizerKind::AdamW,
        momentum: 0.9,
        weight_decay: 1e-4,
        loss: LossKind::CrossEntropy,
        warmup_epochs: 1,
        class_weighting: true,
        augment: Some(Augment {
            flip: 0.5,
            shift: 1,
            rotate_deg: 3.0,
            brightness: 0.05,
            contrast: 0.1,
        }),
        init: None,
        distill: None,
        partner: None,
        freeze: 0,
        patience: 0,
        out,
        seed: 3,
        resume: false,
        stop_after: None,
        threads: Some(1),
        progress: false,
        command: "test".into(),
        data_description: "generated bands".into(),
    }
}

#[test]
fn a_short_run_learns_the_pattern_and_the_file_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bands.safetensors");
    let (tr, val) = (dataset(40, 1), dataset(15, 2));
    let summary = train(&tr, &val, &config(out.clone())).unwrap();
    let h = &summary.history;
    assert_eq!(h.len(), 6);
    println!("{h:#?}");
    assert!(
        h.last().unwrap().train_loss < 0.5 * h[0].train_loss,
        "loss did not fall: {h:?}"
    );
    assert!(
        summary.best_val_acc > 0.9,
        "val accuracy {} (chance is 0.33)",
        summary.best_val_acc
    );

    // The saved file loads like any weights file and scores what training measured.
    let clf = Classifier::load(&out).unwrap();
    assert_eq!(
        clf.spec().classes,
        vec![Emotion::Angry, Emotion::Disgust, Emotion::Fear]
    );
    assert_eq!(clf.input_size(), 16);
    let report = eval::evaluate(&clf, &val, false).unwrap();
    assert!(
        (report.accuracy - summary.best_val_acc).abs() <= 1.0 / val.len() as f64 + 1e-9,
        "{} vs {}",
        report.accuracy,
        summary.best_val_acc
    );

    // Log, curves and resume state sit beside the output.
    let png = image::open(dir.path().join("bands.curves.png")).unwrap();
    assert_eq!((png.width(), png.height()), (900, 420));
    let log = std::fs::read_to_string(dir.path().join("bands.log.csv")).unwrap();
    assert_eq!(log.lines().count(), 7, "{log}");
    assert!(log.starts_with("epoch,lr,train_loss,train_acc,val_loss,val_acc"));

    // --resume continues from the last epoch up to a larger epoch count.
    let mut more = config(out.clone());
    more.epochs = 8;
    more.resume = true;
    let resumed = train(&tr, &val, &more).unwrap();
    assert_eq!(resumed.epochs_run, 8);
    assert_eq!(resumed.history.len(), 8);
    for (a, b) in resumed.history[..6].iter().zip(&summary.history) {
        assert_eq!(a.epoch, b.epoch);
        assert!((a.val_acc - b.val_acc).abs() < 1e-9 && (a.train_loss - b.train_loss).abs() < 1e-9);
    }
    assert!(
        resumed.history[7].lr < resumed.history[5].lr,
        "the schedule goes on where it stopped"
    );
}

/// Every tensor of a safetensors file, by name.
fn tensors(path: &std::path::Path) -> std::collections::HashMap<String, Vec<f32>> {
    candle_core::safetensors::load(path, &candle_core::Device::Cpu)
        .unwrap()
        .into_iter()
        .map(|(k, t)| (k, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .collect()
}

#[test]
fn an_interrupted_run_resumed_ends_where_an_uninterrupted_one_does() {
    let dir = tempfile::tempdir().unwrap();
    let (tr, val) = (dataset(20, 6), dataset(8, 7));
    for optimizer in [OptimizerKind::AdamW, OptimizerKind::Sgd] {
        // Dropout on: its masks follow the seed, per epoch, as the shuffling does.
        let run = |name: &str, stop_after: Option<usize>, resume: bool| {
            let mut cfg = config(dir.path().join(name));
            cfg.epochs = 4;
            cfg.optimizer = optimizer;
            cfg.stop_after = stop_after;
            cfg.resume = resume;
            train(&tr, &val, &cfg).unwrap()
        };
        let whole = run("whole.safetensors", None, false);
        let first = run("parts.safetensors", Some(2), false);
        assert_eq!(first.epochs_run, 2, "stopped after two epochs");
        let rest = run("parts.safetensors", None, true);
        assert_eq!(rest.epochs_run, 4);
        // Equal up to float rounding (the optimiser's state goes through a file at the break;
        // a fresh one would differ by whole update steps).
        for (a, b) in whole.history.iter().zip(&rest.history) {
            let close = (a.train_loss - b.train_loss).abs() <= 1e-5 * a.train_loss.abs().max(1e-3);
            assert!(close, "{optimizer:?} epoch {}: {a:?} vs {b:?}", a.epoch);
        }
        let log = std::fs::read_to_string(dir.path().join("parts.log.csv")).unwrap();
        assert_eq!(
            log.lines().count(),
            1 + 4,
            "header and one row per epoch:\n{log}"
        );
        let (a, b) = (
            tensors(&dir.path().join("whole.last.safetensors")),
            tensors(&dir.path().join("parts.last.safetensors")),
        );
        assert_eq!(a.len(), b.len());
        for (name, va) in &a {
            let worst = va
                .iter()
                .zip(&b[name])
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            assert!(
                worst < 1e-5,
                "{optimizer:?}: {name} differs by {worst} after resuming"
            );
        }
    }
}

#[test]
fn fine_tuning_with_frozen_blocks_leaves_them_bit_identical() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first.safetensors");
    let (tr, val) = (dataset(20, 4), dataset(8, 5));
    let mut cfg = config(first.clone());
    cfg.epochs = 1;
    cfg.lr = 0.003;
    train(&tr, &val, &cfg).unwrap();

    let tuned = dir.path().join("tuned.safetensors");
    let mut ft = config(tuned.clone());
    ft.epochs = 2;
    ft.lr = 0.05;
    ft.init = Some(first.clone());
    ft.freeze = 1;
    ft.optimizer = OptimizerKind::Sgd;
    ft.loss = LossKind::Mse;
    train(&tr, &val, &ft).unwrap();

    let a = candle_core::safetensors::load(&first, &candle_core::Device::Cpu).unwrap();
    let b = candle_core::safetensors::load(&tuned, &candle_core::Device::Cpu).unwrap();
    let (mut frozen, mut changed) = (0, 0);
    for (name, t) in &a {
        let same = t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
            == b[name].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        if name.starts_with("block1.") {
            assert!(same, "{name} changed although block 1 was frozen");
            frozen += 1;
        } else if !same {
            changed += 1;
        }
    }
    assert!(changed > 0, "nothing outside block 1 trained");
    assert_eq!(
        frozen,
        2 * 5,
        "two conv weights and two batch norms of four tensors each... counted {frozen}"
    );
}

/// mini-Xception fine-tunes from the shipped weights: a new 3-class head, the stem and first
/// block frozen bit-identical, the rest learning, and the result loads as a mini-Xception.
#[test]
fn mini_xception_fine_tunes_from_the_shipped_weights() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("mx.safetensors");
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("weights")
        .join("mini-xception-fer2013.safetensors");
    let (tr, val) = (dataset(24, 6), dataset(10, 7));
    let mut cfg = config(out.clone());
    cfg.net = NetConfig::MiniXception {
        classes: 3,
        bn_eps: 1e-3,
    };
    cfg.epochs = 4;
    cfg.lr = 5e-3;
    cfg.init = Some(shipped.clone());
    cfg.freeze = 2;
    // Data-parallel steps: two workers share each batch.
    cfg.threads = Some(2);
    let summary = train(&tr, &val, &cfg).unwrap();
    let h = &summary.history;
    println!("{h:#?}");
    assert!(
        h.last().unwrap().train_loss < h[0].train_loss,
        "loss did not fall: {h:?}"
    );
    assert!(
        summary.best_val_acc > 0.5,
        "val accuracy {} (chance is 0.33)",
        summary.best_val_acc
    );

    let clf = Classifier::load(&out).unwrap();
    assert_eq!(
        clf.spec().architecture,
        emocam::model::Architecture::MiniXception
    );
    assert_eq!(clf.input_size(), 64);
    let report = eval::evaluate(&clf, &val, false).unwrap();
    assert!(
        (report.accuracy - summary.best_val_acc).abs() <= 1.0 / val.len() as f64 + 1e-9,
        "{} vs {}",
        report.accuracy,
        summary.best_val_acc
    );

    let a = candle_core::safetensors::load(&shipped, &candle_core::Device::Cpu).unwrap();
    let b = candle_core::safetensors::load(&out, &candle_core::Device::Cpu).unwrap();
    for (name, t) in &b {
        let same = a.get(name).is_some_and(|s| {
            s.flatten_all().unwrap().to_vec1::<f32>().unwrap()
                == t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        });
        if name.starts_with("stem.") || name.starts_with("block1.") {
            assert!(same, "{name} changed although it was frozen");
        } else if name.starts_with("block4.") {
            assert!(!same, "{name} did not train");
        }
    }
    assert_eq!(b["head.conv.weight"].dims(), &[3, 128, 3, 3]);
}

/// Training feeds faces scaled to [-1, 1]; weights that expect [0, 1] are refused as a start,
/// with the file named, instead of being fine-tuned on inputs they never saw.
#[test]
fn fine_tuning_refuses_weights_with_another_input_scaling() {
    let dir = tempfile::tempdir().unwrap();
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("weights")
        .join("mini-xception-fer2013.safetensors");
    let bytes = std::fs::read(&shipped).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    header["__metadata__"]["input_scaling"] = "zero_to_one".into();
    let header = serde_json::to_vec(&header).unwrap();
    let zero_one = dir.path().join("zero-one.safetensors");
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend(&header);
    out.extend(&bytes[8 + n..]);
    std::fs::write(&zero_one, out).unwrap();
    assert_eq!(
        Classifier::load(&zero_one).unwrap().spec().scaling,
        emocam::model::InputScaling::ZeroToOne,
        "the rewritten file is a valid model"
    );

    let mut cfg = config(dir.path().join("tuned.safetensors"));
    cfg.net = NetConfig::MiniXception {
        classes: 3,
        bn_eps: 1e-3,
    };
    cfg.epochs = 1;
    cfg.init = Some(zero_one.clone());
    let err = train(&dataset(4, 8), &dataset(2, 9), &cfg)
        .expect_err("fine-tuning from [0, 1] weights must be refused")
        .to_string();
    assert!(
        err.contains("zero-one.safetensors") && err.contains("zero_to_one"),
        "{err}"
    );
}

/// `--resume` after an early stop trains nothing more, and a last checkpoint that does not
/// match the saved state (a run cut off while saving) is refused with both files named.
#[test]
fn resume_honours_an_early_stop_and_refuses_mismatched_files() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run.safetensors");
    let (tr, val) = (dataset(10, 11), dataset(6, 12));
    let mut cfg = config(out.clone());
    cfg.epochs = 10;
    // No prediction can change, so no epoch after the first is better: every block frozen
    // (batch-norm running statistics included) and too small a rate for the head.
    cfg.freeze = 2;
    cfg.lr = 1e-9;
    cfg.patience = 1;
    let first = train(&tr, &val, &cfg).unwrap();
    assert!(first.stopped_early, "{first:?}");
    assert_eq!(first.epochs_run, 2);
    let last = dir.path().join("run.last.safetensors");
    let saved = std::fs::read(&last).unwrap();

    cfg.resume = true;
    let again = train(&tr, &val, &cfg).unwrap();
    assert!(again.stopped_early);
    assert_eq!(again.epochs_run, 2, "an early-stopped run trained on");
    assert_eq!(
        std::fs::read(&last).unwrap(),
        saved,
        "the checkpoint changed"
    );
    assert!(
        !dir.path().read_dir().unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".partial")),
        "a partial file was left behind"
    );

    let state_path = dir.path().join("run.state.json");
    let state = std::fs::read_to_string(&state_path).unwrap();
    std::fs::write(
        &state_path,
        state.replace("\"epochs_done\": 2", "\"epochs_done\": 1"),
    )
    .unwrap();
    let err = train(&tr, &val, &cfg).unwrap_err().to_string();
    assert!(
        err.contains("run.last.safetensors")
            && err.contains("run.state.json")
            && err.contains("epoch 2"),
        "{err}"
    );
}

/// More pooling blocks than the input can be halved by is refused before anything trains.
#[test]
fn too_many_blocks_for_the_input_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path().join("deep.safetensors"));
    if let NetConfig::Vgg(v) = &mut cfg.net {
        v.widths = vec![4, 4, 4, 4, 4];
    }
    let err = train(&dataset(2, 1), &dataset(1, 2), &cfg)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--widths") && err.contains("at most 4"),
        "{err}"
    );
}

/// The same images with every label moved to the next class: a net that learns from these
/// labels alone gets the validation set wrong.
fn shifted_labels(mut set: LabeledFaces) -> LabeledFaces {
    let classes = [Emotion::Angry, Emotion::Disgust, Emotion::Fear];
    for l in &mut set.labels {
        let k = classes.iter().position(|c| c == l).unwrap();
        *l = classes[(k + 1) % 3];
    }
    set
}

#[test]
fn distillation_learns_the_teachers_decisions_over_wrong_labels() {
    let dir = tempfile::tempdir().unwrap();
    let (tr, val) = (dataset(40, 1), dataset(15, 2));
    let teacher = dir.path().join("teacher.safetensors");
    let t = train(&tr, &val, &config(teacher.clone())).unwrap();
    assert!(t.best_val_acc > 0.9, "teacher {}", t.best_val_acc);

    let wrong = shifted_labels(tr.clone());
    let student = |weight: f64, name: &str| {
        let mut cfg = config(dir.path().join(name));
        cfg.seed = 11;
        cfg.distill = Some(Distill {
            teacher: teacher.clone(),
            weight,
            temperature: 2.0,
        });
        train(&wrong, &val, &cfg).unwrap()
    };
    // All of the loss from the teacher: the wrong labels do not matter.
    let taught = student(1.0, "taught.safetensors");
    assert!(
        taught.best_val_acc > 0.9,
        "student of the teacher: {}",
        taught.best_val_acc
    );
    // None of it: the student learns the wrong labels (so the test above can fail).
    let alone = student(0.0, "alone.safetensors");
    assert!(
        alone.best_val_acc < 0.5,
        "student of the labels: {}",
        alone.best_val_acc
    );
    let meta = Classifier::load(&dir.path().join("taught.safetensors")).unwrap();
    assert!(
        meta.spec().metadata["train_teacher"].contains("teacher.safetensors"),
        "{:?}",
        meta.spec().metadata
    );

    // Settings out of range and a file that is not weights are refused before training.
    let mut cfg = config(dir.path().join("bad.safetensors"));
    cfg.distill = Some(Distill {
        teacher: teacher.clone(),
        weight: 1.5,
        temperature: 2.0,
    });
    let err = train(&wrong, &val, &cfg).unwrap_err().to_string();
    assert!(err.contains("--distill-weight: 1.5"), "{err}");
    let not_weights = dir.path().join("notes.txt");
    std::fs::write(&not_weights, "hello").unwrap();
    cfg.distill = Some(Distill {
        teacher: not_weights,
        weight: 0.5,
        temperature: 2.0,
    });
    let err = train(&wrong, &val, &cfg).unwrap_err().to_string();
    assert!(err.contains("notes.txt"), "{err}");

    // A teacher that cannot score one of the student's classes is refused, naming the class.
    let two = |set: &LabeledFaces| {
        let mut out = LabeledFaces::default();
        for (img, l) in set.images.iter().zip(&set.labels) {
            if *l != Emotion::Fear {
                out.images.push(img.clone());
                out.labels.push(*l);
            }
        }
        out
    };
    let small = dir.path().join("two-classes.safetensors");
    let mut two_cfg = config(small.clone());
    two_cfg.epochs = 1;
    if let NetConfig::Vgg(v) = &mut two_cfg.net {
        v.classes = 2;
    }
    train(&two(&tr), &two(&val), &two_cfg).unwrap();
    cfg.distill = Some(Distill {
        teacher: small,
        weight: 0.5,
        temperature: 2.0,
    });
    let err = train(&wrong, &val, &cfg).unwrap_err().to_string();
    assert!(
        err.contains("two-classes.safetensors") && err.contains("fear"),
        "{err}"
    );
}

/// `set` with every 'fear' face labelled 'angry'.
fn fear_called_angry(mut set: LabeledFaces) -> LabeledFaces {
    for l in &mut set.labels {
        if *l == Emotion::Fear {
            *l = Emotion::Angry;
        }
    }
    set
}

#[test]
fn a_partner_trained_net_makes_the_pair_right_where_the_partner_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let (tr, val) = (dataset(40, 1), dataset(15, 2));
    // The partner is sure that fear is anger: alone it is right on two classes of three.
    let partner = dir.path().join("partner.safetensors");
    let mut cfg = config(partner.clone());
    // Two epochs, not one: before the weight init was seeded, one epoch now and then learnt
    // nothing (now every run is the same; the margin is for changes to the recipe).
    cfg.epochs = 2;
    cfg.lr = 0.003;
    train(&fear_called_angry(tr.clone()), &val, &cfg).unwrap();
    let alone = eval::evaluate(&Classifier::load(&partner).unwrap(), &val, false).unwrap();
    assert!(
        (0.6..0.7).contains(&alone.accuracy),
        "partner alone {}",
        alone.accuracy
    );

    let pair_accuracy = |net: &std::path::Path, name: &str| {
        let pair = dir.path().join(name);
        emocam::model::ensemble::combine(&[net, &partner], &pair, "pair", &[]).unwrap();
        eval::evaluate(&Classifier::load(&pair).unwrap(), &val, false)
            .unwrap()
            .accuracy
    };
    let net = |with_partner: bool, name: &str| {
        let out = dir.path().join(name);
        let mut cfg = config(out.clone());
        // Ten epochs, not six: before the weight init was seeded, about one run in twenty had
        // not yet learnt to outvote the partner on fear by the sixth (pair 0.67-0.73). Seeded,
        // every run is the same (pair 1.0); the margin is for changes to the recipe.
        cfg.epochs = 10;
        cfg.partner = with_partner.then(|| Partner {
            path: partner.clone(),
            flip: false,
        });
        (train(&tr, &val, &cfg).unwrap(), out)
    };
    let (paired, paired_out) = net(true, "paired.safetensors");
    let (plain, plain_out) = net(false, "plain.safetensors");
    // The accuracy training reports and selects on is the pair's, as `ensemble` makes it.
    let pair = pair_accuracy(&paired_out, "pair.safetensors");
    assert!(
        (paired.best_val_acc - pair).abs() < 1e-9,
        "reported {} vs the ensemble's {pair}",
        paired.best_val_acc
    );
    let plain_pair = pair_accuracy(&plain_out, "plain-pair.safetensors");
    eprintln!(
        "pair with a partner-trained net {pair:.3}, with a net trained alone {plain_pair:.3} \
         (alone {:.3})",
        plain.best_val_acc
    );
    assert!(pair > 0.9, "pair {pair}");
    let spec = Classifier::load(&paired_out).unwrap().spec().clone();
    assert!(
        spec.metadata["train_partner"].contains("partner.safetensors")
            && spec.name.contains("averaged with partner.safetensors"),
        "{:?}",
        spec
    );

    // Validated against the flip-averaged partner, the figure is that of `ensemble --flip`.
    let flipped_out = dir.path().join("flipped.safetensors");
    let mut cfg = config(flipped_out.clone());
    cfg.partner = Some(Partner {
        path: partner.clone(),
        flip: true,
    });
    let flipped = train(&tr, &val, &cfg).unwrap();
    let pair = dir.path().join("flipped-pair.safetensors");
    emocam::model::ensemble::combine(&[&flipped_out, &partner], &pair, "pair", &[1]).unwrap();
    let want = eval::evaluate(&Classifier::load(&pair).unwrap(), &val, false)
        .unwrap()
        .accuracy;
    assert!((flipped.best_val_acc - want).abs() < 1e-9);
    let spec = Classifier::load(&flipped_out).unwrap().spec().clone();
    assert!(
        spec.name.ends_with("partner.safetensors flip-averaged)"),
        "{}",
        spec.name
    );

    // A file that is not weights is refused, named, before any training.
    let not_weights = dir.path().join("notes.txt");
    std::fs::write(&not_weights, "hello").unwrap();
    let mut cfg = config(dir.path().join("bad.safetensors"));
    cfg.partner = Some(Partner {
        path: not_weights,
        flip: false,
    });
    let err = train(&tr, &val, &cfg).unwrap_err().to_string();
    assert!(err.contains("notes.txt"), "{err}");
}

#[test]
fn the_mse_loss_learns_too() {
    // candle's fused softmax has no backward pass: an MSE loss built on it trained nothing.
    let dir = tempfile::tempdir().unwrap();
    let (tr, val) = (dataset(40, 1), dataset(15, 2));
    let mut cfg = config(dir.path().join("mse.safetensors"));
    cfg.loss = LossKind::Mse;
    let s = train(&tr, &val, &cfg).unwrap();
    assert!(s.best_val_acc > 0.9, "{:?}", s.history);
    assert!(
        s.history.last().unwrap().train_loss < s.history[0].train_loss,
        "{:?}",
        s.history
    );
}

#[test]
fn a_resumed_run_reuses_the_teachers_and_partners_scores() {
    let dir = tempfile::tempdir().unwrap();
    let (tr, val) = (dataset(20, 1), dataset(8, 2));
    let helper = dir.path().join("helper.safetensors");
    let mut cfg = config(helper.clone());
    cfg.epochs = 1;
    train(&tr, &val, &cfg).unwrap();

    let out = dir.path().join("student.safetensors");
    let mut cfg = config(out.clone());
    cfg.epochs = 2;
    cfg.stop_after = Some(1);
    cfg.distill = Some(Distill {
        teacher: helper.clone(),
        weight: 0.5,
        temperature: 2.0,
    });
    cfg.partner = Some(Partner {
        path: helper.clone(),
        flip: true,
    });
    let first = train(&tr, &val, &cfg).unwrap();
    assert_eq!(first.tables_reused, 0);
    assert!(dir.path().join("student.teacher.safetensors").is_file());
    assert!(dir.path().join("student.partner.safetensors").is_file());
    cfg.resume = true;
    let resumed = train(&tr, &val, &cfg).unwrap();
    assert_eq!((resumed.epochs_run, resumed.tables_reused), (2, 2));

    // Other training images, or another helper file, are scored afresh.
    let mut other = config(dir.path().join("other.safetensors"));
    other.epochs = 1;
    other.distill = cfg.distill.clone();
    std::fs::copy(
        dir.path().join("student.teacher.safetensors"),
        dir.path().join("other.teacher.safetensors"),
    )
    .unwrap();
    let fresh = train(&dataset(20, 5), &val, &other).unwrap();
    assert_eq!(fresh.tables_reused, 0);
    let mut changed = config(helper.clone());
    changed.epochs = 1;
    changed.seed = 9;
    train(&tr, &val, &changed).unwrap();
    cfg.resume = false;
    cfg.stop_after = None;
    let again = train(&tr, &val, &cfg).unwrap();
    assert_eq!(again.tables_reused, 0);
}

/// `set` with `sources` named the way a class-folder tree names them (`root/<class>/<i>.png`).
fn named(mut set: LabeledFaces, root: &str) -> LabeledFaces {
    set.sources = set
        .labels
        .iter()
        .enumerate()
        .map(|(i, l)| format!("{root}/{l}/{i}.png"))
        .collect();
    set
}

#[test]
fn a_teacher_table_made_elsewhere_teaches_like_a_teacher_model() {
    let dir = tempfile::tempdir().unwrap();
    let classes = [Emotion::Angry, Emotion::Disgust, Emotion::Fear];
    let (tr, val) = (dataset(40, 1), dataset(15, 2));
    // Wrong labels (and folders named after them), all of the loss from the table, which knows
    // the true classes: the student must learn those. The table lists the images backwards,
    // in another class order, with one image too many.
    let wrong = named(shifted_labels(tr.clone()), "data/train");
    let table_classes = [Emotion::Fear, Emotion::Angry, Emotion::Disgust];
    let mut images = vec!["angry/extra.png".to_string()];
    let mut probs = vec![1.0, 0.0, 0.0];
    for i in (0..tr.len()).rev() {
        images.push(emocam::train::table_image_name(
            &wrong.sources[i],
            wrong.labels[i],
        ));
        probs.extend(
            table_classes
                .iter()
                .map(|c| if *c == tr.labels[i] { 0.8 } else { 0.1 }),
        );
    }
    let table = dir.path().join("oof.safetensors");
    emocam::train::save_teacher_table(&table, "test table", &table_classes, &images, &probs)
        .unwrap();

    let mut cfg = config(dir.path().join("taught.safetensors"));
    cfg.seed = 11;
    cfg.distill = Some(Distill {
        teacher: table.clone(),
        weight: 1.0,
        temperature: 2.0,
    });
    let taught = train(&wrong, &val, &cfg).unwrap();
    assert!(
        taught.best_val_acc > 0.9,
        "student of the table: {}",
        taught.best_val_acc
    );
    // No cache is written for a table: it is one already.
    assert!(!dir.path().join("taught.teacher.safetensors").exists());

    // A table that misses a training image is refused, naming the image and the table.
    let short = dir.path().join("short.safetensors");
    emocam::train::save_teacher_table(
        &short,
        "short",
        &table_classes,
        &images[..images.len() - 1],
        &probs[..probs.len() - 3],
    )
    .unwrap();
    cfg.distill.as_mut().unwrap().teacher = short;
    let err = train(&wrong, &val, &cfg).unwrap_err().to_string();
    assert!(
        err.contains("short.safetensors") && err.contains(&wrong.sources[0]),
        "{err}"
    );
    // One that lacks a class the net learns is refused, naming the class.
    let two = dir.path().join("two.safetensors");
    let two_probs: Vec<f32> = probs.chunks(3).flat_map(|r| [r[1], r[2]]).collect();
    emocam::train::save_teacher_table(
        &two,
        "two",
        &[Emotion::Angry, Emotion::Disgust],
        &images,
        &two_probs,
    )
    .unwrap();
    cfg.distill.as_mut().unwrap().teacher = two;
    let err = train(&wrong, &val, &cfg).unwrap_err().to_string();
    assert!(
        err.contains("two.safetensors") && err.contains("fear"),
        "{err}"
    );
    // A name listed twice, a value that is no probability, and images without file names
    // (as a CSV's rows are) are refused, each saying so.
    let refused = |images: &[String], probs: &[f32], set: &LabeledFaces, name: &str| {
        let path = dir.path().join(name);
        emocam::train::save_teacher_table(&path, name, &table_classes, images, probs).unwrap();
        let mut cfg = cfg.clone();
        cfg.distill.as_mut().unwrap().teacher = path;
        train(set, &val, &cfg).unwrap_err().to_string()
    };
    let mut twice = images.clone();
    twice[0] = twice[1].clone();
    let err = refused(&twice, &probs, &wrong, "twice.safetensors");
    assert!(
        err.contains("twice.safetensors") && err.contains("listed twice"),
        "{err}"
    );
    // emocam never writes a table that is not finite; one made elsewhere is refused on reading.
    let mut nan = probs.clone();
    nan[7] = f32::NAN;
    let path = dir.path().join("nan.safetensors");
    let err = emocam::train::save_teacher_table(&path, "nan", &table_classes, &images, &nan)
        .unwrap_err()
        .to_string();
    assert!(err.contains("tensor probs holds NaN"), "{err}");
    let bytes: Vec<u8> = nan.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view = safetensors::tensor::TensorView::new(
        safetensors::Dtype::F32,
        vec![images.len(), table_classes.len()],
        &bytes,
    )
    .unwrap();
    let class_names: Vec<&str> = table_classes.iter().map(|c| c.name()).collect();
    let meta = std::collections::HashMap::from([
        ("architecture".to_string(), "teacher_table".to_string()),
        (
            "classes".to_string(),
            serde_json::to_string(&class_names).unwrap(),
        ),
        (
            "images".to_string(),
            serde_json::to_string(&images).unwrap(),
        ),
    ]);
    safetensors::serialize_to_file([("probs", view)], Some(meta), &path).unwrap();
    let mut nan_cfg = cfg.clone();
    nan_cfg.distill.as_mut().unwrap().teacher = path;
    let err = train(&wrong, &val, &nan_cfg).unwrap_err().to_string();
    assert!(
        err.contains("nan.safetensors") && err.contains("NaN"),
        "{err}"
    );
    let mut csv = wrong.clone();
    csv.sources = (0..csv.len()).map(|i| format!("line {}", i + 2)).collect();
    let err = refused(&images, &probs, &csv, "for-csv.safetensors");
    assert!(
        err.contains("line 2") && err.contains("no file name"),
        "{err}"
    );

    // Probabilities that do not fit the names are refused when writing.
    let err = emocam::train::save_teacher_table(
        &dir.path().join("bad.safetensors"),
        "bad",
        &classes,
        &images,
        &probs[1..],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("bad.safetensors"), "{err}");
    // The app refuses a table as a model, saying what it is.
    let err = Classifier::load(&table).err().unwrap().to_string();
    assert!(
        err.contains("oof.safetensors") && err.contains("teacher table"),
        "{err}"
    );
}

#[test]
fn the_same_seed_trains_the_same_net_and_another_seed_another() {
    let dir = tempfile::tempdir().unwrap();
    let (tr, val) = (dataset(20, 1), dataset(10, 2));
    let run = |seed: u64, name: &str| {
        let mut cfg = config(dir.path().join(name));
        cfg.epochs = 2;
        cfg.seed = seed;
        // Dropout on, so that its masks are covered by the seed too.
        if let NetConfig::Vgg(v) = &mut cfg.net {
            v.dropout = 0.3;
        }
        let s = train(&tr, &val, &cfg).unwrap();
        (s.history, tensors(&dir.path().join(name)))
    };
    let (h1, w1) = run(5, "a.safetensors");
    let (h2, w2) = run(5, "b.safetensors");
    let (h3, w3) = run(6, "c.safetensors");
    assert_eq!(w1, w2, "same seed, different weights");
    let losses = |h: &[emocam::train::EpochLog]| h.iter().map(|e| e.train_loss).collect::<Vec<_>>();
    assert_eq!(losses(&h1), losses(&h2));
    assert_ne!(w1, w3, "another seed gave the same weights");
    assert_ne!(losses(&h1), losses(&h3));
}
