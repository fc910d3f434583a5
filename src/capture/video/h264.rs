//! H.264 decoding with openh264, built from its bundled source by cargo (no system library).
//!
//! openh264's safe `Decoder::decode` calls `DecodeFrameNoDelay`, which signals the end of the
//! stream after every access unit; on streams with B-frames (x264's default) that fails with
//! out-of-memory (16384) and then no-parameter-sets (16) errors (openh264-rs issue #50). This
//! module calls the decoder's own `DecodeFrame2` through `Decoder::raw_api()` instead, one access
//! unit per call, and drains the pictures still held for reordering with `FlushFrame` at the
//! end. Each access unit is tagged with a number (`uiInBsTimeStamp`) that the decoder hands back
//! with the picture made from it, so callers can put pictures in presentation order themselves
//! rather than trust the decoder's reordering heuristics.

use std::ptr::null_mut;

use image::RgbImage;
use openh264::OpenH264API;
use openh264::decoder::{Decoder, DecoderConfig};
use openh264_sys2::{
    DECODER_OPTION_NUM_OF_FRAMES_REMAINING_IN_BUFFER, DECODING_STATE, SBufferInfo, videoFormatI420,
};
use yuv::{YuvPlanarImage, YuvRange, YuvStandardMatrix};

/// A decoded picture and the tag of the access unit it came from.
pub(super) struct Picture {
    pub tag: u64,
    pub rgb: RgbImage,
}

/// An openh264 decoder fed whole access units in Annex B form.
pub(super) struct H264Decoder {
    decoder: Decoder,
    /// The end of the stream has been signalled; only `FlushFrame` may follow.
    ended: bool,
}

impl H264Decoder {
    pub fn new() -> Result<Self, String> {
        let decoder = Decoder::with_api_config(OpenH264API::from_source(), DecoderConfig::new())
            .map_err(|e| format!("cannot start the H.264 decoder: {e}"))?;
        Ok(Self {
            decoder,
            ended: false,
        })
    }

    /// Decode one access unit (start-code prefixed NAL units) tagged `tag`; returns the picture
    /// the decoder finished with it, if any (it may hold pictures back to reorder them).
    pub fn decode(&mut self, access_unit: &[u8], tag: u64) -> Result<Option<Picture>, String> {
        let len = i32::try_from(access_unit.len())
            .map_err(|_| format!("an access unit of {} bytes is too large", access_unit.len()))?;
        let mut dst = [null_mut::<u8>(); 3];
        let mut info = SBufferInfo {
            uiInBsTimeStamp: tag,
            ..Default::default()
        };
        // SAFETY: the pointers are valid for the call (`access_unit` for `len` bytes, `dst` for
        // three plane pointers, `info` for one SBufferInfo); the decoder was initialised by
        // `Decoder::with_api_config`.
        let state = unsafe {
            self.decoder.raw_api().decode_frame2(
                access_unit.as_ptr(),
                len,
                dst.as_mut_ptr(),
                &raw mut info,
            )
        };
        check(state)?;
        picture(&dst, &info)
    }

    /// At the end of the stream: the pictures still in the decoder, one per call, `None` when
    /// none is left.
    pub fn drain(&mut self) -> Result<Option<Picture>, String> {
        let mut dst = [null_mut::<u8>(); 3];
        let mut info = SBufferInfo::default();
        if !self.ended {
            self.ended = true;
            // An empty input tells the decoder the stream has ended, which finishes the last
            // access unit; `FlushFrame` releases nothing before that.
            // SAFETY: as in `decode`; a null input of length 0 is the documented end signal.
            let state = unsafe {
                self.decoder.raw_api().decode_frame2(
                    std::ptr::null(),
                    0,
                    dst.as_mut_ptr(),
                    &raw mut info,
                )
            };
            check(state)?;
            if let Some(p) = picture(&dst, &info)? {
                return Ok(Some(p));
            }
        }
        if self.remaining()? == 0 {
            return Ok(None);
        }
        let mut info = SBufferInfo::default();
        // SAFETY: as in `decode`.
        let state = unsafe {
            self.decoder
                .raw_api()
                .flush_frame(dst.as_mut_ptr(), &raw mut info)
        };
        check(state)?;
        picture(&dst, &info)
    }

