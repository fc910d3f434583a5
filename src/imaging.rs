//! Image work shared by every stage: decoding files, grayscale, face boxes, square crops and resizing.
//!
//! Grayscale uses the BT.601 weights (as OpenCV does), and the bilinear resize samples at pixel
//! centres like OpenCV's `INTER_LINEAR`, because the shipped models were trained on images made
//! that way; a different filter costs accuracy.

use std::path::Path;

use image::{DynamicImage, GrayImage, ImageReader, RgbImage};
use serde::Serialize;

use crate::error::{Error, Result};

/// Largest width or height of an image we agree to decode (guards against decompression bombs).
pub const MAX_IMAGE_SIDE: u32 = 16_384;

/// A face's bounding box in frame pixels, with the detector's confidence.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FaceBox {
    pub x: i32,
    pub y: i32,
    pub w: u32,
    pub h: u32,
    /// Detector score (larger is more certain; rustface's threshold is around 2).
    #[serde(skip)]
    pub score: f32,
}

impl FaceBox {
    /// Intersection over union of two boxes, in 0..=1.
    pub fn iou(&self, other: &FaceBox) -> f32 {
        let x0 = self.x.max(other.x);
        let y0 = self.y.max(other.y);
        let x1 = (self.x + self.w as i32).min(other.x + other.w as i32);
        let y1 = (self.y + self.h as i32).min(other.y + other.h as i32);
        let inter = ((x1 - x0).max(0) as f32) * ((y1 - y0).max(0) as f32);
        let union = (self.w * self.h + other.w * other.h) as f32 - inter;
        if union <= 0.0 { 0.0 } else { inter / union }
    }

    /// Centre of the box.
    pub fn center(&self) -> (f32, f32) {
        (
            self.x as f32 + self.w as f32 / 2.0,
            self.y as f32 + self.h as f32 / 2.0,
        )
    }
}

/// Decode an image file of any supported format and bit depth (8/16-bit, gray, RGB, RGBA) to 8-bit RGB.
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    let err = |reason: String| Error::Image {
        path: path.to_path_buf(),
        reason,
    };
    let reader = ImageReader::open(path)
        .map_err(|e| err(e.to_string()))?
        .with_guessed_format()
        .map_err(|e| err(e.to_string()))?;
    let (w, h) = reader
        .into_dimensions()
        .map_err(|e| err(format!("not a supported image ({e})")))?;
    if w == 0 || h == 0 || w > MAX_IMAGE_SIDE || h > MAX_IMAGE_SIDE {
        return Err(err(format!(
            "size {w}x{h} is outside 1x1..={MAX_IMAGE_SIDE}x{MAX_IMAGE_SIDE}"
        )));
    }
    let img = ImageReader::open(path)
        .map_err(|e| err(e.to_string()))?
        .with_guessed_format()
        .map_err(|e| err(e.to_string()))?
        .decode()
        .map_err(|e| err(format!("not a supported image ({e})")))?;
    Ok(to_rgb8(img))
}

/// Convert any decoded image to 8-bit RGB; alpha is dropped, 16-bit and float samples are scaled.
pub fn to_rgb8(img: DynamicImage) -> RgbImage {
    match img {
        DynamicImage::ImageRgb8(rgb) => rgb,
        other => other.to_rgb8(),
    }
}

/// BT.601 luma (0.299 R + 0.587 G + 0.114 B), rounded, as OpenCV's `COLOR_RGB2GRAY`.
pub fn to_gray(rgb: &RgbImage) -> GrayImage {
    let (w, h) = rgb.dimensions();
    let mut out = Vec::with_capacity((w * h) as usize);
    for p in rgb.as_raw().chunks_exact(3) {
        let y = (p[0] as u32 * 4899 + p[1] as u32 * 9617 + p[2] as u32 * 1868 + 8192) >> 14;
        out.push(y as u8);
    }
    GrayImage::from_raw(w, h, out).expect("buffer has w*h bytes")
}

/// Resize a grayscale image to `w` x `h` with bilinear filtering.
///
/// Upscaling and mild downscaling sample at pixel centres exactly like OpenCV's `INTER_LINEAR`
/// (what FER2013 models were trained with). Shrinking by more than 2x first averages pixel
/// blocks so that a large face does not alias into noise.
pub fn resize_gray(src: &GrayImage, w: u32, h: u32) -> GrayImage {
    let (sw, sh) = src.dimensions();
    if sw == w && sh == h {
        return src.clone();
    }
    let factor = (sw / w.max(1)).min(sh / h.max(1));
    if factor >= 2 {
        let small = box_shrink(src, factor);
        return resize_gray(&small, w, h);
    }
    bilinear(src, w, h)
}

/// Average non-overlapping `f` x `f` blocks (the last partial row/column is averaged over what exists).
fn box_shrink(src: &GrayImage, f: u32) -> GrayImage {
    let (sw, sh) = src.dimensions();
    let (w, h) = (sw.div_ceil(f), sh.div_ceil(f));
    let raw = src.as_raw();
    let mut out = Vec::with_capacity((w * h) as usize);
    for by in 0..h {
        let y0 = by * f;
        let y1 = (y0 + f).min(sh);
        for bx in 0..w {
            let x0 = bx * f;
            let x1 = (x0 + f).min(sw);
            let mut sum = 0u32;
            for y in y0..y1 {
                let row = &raw[(y * sw) as usize..][..sw as usize];
                sum += row[x0 as usize..x1 as usize]
                    .iter()
                    .map(|&v| v as u32)
                    .sum::<u32>();
            }
            let n = (y1 - y0) * (x1 - x0);
            out.push(((sum + n / 2) / n) as u8);
        }
    }
    GrayImage::from_raw(w, h, out).expect("buffer has w*h bytes")
}

