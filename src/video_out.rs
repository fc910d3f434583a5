//! Writing H.264 MP4 files: [`Mp4Writer`] encodes RGB frames with openh264 (bundled, built by
//! cargo) and writes them with the `mp4` crate, the SPS and PPS in the `avcC` box, each frame
//! at the time it was given (variable frame rate kept). Used for `run --annotate OUT.mp4`.
//!
//! H.264 4:2:0 needs an even width and height: an odd-sized input is padded by repeating its
//! last column and/or row, so the file is at most one pixel wider and taller than the input
//! ([`Mp4Writer::coded_size`]).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use image::RgbImage;
use openh264::OpenH264API;
use openh264::Timestamp;
use openh264::encoder::{
    Encoder, EncoderConfig, FrameRate, FrameType, IntraFramePeriod, RateControlMode,
};
use openh264::formats::{RgbSliceU8, YUVBuffer};

use crate::error::{Error, Result};
use crate::outfile::{OutputPolicy, create_private};

/// Ticks per second of the video track: a multiple of 24, 25, 30, 50 and 60 frames/s and
/// finer than a millisecond, so frame times given in milliseconds survive to 0.01 ms.
pub const TIMESCALE: u32 = 90_000;

/// Largest frame openh264's encoder takes (level 5.2), either way round.
pub const MAX_ENCODE_SIZE: (u32, u32) = (3840, 2160);

/// Duration given to the last frame when it is the only one.
const LONE_FRAME_TICKS: u64 = TIMESCALE as u64 / 30;

/// What [`Mp4Writer::finish`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Mp4Written {
    pub path: PathBuf,
    /// Frames in the file.
    pub frames: u64,
    /// Picture size in the file (the input size made even).
    pub width: u32,
    pub height: u32,
    /// From the first frame to the end of the last, in milliseconds.
    pub duration_ms: f64,
}

/// An encoded frame waiting for the next one, whose time gives its duration.
struct Held {
    ticks: u64,
    bytes: Vec<u8>,
    sync: bool,
}

/// An H.264 MP4 being written; call [`finish`](Self::finish) to complete the file (without it
/// the file has no index and does not play).
pub struct Mp4Writer {
    path: PathBuf,
    width: u32,
    height: u32,
    coded: (u32, u32),
    encoder: Encoder,
    mp4: Option<::mp4::Mp4Writer<BufWriter<File>>>,
    track_added: bool,
    yuv: YUVBuffer,
    /// Odd-sized input copied with its last column/row repeated.
    padded: Option<RgbImage>,
    first_ms: Option<f64>,
    last_ms: f64,
    held: Option<Held>,
    /// Frames given so far (for messages).
    frames: u64,
    /// Frames coded into the file.
    samples: u64,
    last_duration: u64,
}

impl Mp4Writer {
    /// Create `path` (replacing a regular file there) for `width` x `height` frames; see
    /// [`Mp4Writer::create_with`].
    pub fn create(path: &Path, width: u32, height: u32) -> Result<Self> {
        Self::create_with(
            path,
            width,
            height,
            &OutputPolicy::new().with_overwrite(true),
        )
    }

