//! Image work shared by every stage: decoding files, grayscale, face boxes, square crops and resizing.
//!
//! Grayscale uses the BT.601 weights (as OpenCV does), and the bilinear resize samples at pixel
//! centres like OpenCV's `INTER_LINEAR`, because the shipped models were trained on images made
//! that way; a different filter costs accuracy.
//!
//! Image files are read with limits and decoded strictly ([`load_rgb`]): only regular files, of
//! bounded size, whose declared size is checked before any pixel is decoded, and a truncated or
//! corrupt file is an error rather than a partly grey or garbled picture.

use std::fs::File;
use std::io::{Cursor, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use image::{
    DynamicImage, GrayImage, ImageBuffer, ImageDecoder, ImageFormat, ImageReader, Limits, Luma,
    LumaA, Rgb, RgbImage, Rgba,
};
use serde::Serialize;

use crate::error::{Error, Result};

/// Largest width or height of an image we agree to decode (guards against decompression bombs).
pub const MAX_IMAGE_SIDE: u32 = 16_384;

/// Most pixels in one decoded image (64 Mi, e.g. 8192x8192; 192 MiB as RGB): what a wide
/// panorama or a large photo needs, and no more.
pub const MAX_IMAGE_PIXELS: u64 = 1 << 26;

/// Largest width or height of a GIF's canvas: every frame of an animation is composed on a
/// canvas of this size, kept in memory while it plays.
pub const MAX_GIF_SIDE: u32 = 8_192;

/// Largest image file we agree to read; it is read whole before it is decoded.
pub const MAX_IMAGE_BYTES: u64 = 256 << 20;

/// Most bytes a decoder may allocate for one image (its pixels at 16 bits and 4 channels,
/// with room to spare).
const MAX_DECODE_ALLOC: u64 = 1 << 30;

/// A face's bounding box in frame pixels, with the detector's confidence.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FaceBox {
    pub x: i32,
    pub y: i32,
    pub w: u32,
    pub h: u32,
    /// Detector score (larger is more certain; rustface's threshold is around 2).
    #[serde(skip)]
    pub score: f32,
}

impl FaceBox {
    /// Intersection over union of two boxes, in 0..=1.
    pub fn iou(&self, other: &FaceBox) -> f32 {
        let x0 = self.x.max(other.x);
        let y0 = self.y.max(other.y);
        let x1 = (self.x + self.w as i32).min(other.x + other.w as i32);
        let y1 = (self.y + self.h as i32).min(other.y + other.h as i32);
        let inter = ((x1 - x0).max(0) as f32) * ((y1 - y0).max(0) as f32);
        let union = (self.w * self.h + other.w * other.h) as f32 - inter;
        if union <= 0.0 { 0.0 } else { inter / union }
    }

    /// Centre of the box.
    pub fn center(&self) -> (f32, f32) {
        (
            self.x as f32 + self.w as f32 / 2.0,
            self.y as f32 + self.h as f32 / 2.0,
        )
    }
}

/// Open `path` for reading if it is a regular file of at most `max_bytes`; `what` names what
/// it should be in the error ("an image"). Anything else is refused before it is read: a
/// FIFO (which would wait forever for a writer), a device such as `/dev/zero` (which never
/// ends), a directory. The reason is returned for the caller's own error.
pub(crate) fn open_regular(
    path: &Path,
    max_bytes: u64,
    what: &str,
) -> std::result::Result<File, String> {
    let not_regular = |t: std::fs::FileType| {
        format!(
            "is {}, expected a regular file ({what})",
            crate::outfile::describe_file_type(t)
        )
    };
    // Checked before opening too: opening a device can have effects of its own.
    let cannot = |e: std::io::Error| format!("cannot open {what}: {e}");
    let meta = std::fs::metadata(path).map_err(cannot)?;
    if !meta.is_file() {
        return Err(not_regular(meta.file_type()));
    }
    // O_NONBLOCK: a FIFO put in its place since the check opens at once instead of waiting
    // for a writer (and is refused below); it changes nothing for a regular file.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(cannot)?;
    let meta = file.metadata().map_err(cannot)?;
    if !meta.is_file() {
        return Err(not_regular(meta.file_type()));
    }
    if meta.len() > max_bytes {
        return Err(format!(
            "is {} bytes, more than the {max_bytes} bytes {what} may have",
            meta.len()
        ));
    }
    Ok(file)
}

