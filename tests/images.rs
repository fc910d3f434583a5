//! Odd images are handled (1x1 pixel, 16-bit PNG, RGBA PNG, grayscale), and broken ones are
//! refused by name (truncated, altered, not a file at all).

mod common;

use emocam::imaging::{load_rgb, to_gray};
use emocam::{Classifier, DetectorConfig, Emotion, FaceDetector, Recognizer};
use image::{DynamicImage, ImageBuffer, Rgb, Rgba};

fn recognizer() -> Recognizer {
    Recognizer::new(
        FaceDetector::new(DetectorConfig::thorough()).unwrap(),
        Classifier::builtin().unwrap(),
    )
}

#[test]
fn one_pixel_image_has_no_face() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("dot.png");
    image::RgbImage::from_pixel(1, 1, Rgb([10, 20, 30]))
        .save(&p)
        .unwrap();
    let rgb = load_rgb(&p).unwrap();
    assert_eq!(rgb.dimensions(), (1, 1));
    assert!(recognizer().analyze(&rgb).unwrap().is_empty());
}

#[test]
fn sixteen_bit_and_rgba_pngs_are_read_like_the_8_bit_rgb_original() {
    let dir = tempfile::tempdir().unwrap();
    let rgb = load_rgb(&common::fixture("astronaut.png")).unwrap();
    let p16 = dir.path().join("astronaut16.png");
    let img16: ImageBuffer<Rgb<u16>, Vec<u16>> =
        ImageBuffer::from_fn(rgb.width(), rgb.height(), |x, y| {
            let p = rgb.get_pixel(x, y).0;
            Rgb(p.map(|v| v as u16 * 257))
        });
    DynamicImage::ImageRgb16(img16).save(&p16).unwrap();
    let prgba = dir.path().join("astronaut_rgba.png");
    let rgba: ImageBuffer<Rgba<u8>, Vec<u8>> =
        ImageBuffer::from_fn(rgb.width(), rgb.height(), |x, y| {
            let p = rgb.get_pixel(x, y).0;
            Rgba([p[0], p[1], p[2], 128])
        });
    rgba.save(&prgba).unwrap();
    let pgray = dir.path().join("astronaut_gray.png");
    to_gray(&rgb).save(&pgray).unwrap();

    let mut rec = recognizer();
    let want = rec.analyze(&rgb).unwrap();
    assert_eq!(want.len(), 1);
    assert_eq!(want[0].scores.top().0, Emotion::Happy);
    for p in [&p16, &prgba, &pgray] {
        let img = load_rgb(p).unwrap();
        assert_eq!(img.dimensions(), (512, 512));
        let got = rec.analyze(&img).unwrap();
        assert_eq!(got.len(), 1, "{}", p.display());
        assert_eq!(got[0].bbox, want[0].bbox, "{}", p.display());
        assert_eq!(got[0].scores.top().0, Emotion::Happy, "{}", p.display());
    }
}

#[test]
fn unreadable_images_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("broken.png");
    std::fs::write(&p, b"\x89PNG\r\n\x1a\nnot really").unwrap();
    let e = load_rgb(&p).unwrap_err().to_string();
    assert!(e.contains("broken.png"), "{e}");
    let e = load_rgb(&dir.path().join("absent.jpg"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("absent.jpg"), "{e}");
}

