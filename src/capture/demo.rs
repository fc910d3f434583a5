//! The built-in demo source: slow pans and zooms over public-domain photographs (see
//! `assets/SOURCES.md`), 640x480, so that face boxes and bars move as with a webcam.

use image::RgbImage;

use super::{FrameSource, Pacing, SourceFrame, SourceOptions};
use crate::error::{Error, Result};
use crate::imaging::to_rgb8;

/// Output size of demo frames.
pub const DEMO_SIZE: (u32, u32) = (640, 480);

/// Frames each scene lasts before the next one (5 s at 30 fps).
pub const SCENE_FRAMES: u64 = 150;

/// The scenes, in order: name, photo.
const SCENES: [(&str, &[u8]); 3] = [
    ("astronaut", include_bytes!("../../assets/astronaut.png")),
    ("camera", include_bytes!("../../assets/camera.png")),
    (
        "solvay",
        include_bytes!("../../assets/solvay_1927_scientists.jpg"),
    ),
];

/// Names accepted after `demo:`.
pub fn scene_names() -> Vec<&'static str> {
    SCENES.iter().map(|s| s.0).collect()
}

struct Scene {
    name: &'static str,
    photo: RgbImage,
}

/// Animated crops of the demo photographs.
pub struct DemoSource {
    scenes: Vec<Scene>,
    frame: u64,
    opts: SourceOptions,
}

impl DemoSource {
    /// All scenes in turn, or only the one named.
    pub fn new(scene: Option<&str>, opts: SourceOptions) -> Result<Self> {
        let chosen: Vec<_> = match scene {
            None => SCENES.to_vec(),
            Some(name) => {
                let s = SCENES
                    .iter()
                    .find(|s| s.0 == name)
                    .ok_or_else(|| Error::InvalidInput {
                        what: "demo scene".into(),
                        reason: format!("{name:?} is not one of {}", scene_names().join(", ")),
                    })?;
                vec![*s]
            }
        };
        let scenes = chosen
            .into_iter()
            .map(|(name, bytes)| {
                let photo = image::load_from_memory(bytes).map_err(|e| Error::Image {
                    path: name.into(),
                    reason: e.to_string(),
                })?;
                Ok(Scene {
                    name,
                    photo: to_rgb8(photo),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            scenes,
            frame: 0,
            opts,
        })
    }

    /// Render frame `i` (deterministic: the same index gives the same picture).
    pub fn render(&self, i: u64) -> RgbImage {
        let scene = &self.scenes[((i / SCENE_FRAMES) as usize) % self.scenes.len()];
        let t = i as f32 / 30.0;
        let (pw, ph) = (scene.photo.width() as f32, scene.photo.height() as f32);
        let (ow, oh) = (DEMO_SIZE.0 as f32, DEMO_SIZE.1 as f32);
        // The window keeps the output's 4:3 shape; it breathes in and out and drifts.
        let (base_w, cx0, cy0, drift) = match scene.name {
            "solvay" => (420.0, pw * 0.5, ph * 0.15, pw * 0.2),
            _ => ((pw).min(ph * ow / oh), pw * 0.47, ph * 0.40, pw * 0.05),
        };
        let zoom = 1.0 + 0.15 * (1.0 + (t * 0.9).sin());
        let win_w = base_w / zoom;
        let win_h = win_w * oh / ow;
        let cx = (cx0 + drift * (t * 0.35).sin()).clamp(win_w / 2.0, pw - win_w / 2.0);
        let cy = (cy0 + 0.04 * ph * (t * 0.5).cos()).clamp(win_h / 2.0, ph - win_h / 2.0);
        sample(
            &scene.photo,
            cx - win_w / 2.0,
            cy - win_h / 2.0,
            win_w / ow,
            DEMO_SIZE,
        )
    }
}

/// Bilinear resample of the window starting at `(x0, y0)` with `step` source pixels per output pixel.
///
/// Weights are 8-bit fixed point; each source row the window uses is interpolated across once
/// (kept while consecutive output rows share it, as they do when the window is enlarged), then
/// output rows blend two such rows. The float version with a push per byte took a tenth of a
/// core at 30 frames/s, more than the face search of the frame it drew; blending all four taps
/// per output pixel took 2 ms a frame, and pushing each interpolated byte 1.1 ms.
///
/// Compiled for AVX2 where the CPU has it, which vectorises the blend of two rows wider
/// (0.99 ms a 640x480 frame as baseline x86-64 code, 0.57 ms with AVX2: `cargo bench --bench
/// video -- demo_frame`).
fn sample(src: &RgbImage, x0: f32, y0: f32, step: f32, size: (u32, u32)) -> RgbImage {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2")]
        fn avx2(src: &RgbImage, x0: f32, y0: f32, step: f32, size: (u32, u32)) -> RgbImage {
            sample_rows(src, x0, y0, step, size)
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            return unsafe { avx2(src, x0, y0, step, size) };
        }
    }
    sample_rows(src, x0, y0, step, size)
}

#[inline(always)]
fn sample_rows(src: &RgbImage, x0: f32, y0: f32, step: f32, (w, h): (u32, u32)) -> RgbImage {
    let (sw, sh) = (src.width() as usize, src.height() as usize);
    let taps = |origin: f32, n: u32, max: usize| -> Vec<(usize, usize, u32)> {
        (0..n)
            .map(|o| {
                let s = (origin + (o as f32 + 0.5) * step - 0.5).clamp(0.0, (max - 1) as f32);
                let i0 = s.floor() as usize;
                let frac = ((s - i0 as f32) * 256.0).round() as u32;
                (i0, (i0 + 1).min(max - 1), frac.min(256))
            })
            .collect()
    };
    let xs = taps(x0, w, sw);
    let ys = taps(y0, h, sh);
    let raw = src.as_raw();
    let row_len = w as usize * 3;
    // Source row `y` interpolated across, in 8.8 fixed point.
    let across = |y: usize, dst: &mut [u16]| {
        let r = &raw[y * sw * 3..][..sw * 3];
        for (d, &(x0, x1, tx)) in dst.chunks_exact_mut(3).zip(&xs) {
            let (a, b) = (&r[x0 * 3..][..3], &r[x1 * 3..][..3]);
            for c in 0..3 {
                d[c] = (a[c] as u32 * (256 - tx) + b[c] as u32 * tx) as u16;
            }
        }
    };
    let mut out = vec![0u8; row_len * h as usize];
    let (mut top, mut bot) = (vec![0u16; row_len], vec![0u16; row_len]);
    let mut have: (Option<usize>, Option<usize>) = (None, None);
    for (row, &(y0, y1, ty)) in out.chunks_exact_mut(row_len).zip(&ys) {
        if have.0 != Some(y0) {
            if have.1 == Some(y0) {
                std::mem::swap(&mut top, &mut bot);
                have.0 = have.1.take();
            } else {
                across(y0, &mut top);
                have.0 = Some(y0);
            }
        }
        if have.1 != Some(y1) {
            across(y1, &mut bot);
            have.1 = Some(y1);
        }
        let (wt, wb) = (256 - ty, ty);
        for ((px, &t), &b) in row.iter_mut().zip(&top).zip(&bot) {
            *px = ((t as u32 * wt + b as u32 * wb + (1 << 15)) >> 16) as u8;
        }
    }
    RgbImage::from_raw(w, h, out).expect("w*h*3 bytes")
}

impl FrameSource for DemoSource {
    fn describe(&self) -> String {
        let names: Vec<&str> = self.scenes.iter().map(|s| s.name).collect();
        format!("demo ({})", names.join(", "))
    }