/// Read the regular file `path` whole, refusing more than `max_bytes` (see [`open_regular`]),
/// even if it grows while it is read.
pub(crate) fn read_regular(
    path: &Path,
    max_bytes: u64,
    what: &str,
) -> std::result::Result<Vec<u8>, String> {
    let file = open_regular(path, max_bytes, what)?;
    let mut bytes = Vec::new();
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {what}: {e}"))?;
    if bytes.len() as u64 > max_bytes {
        return Err(format!(
            "grew past the {max_bytes} bytes {what} may have while it was read"
        ));
    }
    Ok(bytes)
}

/// Decode an image file of any supported format and bit depth (8/16-bit, gray, RGB, RGBA) to
/// 8-bit RGB, strictly: a file that is not a regular file or is over [`MAX_IMAGE_BYTES`], a
/// size over [`MAX_IMAGE_SIDE`] / [`MAX_IMAGE_PIXELS`] (checked before any pixel is
/// decoded), and a truncated or corrupt image are errors naming the file, never a partly grey
/// or garbled picture. Every image the app, `predict`, `eval` and training read comes through
/// here.
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    let bytes = read_regular(path, MAX_IMAGE_BYTES, "an image").map_err(|reason| Error::Image {
        path: path.to_path_buf(),
        reason,
    })?;
    decode_rgb(&bytes, path)
}

/// Decode the bytes of an image file as [`load_rgb`] does; `path` names it in errors and
/// gives its format when the content does not.
pub fn decode_rgb(bytes: &[u8], path: &Path) -> Result<RgbImage> {
    let err = |reason: String| Error::Image {
        path: path.to_path_buf(),
        reason,
    };
    let format = image::guess_format(bytes)
        .or_else(|_| ImageFormat::from_path(path))
        .map_err(|_| err("not a PNG, JPEG or GIF image".into()))?;
    let img = match format {
        ImageFormat::Jpeg => decode_jpeg(bytes),
        ImageFormat::Png => decode_png(bytes),
        ImageFormat::Gif => decode_gif_still(bytes),
        other => decode_other(bytes, other),
    }
    .map_err(err)?;
    Ok(to_rgb8(img))
}

/// Refuse a declared size before any pixel is decoded.
fn check_size(w: u64, h: u64) -> std::result::Result<(), String> {
    let side = u64::from(MAX_IMAGE_SIDE);
    if w == 0 || h == 0 || w > side || h > side || w * h > MAX_IMAGE_PIXELS {
        return Err(format!(
            "size {w}x{h} is outside 1x1..={side}x{side} or over {} megapixels",
            MAX_IMAGE_PIXELS >> 20
        ));
    }
    Ok(())
}

fn limits() -> Limits {
    let mut l = Limits::default();
    l.max_image_width = Some(MAX_IMAGE_SIDE);
    l.max_image_height = Some(MAX_IMAGE_SIDE);
    l.max_alloc = Some(MAX_DECODE_ALLOC);
    l
}