    /// Create `path` for `width` x `height` frames as `policy` allows (see [`crate::outfile`]:
    /// never over a device, an input, or an existing file unless it says so; owner-only, since
    /// an annotated video shows people's faces and emotions).
    ///
    /// The quality is constant (openh264's quantiser 26, rate control off) rather than a bit
    /// rate: openh264 holds a bit rate only by skipping frames, and a skipped frame would be a
    /// hole in the annotated video. On the test clips it keeps about 41 dB PSNR on gray
    /// (what the face stage sees) at under 0.1 bits per pixel.
    pub fn create_with(
        path: &Path,
        width: u32,
        height: u32,
        policy: &OutputPolicy,
    ) -> Result<Self> {
        let (max_w, max_h) = MAX_ENCODE_SIZE;
        let (long, short) = (width.max(height), width.min(height));
        if width == 0 || height == 0 || long > max_w || short > max_h {
            return Err(Error::InvalidInput {
                what: format!("video size for {}", path.display()),
                reason: format!(
                    "{width}x{height} is outside 1x1..={max_w}x{max_h} (or {max_h}x{max_w}), what the H.264 encoder takes"
                ),
            });
        }
        let coded = (width + width % 2, height + height % 2);
        let fail = |reason: String| Error::video(path.display(), reason);
        let config = EncoderConfig::new()
            .max_frame_rate(FrameRate::from_hz(30.0))
            .rate_control_mode(RateControlMode::Off)
            .skip_frames(false)
            // One thread: the pipeline's stages already use the cores.
            .num_threads(1)
            // A key frame every 2 s at 30 frames/s, so players can seek.
            .intra_frame_period(IntraFramePeriod::from_num_frames(60));
        let encoder = Encoder::with_api_config(OpenH264API::from_source(), config)
            .map_err(|e| fail(format!("cannot start the H.264 encoder: {e}")))?;
        let file = create_private(path, policy)?;
        let mp4 = ::mp4::Mp4Writer::write_start(
            BufWriter::new(file),
            &::mp4::Mp4Config {
                major_brand: ::mp4::FourCC::from(*b"isom"),
                minor_version: 512,
                compatible_brands: [b"isom", b"iso2", b"avc1", b"mp41"]
                    .into_iter()
                    .map(|b| ::mp4::FourCC::from(*b))
                    .collect(),
                timescale: 1000,
            },
        )
        .map_err(|e| fail(format!("cannot write the file header: {e}")))?;
        Ok(Self {
            path: path.to_path_buf(),
            width,
            height,
            coded,
            encoder,
            mp4: Some(mp4),
            track_added: false,
            yuv: YUVBuffer::new(coded.0 as usize, coded.1 as usize),
            padded: None,
            first_ms: None,
            last_ms: f64::NEG_INFINITY,
            held: None,
            frames: 0,
            samples: 0,
            last_duration: LONE_FRAME_TICKS,
        })
    }

    /// Picture size in the file: the input size, made even.
    pub fn coded_size(&self) -> (u32, u32) {
        self.coded
    }

    fn fail(&self, reason: String) -> Error {
        Error::video(self.path.display(), reason)
    }

    /// Encode one frame shown at `time_ms` (any origin: the file starts at the first frame's
    /// time; times must grow from frame to frame).
    pub fn write(&mut self, rgb: &RgbImage, time_ms: f64) -> Result<()> {
        if rgb.dimensions() != (self.width, self.height) {
            return Err(self.fail(format!(
                "frame {} is {}x{}, but the video is {}x{}",
                self.frames,
                rgb.width(),
                rgb.height(),
                self.width,
                self.height
            )));
        }
        if !time_ms.is_finite() || time_ms <= self.last_ms {
            return Err(self.fail(format!(
                "frame {} at {time_ms} ms: expected a time after the previous frame's {} ms",
                self.frames, self.last_ms
            )));
        }
        let first = *self.first_ms.get_or_insert(time_ms);
        let ticks = ((time_ms - first) * TIMESCALE as f64 / 1e3).round() as u64;
        if let Some(h) = &self.held
            && ticks <= h.ticks
        {
            return Err(self.fail(format!(
                "frame {} at {time_ms} ms is less than 1/{TIMESCALE} s after the previous one",
                self.frames
            )));
        }
        self.last_ms = time_ms;

        let source: &RgbImage = if self.coded == (self.width, self.height) {
            rgb
        } else {
            let padded = self
                .padded
                .get_or_insert_with(|| RgbImage::new(self.coded.0, self.coded.1));
            pad_to(rgb, padded);
            padded
        };
        self.yuv.read_rgb8(RgbSliceU8::new(
            source.as_raw(),
            (self.coded.0 as usize, self.coded.1 as usize),
        ));
        let encoded = self
            .encoder
            .encode_at(
                &self.yuv,
                Timestamp::from_millis((time_ms - first).max(0.0) as u64),
            )
            .map_err(|e| {
                Error::video(
                    self.path.display(),
                    format!("cannot encode frame {}: {e}", self.frames),
                )
            })?;
        let sync = encoded.frame_type() == FrameType::IDR;
        let mut bytes = Vec::new();
        let (mut sps, mut pps) = (None, None);
        for l in 0..encoded.num_layers() {
            let Some(layer) = encoded.layer(l) else {
                continue;
            };
            for n in 0..layer.nal_count() {
                let Some(nal) = layer.nal_unit(n).map(strip_start_code) else {
                    continue;
                };
                match nal.first().map(|b| b & 0x1F) {
                    Some(7) => sps = Some(nal.to_vec()),
                    Some(8) => pps = Some(nal.to_vec()),
                    Some(_) => {
                        bytes.extend_from_slice(&(nal.len() as u32).to_be_bytes());
                        bytes.extend_from_slice(nal);
                    }
                    None => {}
                }
            }
        }
        if !self.track_added {
            let (Some(sps), Some(pps)) = (sps, pps) else {
                return Err(
                    self.fail("the H.264 encoder gave no SPS/PPS with its first frame".into())
                );
            };
            let config = ::mp4::TrackConfig {
                track_type: ::mp4::TrackType::Video,
                timescale: TIMESCALE,
                language: "und".into(),
                media_conf: ::mp4::MediaConfig::AvcConfig(::mp4::AvcConfig {
                    width: self.coded.0 as u16,
                    height: self.coded.1 as u16,
                    seq_param_set: sps,
                    pic_param_set: pps,
                }),
            };
            self.mp4_mut()?.add_track(&config).map_err(|e| {
                Error::video(
                    self.path.display(),
                    format!("cannot add the video track: {e}"),
                )
            })?;
            self.track_added = true;
        }
        self.frames += 1;
        if bytes.is_empty() {
            // Nothing coded (the encoder skipped it): the previous frame lasts until the next.
            return Ok(());
        }
        if let Some(h) = self.held.take() {
            self.last_duration = ticks - h.ticks;
            self.put(h, ticks)?;
        }
        self.held = Some(Held { ticks, bytes, sync });
        self.samples += 1;
        Ok(())
    }