    /// Pictures decoded but not handed out yet.
    fn remaining(&mut self) -> Result<i32, String> {
        let mut n: i32 = 0;
        // SAFETY: this option writes one int through the pointer.
        let rc = unsafe {
            self.decoder.raw_api().get_option(
                DECODER_OPTION_NUM_OF_FRAMES_REMAINING_IN_BUFFER,
                (&raw mut n).cast(),
            )
        };
        if rc != 0 {
            return Err(format!(
                "the H.264 decoder cannot say how many pictures it holds (error {rc})"
            ));
        }
        Ok(n)
    }
}

/// Names of the decoder's error bits, for messages.
const STATE_NAMES: [(DECODING_STATE, &str); 11] = [
    (1, "frame pending"),
    (2, "reference lost"),
    (4, "bitstream error"),
    (8, "dependency layer lost"),
    (16, "no parameter sets"),
    (32, "data error concealed"),
    (64, "reference list empty"),
    (0x1000, "invalid argument"),
    (0x2000, "not initialised"),
    (0x4000, "out of memory"),
    (0x8000, "output buffer too small"),
];

fn check(state: DECODING_STATE) -> Result<(), String> {
    if state == 0 {
        return Ok(());
    }
    let names: Vec<&str> = STATE_NAMES
        .iter()
        .filter(|(bit, _)| state & bit != 0)
        .map(|(_, n)| *n)
        .collect();
    Err(format!(
        "H.264 decoding failed ({}, state {state})",
        names.join(", ")
    ))
}

/// The picture the decoder handed out in `dst`/`info`, converted to RGB.
fn picture(dst: &[*mut u8; 3], info: &SBufferInfo) -> Result<Option<Picture>, String> {
    if info.iBufferStatus != 1 || dst.iter().any(|p| p.is_null()) {
        return Ok(None);
    }
    // SAFETY: with iBufferStatus 1 the decoder fills the system-buffer member of the union.
    let buf = unsafe { info.UsrData.sSystemBuffer };
    if buf.iFormat != videoFormatI420 {
        return Err(format!(
            "the H.264 decoder returned pixel format {}, expected I420",
            buf.iFormat
        ));
    }
    let (w, h) = (buf.iWidth, buf.iHeight);
    let (y_stride, uv_stride) = (buf.iStride[0], buf.iStride[1]);
    if w <= 0 || h <= 0 || y_stride < w || uv_stride < (w + 1) / 2 {
        return Err(format!(
            "the H.264 decoder returned a {w}x{h} picture with strides {y_stride}/{uv_stride}"
        ));
    }
    let (w, h, y_stride, uv_stride) = (
        w as usize,
        h as usize,
        y_stride as usize,
        uv_stride as usize,
    );
    let uv_rows = h.div_ceil(2);
    // SAFETY: the decoder's planes hold `height` rows of `stride` bytes (half as many rows for
    // chroma) and stay valid until the next call into the decoder, which cannot happen while
    // these borrows live.
    let (y, u, v) = unsafe {
        (
            std::slice::from_raw_parts(dst[0], y_stride * h),
            std::slice::from_raw_parts(dst[1], uv_stride * uv_rows),
            std::slice::from_raw_parts(dst[2], uv_stride * uv_rows),
        )
    };
    let rgb = yuv420_to_rgb(y, u, v, (w, h), (y_stride, uv_stride))?;
    Ok(Some(Picture {
        tag: info.uiOutYuvTimeStamp,
        rgb,
    }))
}

/// BT.601 limited-range YUV 4:2:0 to RGB: the coefficients openh264's own converter uses and
/// the ones encoders assume for untagged video. openh264's converter only runs on pictures from
/// its safe `decode` (which fails on B-frames, above); the `yuv` crate's SIMD converter is as
/// fast (see docs/video.md).
pub(super) fn yuv420_to_rgb(
    y: &[u8],
    u: &[u8],
    v: &[u8],
    (w, h): (usize, usize),
    (y_stride, uv_stride): (usize, usize),
) -> Result<RgbImage, String> {
    let mut rgb = RgbImage::new(w as u32, h as u32);
    let planar = YuvPlanarImage {
        y_plane: y,
        y_stride: y_stride as u32,
        u_plane: u,
        u_stride: uv_stride as u32,
        v_plane: v,
        v_stride: uv_stride as u32,
        width: w as u32,
        height: h as u32,
    };
    yuv::yuv420_to_rgb(
        &planar,
        &mut rgb,
        w as u32 * 3,
        YuvRange::Limited,
        YuvStandardMatrix::Bt601,
    )
    .map_err(|e| format!("cannot convert a {w}x{h} picture to RGB: {e}"))?;
    Ok(rgb)
}
