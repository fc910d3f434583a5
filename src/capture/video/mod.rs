//! Video files and network streams as frame sources.
//!
//! H.264 in MP4/QuickTime is decoded in-process with nothing to install (the `mp4` crate
//! demuxing, openh264 decoding). Every other codec or container (HEVC, VP8/VP9/AV1
//! in WebM/MKV, MPEG-4 Part 2 or Motion JPEG in AVI, H.264 outside MP4) and network streams
//! (`rtsp://`, `http://`, `https://`) go through the `ffmpeg` program when it is installed;
//! without it the error names the codec found and how to turn FFmpeg on.
//!
//! Frames carry their presentation time from the container, relative to the first frame, so a
//! variable frame rate stays exact. One decoded frame is held at a time (plus the decoder's
//! reordering window); frame data is read from the file as it is decoded.

mod ffmpeg;
mod h264;
mod mp4;
mod probe;

use std::path::Path;
use std::time::Duration;

use image::RgbImage;

pub use ffmpeg::{DEFAULT_STALL_TIMEOUT, FFMPEG_ENV, FFMPEG_HINT, Ffmpeg};
pub use probe::{Container, VIDEO_EXTENSIONS};

use super::{FrameSource, Pacing, SourceFrame, SourceOptions};
use crate::error::{Error, Result};

/// Largest picture side accepted, checked from the container before anything is allocated.
pub const MAX_VIDEO_SIDE: u32 = 8192;

/// URL schemes opened as network streams.
pub const STREAM_SCHEMES: [&str; 4] = ["rtsp", "rtsps", "http", "https"];

/// A decoded frame and its time in milliseconds, relative to the first frame.
pub(super) struct Timed {
    pub rgb: RgbImage,
    pub ms: f64,
}

/// Whether `s` is a network stream URL (`rtsp://`, `rtsps://`, `http://`, `https://`).
pub fn is_stream_url(s: &str) -> bool {
    s.split_once("://").is_some_and(|(scheme, _)| {
        STREAM_SCHEMES
            .iter()
            .any(|k| scheme.eq_ignore_ascii_case(k))
    })
}

/// Whether `path` is a video to open with [`VideoSource`]: a file with a video extension, or
/// one whose first bytes are an MP4/QuickTime, Matroska/WebM or AVI header whatever its name.
pub fn is_video_path(path: &Path) -> bool {
    if path.is_dir() {
        return false;
    }
    let by_name = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| VIDEO_EXTENSIONS.iter().any(|v| e.eq_ignore_ascii_case(v)));
    by_name || probe::head(path, 16).is_ok_and(|h| probe::sniff(&h).is_some())
}

enum Backend {
    /// H.264 in MP4/QuickTime, decoded here.
    H264(Box<mp4::Mp4H264>),
    /// Anything else, through the ffmpeg program.
    Ffmpeg(Box<ffmpeg::FfmpegVideo>),
}

/// A video file or network stream delivering RGB frames with their presentation times.
pub struct VideoSource {
    what: String,
    backend: Backend,
    opts: SourceOptions,
    live: bool,
    /// Length of the earlier loops, added to frame times when looping.
    loop_offset_ms: f64,
    /// Time of the last frame delivered in this loop, and of the one before it.
    last_ms: Option<f64>,
    prev_ms: Option<f64>,
}

impl VideoSource {
    /// Open a video file: built in for H.264 in MP4/QuickTime, else through ffmpeg.
    pub fn open(path: &Path, opts: SourceOptions) -> Result<Self> {
        Self::open_with_timeout(path, opts, DEFAULT_STALL_TIMEOUT)
    }