    fn mp4_mut(&mut self) -> Result<&mut ::mp4::Mp4Writer<BufWriter<File>>> {
        let path = self.path.display().to_string();
        self.mp4
            .as_mut()
            .ok_or_else(|| Error::video(path, "the file was already finished or failed"))
    }

    /// Write a held sample lasting until `until` ticks.
    fn put(&mut self, h: Held, until: u64) -> Result<()> {
        let duration = u32::try_from(until - h.ticks).map_err(|_| {
            self.fail(format!(
                "a frame lasts over {} hours",
                u32::MAX / TIMESCALE / 3600
            ))
        })?;
        let sample = ::mp4::Mp4Sample {
            start_time: h.ticks,
            duration,
            rendering_offset: 0,
            is_sync: h.sync,
            bytes: h.bytes.into(),
        };
        let n = self.frames;
        let mp4 = self.mp4_mut()?;
        if let Err(e) = mp4.write_sample(1, &sample) {
            self.mp4 = None;
            return Err(self.fail(format!("cannot write frame data (near frame {n}): {e}")));
        }
        Ok(())
    }

    /// Write the last frame and the index, and flush the file.
    pub fn finish(mut self) -> Result<Mp4Written> {
        let Some(last) = self.held.take() else {
            return Err(self.fail("no frames were written; the file is not a video".into()));
        };
        let end = last.ticks + self.last_duration;
        self.put(last, end)?;
        let path = self.path.clone();
        let mut mp4 = self.mp4.take().ok_or_else(|| {
            Error::video(path.display(), "the file was already finished or failed")
        })?;
        mp4.write_end()
            .map_err(|e| Error::video(path.display(), format!("cannot write the index: {e}")))?;
        let mut out = mp4.into_writer();
        out.flush().map_err(|e| Error::io(&path, e))?;
        out.get_ref().sync_all().map_err(|e| Error::io(&path, e))?;
        Ok(Mp4Written {
            path,
            frames: self.samples,
            width: self.coded.0,
            height: self.coded.1,
            duration_ms: end as f64 * 1e3 / TIMESCALE as f64,
        })
    }
}

/// A NAL unit without its Annex B start code.
fn strip_start_code(nal: &[u8]) -> &[u8] {
    if nal.starts_with(&[0, 0, 0, 1]) {
        &nal[4..]
    } else if nal.starts_with(&[0, 0, 1]) {
        &nal[3..]
    } else {
        nal
    }
}

/// Copy `src` into the top-left of the larger `dst`, repeating its last column and row.
fn pad_to(src: &RgbImage, dst: &mut RgbImage) {
    let (sw, sh) = src.dimensions();
    let (dw, dh) = dst.dimensions();
    for y in 0..dh {
        let sy = y.min(sh - 1);
        for x in 0..dw {
            dst.put_pixel(x, y, *src.get_pixel(x.min(sw - 1), sy));
        }
    }
}
