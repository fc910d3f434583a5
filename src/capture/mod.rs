//! Where frames come from: a camera (the only nokhwa user is [`camera`]), a folder of images or
//! an animated GIF ([`files`]), or the built-in animated [`demo`]. All sit behind [`FrameSource`].

pub mod camera;
pub mod demo;
pub mod files;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use image::RgbImage;

use crate::error::{Error, Result};

/// One frame as a source delivers it.
#[derive(Debug, Clone)]
pub struct SourceFrame {
    pub rgb: RgbImage,
    /// The frame's time in its source, in milliseconds: a video's presentation time from its
    /// container, a GIF's summed frame delays, a paced folder's frame number times its
    /// interval. `None` for sources without a clock of their own (a camera: the pipeline uses
    /// the time since its first frame; an unpaced folder: there is none).
    pub source_ms: Option<f64>,
}

impl SourceFrame {
    /// A frame with no time of its own.
    pub fn untimed(rgb: RgbImage) -> Self {
        Self {
            rgb,
            source_ms: None,
        }
    }
}

/// How a source's frames are paced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pacing {
    /// As fast as the pipeline asks: every frame is processed, none is dropped (`--fps 0`).
    Unpaced,
    /// One frame per interval (`--fps N`, folders and the demo).
    Interval(Duration),
    /// At the source's own times ([`SourceFrame::source_ms`]): a video or GIF played at its
    /// own rate, variable frame rate included.
    SourceTime,
    /// The source makes frames on its own clock (a camera); the pipeline must never make it
    /// wait, so stale frames are dropped instead.
    Live,
}

/// A supplier of RGB frames, run on the capture thread.
pub trait FrameSource: Send {
    /// A short description for the status bar, e.g. `camera 0: Integrated Webcam`.
    fn describe(&self) -> String;

    /// The next frame, `Ok(None)` when a finite source has ended. A camera blocks until the
    /// next frame; an error means the source is gone (a camera unplugged, a file unreadable).
    fn next_frame(&mut self) -> Result<Option<SourceFrame>>;

    /// How the pipeline paces this source's frames.
    fn pacing(&self) -> Pacing;

    /// Length in milliseconds, where the source knows it in advance (videos, GIFs).
    fn duration_ms(&self) -> Option<f64> {
        None
    }

    /// Number of frames, where the source knows it in advance.
    fn frame_count(&self) -> Option<u64> {
        None
    }

    /// Go to `ms` in the source: the next frame is the one at or just before it (a video may
    /// land on the nearest earlier key frame). An error leaves the position as it was.
    fn seek(&mut self, ms: f64) -> Result<()> {
        Err(Error::InvalidInput {
            what: self.describe(),
            reason: format!("cannot seek to {ms} ms: this source has no positions"),
        })
    }
}

/// Which source to open, as given on the command line.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceSpec {
    /// A camera by index (`camera`, `camera:1`).
    Camera(u32),
    /// The built-in demo (`demo`), or one of its scenes (`demo:astronaut`).
    Demo(Option<String>),
    /// A folder of images or an animated GIF.
    Path(PathBuf),
}

impl FromStr for SourceSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().is_empty() {
            return Err(
                "the source is empty; expected demo, camera:N, a video, a folder or an image"
                    .into(),
            );
        }
        if s == "demo" {
            return Ok(SourceSpec::Demo(None));
        }
        if let Some(scene) = s.strip_prefix("demo:") {
            return Ok(SourceSpec::Demo(Some(scene.to_string())));
        }
        if s == "camera" {
            return Ok(SourceSpec::Camera(0));
        }
        if let Some(i) = s.strip_prefix("camera:") {
            return i
                .parse()
                .map(SourceSpec::Camera)
                .map_err(|_| format!("camera index {i:?} is not a number (e.g. camera:0)"));
        }
        Ok(SourceSpec::Path(PathBuf::from(s)))
    }
}

impl fmt::Display for SourceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceSpec::Camera(i) => write!(f, "camera:{i}"),
            SourceSpec::Demo(None) => write!(f, "demo"),
            SourceSpec::Demo(Some(s)) => write!(f, "demo:{s}"),
            SourceSpec::Path(p) => write!(f, "{}", p.display()),
        }
    }
}

