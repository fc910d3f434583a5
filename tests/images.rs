//! Odd images are handled: 1x1 pixel, 16-bit PNG, RGBA PNG, grayscale.

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
