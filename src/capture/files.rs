//! Frames from disk: a folder of images (in name order), an animated GIF, or a single image.

use std::path::{Path, PathBuf};

use image::codecs::gif::GifDecoder;
use image::{AnimationDecoder, RgbImage};

use super::{FrameSource, Pacing, SourceFrame, SourceOptions};
use crate::error::{Error, Result};
use crate::imaging::{MAX_IMAGE_SIDE, load_rgb, to_rgb8};

/// Most frames decoded from one GIF (they are held in memory).
pub const MAX_GIF_FRAMES: usize = 5_000;

/// Most bytes of decoded GIF frames held in memory.
pub const MAX_GIF_BYTES: u64 = 2 << 30;

enum Frames {
    /// Image files, decoded one at a time as they are delivered.
    Files(Vec<PathBuf>),
    /// Frames decoded up front (single image).
    Decoded(Vec<RgbImage>),
    /// An animation's frames with their start times in milliseconds (summed frame delays),
    /// and its whole length.
    Timed(Vec<(RgbImage, f64)>, f64),
}

/// A finite source from disk; with `looping` it starts again at the end.
pub struct FileSource {
    path: PathBuf,
    frames: Frames,
    next: usize,
    /// Frames delivered so far, loops included.
    delivered: u64,
    /// Times of earlier loops, added to an animation's own times when it loops.
    loop_offset_ms: f64,
    opts: SourceOptions,
}

impl FileSource {
    /// Open a folder of images, an animated GIF or one image file.
    pub fn open(path: &Path, opts: SourceOptions) -> Result<Self> {
        let fail = |reason: String| Error::Image {
            path: path.to_path_buf(),
            reason,
        };
        let meta = std::fs::metadata(path).map_err(|e| fail(format!("cannot open source: {e}")))?;
        let frames = if meta.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| Error::io(path, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && is_image(p))
                .collect();
            files.sort();
            if files.is_empty() {
                return Err(fail(
                    "the folder has no PNG, JPEG, GIF or BMP images".into(),
                ));
            }
            Frames::Files(files)
        } else if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("gif"))
        {
            let (frames, total_ms) = decode_gif(path)?;
            Frames::Timed(frames, total_ms)
        } else {
            Frames::Decoded(vec![load_rgb(path)?])
        };
        Ok(Self {
            path: path.to_path_buf(),
            frames,
            next: 0,
            delivered: 0,
            loop_offset_ms: 0.0,
            opts,
        })
    }

    fn len(&self) -> usize {
        match &self.frames {
            Frames::Files(f) => f.len(),
            Frames::Decoded(f) => f.len(),
            Frames::Timed(f, _) => f.len(),
        }
    }

    /// End time of the last frame of an animation, in milliseconds.
    fn animation_ms(&self) -> Option<f64> {
        match &self.frames {
            Frames::Timed(_, total_ms) => Some(*total_ms),
            _ => None,
        }
    }
}

fn is_image(p: &Path) -> bool {
    p.extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .is_some_and(|e| matches!(e.as_str(), "png" | "jpg" | "jpeg" | "gif" | "bmp"))
}

/// Delay given to GIF frames that declare none (browsers use 100 ms for 0 or 1 hundredths).
const GIF_DEFAULT_DELAY_MS: f64 = 100.0;

/// A GIF frame's delay in milliseconds, as browsers read it.
fn gif_delay_ms(delay: image::Delay) -> f64 {
    let (num, den) = delay.numer_denom_ms();
    let ms = num as f64 / den.max(1) as f64;
    if ms < 20.0 { GIF_DEFAULT_DELAY_MS } else { ms }
}

/// An animated GIF's frames with their start times, and its length, in milliseconds.
fn decode_gif(path: &Path) -> Result<(Vec<(RgbImage, f64)>, f64)> {
    let fail = |reason: String| Error::Image {
        path: path.to_path_buf(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let decoder = GifDecoder::new(std::io::BufReader::new(file))
        .map_err(|e| fail(format!("not a GIF ({e})")))?;
    let (w, h) = image::ImageDecoder::dimensions(&decoder);
    let frame_bytes = w as u64 * h as u64 * 4;
    if w == 0 || h == 0 || w > MAX_IMAGE_SIDE || h > MAX_IMAGE_SIDE {
        return Err(fail(format!(
            "canvas {w}x{h} is outside 1x1..={MAX_IMAGE_SIDE}x{MAX_IMAGE_SIDE}"
        )));
    }
    let mut out = Vec::new();
    let mut t_ms = 0.0;
    for frame in decoder.into_frames() {
        let frame = frame.map_err(|e| fail(format!("frame {}: {e}", out.len())))?;
        let delay = gif_delay_ms(frame.delay());
        out.push((
            to_rgb8(image::DynamicImage::ImageRgba8(frame.into_buffer())),
            t_ms,
        ));
        t_ms += delay;
        if out.len() > MAX_GIF_FRAMES || out.len() as u64 * frame_bytes > MAX_GIF_BYTES {
            return Err(fail(format!(
                "more than {MAX_GIF_FRAMES} frames or {} MB decoded; split it or use a folder of images",
                MAX_GIF_BYTES >> 20
            )));
        }
    }
    if out.is_empty() {
        return Err(fail("the GIF has no frames".into()));
    }
    Ok((out, t_ms))
}

impl FrameSource for FileSource {
    fn describe(&self) -> String {
        format!(
            "{} ({} frames{})",
            self.path.display(),
            self.len(),
            if self.opts.looping { ", looping" } else { "" }
        )
    }

    fn next_frame(&mut self) -> Result<Option<SourceFrame>> {
        if self.next >= self.len() {
            if !self.opts.looping {
                return Ok(None);
            }
            self.loop_offset_ms += self.animation_ms().unwrap_or(0.0);
            self.next = 0;
        }
        let i = self.next;
        self.next += 1;
        let nominal = self.opts.nominal_ms(self.delivered);
        self.delivered += 1;
        Ok(Some(match &self.frames {
            Frames::Files(f) => SourceFrame {
                rgb: load_rgb(&f[i])?,
                source_ms: nominal,
            },
            Frames::Decoded(f) => SourceFrame {
                rgb: f[i].clone(),
                source_ms: nominal,
            },
            Frames::Timed(f, _) => SourceFrame {
                rgb: f[i].0.clone(),
                source_ms: Some(self.loop_offset_ms + f[i].1),
            },
        }))
    }

    fn pacing(&self) -> Pacing {
        self.opts.pacing(matches!(self.frames, Frames::Timed(..)))
    }

    fn duration_ms(&self) -> Option<f64> {
        self.animation_ms()
    }

    fn frame_count(&self) -> Option<u64> {
        Some(self.len() as u64)
    }
}
