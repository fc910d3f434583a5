//! Face detection on public-domain photographs (tests/fixtures/SOURCES.md).

mod common;

use emocam::imaging::{load_rgb, to_gray};
use emocam::{DetectorConfig, FaceDetector};
use image::{GrayImage, imageops};

#[test]
fn astronaut_has_exactly_one_face_in_the_right_place() {
    let gray = to_gray(&load_rgb(&common::fixture("astronaut.png")).unwrap());
    let mut det = FaceDetector::new(DetectorConfig::thorough()).unwrap();
    let faces = det.detect(&gray);
    assert_eq!(faces.len(), 1, "{faces:?}");
    let (cx, cy) = faces[0].center();
    // Eileen Collins' face spans about x 175..275, y 65..165 of the 512x512 image.
    assert!(
        (200.0..250.0).contains(&cx) && (90.0..140.0).contains(&cy),
        "{faces:?}"
    );
    assert!((70..140).contains(&faces[0].w), "{faces:?}");
}

#[test]
fn solvay_photograph_has_at_least_20_faces() {
    let gray = to_gray(&load_rgb(&common::fixture("solvay_1927_scientists.jpg")).unwrap());
    let mut det = FaceDetector::new(DetectorConfig::thorough()).unwrap();
    let faces = det.detect(&gray);
    println!("{} faces", faces.len());
    assert!(faces.len() >= 20, "only {} faces", faces.len());
    // No two boxes describe the same face.
    for (i, a) in faces.iter().enumerate() {
        for b in &faces[i + 1..] {
            assert!(a.iou(b) < 0.5, "{a:?} overlaps {b:?}");
        }
    }
}

/// The astronaut centred in a 640x480 webcam-sized frame, as the live pipeline sees it.
pub fn webcam_frame() -> GrayImage {
    let face = to_gray(&load_rgb(&common::fixture("astronaut.png")).unwrap());
    let face = imageops::resize(&face, 400, 400, imageops::FilterType::Triangle);
    let mut frame = GrayImage::from_pixel(640, 480, image::Luma([90]));
    imageops::overlay(&mut frame, &face, 120, 40);
    frame
}

#[test]
fn live_settings_find_the_face_in_a_webcam_frame_and_map_it_back() {
    let frame = webcam_frame();
    let mut det = FaceDetector::new(DetectorConfig::live()).unwrap();
    let faces = det.detect(&frame);
    assert_eq!(faces.len(), 1, "{faces:?}");
    // The face centre in the 512 px photo (225, 115) lands at 120 + 225*400/512 = 296, 40 + 90 = 130.
    let (cx, cy) = faces[0].center();
    assert!(
        (cx - 296.0).abs() < 25.0 && (cy - 130.0).abs() < 25.0,
        "{faces:?}"
    );
}

#[test]
fn tiny_and_blank_frames_have_no_faces() {
    let mut det = FaceDetector::new(DetectorConfig::live()).unwrap();
    assert!(det.detect(&GrayImage::new(1, 1)).is_empty());
    assert!(det.detect(&GrayImage::new(19, 300)).is_empty());
    assert!(
        det.detect(&GrayImage::from_pixel(640, 480, image::Luma([128])))
            .is_empty()
    );
}
