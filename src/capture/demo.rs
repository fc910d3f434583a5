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
/// per output pixel took 2 ms a frame.
fn sample(src: &RgbImage, x0: f32, y0: f32, step: f32, (w, h): (u32, u32)) -> RgbImage {
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
    let across = |y: usize, dst: &mut Vec<u16>| {
        let r = &raw[y * sw * 3..][..sw * 3];
        dst.clear();
        for &(x0, x1, tx) in &xs {
            let (a, b) = (x0 * 3, x1 * 3);
            for c in 0..3 {
                dst.push((r[a + c] as u32 * (256 - tx) + r[b + c] as u32 * tx) as u16);
            }
        }
    };
    let mut out = vec![0u8; row_len * h as usize];
    let (mut top, mut bot) = (Vec::with_capacity(row_len), Vec::with_capacity(row_len));
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
