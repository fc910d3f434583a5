//! Webcams through nokhwa (Video4Linux, AVFoundation or Media Foundation). The only nokhwa user.

use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError, bounded};
use image::RgbImage;
use nokhwa::Camera;
use nokhwa::pixel_format::RgbFormat;
use nokhwa::utils::{
    ApiBackend, CameraFormat, CameraIndex, FrameFormat, RequestedFormat, RequestedFormatType,
    Resolution,
};

use super::{FrameSource, Pacing, SourceFrame};
use crate::error::{Error, Result};

/// The capture size we ask for; the camera's nearest format is used.
pub const REQUESTED_SIZE: (u32, u32) = (640, 480);

/// A camera the system reports.
#[derive(Debug, Clone, PartialEq)]
pub struct CameraInfo {
    pub index: u32,
    pub name: String,
}

/// List the cameras nokhwa finds. An empty list means there is no camera (as on a server).
pub fn list() -> Result<Vec<CameraInfo>> {
    let backend = nokhwa::native_api_backend().unwrap_or(ApiBackend::Auto);
    let found =
        nokhwa::query(backend).map_err(|e| Error::Camera(format!("cannot list cameras: {e}")))?;
    Ok(found
        .iter()
        .enumerate()
        .map(|(i, c)| CameraInfo {
            index: match c.index() {
                CameraIndex::Index(n) => *n,
                CameraIndex::String(_) => i as u32,
            },
            name: c.human_name(),
        })
        .collect())
}

/// An open camera stream delivering RGB frames.
///
/// nokhwa's camera handle cannot move between threads, so it lives on a thread of its own
/// ("emocam-camera") that hands decoded frames over a one-slot channel; the newest frame wins.
pub struct CameraSource {
    frames: Receiver<Result<RgbImage>>,
    describe: String,
    /// Dropped with the source, which tells the camera thread to stop.
    alive: Option<Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// A camera silent for this long is reported as gone (a stalled or unplugged device).
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(5);

impl CameraSource {
    /// Open camera `index` at 640x480 or the nearest format it offers.
    pub fn open(index: u32) -> Result<Self> {
        let (ready_tx, ready_rx) = bounded::<Result<String>>(1);
        let (tx, rx) = bounded::<Result<RgbImage>>(1);
        let rx2 = rx.clone();
        let (alive_tx, alive_rx) = bounded::<()>(0);
        let thread = std::thread::Builder::new()
            .name("emocam-camera".into())
            .spawn(move || {
                let mut camera = match open_camera(index) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let f = camera.camera_format();
                let describe = format!(
                    "camera {index}: {} ({}x{} {})",
                    camera.info().human_name(),
                    f.resolution().width(),
                    f.resolution().height(),
                    f.format()
                );
                if ready_tx.send(Ok(describe)).is_err() {
                    return;
                }
                loop {
                    let frame = camera
                        .frame()
                        .map_err(|e| {
                            Error::Camera(format!("camera {index} stopped delivering frames: {e}"))
                        })
                        .and_then(|buf| {
                            let res = buf.resolution();
                            decode(
                                buf.buffer(),
                                buf.source_frame_format(),
                                res.width(),
                                res.height(),
                            )
                            .map_err(|e| Error::Camera(format!("camera {index}: {e}")))
                        });
                    let failed = frame.is_err();
                    // Newest frame wins: replace a frame nobody took yet.
                    if let Err(TrySendError::Full(f)) = tx.try_send(frame) {
                        let _ = rx2.try_recv();
                        let _ = tx.try_send(f);
                    }
                    let gone = matches!(alive_rx.try_recv(), Err(TryRecvError::Disconnected));
                    if failed || gone {
                        break;
                    }
                }
                // Release the device so that a retry or another program can open it.
                let _ = camera.stop_stream();
            })
            .map_err(|e| Error::Camera(format!("cannot start the camera thread: {e}")))?;
        let describe = ready_rx
            .recv()
            .map_err(|_| Error::Camera(format!("camera {index}: the camera thread ended")))??;
        Ok(Self {
            frames: rx,
            describe,
            alive: Some(alive_tx),
            thread: Some(thread),
        })
    }
}

fn open_camera(index: u32) -> Result<Camera> {
    let (w, h) = REQUESTED_SIZE;
    let wanted = CameraFormat::new(Resolution::new(w, h), FrameFormat::MJPEG, 30);
    let format = RequestedFormat::new::<RgbFormat>(RequestedFormatType::Closest(wanted));
    let mut camera = Camera::new(CameraIndex::Index(index), format)
        .map_err(|e| Error::Camera(format!("cannot open camera {index}: {e}")))?;
    camera
        .open_stream()
        .map_err(|e| Error::Camera(format!("cannot start camera {index}: {e}")))?;
    Ok(camera)
}

impl FrameSource for CameraSource {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn next_frame(&mut self) -> Result<Option<SourceFrame>> {
        match self.frames.recv_timeout(FRAME_TIMEOUT) {
            Ok(frame) => frame.map(|rgb| Some(SourceFrame::untimed(rgb))),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => Err(Error::Camera(format!(
                "no frame for {} s: the camera stalled or was unplugged",
                FRAME_TIMEOUT.as_secs()
            ))),
            Err(_) => Err(Error::Camera("the camera thread ended".into())),
        }
    }