    /// [`open`](Self::open), waiting at most `stall` for each of ffmpeg's frames (the built-in
    /// decoder does not wait on anything).
    pub fn open_with_timeout(path: &Path, opts: SourceOptions, stall: Duration) -> Result<Self> {
        let what = path.display().to_string();
        let fail = |reason: String| Error::video(&what, reason);
        let head = probe::head(path, 64).map_err(|e| Error::io(path, e))?;
        if head.is_empty() {
            return Err(fail("the file is empty (0 bytes), not a video".into()));
        }
        let tools = Ffmpeg::find();
        let container = probe::sniff(&head);
        let backend = match container {
            Some(Container::Mp4) => {
                let probed = probe::mp4_tracks(path).map_err(&fail)?;
                let (tracks, fragmented) = (&probed.tracks, probed.fragmented);
                let video = tracks.iter().find(|t| t.is_video()).ok_or_else(|| {
                    fail(format!(
                        "no video stream (its tracks: {})",
                        probe::describe_tracks(tracks)
                    ))
                })?;
                if let Some((w, h)) = video.size {
                    mp4::check_size(w, h).map_err(&fail)?;
                }
                if video.codec == "avc1" && !fragmented {
                    Backend::H264(Box::new(mp4::Mp4H264::open(path, probed.header_end)?))
                } else {
                    let codec = if fragmented {
                        format!("{} in a fragmented MP4", video.codec)
                    } else {
                        video.codec.clone()
                    };
                    Backend::Ffmpeg(Box::new(via_ffmpeg(path, &codec, tools, stall)?))
                }
            }
            Some(c) => {
                // Without FFmpeg, read the codec ourselves so the error can name it.
                let codec = match &tools {
                    Ok(_) => String::new(),
                    Err(_) => {
                        let tracks = probe::tracks(path, c).map_err(&fail)?;
                        let video = tracks.iter().find(|t| t.is_video()).ok_or_else(|| {
                            fail(format!(
                                "no video stream (its tracks: {})",
                                probe::describe_tracks(&tracks)
                            ))
                        })?;
                        if let Some((w, h)) = video.size {
                            mp4::check_size(w, h).map_err(&fail)?;
                        }
                        video.codec.clone()
                    }
                };
                Backend::Ffmpeg(Box::new(via_ffmpeg(path, &codec, tools, stall)?))
            }
            None => {
                let start: String = head.iter().take(8).map(|b| format!("{b:02x} ")).collect();
                return Err(fail(format!(
                    "not a video: no MP4/QuickTime, Matroska/WebM or AVI header (it starts with {})",
                    start.trim_end()
                )));
            }
        };
        Ok(Self::new(what, backend, opts, false))
    }

    /// Open a network stream (`rtsp://`, `http://`, `https://`) through ffmpeg; it is paced
    /// live: the pipeline drops stale frames rather than make it wait.
    pub fn open_url(url: &str, opts: SourceOptions) -> Result<Self> {
        let tools = Ffmpeg::find().map_err(|why| {
            Error::video(
                url,
                format!("network streams are read through FFmpeg, which is not available ({why}): {FFMPEG_HINT}"),
            )
        })?;
        let v = ffmpeg::FfmpegVideo::open(url.into(), url.into(), tools, DEFAULT_STALL_TIMEOUT)?;
        Ok(Self::new(
            url.into(),
            Backend::Ffmpeg(Box::new(v)),
            opts,
            true,
        ))
    }

    fn new(what: String, backend: Backend, opts: SourceOptions, live: bool) -> Self {
        Self {
            what,
            backend,
            opts,
            live,
            loop_offset_ms: 0.0,
            last_ms: None,
            prev_ms: None,
        }
    }

    /// Which decoder runs: `"openh264"` (built in) or `"ffmpeg"`.
    pub fn decoder(&self) -> &'static str {
        match self.backend {
            Backend::H264(_) => "openh264",
            Backend::Ffmpeg(_) => "ffmpeg",
        }
    }

    /// Picture size as the container states it.
    pub fn size(&self) -> (u32, u32) {
        match &self.backend {
            Backend::H264(d) => d.size(),
            Backend::Ffmpeg(d) => d.size(),
        }
    }

    /// Times of the key frames in milliseconds, where [`FrameSource::seek`] lands (built-in
    /// decoder only; `None` through ffmpeg).
    pub fn key_frames_ms(&self) -> Option<Vec<f64>> {
        match &self.backend {
            Backend::H264(d) => Some(d.key_frames_ms()),
            Backend::Ffmpeg(_) => None,
        }
    }

    fn next_timed(&mut self) -> Result<Option<Timed>> {
        match &mut self.backend {
            Backend::H264(d) => d.next_picture(),
            Backend::Ffmpeg(d) => d.next_picture(),
        }
    }

    /// Length of one loop: the container's, else the last frame's time plus one frame interval.
    fn loop_length_ms(&self) -> Option<f64> {
        let seen = match (self.last_ms, self.prev_ms) {
            (Some(l), Some(p)) => Some(l + (l - p)),
            (Some(l), None) => Some(l + 1e3 / super::DEFAULT_FPS),
            _ => None,
        };
        match &self.backend {
            Backend::H264(d) => Some(d.length_ms()),
            Backend::Ffmpeg(_) => seen.or(self.duration_ms()),
        }
    }
}