/// JPEG through zune-jpeg (the decoder `image` wraps) in strict mode, which `image` turns off:
/// without it, data that ends early decodes as a picture whose rest is grey, with no error.
/// The colour spaces asked for are those `image` asks for, so pixels are the same.
fn decode_jpeg(bytes: &[u8]) -> std::result::Result<DynamicImage, String> {
    use zune_core::bytestream::ZCursor;
    use zune_core::colorspace::ColorSpace;
    use zune_core::options::DecoderOptions;
    let options = DecoderOptions::default()
        .set_strict_mode(true)
        .set_max_width(MAX_IMAGE_SIDE as usize)
        .set_max_height(MAX_IMAGE_SIDE as usize);
    let mut dec = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    dec.decode_headers().map_err(jpeg_reason)?;
    let (w, h) = dec
        .dimensions()
        .ok_or_else(|| "corrupt JPEG: no image size".to_string())?;
    check_size(w as u64, h as u64)?;
    // Gray stays gray (alpha dropped); everything else (YCbCr, CMYK, RGBA) becomes RGB.
    let gray = matches!(
        dec.input_colorspace(),
        Some(ColorSpace::Luma | ColorSpace::LumaA)
    );
    let out = if gray {
        ColorSpace::Luma
    } else {
        ColorSpace::RGB
    };
    dec.set_options(dec.options().jpeg_set_out_colorspace(out));
    let px = dec.decode().map_err(jpeg_reason)?;
    let (w, h) = (w as u32, h as u32);
    let img = if gray {
        GrayImage::from_raw(w, h, px).map(DynamicImage::ImageLuma8)
    } else {
        RgbImage::from_raw(w, h, px).map(DynamicImage::ImageRgb8)
    };
    img.ok_or_else(|| "corrupt JPEG: fewer pixels than its size".into())
}

fn jpeg_reason(e: zune_jpeg::errors::DecodeErrors) -> String {
    use zune_jpeg::errors::DecodeErrors as E;
    let detail = match e {
        E::Format(s)
        | E::HuffmanDecode(s)
        | E::DqtError(s)
        | E::SosError(s)
        | E::SofError(s)
        | E::MCUError(s) => s,
        E::FormatStatic(s) => s.to_string(),
        E::LargeDimensions(n) => format!("a side of {n} pixels is over {MAX_IMAGE_SIDE}"),
        other => format!("{other:?}"),
    };
    format!("truncated or corrupt JPEG ({detail})")
}

/// PNG through the png crate with its zlib checksum on: `image` turns it off, so image data
/// altered behind a recomputed chunk CRC decodes as garbage. Reading on to the end chunk
/// finds a file cut short after its pixels. Samples come out as `image` gives them.
fn decode_png(bytes: &[u8]) -> std::result::Result<DynamicImage, String> {
    let reason = |e: png::DecodingError| format!("truncated or corrupt PNG ({e})");
    let mut options = png::DecodeOptions::default();
    options.set_ignore_adler32(false);
    let mut dec = png::Decoder::new_with_options(Cursor::new(bytes), options);
    dec.set_limits(png::Limits {
        bytes: MAX_DECODE_ALLOC as usize,
    });
    let info = dec.read_header_info().map_err(reason)?;
    check_size(u64::from(info.width), u64::from(info.height))?;
    // As `image` does: palettes and low bit depths expanded, 16 bits kept.
    dec.set_transformations(png::Transformations::EXPAND);
    let mut reader = dec.read_info().map_err(reason)?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| "PNG too large to decode".to_string())?;
    let mut buf = vec![0u8; size];
    let frame = reader.next_frame(&mut buf).map_err(reason)?;
    reader.finish().map_err(reason)?;
    buf.truncate(frame.buffer_size());
    let (w, h) = (frame.width, frame.height);
    let wide = || -> Vec<u16> {
        buf.chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect()
    };
    use png::{BitDepth::Eight, BitDepth::Sixteen, ColorType as C};
    let img = match (frame.color_type, frame.bit_depth) {
        (C::Grayscale, Eight) => GrayImage::from_raw(w, h, buf).map(DynamicImage::ImageLuma8),
        (C::GrayscaleAlpha, Eight) => {
            ImageBuffer::<LumaA<u8>, _>::from_raw(w, h, buf).map(DynamicImage::ImageLumaA8)
        }
        (C::Rgb, Eight) => RgbImage::from_raw(w, h, buf).map(DynamicImage::ImageRgb8),
        (C::Rgba, Eight) => {
            ImageBuffer::<Rgba<u8>, _>::from_raw(w, h, buf).map(DynamicImage::ImageRgba8)
        }
        (C::Grayscale, Sixteen) => {
            ImageBuffer::<Luma<u16>, _>::from_raw(w, h, wide()).map(DynamicImage::ImageLuma16)
        }
        (C::GrayscaleAlpha, Sixteen) => {
            ImageBuffer::<LumaA<u16>, _>::from_raw(w, h, wide()).map(DynamicImage::ImageLumaA16)
        }
        (C::Rgb, Sixteen) => {
            ImageBuffer::<Rgb<u16>, _>::from_raw(w, h, wide()).map(DynamicImage::ImageRgb16)
        }
        (C::Rgba, Sixteen) => {
            ImageBuffer::<Rgba<u16>, _>::from_raw(w, h, wide()).map(DynamicImage::ImageRgba16)
        }
        (c, d) => return Err(format!("PNG of {c:?} at {d:?} bits is not supported")),
    };
    img.ok_or_else(|| "corrupt PNG: fewer pixels than its size".into())
}

