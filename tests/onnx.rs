//! ONNX classifiers: the fixtures made by PyTorch, Keras + tf2onnx and onnx.helper
//! (`tests/fixtures/onnx/make_fixtures.py`) against onnxruntime's outputs, every malformed
//! file refused by name, metadata precedence, and our own models exported and imported again.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use emocam::imaging::{crop_face, to_gray};
use emocam::model::onnx::{
    Engine, ExportOptions, FaceCrop, OnnxNet, OnnxOptions, OnnxScaling, Origin, SoftmaxFrom,
    export_onnx_bytes,
};
use emocam::model::{BUILTIN_LABEL, BUILTIN_WEIGHTS, Classifier, WeightsFile, ensemble};
use emocam::{DetectorConfig, Error, FaceDetector, dataset, eval};
use image::{GrayImage, RgbImage};

const FER: [&str; 7] = [
    "angry", "disgust", "fear", "happy", "sad", "surprise", "neutral",
];

fn onnx_fixture(name: &str) -> PathBuf {
    common::fixture("onnx").join(name)
}

/// What make_fixtures.py recorded beside a model: the images fed and onnxruntime's results.
struct Expected {
    images: Vec<Vec<u8>>,
    height: u32,
    width: u32,
    channels: usize,
    probs: Vec<Vec<f64>>,
}

fn expected(model: &str) -> Expected {
    let p = onnx_fixture(&model.replace(".onnx", ".expected.json"));
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    let num = |k: &str| v[k].as_u64().unwrap();
    Expected {
        images: serde_json::from_value(v["images_hwc"].clone()).unwrap(),
        height: num("height") as u32,
        width: num("width") as u32,
        channels: num("channels") as usize,
        probs: serde_json::from_value(v["probs"].clone()).unwrap(),
    }
}

/// Largest absolute difference between two sets of rows (which must have the same shape).
fn worst(got: &[Vec<f32>], want: &[Vec<f64>]) -> f64 {
    assert_eq!(got.len(), want.len(), "row count");
    let mut worst = 0f64;
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g.len(), w.len(), "scores per row");
        for (a, b) in g.iter().zip(w) {
            worst = worst.max((*a as f64 - b).abs());
        }
    }
    worst
}

/// Load `model` and check it against onnxruntime's recorded probabilities.
fn check_against_onnxruntime(model: &str, opts: &OnnxOptions) -> OnnxNet {
    let net = OnnxNet::load(&onnx_fixture(model), opts)
        .unwrap_or_else(|e| panic!("{model} does not load: {e}"));
    let exp = expected(model);
    let (grays, rgbs): (Vec<GrayImage>, Vec<RgbImage>) = match exp.channels {
        1 => (
            exp.images
                .iter()
                .map(|b| GrayImage::from_raw(exp.width, exp.height, b.clone()).unwrap())
                .collect(),
            vec![],
        ),
        _ => (
            vec![],
            exp.images
                .iter()
                .map(|b| RgbImage::from_raw(exp.width, exp.height, b.clone()).unwrap())
                .collect(),
        ),
    };
    let crops: Vec<FaceCrop> = grays
        .iter()
        .map(FaceCrop::Gray)
        .chain(rgbs.iter().map(FaceCrop::Rgb))
        .collect();
    let got = net.probs(&crops).unwrap();
    let d = worst(&got, &exp.probs);
    println!(
        "{model}: {} ; largest difference from onnxruntime {d:.2e}",
        net.description()
    );
    assert!(d < 1e-4, "{model}: differs from onnxruntime by {d}");
    // One at a time gives the same as the batch.
    let one = net.probs(&crops[1..2]).unwrap();
    assert!(worst(&one, &exp.probs[1..2]) < 1e-4);
    net
}

#[test]
fn pytorch_eight_class_model_matches_onnxruntime() {
    let net = check_against_onnxruntime("torch_cnn8.onnx", &OnnxOptions::default());
    assert_eq!(
        net.classes(),
        [
            "neutral", "happy", "surprise", "sad", "angry", "disgust", "fear", "contempt"
        ]
    );
    assert_eq!(net.name(), "tiny FER+ CNN (PyTorch)");
    assert_eq!(net.channels(), 1);
    assert_eq!(net.input_size(), (48, 48));
    assert_eq!(net.layout(), emocam::model::onnx::Layout::Nchw);
    assert!(matches!(net.batch(), emocam::model::onnx::Batch::Any(_)));
    // The graph ends in a Linear layer: emocam applies the softmax.
    assert_eq!(net.softmax(), SoftmaxFrom::Applied);
    assert!(net.notice().is_none());
}