/// Frame rate of folders and the demo when none is asked for.
pub const DEFAULT_FPS: f64 = 30.0;

/// Options for file and demo sources.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SourceOptions {
    /// Frames per second for file and demo sources: `None` plays a video or GIF at its own rate
    /// and folders and the demo at [`DEFAULT_FPS`]; `Some(0.0)` delivers every frame as fast as
    /// the pipeline takes them.
    pub fps: Option<f64>,
    /// Start again at the first frame when a file source ends.
    pub looping: bool,
}

impl SourceOptions {
    /// Options with a fixed rate (`0.0`: unpaced).
    pub fn at_fps(fps: f64) -> Self {
        Self {
            fps: Some(fps),
            looping: false,
        }
    }

    /// The pacing these options ask of a source that has (`timed`) or lacks its own clock.
    pub fn pacing(&self, timed: bool) -> Pacing {
        match self.fps {
            None if timed => Pacing::SourceTime,
            None => Pacing::Interval(Duration::from_secs_f64(1.0 / DEFAULT_FPS)),
            Some(f) if f > 0.0 && f.is_finite() => {
                Pacing::Interval(Duration::from_secs_f64(1.0 / f))
            }
            Some(_) => Pacing::Unpaced,
        }
    }

    /// The time of frame `index` of a source without a clock, at the pace asked for (`None`
    /// when unpaced: such frames have no time).
    pub fn nominal_ms(&self, index: u64) -> Option<f64> {
        match self.pacing(false) {
            Pacing::Interval(iv) => Some(index as f64 * iv.as_secs_f64() * 1e3),
            _ => None,
        }
    }
}

/// File name extensions of videos (matched case-insensitively).
pub const VIDEO_EXTENSIONS: [&str; 7] = ["mp4", "m4v", "mov", "mkv", "webm", "avi", "mpg"];

/// File name extensions of still images.
pub const IMAGE_EXTENSIONS: [&str; 4] = ["png", "jpg", "jpeg", "bmp"];

fn has_extension(path: &Path, list: &[&str]) -> bool {
    path.extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .is_some_and(|e| list.contains(&e.as_str()))
}

/// True for a path whose name says it is a video.
pub fn is_video_file(path: &Path) -> bool {
    has_extension(path, &VIDEO_EXTENSIONS)
}

/// True for still pictures: one image file, or a folder of them. Faces in stills are searched
/// with the thorough detector settings; the live ones would miss small faces.
pub fn is_still(spec: &SourceSpec) -> bool {
    match spec {
        SourceSpec::Path(p) if p.is_dir() => !folder_has_videos(p),
        SourceSpec::Path(p) => has_extension(p, &IMAGE_EXTENSIONS),
        _ => false,
    }
}

fn folder_videos(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && is_video_file(p))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn folder_has_videos(dir: &Path) -> bool {
    !folder_videos(dir).is_empty()
}

/// The sources of a batch: each given source, with a folder of videos replaced by its videos
/// in name order (a folder of images stays one source, its frames). An empty path is refused.
pub fn expand_batch(specs: &[SourceSpec]) -> Result<Vec<SourceSpec>> {
    let mut out = Vec::new();
    for s in specs {
        match s {
            SourceSpec::Path(p) if p.is_dir() && folder_has_videos(p) => {
                out.extend(folder_videos(p).into_iter().map(SourceSpec::Path));
            }
            other => out.push(other.clone()),
        }
    }
    Ok(out)
}

/// Open a source.
pub fn open(spec: &SourceSpec, opts: SourceOptions) -> Result<Box<dyn FrameSource>> {
    if let Some(fps) = opts.fps
        && !(0.0..=1000.0).contains(&fps)
    {
        return Err(Error::InvalidInput {
            what: "--fps".into(),
            reason: format!("{fps} is outside 0..=1000 (0 means as fast as possible)"),
        });
    }
    Ok(match spec {
        SourceSpec::Camera(i) => Box::new(camera::CameraSource::open(*i)?),
        SourceSpec::Demo(scene) => Box::new(demo::DemoSource::new(scene.as_deref(), opts)?),
        SourceSpec::Path(p) => Box::new(files::FileSource::open(p, opts)?),
    })
}
