//! Drawing what the model saw onto a frame: each face's box in its top class's colour (dashed
//! when the tracker carried the face), its id, top class and score, and a strip of one small
//! bar per class. For annotated videos (`emocam run --annotate`) and the app's snapshots, so
//! both show what the window shows.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use ab_glyph::{FontRef, PxScale};
use crossbeam_channel::{Receiver, Sender, bounded};
use image::{Rgb, RgbImage};
use imageproc::drawing::{draw_filled_rect_mut, draw_text_mut, text_size};
use imageproc::rect::Rect;

use crate::error::{Error, Result};
use crate::outfile::{self, OutputPolicy};
use crate::track::TrackedFace;
use crate::video_out::{Mp4Writer, Mp4Written};

/// The font labels are drawn with (DejaVu Sans, see `assets/SOURCES.md`), compiled in so that
/// drawing needs no system fonts.
const FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");

/// Draws faces onto frames.
pub struct Annotator {
    font: FontRef<'static>,
}

impl Annotator {
    /// An annotator with the bundled font.
    pub fn new() -> Result<Self> {
        let font = FontRef::try_from_slice(FONT).map_err(|e| Error::InvalidInput {
            what: "bundled font".into(),
            reason: e.to_string(),
        })?;
        Ok(Self { font })
    }

    /// Draw every face onto `img`.
    pub fn draw(&self, img: &mut RgbImage, faces: &[TrackedFace]) {
        let (w, h) = img.dimensions();
        if w < 8 || h < 8 {
            return;
        }
        // Lines and text grow with the frame so they read the same at 360p and 1080p.
        let unit = (h as f32 / 360.0).max(1.0);
        let thick = (2.0 * unit).round() as i32;
        let text_px = 13.0 * unit;
        for f in faces {
            let (top, p) = f.smoothed.top();
            let [r, g, b] = f.smoothed.classes().color(f.smoothed.top_index());
            let colour = if f.detected {
                Rgb([r, g, b])
            } else {
                // Carried faces are drawn fainter, as in the window.
                Rgb([mix(r), mix(g), mix(b)])
            };
            let bx = Rect::at(f.bbox.x, f.bbox.y).of_size(f.bbox.w.max(1), f.bbox.h.max(1));
            if f.detected {
                outline(img, bx, thick, colour);
            } else {
                dashed_outline(img, bx, thick, colour, (6.0 * unit) as i32);
            }
            let carried = if f.detected { "" } else { " ~" };
            let label = format!("#{} {} {:.0}%{carried}", f.id, top, 100.0 * p);
            let scale = PxScale::from(text_px);
            let (tw, th) = text_size(scale, &self.font, &label);
            let pad = (2.0 * unit) as i32;
            let (lw, lh) = (tw as i32 + 2 * pad, th as i32 + 2 * pad);
            // Above the box, or inside it when the box touches the top edge.
            let ly = if f.bbox.y - lh >= 0 {
                f.bbox.y - lh
            } else {
                f.bbox.y
            };
            fill(
                img,
                Rect::at(f.bbox.x, ly).of_size(lw as u32, lh as u32),
                colour,
            );
            draw_text_mut(
                img,
                Rgb([0, 0, 0]),
                f.bbox.x + pad,
                ly + pad,
                scale,
                &self.font,
                &label,
            );
            self.bars(img, f, unit);
        }
    }

    /// One bar per class under the box, as high as its score.
    fn bars(&self, img: &mut RgbImage, f: &TrackedFace, unit: f32) {
        let scores = &f.smoothed;
        let n = scores.probs().len().max(1) as i32;
        let strip_h = (18.0 * unit) as i32;
        let gap = 1.max(unit as i32);
        let bar_w = ((f.bbox.w as i32 - gap * (n - 1)) / n).max(2);
        let y0 = f.bbox.y + f.bbox.h as i32 + (3.0 * unit) as i32;
        let (_, h) = img.dimensions();
        if y0 + strip_h > h as i32 {
            return;
        }
        // A dark backing keeps the bars readable on any picture.
        let total_w = n * bar_w + (n - 1) * gap;
        fill(
            img,
            Rect::at(f.bbox.x - gap, y0 - gap)
                .of_size((total_w + 2 * gap) as u32, (strip_h + 2 * gap) as u32),
            Rgb([20, 20, 20]),
        );
        for (i, (_, p)) in scores.iter().enumerate() {
            let bh = ((p.clamp(0.0, 1.0) * strip_h as f32).round() as i32).max(1);
            let x = f.bbox.x + i as i32 * (bar_w + gap);
            let [r, g, b] = scores.classes().color(i);
            fill(
                img,
                Rect::at(x, y0 + strip_h - bh).of_size(bar_w as u32, bh as u32),
                Rgb([r, g, b]),
            );
        }
    }
}

