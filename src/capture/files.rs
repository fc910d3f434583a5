//! Frames from disk: a folder of images (in name order), an animated GIF, or a single image.
//!
//! Everything is decoded when it is delivered, a GIF one frame at a time, so memory stays that
//! of a frame or two however long the source is.

use std::fs::File;
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};

use image::{RgbImage, Rgba, RgbaImage};

use super::{FrameSource, Pacing, SourceFrame, SourceOptions};
use crate::error::{Error, Result};
use crate::imaging::{MAX_GIF_SIDE, MAX_IMAGE_BYTES, check_gif_canvas, load_rgb, open_regular};
use crate::text::printable;

enum Frames {
    /// Image files, decoded one at a time as they are delivered.
    Files(Vec<PathBuf>),
    /// A single image, decoded once.
    Still(RgbImage),
    /// An animated GIF, decoded frame by frame.
    Gif(Box<GifFrames>),
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
    /// Open a folder of images, an animated GIF or one image file. A GIF's frames are counted
    /// and timed here (a pass over its frame headers that decodes no pixels), and its first
    /// frame is decoded when it is asked for.
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
            Frames::Gif(Box::new(GifFrames::open(path)?))
        } else {
            Frames::Still(load_rgb(path)?)
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
            Frames::Still(_) => 1,
            Frames::Gif(g) => g.count,
        }
    }

    /// End time of the last frame of an animation, in milliseconds.
    fn animation_ms(&self) -> Option<f64> {
        match &self.frames {
            Frames::Gif(g) => Some(g.total_ms),
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

/// A GIF frame's delay in milliseconds, as browsers read it (`hundredths` of a second).
fn gif_delay_ms(hundredths: u16) -> f64 {
    let ms = f64::from(hundredths) * 10.0;
    if ms < 20.0 { GIF_DEFAULT_DELAY_MS } else { ms }
}

/// Bytes the GIF decoder may allocate for one frame: a frame as large as the largest canvas.
const GIF_FRAME_BYTES: u64 = MAX_GIF_SIDE as u64 * MAX_GIF_SIDE as u64 * 4;

/// An animated GIF read one frame at a time. Built on the gif crate rather than `image`'s frame
/// iterator because that iterator is not `Send` (a source lives on the capture thread); frames
/// are composed as `image` 0.25 composes them (transparent pixels show what the previous
/// frame left, then the frame's disposal method decides what the next one is drawn over), so
/// they look as they did when the whole animation was decoded up front.
struct GifFrames {
    path: PathBuf,
    decoder: gif::Decoder<File>,
    width: u32,
    height: u32,
    /// What the next frame is drawn over.
    kept: RgbaImage,
    /// Frames in the file and the sum of their delays, from the pass over the headers.
    count: usize,
    total_ms: f64,
    /// Index and start time of the next frame to decode.
    index: usize,
    next_ms: f64,
}

impl GifFrames {
    fn fail(path: &Path, reason: impl Into<String>) -> Error {
        Error::Image {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }

    fn decoder(path: &Path, skip_pixels: bool) -> Result<gif::Decoder<File>> {
        let file = open_regular(path, MAX_IMAGE_BYTES, "a GIF").map_err(|r| Self::fail(path, r))?;
        let mut opts = gif::DecodeOptions::new();
        opts.set_color_output(gif::ColorOutput::RGBA);
        if let Some(limit) = NonZeroU64::new(GIF_FRAME_BYTES) {
            opts.set_memory_limit(gif::MemoryLimit::Bytes(limit));
        }
        opts.skip_frame_decoding(skip_pixels);
        let decoder = opts
            .read_info(file)
            .map_err(|e| Self::fail(path, format!("not a GIF ({e})")))?;
        check_gif_canvas(u32::from(decoder.width()), u32::from(decoder.height()))
            .map_err(|r| Self::fail(path, r))?;
        Ok(decoder)
    }

    /// Count and time the frames without decoding their pixels, checking each frame's size
    /// before any is decoded, then open the file again to decode from the first frame.
    fn open(path: &Path) -> Result<Self> {
        let mut headers = Self::decoder(path, true)?;
        let (mut count, mut total_ms) = (0usize, 0.0);
        while let Some(f) = headers
            .next_frame_info()
            .map_err(|e| Self::fail(path, format!("frame {count}: {e}")))?
        {
            if u32::from(f.width) > MAX_GIF_SIDE || u32::from(f.height) > MAX_GIF_SIDE {
                return Err(Self::fail(
                    path,
                    format!(
                        "frame {count} is {}x{}, larger than the {MAX_GIF_SIDE}x{MAX_GIF_SIDE} a GIF may have",
                        f.width, f.height
                    ),
                ));
            }
            total_ms += gif_delay_ms(f.delay);
            count += 1;
        }
        if count == 0 {
            return Err(Self::fail(path, "the GIF has no frames"));
        }
        let decoder = Self::decoder(path, false)?;
        let (width, height) = (u32::from(decoder.width()), u32::from(decoder.height()));
        Ok(Self {
            path: path.to_path_buf(),
            decoder,
            width,
            height,
            kept: RgbaImage::new(width, height),
            count,
            total_ms,
            index: 0,
            next_ms: 0.0,
        })
    }

    /// Start again at the first frame.
    fn rewind(&mut self) -> Result<()> {
        self.decoder = Self::decoder(&self.path, false)?;
        self.kept = RgbaImage::new(self.width, self.height);
        self.index = 0;
        self.next_ms = 0.0;
        Ok(())
    }

    /// The next frame and its start time in milliseconds, `None` after the last.
    fn next(&mut self) -> Result<Option<(RgbImage, f64)>> {
        let i = self.index;
        let path = &self.path;
        let frame_err = |e: gif::DecodingError| Self::fail(path, format!("frame {i}: {e}"));
        let Some(info) = self.decoder.next_frame_info().map_err(frame_err)? else {
            if i < self.count {
                return Err(Self::fail(
                    path,
                    format!("ends after frame {i} of the {} it had", self.count),
                ));
            }
            return Ok(None);
        };
        let (left, top) = (u32::from(info.left), u32::from(info.top));
        let (fw, fh) = (u32::from(info.width), u32::from(info.height));
        let dispose = info.dispose;
        let delay = gif_delay_ms(info.delay);
        let mut px = vec![0u8; self.decoder.buffer_size()];
        self.decoder.read_into_buffer(&mut px).map_err(frame_err)?;
        let mut frame = RgbaImage::from_raw(fw, fh, px)
            .ok_or_else(|| Self::fail(path, format!("frame {i}: fewer pixels than its size")))?;
        let kept = &mut self.kept;
        let composed = if (left, top) == (0, 0) && (fw, fh) == (self.width, self.height) {
            for (x, y, p) in frame.enumerate_pixels_mut() {
                compose(dispose, kept.get_pixel_mut(x, y), p);
            }
            frame
        } else {
            RgbaImage::from_fn(self.width, self.height, |x, y| {
                let previous = kept.get_pixel_mut(x, y);
                let (fx, fy) = (x.wrapping_sub(left), y.wrapping_sub(top));
                if fx < fw && fy < fh {
                    let mut p = *frame.get_pixel(fx, fy);
                    compose(dispose, previous, &mut p);
                    p
                } else {
                    *previous
                }
            })
        };
        let start_ms = self.next_ms;
        self.next_ms += delay;
        self.index += 1;
        Ok(Some((
            crate::imaging::to_rgb8(image::DynamicImage::ImageRgba8(composed)),
            start_ms,
        )))
    }
}

/// Draw one frame pixel over what the previous frame left (`previous`), then update
/// `previous` by the frame's disposal method, as `image` does.
fn compose(dispose: gif::DisposalMethod, previous: &mut Rgba<u8>, current: &mut Rgba<u8>) {
    if current.0[3] == 0 {
        *current = *previous;
    }
    match dispose {
        // "Any" is underspecified; viewers treat it as "keep".
        gif::DisposalMethod::Any | gif::DisposalMethod::Keep => *previous = *current,
        gif::DisposalMethod::Background => *previous = Rgba([0, 0, 0, 0]),
        gif::DisposalMethod::Previous => {}
    }
}

impl FrameSource for FileSource {
    fn describe(&self) -> String {
        format!(
            "{} ({} frames{})",
            printable(&self.path.display().to_string()),
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
            if let Frames::Gif(g) = &mut self.frames {
                g.rewind()?;
            }
        }
        let i = self.next;
        let nominal = self.opts.nominal_ms(self.delivered);
        let frame = match &mut self.frames {
            Frames::Files(f) => SourceFrame {
                rgb: load_rgb(&f[i])?,
                source_ms: nominal,
            },
            Frames::Still(img) => SourceFrame {
                rgb: img.clone(),
                source_ms: nominal,
            },
            Frames::Gif(g) => match g.next()? {
                Some((rgb, ms)) => SourceFrame {
                    rgb,
                    source_ms: Some(self.loop_offset_ms + ms),
                },
                None => return Ok(None),
            },
        };
        self.next += 1;
        self.delivered += 1;
        Ok(Some(frame))
    }

    fn pacing(&self) -> Pacing {
        self.opts.pacing(matches!(self.frames, Frames::Gif(_)))
    }

    fn duration_ms(&self) -> Option<f64> {
        self.animation_ms()
    }

    fn frame_count(&self) -> Option<u64> {
        Some(self.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A GIF of `frames` frames on a 40x30 screen with the given delays (hundredths): a full
    /// first frame, then 4x4 patches whose pixels are partly transparent.
    fn gif_file(path: &Path, delays: &[u16]) {
        let file = File::create(path).unwrap();
        let palette: Vec<u8> = (0..=255u8).flat_map(|v| [v, v, v]).collect();
        let mut enc = gif::Encoder::new(file, 40, 30, &palette).unwrap();
        for (i, &delay) in delays.iter().enumerate() {
            let mut f = if i == 0 {
                gif::Frame::from_indexed_pixels(40, 30, vec![10; 1200], None)
            } else {
                let mut px = vec![(50 + i) as u8; 16];
                px[0] = 0;
                let mut f = gif::Frame::from_indexed_pixels(4, 4, px, Some(0));
                f.left = (i * 4) as u16;
                f.top = 2;
                f
            };
            f.delay = delay;
            enc.write_frame(&f).unwrap();
        }
    }

    #[test]
    fn gif_frames_stream_with_their_times_and_compose_over_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.gif");
        // 0 hundredths plays as 100 ms, as in browsers.
        gif_file(&p, &[5, 0, 3, 7]);
        let mut src = FileSource::open(
            &p,
            SourceOptions {
                fps: None,
                looping: true,
            },
        )
        .unwrap();
        assert_eq!(src.frame_count(), Some(4));
        assert_eq!(src.duration_ms(), Some(50.0 + 100.0 + 30.0 + 70.0));
        assert_eq!(src.pacing(), Pacing::SourceTime);
        let frames: Vec<SourceFrame> = (0..9).map(|_| src.next_frame().unwrap().unwrap()).collect();
        let times: Vec<f64> = frames.iter().map(|f| f.source_ms.unwrap()).collect();
        assert_eq!(
            times,
            [0.0, 50.0, 150.0, 180.0, 250.0, 300.0, 400.0, 430.0, 500.0]
        );
        let f3 = &frames[3].rgb;
        assert_eq!(f3.dimensions(), (40, 30));
        // Frame 3's patch over frames 1 and 2's, all kept; its transparent corner shows frame 0.
        assert_eq!(f3.get_pixel(13, 3).0, [53; 3]);
        assert_eq!(f3.get_pixel(12, 2).0, [10; 3]);
        assert_eq!(f3.get_pixel(5, 3).0, [51; 3]);
        assert_eq!(f3.get_pixel(0, 0).0, [10; 3]);
        // The second loop starts from a fresh screen, with the same pictures.
        assert_eq!(frames[4].rgb, frames[0].rgb);
        assert_eq!(frames[7].rgb, frames[3].rgb);
    }

    #[test]
    fn a_gif_plays_once_without_looping() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("once.gif");
        gif_file(&p, &[4, 4]);
        let mut src = FileSource::open(&p, SourceOptions::at_fps(0.0)).unwrap();
        assert!(src.next_frame().unwrap().is_some());
        assert!(src.next_frame().unwrap().is_some());
        assert!(src.next_frame().unwrap().is_none());
        assert!(src.describe().contains("2 frames"), "{}", src.describe());
    }
}