#[test]
fn keras_nhwc_model_matches_onnxruntime_with_override_or_sidecar() {
    let over = OnnxOptions {
        input_scaling: Some(OnnxScaling::MinusOneToOne),
        ..Default::default()
    };
    let net = check_against_onnxruntime("keras_nhwc7.onnx", &over);
    assert_eq!(net.layout(), emocam::model::onnx::Layout::Nhwc);
    assert_eq!(net.softmax(), SoftmaxFrom::LastOp);
    let net = check_against_onnxruntime("keras_nhwc7_sidecar.onnx", &OnnxOptions::default());
    assert_eq!(net.meta().scaling_from, Origin::Sidecar);
    assert_eq!(net.name(), "tiny mini-Xception (Keras, tf2onnx)");
}

#[test]
fn seven_outputs_without_classes_are_taken_in_fer_order_with_a_notice() {
    let net = OnnxNet::load(
        &onnx_fixture("keras_nhwc7_sidecar.onnx"),
        &OnnxOptions::default(),
    )
    .unwrap();
    assert_eq!(net.classes(), FER);
    assert_eq!(net.meta().classes_from, Origin::Assumed);
    let notice = net
        .notice()
        .expect("a notice that the classes were assumed");
    assert!(notice.contains("FER2013") && notice.contains("keras_nhwc7_sidecar.onnx"));
    println!("{notice}");
}

#[test]
fn missing_scaling_names_the_key_and_the_sidecar_to_write() {
    let model = onnx_fixture("keras_nhwc7.onnx");
    let e = OnnxNet::load(&model, &OnnxOptions::default())
        .err()
        .expect("refused");
    let msg = e.to_string();
    println!("{msg}");
    let Error::Weights { path, reason } = e else {
        panic!("expected a weights error, got {msg}");
    };
    assert_eq!(path, model);
    assert!(reason.contains("\"input_scaling\""), "{reason}");
    let sidecar = onnx_fixture("keras_nhwc7.json");
    assert!(reason.contains(&sidecar.display().to_string()), "{reason}");
}

#[test]
fn rgb_model_receives_colour() {
    let net = check_against_onnxruntime("rgb_mean.onnx", &OnnxOptions::default());
    assert_eq!(net.channels(), 3);
    assert_eq!(net.classes(), ["red", "green", "blue"]);
    assert_eq!(net.softmax(), SoftmaxFrom::LastOp);
    // The model is a softmax of the mean of each (0..1-scaled) channel, so a crop's colour
    // decides its scores exactly; any size is resized to the model's 32x32 first.
    let softmax = |v: [f64; 3]| {
        let e = v.map(f64::exp);
        let s: f64 = e.iter().sum();
        e.map(|x| x / s)
    };
    let cases: [([u8; 3], [f64; 3]); 3] = [
        ([255, 0, 0], [1.0, 0.0, 0.0]),
        ([0, 255, 0], [0.0, 1.0, 0.0]),
        ([51, 102, 204], [0.2, 0.4, 0.8]),
    ];
    for (px, means) in cases {
        let img = RgbImage::from_pixel(40, 50, image::Rgb(px));
        let got = net.probs(&[FaceCrop::Rgb(&img)]).unwrap();
        let want = softmax(means);
        for (g, w) in got[0].iter().zip(want) {
            assert!(
                (*g as f64 - w).abs() < 1e-5,
                "{px:?}: {:?} vs {want:?}",
                got[0]
            );
        }
    }
    // A gray crop has no colour to see: equal means, equal scores.
    let gray = GrayImage::from_pixel(32, 32, image::Luma([200]));
    let got = net.probs(&[FaceCrop::Gray(&gray)]).unwrap();
    assert!(got[0].iter().all(|p| (p - 1.0 / 3.0).abs() < 1e-6));
}