/// A GIF's first frame; its canvas is checked against [`MAX_GIF_SIDE`] before decoding.
fn decode_gif_still(bytes: &[u8]) -> std::result::Result<DynamicImage, String> {
    let mut dec = image::codecs::gif::GifDecoder::new(Cursor::new(bytes))
        .map_err(|e| format!("not a GIF ({e})"))?;
    let (w, h) = dec.dimensions();
    check_gif_canvas(w, h)?;
    dec.set_limits(limits()).map_err(|e| e.to_string())?;
    DynamicImage::from_decoder(dec).map_err(|e| format!("truncated or corrupt GIF ({e})"))
}

/// Refuse a GIF canvas over [`MAX_GIF_SIDE`] (or empty) before anything is decoded.
pub(crate) fn check_gif_canvas(w: u32, h: u32) -> std::result::Result<(), String> {
    if w == 0 || h == 0 || w > MAX_GIF_SIDE || h > MAX_GIF_SIDE {
        return Err(format!(
            "GIF canvas {w}x{h} is outside 1x1..={MAX_GIF_SIDE}x{MAX_GIF_SIDE}"
        ));
    }
    Ok(())
}

/// Formats this build has no strict path for, through `image` with its limits.
fn decode_other(bytes: &[u8], format: ImageFormat) -> std::result::Result<DynamicImage, String> {
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    reader.limits(limits());
    reader
        .decode()
        .map_err(|e| format!("not a supported image ({e})"))
}

/// Convert any decoded image to 8-bit RGB; alpha is dropped, 16-bit and float samples are scaled.
pub fn to_rgb8(img: DynamicImage) -> RgbImage {
    match img {
        DynamicImage::ImageRgb8(rgb) => rgb,
        other => other.to_rgb8(),
    }
}

/// BT.601 luma (0.299 R + 0.587 G + 0.114 B), rounded, as OpenCV's `COLOR_RGB2GRAY`.
pub fn to_gray(rgb: &RgbImage) -> GrayImage {
    let (w, h) = rgb.dimensions();
    let mut out = vec![0u8; (w * h) as usize];
    luma_rows(rgb.as_raw(), &mut out);
    GrayImage::from_raw(w, h, out).expect("buffer has w*h bytes")
}

/// [`to_gray`]'s loop. Every frame of the live pipeline goes through it; at 640x480 it took
/// 0.45 ms pushing byte by byte, 0.19 ms writing into a sized buffer with baseline x86-64
/// (SSE2) code and 0.075 ms compiled for AVX2, whose byte shuffles take the RGB triples apart.
fn luma_rows(rgb: &[u8], out: &mut [u8]) {
    #[inline(always)]
    fn luma(rgb: &[u8], out: &mut [u8]) {
        for (y, p) in out.iter_mut().zip(rgb.chunks_exact(3)) {
            *y =
                ((p[0] as u32 * 4899 + p[1] as u32 * 9617 + p[2] as u32 * 1868 + 8192) >> 14) as u8;
        }
    }
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2")]
        fn avx2(rgb: &[u8], out: &mut [u8]) {
            luma(rgb, out)
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            return unsafe { avx2(rgb, out) };
        }
    }
    luma(rgb, out)
}