/// Halfway to grey: a carried face's colour.
fn mix(c: u8) -> u8 {
    ((u16::from(c) + 128) / 2) as u8
}

/// A filled rectangle, clipped to the image.
fn fill(img: &mut RgbImage, r: Rect, c: Rgb<u8>) {
    draw_filled_rect_mut(img, r, c);
}

/// A rectangle outline `thick` pixels wide, inside and outside the box edge.
fn outline(img: &mut RgbImage, r: Rect, thick: i32, c: Rgb<u8>) {
    let (x, y, w, h) = (r.left(), r.top(), r.width() as i32, r.height() as i32);
    let t = thick.max(1);
    let half = t / 2;
    for (rx, ry, rw, rh) in [
        (x - half, y - half, w + t, t),
        (x - half, y + h - half, w + t, t),
        (x - half, y - half, t, h + t),
        (x + w - half, y - half, t, h + t),
    ] {
        if rw > 0 && rh > 0 {
            fill(img, Rect::at(rx, ry).of_size(rw as u32, rh as u32), c);
        }
    }
}

/// A dashed rectangle outline, for faces the tracker carries.
fn dashed_outline(img: &mut RgbImage, r: Rect, thick: i32, c: Rgb<u8>, dash: i32) {
    let (x, y, w, h) = (r.left(), r.top(), r.width() as i32, r.height() as i32);
    let t = thick.max(1);
    let dash = dash.max(2);
    let mut i = 0;
    while i < w {
        let len = dash.min(w - i) as u32;
        fill(img, Rect::at(x + i, y - t / 2).of_size(len, t as u32), c);
        fill(
            img,
            Rect::at(x + i, y + h - t / 2).of_size(len, t as u32),
            c,
        );
        i += 2 * dash;
    }
    let mut j = 0;
    while j < h {
        let len = dash.min(h - j) as u32;
        fill(img, Rect::at(x - t / 2, y + j).of_size(t as u32, len), c);
        fill(
            img,
            Rect::at(x + w - t / 2, y + j).of_size(t as u32, len),
            c,
        );
        j += 2 * dash;
    }
}

/// One frame on its way to the annotated video.
struct Item {
    rgb: Arc<RgbImage>,
    time_ms: f64,
    faces: Vec<TrackedFace>,
}

/// Frames that may wait for the encoder; the pipeline waits beyond that, so no frame is lost.
const QUEUE_FRAMES: usize = 4;

/// Writes the video a run saw, with its faces drawn, on a thread of its own (`emocam run
/// --annotate OUT.mp4`): the same size and one picture per processed frame, at the frames'
/// own times.
pub struct VideoAnnotator {
    path: PathBuf,
    tx: Option<Sender<Item>>,
    handle: Option<JoinHandle<Result<Option<Mp4Written>>>>,
}

impl VideoAnnotator {
    /// Check that `path` may be written under `policy` and start the writer thread; the file
    /// is created with the first frame, whose size it takes.
    pub fn start(path: &Path, policy: &OutputPolicy) -> Result<Self> {
        outfile::check_output(path, policy)?;
        let annotator = Annotator::new()?;
        let (tx, rx) = bounded::<Item>(QUEUE_FRAMES);
        let (owned, policy) = (path.to_path_buf(), policy.clone());
        let handle = std::thread::Builder::new()
            .name("emocam-annotate".into())
            .spawn(move || encode(&annotator, &owned, &policy, rx))
            .map_err(|e| Error::io(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            tx: Some(tx),
            handle: Some(handle),
        })
    }