#[test]
fn batches_of_any_size_give_the_scores_of_single_faces() {
    let net = OnnxNet::load(&onnx_fixture("torch_cnn8.onnx"), &OnnxOptions::default()).unwrap();
    let faces: Vec<GrayImage> = (0..13u32)
        .map(|k| {
            GrayImage::from_fn(48, 48, |x, y| {
                image::Luma([((x * 5 + y * (k + 1) + k * 31) % 256) as u8])
            })
        })
        .collect();
    let crops: Vec<FaceCrop> = faces.iter().map(FaceCrop::Gray).collect();
    let all = net.probs(&crops).unwrap();
    assert_eq!(all.len(), 13);
    for (i, c) in crops.iter().enumerate() {
        let one = net.probs(std::slice::from_ref(c)).unwrap();
        let d: f32 = one[0]
            .iter()
            .zip(&all[i])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(d < 1e-5, "face {i}: batch and single differ by {d}");
    }
    assert!(net.probs(&[]).unwrap().is_empty());
}

#[test]
fn fixed_batch_of_one_runs_faces_one_at_a_time() {
    let net = OnnxNet::load(&onnx_fixture("fixed_batch1.onnx"), &OnnxOptions::default()).unwrap();
    assert_eq!(net.batch(), &emocam::model::onnx::Batch::Fixed(1));
    // The graph is mean(x) * [0, 0.1, ..., 0.6] with x = p / 255, then emocam's softmax.
    let levels = [0u8, 128, 255];
    let faces: Vec<GrayImage> = levels
        .iter()
        .map(|&v| GrayImage::from_pixel(48, 48, image::Luma([v])))
        .collect();
    let crops: Vec<FaceCrop> = faces.iter().map(FaceCrop::Gray).collect();
    let got = net.probs(&crops).unwrap();
    for (row, &v) in got.iter().zip(&levels) {
        let logits: Vec<f64> = (0..7).map(|i| v as f64 / 255.0 * 0.1 * i as f64).collect();
        let s: f64 = logits.iter().map(|l| l.exp()).sum();
        for (g, l) in row.iter().zip(&logits) {
            assert!((*g as f64 - l.exp() / s).abs() < 1e-6);
        }
    }
}

/// Load `path`, expect a weights error naming it, and return its reason.
fn refusal(path: &Path, opts: &OnnxOptions) -> String {
    match OnnxNet::load(path, opts) {
        Ok(net) => panic!("{} loaded: {}", path.display(), net.description()),
        Err(Error::Weights { path: p, reason }) => {
            println!("{}: {reason}", p.display());
            assert_eq!(p, path, "the error names the file");
            reason
        }
        Err(other) => panic!("{}: not a weights error: {other}", path.display()),
    }
}

#[test]
fn every_malformed_model_is_refused_by_name() {
    let none = OnnxOptions::default();
    let cases: [(&str, &[&str]); 8] = [
        ("two_inputs.onnx", &["2 inputs", "\"a\", \"b\""]),
        ("dynamic_hw.onnx", &["dynamic", "height and width"]),
        ("rank3.onnx", &["rank 3", "expected 4"]),
        ("two_channels.onnx", &["1 or 3 channels"]),
        (
            "custom_op.onnx",
            &["FancyPool", "com.example.faces", "does not implement"],
        ),
        ("nan_output.onnx", &["probe", "non-finite"]),
        (
            "wrong_count.onnx",
            &["5 scores per face", "file metadata", "name 7"],
        ),
        ("truncated.onnx", &["truncated"]),
    ];
    for (file, words) in cases {
        let reason = refusal(&onnx_fixture(file), &none);
        for w in words {
            assert!(reason.contains(w), "{file}: {reason:?} does not say {w:?}");
        }
    }
    // Not ONNX at all, and not a file.
    let png = common::fixture("astronaut.png");
    assert!(refusal(&png, &none).contains("not an ONNX model"));
    let dir = common::fixture("onnx");
    assert!(refusal(&dir, &none).contains("is a directory, expected a regular file"));
}

/// A temporary copy of a fixture, with `sidecar` (if any) written beside it.
fn copy_with_sidecar(dir: &tempfile::TempDir, model: &str, sidecar: Option<&str>) -> PathBuf {
    let to = dir.path().join(model);
    std::fs::copy(onnx_fixture(model), &to).unwrap();
    if let Some(s) = sidecar {
        std::fs::write(to.with_extension("json"), s).unwrap();
    }
    to
}

