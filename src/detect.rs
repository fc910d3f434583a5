//! Face detection with rustface (SeetaFace frontal cascade). The only module that touches rustface.
//!
//! rustface 0.1.7 ignores its minimum-face-size setting: it finds faces of its 40 px window and
//! larger, and its cost grows with the image area. So the image is searched on a copy scaled
//! so that the smallest face wanted is just above the window: still images at full resolution
//! with a fine pyramid, live frames at the scale their smallest face needs, and the regions
//! around tracked faces at the scale each face's size needs ([`FaceDetector::detect_region`]).

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

    /// A fast, coarse whole-frame search: a 320 px wide detection copy and a coarse pyramid,
    /// so faces under about 80 px of a 640x480 frame are missed. The pipeline no longer uses it
    /// (video follows faces with [`DetectorConfig::tracking`]); it is for callers who want one
    /// cheap search per frame.
    pub fn live() -> Self {
        Self {
            detect_width: Some(320),
            pyramid_scale: 0.7,
            window_step: 8,
            score_threshold: 2.0,
        }
    }

    /// For video, followed by the tracker: no width of its own (the pipeline picks the scale
    /// from the smallest face wanted and from each followed face's size), a coarse pyramid
    /// and a 4 px step. A step of 8 missed half the 40-50 px faces of a group photograph
    /// (12 of 28 at 1280 px wide); 4 finds them all at 0.7 of the cost of the finer pyramid.
    pub fn tracking() -> Self {
        Self {
            detect_width: None,
            pyramid_scale: 0.7,
            window_step: 4,
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
    /// left to right. Frames smaller than the detector's 40 px window have no faces.
    pub fn detect(&mut self, gray: &GrayImage) -> Vec<FaceBox> {
        let (w, h) = gray.dimensions();
        let scale = match self.config.detect_width {
            Some(dw) if w > dw => dw as f32 / w as f32,
            _ => 1.0,
        };
        self.detect_region(gray, Region::whole(w, h), scale)
    }

    /// Find faces in `region` of `gray`, searched on a copy scaled by `scale` (in
    /// [`MIN_SCALE`]..=[`MAX_SCALE`]; the detector only sees faces of at least
    /// [`MIN_FACE_WINDOW`] pixels in that copy, so the live pipeline picks `scale` from the
    /// size of the faces it looks for). Boxes are in `gray`'s pixels, clipped to the region.
    pub fn detect_region(&mut self, gray: &GrayImage, region: Region, scale: f32) -> Vec<FaceBox> {
        let Some(region) = region.clip(gray.width(), gray.height()) else {
            return Vec::new();
        };
        let scale = scale.clamp(MIN_SCALE, MAX_SCALE);
        let sw = (region.w as f32 * scale).round() as u32;
        let sh = (region.h as f32 * scale).round() as u32;
        if sw < MIN_FACE_WINDOW || sh < MIN_FACE_WINDOW {
            return Vec::new();
        }
        let whole =
            region.x == 0 && region.y == 0 && region.w == gray.width() && region.h == gray.height();
        let cropped;
        let src = if whole {
            gray
        } else {
            cropped = crate::imaging::crop_gray(gray, region.x, region.y, region.w, region.h);
            &cropped
        };
        let scaled;
        let img = if (sw, sh) == (region.w, region.h) {
            src
        } else {
            scaled = resize_gray(src, sw, sh);
            &scaled
        };
        let (sx, sy) = (region.w as f32 / sw as f32, region.h as f32 / sh as f32);
        let data = rustface::ImageData::new(img.as_raw(), sw, sh);
        let (ox, oy) = (region.x as f32, region.y as f32);
        let (rx1, ry1) = (ox + region.w as f32, oy + region.h as f32);
        let mut boxes: Vec<FaceBox> = self
            .inner
            .detect(&data)
            .iter()
            .filter_map(|f| {
                let b = f.bbox();
                let x0 = (ox + b.x() as f32 * sx).round().max(ox);
                let y0 = (oy + b.y() as f32 * sy).round().max(oy);
                let x1 = (ox + (b.x() as f32 + b.width() as f32) * sx)
                    .round()
                    .min(rx1);
                let y1 = (oy + (b.y() as f32 + b.height() as f32) * sy)
                    .round()
                    .min(ry1);
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

/// The side in pixels of the smallest face the detector finds in the image it searches: the
/// SeetaFace cascade's 40 px window (rustface never enlarges the image, whatever its minimum
/// face size says).
pub const MIN_FACE_WINDOW: u32 = 40;

/// The smallest scale [`FaceDetector::detect_region`] searches at.
pub const MIN_SCALE: f32 = 0.05;

/// The largest scale [`FaceDetector::detect_region`] searches at: enlarging by 2 lets it find
/// faces down to half its window, beyond that there is too little left of a face to read.
pub const MAX_SCALE: f32 = 2.0;

/// A rectangle of an image in pixels, to search in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

impl Region {
    /// The whole of a `w` x `h` image.
    pub fn whole(w: u32, h: u32) -> Self {
        Self { x: 0, y: 0, w, h }
    }

    /// The box grown by `pad` times its size on each side, clipped to a `w` x `h` image; `None`
    /// when nothing of it is inside.
    pub fn around(b: &FaceBox, pad: f32, w: u32, h: u32) -> Option<Self> {
        let (px, py) = (b.w as f32 * pad, b.h as f32 * pad);
        let x0 = (b.x as f32 - px).floor().max(0.0);
        let y0 = (b.y as f32 - py).floor().max(0.0);
        let x1 = (b.x as f32 + b.w as f32 + px).ceil().min(w as f32);
        let y1 = (b.y as f32 + b.h as f32 + py).ceil().min(h as f32);
        (x1 > x0 && y1 > y0).then_some(Self {
            x: x0 as u32,
            y: y0 as u32,
            w: (x1 - x0) as u32,
            h: (y1 - y0) as u32,
        })
    }

    /// Whether `b` reaches into the region (boxes that only touch its edge do not).
    pub fn overlaps(&self, b: &FaceBox) -> bool {
        let (x1, y1) = (self.x as i64 + self.w as i64, self.y as i64 + self.h as i64);
        (b.x as i64) < x1
            && (b.y as i64) < y1
            && b.x as i64 + b.w as i64 > self.x as i64
            && b.y as i64 + b.h as i64 > self.y as i64
    }

    /// The part inside a `w` x `h` image, if any.
    fn clip(self, w: u32, h: u32) -> Option<Self> {
        let x1 = (self.x.saturating_add(self.w)).min(w);
        let y1 = (self.y.saturating_add(self.h)).min(h);
        (x1 > self.x && y1 > self.y).then(|| Self {
            x: self.x,
            y: self.y,
            w: x1 - self.x,
            h: y1 - self.y,
        })
    }
}