/// CRC-32 of PNG chunks (ISO 3309), to forge a chunk whose checksum still matches.
fn crc32(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in bytes {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 == 1 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// A 64x64 gray PNG stored without compression, so that a changed data byte still decodes.
fn uncompressed_png() -> Vec<u8> {
    use image::ImageEncoder;
    use image::codecs::png::{CompressionType, FilterType, PngEncoder};
    let img = image::GrayImage::from_fn(64, 64, |x, y| image::Luma([(x * 4 + y) as u8]));
    let mut out = Vec::new();
    PngEncoder::new_with_quality(
        &mut out,
        CompressionType::Uncompressed,
        FilterType::NoFilter,
    )
    .write_image(img.as_raw(), 64, 64, image::ExtendedColorType::L8)
    .unwrap();
    out
}

/// Offset and length of the first chunk of `kind` in a PNG.
fn find_chunk(png: &[u8], kind: &[u8; 4]) -> (usize, usize) {
    let mut at = 8;
    loop {
        let len = u32::from_be_bytes(png[at..at + 4].try_into().unwrap()) as usize;
        if &png[at + 4..at + 8] == kind {
            return (at, len);
        }
        at += 12 + len;
    }
}

#[test]
fn a_png_with_altered_data_behind_a_valid_crc_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut png = uncompressed_png();
    let (at, len) = find_chunk(&png, b"IDAT");
    png[at + 8 + len / 2] ^= 0xff;
    let crc = crc32(&png[at + 4..at + 8 + len]);
    png[at + 8 + len..at + 12 + len].copy_from_slice(&crc.to_be_bytes());
    // Without the zlib checksum the change goes unseen: the picture decodes, altered.
    assert!(image::load_from_memory(&png).is_ok());
    let p = dir.path().join("altered.png");
    std::fs::write(&p, &png).unwrap();
    let e = load_rgb(&p).unwrap_err().to_string();
    assert!(
        e.contains("altered.png") && e.contains("corrupt PNG"),
        "{e}"
    );

    // A PNG cut off after its pixels, before its end chunk, is truncated too.
    let whole = uncompressed_png();
    let (iend, _) = find_chunk(&whole, b"IEND");
    std::fs::write(&p, &whole[..iend]).unwrap();
    let e = load_rgb(&p).unwrap_err().to_string();
    assert!(e.contains("altered.png") && e.contains("PNG"), "{e}");
    std::fs::write(&p, &whole).unwrap();
    assert_eq!(load_rgb(&p).unwrap().dimensions(), (64, 64));
}

#[test]
fn a_truncated_jpeg_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(common::fixture("solvay_1927_scientists.jpg")).unwrap();
    let whole = load_rgb(&common::fixture("solvay_1927_scientists.jpg")).unwrap();
    for percent in [30, 60, 95] {
        let p = dir.path().join(format!("cut{percent}.jpg"));
        std::fs::write(&p, &bytes[..bytes.len() * percent / 100]).unwrap();
        let e = load_rgb(&p).unwrap_err().to_string();
        assert!(
            e.contains(&format!("cut{percent}.jpg")) && e.contains("truncated"),
            "{e}"
        );
    }
    // The strict decoder gives the very pixels the lenient one does on a whole file.
    assert_eq!(
        whole,
        image::load_from_memory(&bytes).unwrap().to_rgb8(),
        "strict decoding changed the pixels"
    );
}

#[test]
fn fixtures_decode_to_the_pixels_image_gives() {
    for name in ["astronaut.png", "camera.png", "solvay_1927_scientists.jpg"] {
        let p = common::fixture(name);
        let ours = load_rgb(&p).unwrap();
        let theirs = image::open(&p).unwrap().to_rgb8();
        assert_eq!(ours, theirs, "{name}");
    }
    // A grayscale JPEG (as FER2013's are) stays gray.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("gray.jpg");
    image::GrayImage::from_fn(48, 48, |x, y| image::Luma([(x * 5 + y) as u8]))
        .save(&p)
        .unwrap();
    assert_eq!(load_rgb(&p).unwrap(), image::open(&p).unwrap().to_rgb8());
}

#[test]
fn an_image_name_on_a_device_or_fifo_is_refused_before_reading() {
    let dir = tempfile::tempdir().unwrap();
    let zero = dir.path().join("zero.png");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let e = load_rgb(&zero).unwrap_err().to_string();
    assert!(
        e.contains("zero.png") && e.contains("character device"),
        "{e}"
    );
    let e = load_rgb(dir.path()).unwrap_err().to_string();
    assert!(e.contains("a directory"), "{e}");
}
