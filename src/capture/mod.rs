//! Where frames come from: a camera (the only nokhwa user is [`camera`]), a folder of images or
//! an animated GIF ([`files`]), or the built-in animated [`demo`]. All sit behind [`FrameSource`].

pub mod camera;
pub mod demo;
pub mod files;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use image::RgbImage;

use crate::error::{Error, Result};

/// A supplier of RGB frames, run on the capture thread.
pub trait FrameSource: Send {
    /// A short description for the status bar, e.g. `camera 0: Integrated Webcam`.
    fn describe(&self) -> String;

    /// The next frame, `Ok(None)` when a finite source has ended. A camera blocks until the
    /// next frame; an error means the source is gone (a camera unplugged, a file unreadable).
    fn next_frame(&mut self) -> Result<Option<RgbImage>>;

    /// How long to wait between frames: `None` for sources that pace themselves (cameras) or
    /// run as fast as they are asked.
    fn frame_interval(&self) -> Option<Duration>;

    /// True for sources that produce frames on their own clock (cameras): the pipeline must
    /// never make them wait, so stale frames are dropped instead.
    fn is_live(&self) -> bool {
        false
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

/// Options for file and demo sources.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SourceOptions {
    /// Frames per second for file and demo sources; 0 delivers frames as fast as they are taken.
    pub fps: f64,
    /// Start again at the first frame when a file source ends.
    pub looping: bool,
}

impl Default for SourceOptions {
    fn default() -> Self {
        Self {
            fps: 30.0,
            looping: false,
        }
    }
}

impl SourceOptions {
    /// The pause between frames that `fps` asks for.
    pub fn interval(&self) -> Option<Duration> {
        (self.fps > 0.0 && self.fps.is_finite()).then(|| Duration::from_secs_f64(1.0 / self.fps))
    }
}

/// Open a source.
pub fn open(spec: &SourceSpec, opts: SourceOptions) -> Result<Box<dyn FrameSource>> {
    if !(opts.fps >= 0.0 && opts.fps <= 1000.0) {
        return Err(Error::InvalidInput {
            what: "--fps".into(),
            reason: format!(
                "{} is outside 0..=1000 (0 means as fast as possible)",
                opts.fps
            ),
        });
    }
    Ok(match spec {
        SourceSpec::Camera(i) => Box::new(camera::CameraSource::open(*i)?),
        SourceSpec::Demo(scene) => Box::new(demo::DemoSource::new(scene.as_deref(), opts)?),
        SourceSpec::Path(p) => Box::new(files::FileSource::open(p, opts)?),
    })
}
