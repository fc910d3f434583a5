//! Face detection with rustface (SeetaFace frontal cascade). The only module that touches rustface.
//!
//! rustface 0.1.7 ignores its minimum-face-size setting, so its cost grows with the image area.
//! Live frames are therefore detected on a downscaled copy (640x480 -> 320x240) and the boxes
//! are mapped back; still images use a finer, full-resolution search.

use std::io::Cursor;
use std::path::Path;

use image::GrayImage;

use crate::error::{Error, Result};
use crate::imaging::{FaceBox, resize_gray};

/// The SeetaFace frontal detector model (BSD-2-Clause, see `assets/LICENSE.seetaface.txt`),
/// compiled in so the binary runs from any folder.
pub const SEETA_MODEL: &[u8] = include_bytes!("../assets/seeta_fd_frontal_v1.0.bin");

/// How hard the detector searches; see [`DetectorConfig::live`] and [`DetectorConfig::thorough`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetectorConfig {
    /// Detect on a copy scaled down to at most this width (`None`: full resolution).
    pub detect_width: Option<u32>,
    /// Ratio between pyramid levels, in (0.1, 0.99); smaller is faster and coarser.
    pub pyramid_scale: f32,
    /// Sliding-window step in pixels of the detection image.
    pub window_step: u32,
    /// Minimum cascade score; rustface suggests 0.95 (many faces) to 4.5 (few false alarms).
    pub score_threshold: f64,
}

impl DetectorConfig {
    /// Check the settings are ones rustface accepts (it panics on others).
    pub fn validate(&self) -> Result<()> {
        let ok = (0.1..=0.99).contains(&self.pyramid_scale)
            && self.window_step > 0
            && self.score_threshold > 0.0
            && self.detect_width.is_none_or(|w| w >= 20);
        if ok {
            return Ok(());
        }
        Err(Error::InvalidInput {
            what: "detector settings".into(),
            reason: format!(
                "{self:?}: expected pyramid_scale in 0.1..=0.99, window_step > 0, score_threshold > 0, detect_width >= 20"
            ),
        })
    }

    /// For live video: 320 px wide detection copy, coarse pyramid (about 13 ms a 640x480 frame).
    pub fn live() -> Self {
        Self {
            detect_width: Some(320),
            pyramid_scale: 0.7,
            window_step: 8,
            score_threshold: 2.0,
        }
    }

    /// For still images: full resolution up to 2048 px wide, fine pyramid and step.
    pub fn thorough() -> Self {
        Self {
            detect_width: Some(2048),
            pyramid_scale: 0.8,
            window_step: 4,
            score_threshold: 2.0,
        }
    }
}

/// A rustface detector with its settings; create one per thread (it is not `Send`), on the
/// thread that uses it.
pub struct FaceDetector {
    inner: Box<dyn rustface::Detector>,
    config: DetectorConfig,
}

impl FaceDetector {
    /// A detector using the built-in SeetaFace model.
    pub fn new(config: DetectorConfig) -> Result<Self> {
        let model = rustface::read_model(Cursor::new(SEETA_MODEL))
            .map_err(|e| Error::Detector(format!("built-in SeetaFace model: {e}")))?;
        Self::with_model(model, config)
    }

    /// A detector using a SeetaFace model file.
    pub fn from_file(path: &Path, config: DetectorConfig) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let model = rustface::read_model(Cursor::new(bytes))
            .map_err(|e| Error::Detector(format!("{}: {e}", path.display())))?;
        Self::with_model(model, config)
    }

    fn with_model(model: rustface::Model, config: DetectorConfig) -> Result<Self> {
        if !(0.1..=0.99).contains(&config.pyramid_scale)
            || config.window_step == 0
            || config.score_threshold <= 0.0
        {
            return Err(Error::InvalidInput {
                what: "detector settings".into(),
                reason: format!(
                    "{config:?}: expected pyramid_scale in 0.1..=0.99, window_step > 0, score_threshold > 0"
                ),
            });
        }
        let mut inner = rustface::create_detector_with_model(model);
        inner.set_min_face_size(20);
        inner.set_pyramid_scale_factor(config.pyramid_scale);
        inner.set_slide_window_step(config.window_step, config.window_step);
        inner.set_score_thresh(config.score_threshold);
        crate::runtime::use_own_rayon_pool();
        Ok(Self { inner, config })
    }

    /// The settings in use.
    pub fn config(&self) -> &DetectorConfig {
        &self.config
    }

    /// Find faces in a grayscale frame; boxes are in the frame's pixels, clipped to it, ordered
    /// left to right. Frames smaller than the detector's 20 px window have no faces.
    pub fn detect(&mut self, gray: &GrayImage) -> Vec<FaceBox> {
        let (w, h) = gray.dimensions();
        if w < 20 || h < 20 {
            return Vec::new();
        }
        let scale = match self.config.detect_width {
            Some(dw) if w > dw => dw as f32 / w as f32,
            _ => 1.0,
        };
        let small;
        let img = if scale < 1.0 {
            let sw = ((w as f32 * scale).round() as u32).max(1);
            let sh = ((h as f32 * scale).round() as u32).max(1);
            if sw < 20 || sh < 20 {
                return Vec::new();
            }
            small = resize_gray(gray, sw, sh);
            &small
        } else {
            gray
        };
        let (iw, ih) = img.dimensions();
        let (sx, sy) = (w as f32 / iw as f32, h as f32 / ih as f32);
        let data = rustface::ImageData::new(img.as_raw(), iw, ih);
        let mut boxes: Vec<FaceBox> = self
            .inner
            .detect(&data)
            .iter()
            .filter_map(|f| {
                let b = f.bbox();
                let x0 = (b.x() as f32 * sx).round().max(0.0);
                let y0 = (b.y() as f32 * sy).round().max(0.0);
                let x1 = ((b.x() as f32 + b.width() as f32) * sx)
                    .round()
                    .min(w as f32);
                let y1 = ((b.y() as f32 + b.height() as f32) * sy)
                    .round()
                    .min(h as f32);
                (x1 > x0 && y1 > y0).then(|| FaceBox {
                    x: x0 as i32,
                    y: y0 as i32,
                    w: (x1 - x0) as u32,
                    h: (y1 - y0) as u32,
                    score: f.score() as f32,
                })
            })
            .collect();
        boxes.sort_by_key(|b| (b.x, b.y));
        boxes
    }
}
