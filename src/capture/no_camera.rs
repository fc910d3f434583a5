//! Cameras in a build without the `camera` feature (a server, `--no-default-features`): none
//! is listed, and opening one says how to get a build that can.

use super::{FrameSource, Pacing, SourceFrame};
use crate::error::{Error, Result};

/// A camera the system reports.
#[derive(Debug, Clone, PartialEq)]
pub struct CameraInfo {
    pub index: u32,
    pub name: String,
}

/// No cameras: this build cannot open any.
pub fn list() -> Result<Vec<CameraInfo>> {
    Ok(Vec::new())
}

/// Never made: [`CameraSource::open`] always refuses in this build.
pub struct CameraSource(());

impl CameraSource {
    /// Refuse: this build has no camera support.
    pub fn open(index: u32) -> Result<Self> {
        Err(Error::Camera(format!(
            "camera {index}: this emocam was built without camera support; build it with the \
             `camera` feature (the default: `cargo install --path .`)"
        )))
    }
}

impl FrameSource for CameraSource {
    fn describe(&self) -> String {
        String::new()
    }

    fn next_frame(&mut self) -> Result<Option<SourceFrame>> {
        Ok(None)
    }

    fn pacing(&self) -> Pacing {
        Pacing::Live
    }
}