    fn next_frame(&mut self) -> Result<Option<SourceFrame>> {
        let rgb = self.render(self.frame);
        let source_ms = self.opts.nominal_ms(self.frame);
        self.frame += 1;
        Ok(Some(SourceFrame { rgb, source_ms }))
    }

    fn pacing(&self) -> Pacing {
        self.opts.pacing(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each output pixel straight from its four source pixels, with the same fixed-point
    /// weights: what the row-caching `sample` must reproduce.
    fn sample_naive(src: &RgbImage, x0: f32, y0: f32, step: f32, (w, h): (u32, u32)) -> RgbImage {
        let tap = |origin: f32, o: u32, max: u32| {
            let s = (origin + (o as f32 + 0.5) * step - 0.5).clamp(0.0, (max - 1) as f32);
            let i0 = s.floor() as u32;
            let frac = (((s - i0 as f32) * 256.0).round() as u32).min(256);
            (i0, (i0 + 1).min(max - 1), frac)
        };
        RgbImage::from_fn(w, h, |x, y| {
            let (xa, xb, tx) = tap(x0, x, src.width());
            let (ya, yb, ty) = tap(y0, y, src.height());
            let row = |sy: u32, c: usize| {
                src.get_pixel(xa, sy).0[c] as u32 * (256 - tx)
                    + src.get_pixel(xb, sy).0[c] as u32 * tx
            };
            image::Rgb(std::array::from_fn(|c| {
                ((row(ya, c) * (256 - ty) + row(yb, c) * ty + (1 << 15)) >> 16) as u8
            }))
        })
    }

    #[test]
    fn demo_frames_blend_the_four_nearest_source_pixels() {
        let src = RgbImage::from_fn(37, 29, |x, y| {
            image::Rgb([(x * 7 + y * 3) as u8, (x * y) as u8, (250 - x * 5) as u8])
        });
        // Enlarged (rows shared between output rows), shrunk, and reaching past the edges.
        for (x0, y0, step) in [(3.2, 1.7, 0.37), (0.0, 0.0, 1.6), (-2.0, 20.0, 0.9)] {
            let fast = sample(&src, x0, y0, step, (41, 33));
            assert_eq!(
                fast,
                sample_naive(&src, x0, y0, step, (41, 33)),
                "{x0} {y0} {step}"
            );
        }
    }
}