/// Source index pairs and weights for one axis, OpenCV style: `s = (d + 0.5) * scale - 0.5`, clamped.
/// ONNX export builds the same taps into its graphs, so that they resize exactly as this does.
pub(crate) fn axis_taps(src: u32, dst: u32) -> Vec<(usize, usize, f32)> {
    let scale = src as f32 / dst as f32;
    (0..dst)
        .map(|d| {
            let s = ((d as f32 + 0.5) * scale - 0.5).max(0.0);
            let i0 = (s.floor() as u32).min(src - 1);
            let i1 = (i0 + 1).min(src - 1);
            let t = (s - i0 as f32).clamp(0.0, 1.0);
            (i0 as usize, i1 as usize, t)
        })
        .collect()
}

fn bilinear(src: &GrayImage, w: u32, h: u32) -> GrayImage {
    let (sw, sh) = src.dimensions();
    let xs = axis_taps(sw, w);
    let ys = axis_taps(sh, h);
    let raw = src.as_raw();
    let mut out = Vec::with_capacity((w * h) as usize);
    for &(y0, y1, ty) in &ys {
        let r0 = &raw[y0 * sw as usize..][..sw as usize];
        let r1 = &raw[y1 * sw as usize..][..sw as usize];
        for &(x0, x1, tx) in &xs {
            let top = r0[x0] as f32 * (1.0 - tx) + r0[x1] as f32 * tx;
            let bot = r1[x0] as f32 * (1.0 - tx) + r1[x1] as f32 * tx;
            let v = top * (1.0 - ty) + bot * ty;
            out.push(v.round().clamp(0.0, 255.0) as u8);
        }
    }
    GrayImage::from_raw(w, h, out).expect("buffer has w*h bytes")
}

/// The square around a face box, grown by `margin` (a fraction of the box side) on every side.
/// Returned as `(x, y, side)`; it may reach outside the frame.
pub fn square_around(b: &FaceBox, margin: f32) -> (i32, i32, u32) {
    let side = (b.w.max(b.h) as f32 * (1.0 + 2.0 * margin))
        .round()
        .max(1.0);
    let (cx, cy) = b.center();
    let x = (cx - side / 2.0).round() as i32;
    let y = (cy - side / 2.0).round() as i32;
    (x, y, side as u32)
}

/// Cut a square face crop (see [`square_around`]) from a grayscale frame and resize it to
/// `size` x `size`. Parts outside the frame repeat the nearest edge pixel.
pub fn crop_face(gray: &GrayImage, b: &FaceBox, margin: f32, size: u32) -> GrayImage {
    let (x, y, side) = square_around(b, margin);
    let (fw, fh) = gray.dimensions();
    let raw = gray.as_raw();
    let mut crop = Vec::with_capacity((side * side) as usize);
    for dy in 0..side as i32 {
        let sy = (y + dy).clamp(0, fh as i32 - 1) as usize;
        let row = &raw[sy * fw as usize..][..fw as usize];
        for dx in 0..side as i32 {
            let sx = (x + dx).clamp(0, fw as i32 - 1) as usize;
            crop.push(row[sx]);
        }
    }
    let crop = GrayImage::from_raw(side, side, crop).expect("buffer has side*side bytes");
    resize_gray(&crop, size, size)
}

/// Mirror a grayscale image left to right (test-time augmentation, training flips).
pub fn flip_horizontal(img: &GrayImage) -> GrayImage {
    image::imageops::flip_horizontal(img)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bilinear_matches_opencv_on_a_ramp() {
        // cv2.resize(np.array([[0, 100]], np.uint8), (4, 1)) == [[0, 25, 75, 100]]
        let src = GrayImage::from_raw(2, 1, vec![0, 100]).unwrap();
        let out = resize_gray(&src, 4, 1);
        assert_eq!(out.as_raw(), &vec![0, 25, 75, 100]);
    }

    #[test]
    fn gray_uses_bt601() {
        let rgb = RgbImage::from_raw(3, 1, vec![255, 0, 0, 0, 255, 0, 0, 0, 255]).unwrap();
        assert_eq!(to_gray(&rgb).as_raw(), &vec![76, 150, 29]);
    }

    #[test]
    fn crop_outside_the_frame_repeats_edges() {
        let gray = GrayImage::from_fn(10, 10, |x, _| image::Luma([x as u8 * 10]));
        let b = FaceBox {
            x: -5,
            y: -5,
            w: 10,
            h: 10,
            score: 1.0,
        };
        let c = crop_face(&gray, &b, 0.0, 10);
        assert_eq!(c.dimensions(), (10, 10));
        assert_eq!(c.get_pixel(0, 0).0[0], 0);
        assert_eq!(c.get_pixel(9, 9).0[0], 40);
    }

    #[test]
    fn big_shrink_averages() {
        let gray = GrayImage::from_fn(64, 64, |x, y| {
            image::Luma([if (x + y) % 2 == 0 { 0 } else { 200 }])
        });
        let small = resize_gray(&gray, 8, 8);
        assert!(small.pixels().all(|p| (p.0[0] as i32 - 100).abs() <= 1));
    }

    #[test]
    fn iou_of_identical_and_disjoint_boxes() {
        let a = FaceBox {
            x: 0,
            y: 0,
            w: 10,
            h: 10,
            score: 0.0,
        };
        let b = FaceBox {
            x: 20,
            y: 0,
            w: 10,
            h: 10,
            score: 0.0,
        };
        assert_eq!(a.iou(&a), 1.0);
        assert_eq!(a.iou(&b), 0.0);
    }
}
