//! One-shot recognition of a still frame: detect faces, crop them, classify them in one batch.
//! The live pipeline runs the same steps split over two threads.

use image::{GrayImage, RgbImage};
use serde::Serialize;

use crate::detect::FaceDetector;
use crate::emotion::Scores;
use crate::error::Result;
use crate::imaging::{FaceBox, crop_face, to_gray};
use crate::model::Classifier;

/// Margin added around a detector box before cropping, as a fraction of the box side.
///
/// SeetaFace boxes run from the brows to the chin; FER2013 crops, which the models learnt
/// from, also show the forehead and a little background.
pub const DEFAULT_MARGIN: f32 = 0.1;

/// One face in a frame: where it is and how it scored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FaceResult {
    #[serde(rename = "box")]
    pub bbox: FaceBox,
    #[serde(skip)]
    pub scores: Scores,
}

/// Crop every face of a frame to the model's input size.
pub fn crop_faces(gray: &GrayImage, boxes: &[FaceBox], size: u32, margin: f32) -> Vec<GrayImage> {
    boxes
        .iter()
        .map(|b| crop_face(gray, b, margin, size))
        .collect()
}

/// Detector and classifier together, for still images and single-threaded use.
pub struct Recognizer {
    pub detector: FaceDetector,
    pub classifier: Classifier,
    /// See [`DEFAULT_MARGIN`].
    pub margin: f32,
    /// Average each face with its mirror image (test-time augmentation).
    pub tta: bool,
}

impl Recognizer {
    /// Combine a detector and a classifier with the default crop margin.
    pub fn new(detector: FaceDetector, classifier: Classifier) -> Self {
        Self {
            detector,
            classifier,
            margin: DEFAULT_MARGIN,
            tta: false,
        }
    }

    /// Detect and classify every face of an RGB frame.
    pub fn analyze(&mut self, rgb: &RgbImage) -> Result<Vec<FaceResult>> {
        self.analyze_gray(&to_gray(rgb))
    }

    /// Detect and classify every face of a grayscale frame.
    pub fn analyze_gray(&mut self, gray: &GrayImage) -> Result<Vec<FaceResult>> {
        let boxes = self.detector.detect(gray);
        let crops = crop_faces(gray, &boxes, self.classifier.input_size(), self.margin);
        let scores = if self.tta {
            self.classifier.classify_tta(&crops)?
        } else {
            self.classifier.classify(&crops)?
        };
        Ok(boxes
            .into_iter()
            .zip(scores)
            .map(|(bbox, scores)| FaceResult { bbox, scores })
            .collect())
    }
}

/// The JSON line `emocam predict --format json` prints for one image (a stable interface):
/// `{"image": PATH, "faces": [{"box": {..}, "scores": {"angry": ..}, "top": "happy"}]}`.
pub fn faces_json(image: &str, faces: &[FaceResult]) -> serde_json::Value {
    let faces: Vec<serde_json::Value> = faces
        .iter()
        .map(|f| {
            let mut scores = serde_json::Map::new();
            for (e, p) in f.scores.iter() {
                scores.insert(e.into(), round6(p).into());
            }
            serde_json::json!({
                "box": {"x": f.bbox.x, "y": f.bbox.y, "w": f.bbox.w, "h": f.bbox.h},
                "scores": scores,
                "top": f.scores.top().0,
            })
        })
        .collect();
    serde_json::json!({"image": image, "faces": faces})
}

/// Header of `emocam predict --format csv`.
pub const PREDICT_CSV_HEADER: &str =
    "image,face,x,y,w,h,angry,disgust,fear,happy,sad,surprise,neutral,top_emotion";

/// One CSV row per face, matching [`PREDICT_CSV_HEADER`]; `image` is quoted when needed.
pub fn faces_csv_rows(image: &str, faces: &[FaceResult]) -> Vec<String> {
    let image = csv_field(image);
    faces
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let scores: Vec<String> = f.scores.probs().iter().map(|p| format!("{p:.6}")).collect();
            format!(
                "{image},{i},{},{},{},{},{},{}",
                f.bbox.x,
                f.bbox.y,
                f.bbox.w,
                f.bbox.h,
                scores.join(","),
                f.scores.top().0
            )
        })
        .collect()
}

/// Quote a CSV field if it holds a comma, quote or line break (RFC 4180).
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn round6(x: f32) -> f64 {
    (x as f64 * 1e6).round() / 1e6
}