/// Resize a grayscale image to `w` x `h` with bilinear filtering.
///
/// Upscaling and mild downscaling sample at pixel centres exactly like OpenCV's `INTER_LINEAR`
/// (what FER2013 models were trained with). Shrinking by more than 2x first averages pixel
/// blocks so that a large face does not alias into noise.
pub fn resize_gray(src: &GrayImage, w: u32, h: u32) -> GrayImage {
    let (sw, sh) = src.dimensions();
    if sw == w && sh == h {
        return src.clone();
    }
    let factor = (sw / w.max(1)).min(sh / h.max(1));
    if factor >= 2 {
        let small = box_shrink(src, factor);
        return resize_gray(&small, w, h);
    }
    bilinear(src, w, h)
}

/// Average non-overlapping `f` x `f` blocks (the last partial row/column is averaged over what exists).
fn box_shrink(src: &GrayImage, f: u32) -> GrayImage {
    let (sw, sh) = src.dimensions();
    let (w, h) = (sw.div_ceil(f), sh.div_ceil(f));
    let (f, sw_us, w_us) = (f as usize, sw as usize, w as usize);
    let raw = src.as_raw();
    let mut out = vec![0u8; w_us * h as usize];
    // Column sums of a block row first, then across: the inner loops run over whole rows, so
    // they vectorise (a face region is shrunk like this on every frame).
    let mut cols = vec![0u32; sw_us];
    for (by, out_row) in out.chunks_exact_mut(w_us).enumerate() {
        let y0 = by * f;
        let y1 = (y0 + f).min(sh as usize);
        cols.fill(0);
        for row in raw[y0 * sw_us..y1 * sw_us].chunks_exact(sw_us) {
            cols.iter_mut().zip(row).for_each(|(c, &v)| *c += v as u32);
        }
        for (o, block) in out_row.iter_mut().zip(cols.chunks(f)) {
            let n = ((y1 - y0) * block.len()) as u32;
            *o = ((block.iter().sum::<u32>() + n / 2) / n) as u8;
        }
    }
    GrayImage::from_raw(w, h, out).expect("buffer has w*h bytes")
}

/// The `w` x `h` rectangle at `(x, y)` of `src`, cut to the part inside it (as
/// `image::imageops::crop_imm` does).
pub fn crop_gray(src: &GrayImage, x: u32, y: u32, w: u32, h: u32) -> GrayImage {
    let (x, y) = (x.min(src.width()), y.min(src.height()));
    let (w, h) = (w.min(src.width() - x), h.min(src.height() - y));
    let (sw, (x, y, w)) = (src.width() as usize, (x as usize, y as usize, w as usize));
    let mut out = Vec::with_capacity(w * h as usize);
    for row in src
        .as_raw()
        .chunks_exact(sw.max(1))
        .skip(y)
        .take(h as usize)
    {
        out.extend_from_slice(&row[x..x + w]);
    }
    GrayImage::from_raw(w as u32, h, out).expect("buffer has w*h bytes")
}

/// Source index pairs and weights for one axis, OpenCV style: `s = (d + 0.5) * scale - 0.5`, clamped.
/// ONNX export builds the same taps into its graphs, so that they resize exactly as this does.
pub(crate) fn axis_taps(src: u32, dst: u32) -> Vec<(usize, usize, f32)> {
    let scale = src as f32 / dst as f32;
    (0..dst)
        .map(|d| {
            let s = ((d as f32 + 0.5) * scale - 0.5).max(0.0);
            let i0 = (s.floor() as u32).min(src - 1);
            let i1 = (i0 + 1).min(src - 1);
            let t = (s - i0 as f32).clamp(0.0, 1.0);
            (i0 as usize, i1 as usize, t)
        })
        .collect()
}