    /// Queue a frame (waiting while the encoder is behind). False once the writer has
    /// stopped on an error, which [`VideoAnnotator::finish`] returns.
    pub fn push(&self, rgb: Arc<RgbImage>, time_ms: f64, faces: &[TrackedFace]) -> bool {
        let Some(tx) = &self.tx else { return false };
        tx.send(Item {
            rgb,
            time_ms,
            faces: faces.to_vec(),
        })
        .is_ok()
    }

    /// Encode what is queued and close the file: what was written (`None` when no frame
    /// came), or the error that stopped the writer.
    pub fn finish(mut self) -> Result<Option<Mp4Written>> {
        self.tx.take();
        match self.handle.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(Error::io(
                &self.path,
                std::io::Error::other("the annotation thread panicked"),
            )),
            None => Ok(None),
        }
    }
}

impl Drop for VideoAnnotator {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn encode(
    annotator: &Annotator,
    path: &Path,
    policy: &OutputPolicy,
    rx: Receiver<Item>,
) -> Result<Option<Mp4Written>> {
    let mut writer: Option<Mp4Writer> = None;
    let mut last_ms = f64::NEG_INFINITY;
    for item in rx {
        let w = match &mut writer {
            Some(w) => w,
            None => writer.insert(Mp4Writer::create_with(
                path,
                item.rgb.width(),
                item.rgb.height(),
                policy,
            )?),
        };
        let mut frame = (*item.rgb).clone();
        annotator.draw(&mut frame, &item.faces);
        // The writer needs growing times; a source that starts again (a seek) keeps going on.
        let t = if item.time_ms > last_ms {
            item.time_ms
        } else {
            last_ms + 1.0
        };
        last_ms = t;
        w.write(&frame, t)?;
    }
    writer.map(Mp4Writer::finish).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emotion::Scores;
    use crate::imaging::FaceBox;

    fn face(detected: bool) -> TrackedFace {
        let s = Scores::fer([0.0, 0.0, 0.0, 0.9, 0.0, 0.0, 0.1]);
        TrackedFace {
            id: 3,
            bbox: FaceBox {
                x: 100,
                y: 80,
                w: 120,
                h: 120,
                score: 5.0,
            },
            detected,
            raw: s.clone(),
            smoothed: s,
        }
    }

    #[test]
    fn boxes_labels_and_bars_are_drawn_in_the_class_colour() {
        let a = Annotator::new().unwrap();
        let mut img = RgbImage::from_pixel(640, 360, Rgb([90, 90, 90]));
        a.draw(&mut img, &[face(true)]);
        let happy = Rgb(crate::palette::fixed_color("happy").unwrap());
        // The box's left edge, the label above the box, and the happy bar under it.
        assert_eq!(*img.get_pixel(100, 140), happy);
        assert_eq!(*img.get_pixel(101, 70), happy);
        let bar_x = 100 + 3 * (120 / 7);
        assert_eq!(*img.get_pixel(bar_x as u32 + 1, 215), happy);
        // Untouched far away.
        assert_eq!(*img.get_pixel(500, 300), Rgb([90, 90, 90]));
    }

    #[test]
    fn carried_faces_are_dashed_and_faint() {
        let a = Annotator::new().unwrap();
        let mut img = RgbImage::from_pixel(640, 360, Rgb([90, 90, 90]));
        a.draw(&mut img, &[face(false)]);
        let [r, g, b] = crate::palette::fixed_color("happy").unwrap();
        let faint = Rgb([mix(r), mix(g), mix(b)]);
        let edge: Vec<bool> = (80..200).map(|y| *img.get_pixel(100, y) == faint).collect();
        assert!(
            edge.iter().any(|&x| x) && edge.iter().any(|&x| !x),
            "dashed"
        );
    }

    #[test]
    fn faces_at_the_edges_do_not_panic() {
        let a = Annotator::new().unwrap();
        let mut img = RgbImage::new(64, 48);
        let mut f = face(true);
        f.bbox = FaceBox {
            x: -20,
            y: -10,
            w: 90,
            h: 70,
            score: 1.0,
        };
        a.draw(&mut img, &[f]);
    }
}
