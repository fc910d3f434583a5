//! One-shot recognition of a still frame: detect faces, crop them, classify them in one batch.
//! The live pipeline runs the same steps split over two threads.

use crate::detect::FaceDetector;
use crate::emotion::FaceResult;
use crate::error::Result;
use crate::imaging::{FaceBox, crop_face, crop_face_rgb, to_gray};
use crate::model::{Classifier, FaceCrops};
use image::{GrayImage, RgbImage};

/// Margin added around a detector box before cropping, as a fraction of the box side.
///
/// SeetaFace boxes run from the brows to the chin; FER2013 crops, which the models learnt
/// from, also show the forehead and a little background.
pub const DEFAULT_MARGIN: f32 = 0.1;

/// Crop every face of a frame to the model's input size.
pub fn crop_faces(gray: &GrayImage, boxes: &[FaceBox], size: u32, margin: f32) -> Vec<GrayImage> {
    boxes
        .iter()
        .map(|b| crop_face(gray, b, margin, size))
        .collect()
}

/// Crop every face of a frame for a model: from the colour frame when the model wants colour
/// and the caller has it, else from the grayscale one.
pub fn crop_for_model(
    rgb: Option<&RgbImage>,
    gray: &GrayImage,
    boxes: &[FaceBox],
    size: u32,
    margin: f32,
    colour: bool,
) -> FaceCrops {
    match rgb {
        Some(rgb) if colour => FaceCrops::Rgb(
            boxes
                .iter()
                .map(|b| crop_face_rgb(rgb, b, margin, size))
                .collect(),
        ),
        _ => FaceCrops::Gray(crop_faces(gray, boxes, size, margin)),
    }
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
    /// A colour model (see [`Classifier::wants_colour`]) gets colour crops.
    pub fn analyze(&mut self, rgb: &RgbImage) -> Result<Vec<FaceResult>> {
        self.analyze_frame(Some(rgb), &to_gray(rgb))
    }

    /// Detect and classify every face of a grayscale frame.
    pub fn analyze_gray(&mut self, gray: &GrayImage) -> Result<Vec<FaceResult>> {
        self.analyze_frame(None, gray)
    }

    fn analyze_frame(
        &mut self,
        rgb: Option<&RgbImage>,
        gray: &GrayImage,
    ) -> Result<Vec<FaceResult>> {
        let boxes = self.detector.detect(gray);
        let c = &self.classifier;
        let crops = crop_for_model(
            rgb,
            gray,
            &boxes,
            c.input_size(),
            self.margin,
            c.wants_colour(),
        );
        let scores = match (&crops, self.tta) {
            (FaceCrops::Gray(g), true) => c.classify_tta(g)?,
            (FaceCrops::Rgb(rgb), true) => c.classify_rgb_tta(rgb)?,
            (crops, false) => c.classify_crops(crops)?,
        };
        Ok(boxes
            .into_iter()
            .zip(scores)
            .map(|(bbox, scores)| FaceResult { bbox, scores })
            .collect())
    }
}