fn bilinear(src: &GrayImage, w: u32, h: u32) -> GrayImage {
    let (sw, sh) = src.dimensions();
    let xs = axis_taps(sw, w);
    let ys = axis_taps(sh, h);
    let raw = src.as_raw();
    let mut out = vec![0u8; (w * h) as usize];
    for (out_row, &(y0, y1, ty)) in out.chunks_exact_mut(w as usize).zip(&ys) {
        let r0 = &raw[y0 * sw as usize..][..sw as usize];
        let r1 = &raw[y1 * sw as usize..][..sw as usize];
        for (o, &(x0, x1, tx)) in out_row.iter_mut().zip(&xs) {
            let top = r0[x0] as f32 * (1.0 - tx) + r0[x1] as f32 * tx;
            let bot = r1[x0] as f32 * (1.0 - tx) + r1[x1] as f32 * tx;
            let v = top * (1.0 - ty) + bot * ty;
            *o = v.round().clamp(0.0, 255.0) as u8;
        }
    }
    GrayImage::from_raw(w, h, out).expect("buffer has w*h bytes")
}

/// The square around a face box, grown by `margin` (a fraction of the box side) on every side.
/// Returned as `(x, y, side)`; it may reach outside the frame.
pub fn square_around(b: &FaceBox, margin: f32) -> (i32, i32, u32) {
    let side = (b.w.max(b.h) as f32 * (1.0 + 2.0 * margin))
        .round()
        .max(1.0);
    let (cx, cy) = b.center();
    let x = (cx - side / 2.0).round() as i32;
    let y = (cy - side / 2.0).round() as i32;
    (x, y, side as u32)
}

/// Cut a square face crop (see [`square_around`]) from a grayscale frame and resize it to
/// `size` x `size`. Parts outside the frame repeat the nearest edge pixel.
pub fn crop_face(gray: &GrayImage, b: &FaceBox, margin: f32, size: u32) -> GrayImage {
    let (x, y, side) = square_around(b, margin);
    let (fw, fh) = gray.dimensions();
    let crop = cut_square::<1>(gray.as_raw(), fw, fh, x, y, side);
    let crop = GrayImage::from_raw(side, side, crop).expect("buffer has side*side bytes");
    resize_gray(&crop, size, size)
}

/// The `side` x `side` square at `(x, y)` of a `fw` x `fh` frame of `C` interleaved channels,
/// parts outside the frame repeating the nearest edge pixel.
fn cut_square<const C: usize>(raw: &[u8], fw: u32, fh: u32, x: i32, y: i32, side: u32) -> Vec<u8> {
    let (fw, side) = (fw as usize, side as usize);
    let mut crop = Vec::with_capacity(side * side * C);
    for dy in 0..side as i32 {
        let sy = (y + dy).clamp(0, fh as i32 - 1) as usize;
        let row = &raw[sy * fw * C..][..fw * C];
        for dx in 0..side as i32 {
            let sx = (x + dx).clamp(0, fw as i32 - 1) as usize;
            crop.extend_from_slice(&row[sx * C..sx * C + C]);
        }
    }
    crop
}

/// [`crop_face`] for a colour frame, for models that take RGB: the same square, edge
/// repetition and resizing (each channel as [`resize_gray`] resizes a gray crop), so a colour
/// model sees the face exactly where a gray one would.
pub fn crop_face_rgb(rgb: &RgbImage, b: &FaceBox, margin: f32, size: u32) -> RgbImage {
    let (x, y, side) = square_around(b, margin);
    let (fw, fh) = rgb.dimensions();
    let crop = cut_square::<3>(rgb.as_raw(), fw, fh, x, y, side);
    let planes: [Vec<u8>; 3] =
        std::array::from_fn(|c| crop.iter().skip(c).step_by(3).copied().collect());
    let resized = planes.map(|p| {
        let plane = GrayImage::from_raw(side, side, p).expect("buffer has side*side bytes");
        resize_gray(&plane, size, size)
    });
    let mut out = Vec::with_capacity((size * size * 3) as usize);
    for i in 0..(size * size) as usize {
        out.extend(resized.iter().map(|p| p.as_raw()[i]));
    }
    RgbImage::from_raw(size, size, out).expect("buffer has size*size*3 bytes")
}

