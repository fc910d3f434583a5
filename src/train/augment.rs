//! Training-time augmentation of grayscale faces: horizontal flip, random shift, small rotation,
//! brightness and contrast. Every transform keeps the image size and the 0..=255 range.

use image::GrayImage;

use super::Rng;

/// How strongly to augment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Augment {
    /// Probability of a horizontal flip.
    pub flip: f32,
    /// Largest shift in pixels, in each direction.
    pub shift: i32,
    /// Largest rotation in degrees, either way.
    pub rotate_deg: f32,
    /// Largest brightness change, as a fraction of 255.
    pub brightness: f32,
    /// Largest contrast change, as a fraction (0.2 = x0.8 .. x1.2).
    pub contrast: f32,
}

impl Default for Augment {
    fn default() -> Self {
        Self {
            flip: 0.5,
            shift: 4,
            rotate_deg: 10.0,
            brightness: 0.1,
            contrast: 0.2,
        }
    }
}

impl Augment {
    /// A randomly transformed copy of `img`.
    pub fn apply(&self, img: &GrayImage, rng: &mut Rng) -> GrayImage {
        let (w, h) = img.dimensions();
        let flip = rng.unit() < self.flip;
        let dx = rng.range_i32(-self.shift, self.shift) as f32;
        let dy = rng.range_i32(-self.shift, self.shift) as f32;
        let angle = (rng.unit() * 2.0 - 1.0) * self.rotate_deg.to_radians();
        let gain = 1.0 + (rng.unit() * 2.0 - 1.0) * self.contrast;
        let bias = (rng.unit() * 2.0 - 1.0) * self.brightness * 255.0;
        let (cx, cy) = ((w as f32 - 1.0) / 2.0, (h as f32 - 1.0) / 2.0);
        let (s, c) = angle.sin_cos();
        let raw = img.as_raw();
        let px = |x: i32, y: i32| {
            raw[(y.clamp(0, h as i32 - 1) as u32 * w + x.clamp(0, w as i32 - 1) as u32) as usize]
                as f32
        };
        let mean = raw.iter().map(|&v| v as f32).sum::<f32>() / raw.len().max(1) as f32;
        GrayImage::from_fn(w, h, |x, y| {
            // Inverse map: output pixel -> source position (rotate about the centre, then shift).
            let ox = if flip {
                w as f32 - 1.0 - x as f32
            } else {
                x as f32
            } - cx
                - dx;
            let oy = y as f32 - cy - dy;
            let sx = c * ox + s * oy + cx;
            let sy = -s * ox + c * oy + cy;
            let (x0, y0) = (sx.floor(), sy.floor());
            let (tx, ty) = (sx - x0, sy - y0);
            let (x0, y0) = (x0 as i32, y0 as i32);
            let top = px(x0, y0) * (1.0 - tx) + px(x0 + 1, y0) * tx;
            let bot = px(x0, y0 + 1) * (1.0 - tx) + px(x0 + 1, y0 + 1) * tx;
            let v = top * (1.0 - ty) + bot * ty;
            let v = (v - mean) * gain + mean + bias;
            image::Luma([v.round().clamp(0.0, 255.0) as u8])
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imaging::flip_horizontal;

    fn sample() -> GrayImage {
        GrayImage::from_fn(48, 48, |x, y| image::Luma([((x * 5 + y * 3) % 256) as u8]))
    }

    #[test]
    fn augmentation_keeps_shape_and_range() {
        let mut rng = Rng::new(7);
        let strong = Augment {
            flip: 0.5,
            shift: 8,
            rotate_deg: 30.0,
            brightness: 0.5,
            contrast: 0.9,
        };
        for _ in 0..50 {
            let out = strong.apply(&sample(), &mut rng);
            assert_eq!(out.dimensions(), (48, 48));
        }
        // No change asked: the image comes back unchanged.
        let none = Augment {
            flip: 0.0,
            shift: 0,
            rotate_deg: 0.0,
            brightness: 0.0,
            contrast: 0.0,
        };
        assert_eq!(none.apply(&sample(), &mut rng), sample());
        // A certain flip is the mirror image.
        let flip = Augment { flip: 1.0, ..none };
        assert_eq!(flip.apply(&sample(), &mut rng), flip_horizontal(&sample()));
    }

    #[test]
    fn flipping_twice_is_the_identity() {
        let img = sample();
        assert_eq!(flip_horizontal(&flip_horizontal(&img)), img);
        let mut rng = Rng::new(1);
        let flip = Augment {
            flip: 1.0,
            shift: 0,
            rotate_deg: 0.0,
            brightness: 0.0,
            contrast: 0.0,
        };
        assert_eq!(flip.apply(&flip.apply(&img, &mut rng), &mut rng), img);
    }
}