#[test]
fn bad_classes_and_scalings_are_refused_naming_the_sidecar() {
    let dir = tempfile::tempdir().unwrap();
    let none = OnnxOptions::default();
    let sidecars = [
        (r#"{"input_scaling": "zero_to_two"}"#, "input_scaling"),
        (r#"{"input_scaling": "mean_std", "mean": [0.5]}"#, "\"std\""),
        (
            r#"{"input_scaling": "zero_to_one", "classes": ["happy", "happy", "a", "b", "c", "d", "e"]}"#,
            "twice",
        ),
        (
            r#"{"input_scaling": "zero_to_one", "classes": ["happy", "", "a", "b", "c", "d", "e"]}"#,
            "empty",
        ),
        (
            r#"{"input_scaling": "zero_to_one", "classes": "happy,sad"}"#,
            "JSON list",
        ),
        (
            r#"{"input_scaling": "zero_to_one", "classes": ["happy", "sad"]}"#,
            "name 2",
        ),
        ("not json", "not valid JSON"),
    ];
    for (text, word) in sidecars {
        let model = copy_with_sidecar(&dir, "keras_nhwc7.onnx", Some(text));
        let reason = refusal(&model, &none);
        assert!(
            reason.contains(word),
            "{text}: {reason:?} does not say {word:?}"
        );
        assert!(
            reason.contains(&model.with_extension("json").display().to_string()),
            "{reason:?} does not name the sidecar"
        );
    }
    // A bad override is refused too, by what it is.
    let model = copy_with_sidecar(&dir, "keras_nhwc7.onnx", None);
    std::fs::remove_file(model.with_extension("json")).unwrap();
    let over = OnnxOptions {
        classes: Some(vec!["a".into(), "b".into()]),
        input_scaling: Some(OnnxScaling::ZeroToOne),
    };
    assert!(refusal(&model, &over).contains("name 2"));
}

#[test]
fn overrides_win_over_the_file_which_wins_over_its_sidecar() {
    let dir = tempfile::tempdir().unwrap();
    // The file's metadata says zero_to_one and its FER+ names; the sidecar says otherwise.
    let other8 = r#"["a","b","c","d","e","f","g","h"]"#;
    let model = copy_with_sidecar(
        &dir,
        "torch_cnn8.onnx",
        Some(&format!(
            r#"{{"name": "from the sidecar", "input_scaling": "zero_to_255", "classes": {other8}}}"#
        )),
    );
    let net = OnnxNet::load(&model, &OnnxOptions::default()).unwrap();
    assert_eq!(net.name(), "tiny FER+ CNN (PyTorch)");
    assert_eq!(net.meta().scaling, OnnxScaling::ZeroToOne);
    assert_eq!(net.meta().scaling_from, Origin::File);
    assert_eq!(net.classes()[7], "contempt");
    // Overrides beat both.
    let over = OnnxOptions {
        classes: Some("Q,R,S,T,U,V,W,X".split(',').map(String::from).collect()),
        input_scaling: Some(OnnxScaling::MinusOneToOne),
    };
    let net = OnnxNet::load(&model, &over).unwrap();
    assert_eq!(net.classes()[0], "q");
    assert_eq!(net.meta().classes_from, Origin::Override);
    assert_eq!(net.meta().scaling, OnnxScaling::MinusOneToOne);
    assert_eq!(net.meta().scaling_from, Origin::Override);
    // A file without metadata takes the sidecar's, key by key; an override still wins.
    let seven = r#"["w","x","y","z","happy","sad","neutral"]"#;
    let model = copy_with_sidecar(
        &dir,
        "keras_nhwc7.onnx",
        Some(&format!(
            r#"{{"input_scaling": "zero_to_one", "classes": {seven}}}"#
        )),
    );
    let net = OnnxNet::load(&model, &OnnxOptions::default()).unwrap();
    assert_eq!(net.meta().classes_from, Origin::Sidecar);
    assert_eq!(net.classes()[0], "w");
    assert!(net.notice().is_none());
    assert_eq!(net.name(), "keras_nhwc7");
    let net = OnnxNet::load(
        &model,
        &OnnxOptions {
            input_scaling: Some(OnnxScaling::ZeroTo255),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(net.meta().scaling, OnnxScaling::ZeroTo255);
    assert_eq!(net.meta().classes_from, Origin::Sidecar);
}

// ---- export round trips -------------------------------------------------------------------

fn builtin_file() -> WeightsFile {
    WeightsFile::parse(BUILTIN_WEIGHTS, Path::new(BUILTIN_LABEL)).unwrap()
}

/// Member `i` of the built-in ensemble as a weights file of its own, without its mirror pass.
fn builtin_member(i: usize) -> WeightsFile {
    let file = builtin_file();
    let mut spec = ensemble::member_specs(&file.spec).unwrap().remove(i);
    spec.flip_average = false;
    spec.metadata.insert("flip_average".into(), "false".into());
    let prefix = format!("{}.", ensemble::member_prefix(i));
    let tensors = file
        .tensors
        .iter()
        .filter_map(|(k, t)| k.strip_prefix(&prefix).map(|k| (k.to_string(), t.clone())))
        .collect::<HashMap<_, _>>();
    WeightsFile {
        path: PathBuf::from(format!("<built-in member {i}>")),
        spec,
        tensors,
    }
}

/// Gray face crops at `size` from the committed photos (every face the detector finds).
fn photo_crops(size: u32) -> Vec<GrayImage> {
    let mut det = FaceDetector::new(DetectorConfig::thorough()).unwrap();
    let mut crops = Vec::new();
    for photo in ["solvay_1927_scientists.jpg", "astronaut.png", "camera.png"] {
        let gray = to_gray(&emocam::imaging::load_rgb(&common::fixture(photo)).unwrap());
        for b in det.detect(&gray) {
            crops.push(crop_face(&gray, &b, 0.2, size));
        }
    }
    assert!(crops.len() >= 10, "found only {} faces", crops.len());
    crops
}

/// Export `file`, import it again, and compare with the native classifier on `faces` (which
/// must be at the export's input size); returns the largest difference. With
/// `EMOCAM_ONNX_EXPORT_DIR` set, the export and the native scores are also written there for
/// `make_fixtures.py check`.
fn round_trip(label: &str, file: WeightsFile, opts: &ExportOptions, faces: &[GrayImage]) -> f64 {
    let bytes = export_onnx_bytes(&file, opts).unwrap();
    let native = Classifier::from_weights(file).unwrap();
    let path = PathBuf::from(format!("{label}.onnx"));
    let net = OnnxNet::from_bytes(&path, &bytes, &OnnxOptions::default()).unwrap();
    let side = opts.input_size.unwrap_or(native.input_size());
    assert_eq!(net.input_size(), (side, side));
    assert_eq!(net.name(), native.name());
    assert_eq!(net.classes(), FER);
    assert_eq!(net.meta().scaling, OnnxScaling::ZeroTo255);
    let want: Vec<Vec<f64>> = native
        .classify(faces)
        .unwrap()
        .iter()
        .map(|s| s.probs().iter().map(|&v| v as f64).collect())
        .collect();
    let crops: Vec<FaceCrop> = faces.iter().map(FaceCrop::Gray).collect();
    let got = net.probs(&crops).unwrap();
    let d = worst(&got, &want);
    println!(
        "{label}: {} faces, {} bytes, largest difference from native {d:.2e}; {}",
        faces.len(),
        bytes.len(),
        net.description()
    );
    if let Some(dir) = std::env::var_os("EMOCAM_ONNX_EXPORT_DIR") {
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(&path), &bytes).unwrap();
        let pixels: Vec<u8> = faces
            .iter()
            .flat_map(|f| f.as_raw().iter().copied())
            .collect();
        let json = serde_json::json!({"side": side, "pixels": pixels, "native_probs": want});
        std::fs::write(dir.join(format!("{label}.native.json")), json.to_string()).unwrap();
    }
    d
}

#[test]
fn exported_models_give_the_native_scores_on_photo_crops() {
    let crops64 = photo_crops(64);
    let crops48: Vec<GrayImage> = crops64
        .iter()
        .map(|c| emocam::imaging::resize_gray(c, 48, 48))
        .collect();
    let mini = WeightsFile::read(&common::mini_xception_weights()).unwrap();
    let cases = [
        ("builtin", builtin_file(), None, &crops64),
        ("vgg", builtin_member(0), None, &crops48),
        ("mini_xception", mini, None, &crops64),
    ];
    for (label, file, size, faces) in cases {
        let d = round_trip(label, file, &ExportOptions { input_size: size }, faces);
        assert!(
            d < 1e-4,
            "{label}: exported scores differ from native by {d}"
        );
    }
}

#[test]
fn exported_graphs_resize_as_the_app_does() {
    // Input sizes that make the graph shrink by boxes (2x and more) before the bilinear step,
    // and enlarge: 100 -> 48 (VGG), 128 -> 64 and 48 -> 64 (mini-Xception).
    let big = photo_crops(128);
    let at = |s: u32| -> Vec<GrayImage> {
        big.iter()
            .map(|c| emocam::imaging::resize_gray(c, s, s))
            .collect()
    };
    let mini = || WeightsFile::read(&common::mini_xception_weights()).unwrap();
    let cases = [
        ("vgg_at_100", builtin_member(0), 100, at(100)),
        ("mini_xception_at_128", mini(), 128, big.clone()),
        ("mini_xception_at_48", mini(), 48, at(48)),
        ("builtin_at_48", builtin_file(), 48, at(48)),
    ];
    for (label, file, size, faces) in cases {
        let d = round_trip(
            label,
            file,
            &ExportOptions {
                input_size: Some(size),
            },
            &faces,
        );
        assert!(
            d < 1e-4,
            "{label}: exported scores differ from native by {d}"
        );
    }
}

#[test]
fn exported_builtin_model_scores_fer2013_val_as_the_native_one() {
    let Some(val) = common::shared("data/fer2013/val") else {
        return;
    };
    let data = dataset::load(&val, None).unwrap();
    assert_eq!(data.len(), 3589, "FER2013 PublicTest has 3589 images");
    // FER2013 faces are 48x48: exported at that size, the graph resizes them for the
    // mini-Xception exactly as the native ensemble does.
    let opts = ExportOptions {
        input_size: Some(48),
    };
    let bytes = export_onnx_bytes(&builtin_file(), &opts).unwrap();
    let net = OnnxNet::from_bytes(
        Path::new("builtin_at_48.onnx"),
        &bytes,
        &OnnxOptions::default(),
    )
    .unwrap();
    let native = Classifier::builtin().unwrap();
    let report = eval::evaluate(&native, &data, false).unwrap();
    let (mut correct, mut worst_d) = (0usize, 0f32);
    for (imgs, labels) in data.images.chunks(64).zip(data.labels.chunks(64)) {
        let crops: Vec<FaceCrop> = imgs.iter().map(FaceCrop::Gray).collect();
        let got = net.probs(&crops).unwrap();
        let want = native.classify(imgs).unwrap();
        for ((g, w), l) in got.iter().zip(&want).zip(labels) {
            for (a, b) in g.iter().zip(w.probs()) {
                worst_d = worst_d.max((a - b).abs());
            }
            let top = (0..g.len()).fold(0, |b, i| if g[i] > g[b] { i } else { b });
            correct += usize::from(top == l.index());
        }
    }
    let accuracy = correct as f64 / data.len() as f64;
    println!(
        "native {:.2}%, exported {:.2}%, largest score difference {worst_d:.2e}",
        100.0 * report.accuracy,
        100.0 * accuracy
    );
    assert!(worst_d < 1e-4, "scores differ by {worst_d}");
    assert_eq!(
        correct,
        (report.accuracy * data.len() as f64).round() as usize
    );
}

// ---- the ONNX model wherever a weights file goes ------------------------------------------

fn emocam() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_emocam"))
}

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn an_eight_class_onnx_model_gives_eight_scores_end_to_end() {
    let model = onnx_fixture("torch_cnn8.onnx");
    let photo = common::fixture("astronaut.png");
    let out = emocam()
        .args(["predict", "--format", "json", "--weights"])
        .arg(&model)
        .arg(&photo)
        .output()
        .unwrap();
    let text = ok(&out);
    let line = text.lines().find(|l| l.contains("scores")).expect("a face");
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    let scores = v["faces"][0]["scores"]
        .as_object()
        .or_else(|| v["scores"].as_object())
        .unwrap_or_else(|| panic!("no scores object in {v}"));
    assert_eq!(scores.len(), 8, "{v}");
    assert!(scores.contains_key("contempt"));

    // run --csv: the seven FER columns in their order, then contempt.
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("rows.csv");
    let out = emocam()
        .args(["run", "--fps", "0", "--json", "--weights"])
        .arg(&model)
        .arg("--source")
        .arg(&photo)
        .arg("--csv")
        .arg(&csv)
        .output()
        .unwrap();
    ok(&out);
    let (header, rows) = common::read_csv(&csv);
    let at: Vec<usize> = FER
        .iter()
        .chain(&["contempt"])
        .map(|c| {
            header
                .iter()
                .position(|h| h == c)
                .unwrap_or_else(|| panic!("{c} not in {header:?}"))
        })
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{header:?}");
    assert!(!rows.is_empty());
}

/// A FER-style class-folder tree with two gray faces in each of `classes`.
fn fer_folders(dir: &Path, classes: &[&str]) {
    for c in classes {
        std::fs::create_dir_all(dir.join(c)).unwrap();
        for k in 0..2u32 {
            GrayImage::from_fn(48, 48, |x, y| {
                image::Luma([((x * 3 + y * 7 + k * 40) % 256) as u8])
            })
            .save(dir.join(c).join(format!("{k}.png")))
            .unwrap();
        }
    }
}

#[test]
fn eval_takes_an_eight_class_model_and_refuses_a_class_the_model_lacks() {
    let dir = tempfile::tempdir().unwrap();
    fer_folders(dir.path(), &FER);
    let out = emocam()
        .args(["eval", "--weights"])
        .arg(onnx_fixture("torch_cnn8.onnx"))
        .arg("--data")
        .arg(dir.path())
        .output()
        .unwrap();
    println!("{}", ok(&out));
    // Seven classes without disgust: FER folders hold disgust faces it cannot score.
    let out = emocam()
        .args(["eval", "--input-scaling", "minus_one_to_one", "--classes"])
        .arg("angry,contempt,fear,happy,sad,surprise,neutral")
        .arg("--weights")
        .arg(onnx_fixture("keras_nhwc7.onnx"))
        .arg("--data")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    println!("{err}");
    // eval names the class (as "Disgust"), whatever its case.
    assert!(err.to_lowercase().contains("class disgust"), "{err}");
}

#[test]
fn export_subcommand_writes_a_model_that_loads_again() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("default.onnx");
    let out = emocam()
        .args(["export", "--input-size", "48", "--onnx"])
        .arg(&out_path)
        .output()
        .unwrap();
    println!("{}", ok(&out));
    let clf = Classifier::load(&out_path).unwrap();
    assert_eq!(clf.input_size(), 48);
    assert_eq!(clf.classes().names(), FER);
    // A safetensors file refuses the ONNX-only options.
    let e = Classifier::load_with(
        &common::default_weights(),
        &emocam::model::LoadOptions {
            input_scaling: Some(OnnxScaling::ZeroToOne),
            ..Default::default()
        },
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("apply to ONNX models"), "{e}");
}

/// The astronaut in a 640x480 frame, tinted blue: a face the detector finds whose crop has
/// a blue mean well above its red one.
fn blue_face_frame() -> RgbImage {
    let face = emocam::imaging::load_rgb(&common::fixture("astronaut.png")).unwrap();
    let face = image::imageops::resize(&face, 400, 400, image::imageops::FilterType::Triangle);
    let mut frame = RgbImage::from_pixel(640, 480, image::Rgb([20, 30, 90]));
    image::imageops::overlay(&mut frame, &face, 120, 40);
    for p in frame.pixels_mut() {
        let [r, g, b] = p.0;
        p.0 = [r / 3, g / 2, b.saturating_add(60)];
    }
    frame
}

/// A colour model's scores on one frame through the live pipeline (detector, face stage,
/// inference thread), and through the one-shot recogniser `predict` uses.
#[test]
fn a_colour_model_gets_colour_crops_in_the_pipeline_and_in_predict() {
    use emocam::capture::{SourceOptions, SourceSpec};
    use emocam::pipeline::{Pipeline, PipelineConfig};
    let clf = Classifier::load(&onnx_fixture("rgb_mean.onnx")).unwrap();
    assert!(clf.wants_colour());
    assert!(!Classifier::builtin().unwrap().wants_colour());
    let dir = tempfile::tempdir().unwrap();
    let frame_path = dir.path().join("blue.png");
    blue_face_frame().save(&frame_path).unwrap();
    let source = emocam::capture::open(
        &SourceSpec::Path(frame_path.clone()),
        SourceOptions {
            fps: Some(0.0),
            looping: false,
        },
    )
    .unwrap();
    let p = Pipeline::start(source, clf, PipelineConfig::default(), Arc::new(|| {})).unwrap();
    let scored = p
        .results()
        .recv_timeout(std::time::Duration::from_secs(30))
        .unwrap();
    assert_eq!(scored.faces.len(), 1, "the tinted face is found");
    let s = &scored.faces[0].scores;
    let (red, blue) = (s.get("red").unwrap(), s.get("blue").unwrap());
    // Gray crops would give the three classes exactly a third each.
    assert_eq!(s.top().0, "blue", "{s:?}");
    assert!(blue - red > 0.1, "red {red}, blue {blue}");

    let mut r = emocam::recognize::Recognizer::new(
        FaceDetector::new(DetectorConfig::thorough()).unwrap(),
        Classifier::load(&onnx_fixture("rgb_mean.onnx")).unwrap(),
    );
    let faces = r.analyze(&blue_face_frame()).unwrap();
    assert_eq!(faces.len(), 1);
    assert_eq!(faces[0].scores.top().0, "blue");
    r.tta = true;
    let mirrored = r.analyze(&blue_face_frame()).unwrap();
    assert_eq!(mirrored[0].scores.top().0, "blue");
}

// ---- engines ------------------------------------------------------------------------------

/// The models as `OnnxNet` from `path` or export bytes, twice: as loaded, and forced to tract.
fn both_engines(path: &Path, bytes: Option<&[u8]>, opts: &OnnxOptions) -> (OnnxNet, OnnxNet) {
    let load = || match bytes {
        Some(b) => OnnxNet::from_bytes(path, b, opts).unwrap(),
        None => OnnxNet::load(path, opts).unwrap(),
    };
    let mut tract = load();
    tract.set_native(false);
    (load(), tract)
}

#[test]
fn common_cnn_graphs_run_on_emocams_kernels_with_tracts_scores() {
    let crops = photo_crops(64);
    let mini = WeightsFile::read(&common::mini_xception_weights()).unwrap();
    let mini_bytes = export_onnx_bytes(&mini, &ExportOptions::default()).unwrap();
    let vgg_bytes = export_onnx_bytes(&builtin_member(0), &ExportOptions::default()).unwrap();
    let cases: Vec<(PathBuf, Option<&[u8]>)> = vec![
        (PathBuf::from("mini_xception.onnx"), Some(&mini_bytes)),
        (PathBuf::from("vgg.onnx"), Some(&vgg_bytes)),
        (onnx_fixture("torch_cnn8.onnx"), None),
        (onnx_fixture("keras_nhwc7_sidecar.onnx"), None),
        (onnx_fixture("rgb_mean.onnx"), None),
    ];
    for (path, bytes) in cases {
        let (native, tract) = both_engines(&path, bytes, &OnnxOptions::default());
        assert_eq!(
            native.engine(),
            Engine::Native,
            "{}: {:?}",
            path.display(),
            native.tract_reason()
        );
        assert_eq!(tract.engine(), Engine::Tract);
        let faces: Vec<FaceCrop> = crops.iter().map(FaceCrop::Gray).collect();
        let got = native.probs(&faces).unwrap();
        let want: Vec<Vec<f64>> = tract
            .probs(&faces)
            .unwrap()
            .iter()
            .map(|r| r.iter().map(|&v| v as f64).collect())
            .collect();
        let d = worst(&got, &want);
        println!(
            "{}: {} faces, native against tract {d:.2e}",
            path.display(),
            faces.len()
        );
        assert!(d < 1e-4, "{}: the engines differ by {d}", path.display());
        // One face alone gives its row of the batch.
        let one = native.probs(&faces[3..4]).unwrap();
        assert!(worst(&one, &want[3..4]) < 1e-5);
    }
}

#[test]
fn a_graph_the_kernels_do_not_take_runs_in_tract_and_says_why() {
    // The built-in ensemble resizes with Gather, and the fixed-batch fixture broadcasts a
    // (N, 1) column over seven classes.
    let bytes = export_onnx_bytes(&builtin_file(), &ExportOptions::default()).unwrap();
    let builtin =
        OnnxNet::from_bytes(Path::new("builtin.onnx"), &bytes, &OnnxOptions::default()).unwrap();
    assert_eq!(builtin.engine(), Engine::Tract);
    let why = builtin.tract_reason().unwrap();
    assert!(why.contains("Gather"), "{why}");
    assert!(
        builtin.description().contains("run in tract (Gather"),
        "{}",
        builtin.description()
    );
    let fixed = OnnxNet::load(&onnx_fixture("fixed_batch1.onnx"), &OnnxOptions::default()).unwrap();
    assert_eq!(fixed.engine(), Engine::Tract);
    assert!(
        fixed.tract_reason().unwrap().contains("Mul"),
        "{:?}",
        fixed.tract_reason()
    );
}