    fn pacing(&self) -> Pacing {
        Pacing::Live
    }
}

impl Drop for CameraSource {
    /// Stop the camera thread and give it a moment to release the device, so that reopening
    /// the same camera right away finds it free. A stalled device is not waited for.
    fn drop(&mut self) {
        self.alive.take();
        if let Some(t) = self.thread.take() {
            let t0 = std::time::Instant::now();
            while !t.is_finished() && t0.elapsed() < Duration::from_secs(1) {
                std::thread::sleep(Duration::from_millis(5));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

/// Decode a camera buffer to RGB. MJPEG goes through the `image` JPEG decoder; the raw formats
/// are converted here (BT.601 for YUV).
pub fn decode(
    data: &[u8],
    format: FrameFormat,
    w: u32,
    h: u32,
) -> std::result::Result<RgbImage, String> {
    let px = (w as usize) * (h as usize);
    let short = |need: usize| {
        format!(
            "{format} frame of {w}x{h} has {} bytes, expected {need}",
            data.len()
        )
    };
    let rgb = match format {
        FrameFormat::MJPEG => {
            return image::load_from_memory_with_format(data, image::ImageFormat::Jpeg)
                .map(|i| i.to_rgb8())
                .map_err(|e| format!("bad MJPEG frame: {e}"));
        }
        FrameFormat::RAWRGB => {
            if data.len() < px * 3 {
                return Err(short(px * 3));
            }
            data[..px * 3].to_vec()
        }
        FrameFormat::RAWBGR => {
            if data.len() < px * 3 {
                return Err(short(px * 3));
            }
            data[..px * 3]
                .chunks_exact(3)
                .flat_map(|p| [p[2], p[1], p[0]])
                .collect()
        }
        FrameFormat::GRAY => {
            if data.len() < px {
                return Err(short(px));
            }
            data[..px].iter().flat_map(|&g| [g, g, g]).collect()
        }
        FrameFormat::YUYV => {
            if data.len() < px * 2 {
                return Err(short(px * 2));
            }
            let mut out = Vec::with_capacity(px * 3);
            for q in data[..px * 2].chunks_exact(4) {
                let (y0, u, y1, v) = (q[0], q[1], q[2], q[3]);
                out.extend(yuv_to_rgb(y0, u, v));
                out.extend(yuv_to_rgb(y1, u, v));
            }
            out
        }
        FrameFormat::NV12 => {
            if data.len() < px * 3 / 2 {
                return Err(short(px * 3 / 2));
            }
            let (ys, uv) = data.split_at(px);
            let mut out = Vec::with_capacity(px * 3);
            for y in 0..h as usize {
                for x in 0..w as usize {
                    let c = (y / 2) * w as usize + (x & !1);
                    out.extend(yuv_to_rgb(ys[y * w as usize + x], uv[c], uv[c + 1]));
                }
            }
            out
        }
    };
    RgbImage::from_raw(w, h, rgb).ok_or_else(|| short(px * 3))
}

fn yuv_to_rgb(y: u8, u: u8, v: u8) -> [u8; 3] {
    let (y, u, v) = (y as f32 - 16.0, u as f32 - 128.0, v as f32 - 128.0);
    let c = |x: f32| x.round().clamp(0.0, 255.0) as u8;
    [
        c(1.164 * y + 1.596 * v),
        c(1.164 * y - 0.392 * u - 0.813 * v),
        c(1.164 * y + 2.017 * u),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_formats_decode_to_rgb() {
        let bgr = decode(&[1, 2, 3, 4, 5, 6], FrameFormat::RAWBGR, 2, 1).unwrap();
        assert_eq!(bgr.as_raw(), &vec![3, 2, 1, 6, 5, 4]);
        let gray = decode(&[7, 9], FrameFormat::GRAY, 2, 1).unwrap();
        assert_eq!(gray.as_raw(), &vec![7, 7, 7, 9, 9, 9]);
        // Mid-gray YUYV (Y=126, U=V=128) is gray in RGB.
        let yuyv = decode(&[126, 128, 126, 128], FrameFormat::YUYV, 2, 1).unwrap();
        assert!(yuyv.as_raw().iter().all(|&v| (v as i32 - 128).abs() <= 1));
        assert!(
            decode(&[1, 2], FrameFormat::RAWRGB, 2, 1)
                .unwrap_err()
                .contains("expected 6")
        );
        assert!(
            decode(b"not a jpeg", FrameFormat::MJPEG, 2, 1)
                .unwrap_err()
                .contains("MJPEG")
        );
    }
}
