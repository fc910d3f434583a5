//! Frames from disk: a folder of images (in name order), an animated GIF, or a single image.

use std::path::{Path, PathBuf};
use std::time::Duration;

use image::codecs::gif::GifDecoder;
use image::{AnimationDecoder, RgbImage};

use super::{FrameSource, SourceOptions};
use crate::error::{Error, Result};
use crate::imaging::{MAX_IMAGE_SIDE, load_rgb, to_rgb8};

/// Most frames decoded from one GIF (they are held in memory).
pub const MAX_GIF_FRAMES: usize = 5_000;

/// Most bytes of decoded GIF frames held in memory.
pub const MAX_GIF_BYTES: u64 = 2 << 30;

enum Frames {
    /// Image files, decoded one at a time as they are delivered.
    Files(Vec<PathBuf>),
    /// Frames decoded up front (GIF, single image).
    Decoded(Vec<RgbImage>),
}

/// A finite source from disk; with `looping` it starts again at the end.
pub struct FileSource {
    path: PathBuf,
    frames: Frames,
    next: usize,
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
            Frames::Decoded(decode_gif(path)?)
        } else {
            Frames::Decoded(vec![load_rgb(path)?])
        };
        Ok(Self {
            path: path.to_path_buf(),
            frames,
            next: 0,
            opts,
        })
    }

    fn len(&self) -> usize {
        match &self.frames {
            Frames::Files(f) => f.len(),
            Frames::Decoded(f) => f.len(),
        }
    }
}

fn is_image(p: &Path) -> bool {
    p.extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .is_some_and(|e| matches!(e.as_str(), "png" | "jpg" | "jpeg" | "gif" | "bmp"))
}

fn decode_gif(path: &Path) -> Result<Vec<RgbImage>> {
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
    for frame in decoder.into_frames() {
        let frame = frame.map_err(|e| fail(format!("frame {}: {e}", out.len())))?;
        out.push(to_rgb8(image::DynamicImage::ImageRgba8(
            frame.into_buffer(),
        )));
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
    Ok(out)
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

    fn next_frame(&mut self) -> Result<Option<RgbImage>> {
        if self.next >= self.len() {
            if !self.opts.looping {
                return Ok(None);
            }
            self.next = 0;
        }
        let i = self.next;
        self.next += 1;
        match &self.frames {
            Frames::Files(f) => load_rgb(&f[i]).map(Some),
            Frames::Decoded(f) => Ok(Some(f[i].clone())),
        }
    }

    fn frame_interval(&self) -> Option<Duration> {
        self.opts.interval()
    }
}