/// `path` as an ffmpeg input that no file name can turn into an option or a protocol.
fn file_input(path: &Path) -> String {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    format!("file:{}", abs.display())
}

fn via_ffmpeg(
    path: &Path,
    codec: &str,
    tools: std::result::Result<Ffmpeg, String>,
    stall: Duration,
) -> Result<ffmpeg::FfmpegVideo> {
    let what = path.display().to_string();
    match tools {
        Ok(t) => ffmpeg::FfmpegVideo::open(what, file_input(path), t, stall),
        Err(why) => Err(Error::video(
            &what,
            format!(
                "its video codec {} is not built in; it is read through FFmpeg, which is not available ({why}): {FFMPEG_HINT}",
                probe::codec_label(codec)
            ),
        )),
    }
}

impl FrameSource for VideoSource {
    fn describe(&self) -> String {
        let (w, h) = self.size();
        let codec = match &self.backend {
            Backend::H264(_) => "h264",
            Backend::Ffmpeg(d) => d.codec(),
        };
        let frames = self
            .frame_count()
            .map(|n| format!(", {n} frames"))
            .unwrap_or_default();
        format!(
            "{} ({codec} {w}x{h}{frames}, {}{})",
            self.what,
            self.decoder(),
            if self.opts.looping && !self.live {
                ", looping"
            } else {
                ""
            }
        )
    }

    fn next_frame(&mut self) -> Result<Option<SourceFrame>> {
        let mut restarted = false;
        loop {
            if let Some(t) = self.next_timed()? {
                self.prev_ms = self.last_ms;
                self.last_ms = Some(t.ms);
                return Ok(Some(SourceFrame {
                    rgb: t.rgb,
                    source_ms: Some(self.loop_offset_ms + t.ms),
                }));
            }
            // A video that ends straight after restarting has no frames to loop over.
            if !self.opts.looping || self.live || restarted {
                return Ok(None);
            }
            let Some(len) = self.loop_length_ms() else {
                return Ok(None);
            };
            match &mut self.backend {
                Backend::H264(d) => d.seek(0.0)?,
                Backend::Ffmpeg(d) => d.seek(0.0)?,
            }
            self.loop_offset_ms += len;
            self.last_ms = None;
            self.prev_ms = None;
            restarted = true;
        }
    }

    fn pacing(&self) -> Pacing {
        if self.live {
            Pacing::Live
        } else {
            self.opts.pacing(true)
        }
    }

    fn duration_ms(&self) -> Option<f64> {
        match &self.backend {
            Backend::H264(d) => Some(d.length_ms()),
            Backend::Ffmpeg(d) => d.duration_ms(),
        }
    }

    fn frame_count(&self) -> Option<u64> {
        match &self.backend {
            Backend::H264(d) => Some(d.frame_count()),
            Backend::Ffmpeg(d) => d.frame_count(),
        }
    }

    /// Go to the key frame at or before `ms` in the file's own time (frame times then count
    /// from the file's start again, without earlier loops).
    fn seek(&mut self, ms: f64) -> Result<()> {
        if self.live {
            return Err(Error::InvalidInput {
                what: self.what.clone(),
                reason: format!("cannot seek to {ms} ms: a live stream has no positions"),
            });
        }
        let len = self.duration_ms();
        if !ms.is_finite() || ms < 0.0 || len.is_some_and(|l| ms > l) {
            return Err(Error::InvalidInput {
                what: self.what.clone(),
                reason: format!(
                    "cannot seek to {ms} ms: expected 0..={} ms",
                    len.map(|l| format!("{l:.1}"))
                        .unwrap_or_else(|| "the end".into())
                ),
            });
        }
        match &mut self.backend {
            Backend::H264(d) => d.seek(ms)?,
            Backend::Ffmpeg(d) => d.seek(ms)?,
        }
        self.loop_offset_ms = 0.0;
        self.last_ms = None;
        self.prev_ms = None;
        Ok(())
    }
}