/// Mirror a grayscale image left to right (test-time augmentation, training flips).
pub fn flip_horizontal(img: &GrayImage) -> GrayImage {
    image::imageops::flip_horizontal(img)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bilinear_matches_opencv_on_a_ramp() {
        // cv2.resize(np.array([[0, 100]], np.uint8), (4, 1)) == [[0, 25, 75, 100]]
        let src = GrayImage::from_raw(2, 1, vec![0, 100]).unwrap();
        let out = resize_gray(&src, 4, 1);
        assert_eq!(out.as_raw(), &vec![0, 25, 75, 100]);
    }

    #[test]
    fn gray_uses_bt601() {
        let rgb = RgbImage::from_raw(3, 1, vec![255, 0, 0, 0, 255, 0, 0, 0, 255]).unwrap();
        assert_eq!(to_gray(&rgb).as_raw(), &vec![76, 150, 29]);
    }

    #[test]
    fn crop_outside_the_frame_repeats_edges() {
        let gray = GrayImage::from_fn(10, 10, |x, _| image::Luma([x as u8 * 10]));
        let b = FaceBox {
            x: -5,
            y: -5,
            w: 10,
            h: 10,
            score: 1.0,
        };
        let c = crop_face(&gray, &b, 0.0, 10);
        assert_eq!(c.dimensions(), (10, 10));
        assert_eq!(c.get_pixel(0, 0).0[0], 0);
        assert_eq!(c.get_pixel(9, 9).0[0], 40);
    }

    #[test]
    fn big_shrink_averages() {
        let gray = GrayImage::from_fn(64, 64, |x, y| {
            image::Luma([if (x + y) % 2 == 0 { 0 } else { 200 }])
        });
        let small = resize_gray(&gray, 8, 8);
        assert!(small.pixels().all(|p| (p.0[0] as i32 - 100).abs() <= 1));
    }

    #[test]
    fn block_average_takes_partial_blocks_at_the_edges() {
        let gray = GrayImage::from_fn(11, 7, |x, y| image::Luma([(x * 23 + y * 37) as u8]));
        let small = box_shrink(&gray, 3);
        assert_eq!(small.dimensions(), (4, 3));
        for (bx, by, p) in small.enumerate_pixels() {
            let (x0, y0) = (bx * 3, by * 3);
            let (x1, y1) = ((x0 + 3).min(11), (y0 + 3).min(7));
            let (mut sum, mut n) = (0u32, 0u32);
            for y in y0..y1 {
                for x in x0..x1 {
                    sum += gray.get_pixel(x, y).0[0] as u32;
                    n += 1;
                }
            }
            assert_eq!(p.0[0] as u32, (sum + n / 2) / n, "block ({bx}, {by})");
        }
    }

    #[test]
    fn a_gray_crop_is_the_rectangle_it_names() {
        let gray = GrayImage::from_fn(9, 6, |x, y| image::Luma([(x * 10 + y) as u8]));
        for (x, y, w, h) in [(2, 1, 5, 4), (6, 4, 9, 9), (9, 6, 3, 3), (0, 0, 9, 6)] {
            let want = image::imageops::crop_imm(&gray, x, y, w, h).to_image();
            assert_eq!(crop_gray(&gray, x, y, w, h), want, "{x} {y} {w} {h}");
        }
    }

    #[test]
    fn iou_of_identical_and_disjoint_boxes() {
        let a = FaceBox {
            x: 0,
            y: 0,
            w: 10,
            h: 10,
            score: 0.0,
        };
        let b = FaceBox {
            x: 20,
            y: 0,
            w: 10,
            h: 10,
            score: 0.0,
        };
        assert_eq!(a.iou(&a), 1.0);
        assert_eq!(a.iou(&b), 0.0);
    }
}
