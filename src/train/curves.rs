//! A PNG of the training curves (loss and accuracy per epoch, train and val), drawn with a
//! tiny built-in bitmap font so that no font file or plotting library is needed.

use std::path::Path;

use image::{Rgb, RgbImage};

use super::EpochLog;
use crate::error::{Error, Result};

const W: u32 = 900;
const H: u32 = 420;
const TRAIN: Rgb<u8> = Rgb([40, 110, 220]);
const VAL: Rgb<u8> = Rgb([230, 110, 30]);
const INK: Rgb<u8> = Rgb([40, 40, 40]);
const GRID: Rgb<u8> = Rgb([225, 225, 225]);

/// 3x5 glyphs, one row per `u8` (low 3 bits, left = 4).
fn glyph(c: char) -> [u8; 5] {
    match c {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 2, 2],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        '.' => [0, 0, 0, 0, 2],
        'a' => [0, 6, 3, 5, 7],
        'c' => [0, 7, 4, 4, 7],
        'e' => [7, 5, 7, 4, 7],
        'h' => [4, 4, 7, 5, 5],
        'i' => [2, 0, 2, 2, 2],
        'l' => [4, 4, 4, 4, 7],
        'n' => [0, 6, 5, 5, 5],
        'o' => [0, 7, 5, 5, 7],
        'p' => [7, 5, 7, 4, 4],
        'r' => [0, 7, 4, 4, 4],
        's' => [7, 4, 7, 1, 7],
        't' => [4, 7, 4, 4, 7],
        'u' => [0, 5, 5, 5, 7],
        'v' => [0, 5, 5, 5, 2],
        'y' => [5, 5, 7, 1, 7],
        _ => [0; 5],
    }
}

fn text(img: &mut RgbImage, x: i32, y: i32, s: &str, color: Rgb<u8>) {
    const SCALE: i32 = 2;
    for (i, c) in s.chars().enumerate() {
        let g = glyph(c);
        for (row, bits) in g.iter().enumerate() {
            for col in 0..3 {
                if bits & (4 >> col) != 0 {
                    for dy in 0..SCALE {
                        for dx in 0..SCALE {
                            put(
                                img,
                                x + (i as i32 * 4 + col) * SCALE + dx,
                                y + row as i32 * SCALE + dy,
                                color,
                            );
                        }
                    }
                }
            }
        }
    }
}

fn put(img: &mut RgbImage, x: i32, y: i32, c: Rgb<u8>) {
    if x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height() {
        img.put_pixel(x as u32, y as u32, c);
    }
}

fn line(img: &mut RgbImage, (x0, y0): (f32, f32), (x1, y1): (f32, f32), c: Rgb<u8>) {
    let n = ((x1 - x0).abs().max((y1 - y0).abs()).ceil() as i32).max(1);
    for i in 0..=n {
        let t = i as f32 / n as f32;
        let (x, y) = (x0 + (x1 - x0) * t, y0 + (y1 - y0) * t);
        for (dx, dy) in [(0, 0), (1, 0), (0, 1)] {
            put(img, x.round() as i32 + dx, y.round() as i32 + dy, c);
        }
    }
}

/// One panel: `series` are (values, colour) over epochs 1..=n.
fn panel(img: &mut RgbImage, x0: i32, title: &str, series: &[(Vec<f64>, Rgb<u8>)]) {
    let (pw, ph, top, left) = (380.0f32, 300.0f32, 60.0f32, x0 as f32 + 56.0);
    let n = series.iter().map(|s| s.0.len()).max().unwrap_or(0);
    let all = series
        .iter()
        .flat_map(|s| s.0.iter().copied())
        .filter(|v| v.is_finite());
    let (lo, hi) = all.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    let (lo, hi) = if lo.is_finite() && hi > lo {
        (lo.min(0.0), hi)
    } else {
        (0.0, 1.0)
    };
    text(img, x0 + 50, 20, title, INK);
    for k in 0..=4 {
        let v = lo + (hi - lo) * k as f64 / 4.0;
        let y = top + ph - ph * k as f32 / 4.0;
        line(img, (left, y), (left + pw, y), GRID);
        text(img, x0 + 4, y as i32 - 5, &format!("{v:.2}"), INK);
    }
    line(img, (left, top), (left, top + ph), INK);
    line(img, (left, top + ph), (left + pw, top + ph), INK);
    let xs = |i: usize| {
        left + if n > 1 {
            pw * i as f32 / (n - 1) as f32
        } else {
            pw / 2.0
        }
    };
    for i in [0, n.saturating_sub(1) / 2, n.saturating_sub(1)] {
        text(
            img,
            xs(i) as i32 - 4,
            (top + ph) as i32 + 8,
            &(i + 1).to_string(),
            INK,
        );
    }
    text(
        img,
        (left + pw / 2.0) as i32 - 20,
        (top + ph) as i32 + 26,
        "epoch",
        INK,
    );
    for (vals, c) in series {
        let y = |v: f64| top + ph - ph * ((v - lo) / (hi - lo)) as f32;
        for i in 1..vals.len() {
            line(img, (xs(i - 1), y(vals[i - 1])), (xs(i), y(vals[i])), *c);
        }
        if vals.len() == 1 {
            line(
                img,
                (xs(0) - 2.0, y(vals[0])),
                (xs(0) + 2.0, y(vals[0])),
                *c,
            );
        }
    }
}

/// Draw loss (left) and accuracy (right) per epoch, train in blue and val in orange.
pub fn render(history: &[EpochLog]) -> RgbImage {
    let mut img = RgbImage::from_pixel(W, H, Rgb([255, 255, 255]));
    let get = |f: fn(&EpochLog) -> f64| history.iter().map(f).collect::<Vec<f64>>();
    panel(
        &mut img,
        0,
        "loss",
        &[(get(|e| e.train_loss), TRAIN), (get(|e| e.val_loss), VAL)],
    );
    panel(
        &mut img,
        450,
        "accuracy",
        &[(get(|e| e.train_acc), TRAIN), (get(|e| e.val_acc), VAL)],
    );
    for (i, (name, c)) in [("train", TRAIN), ("val", VAL)].into_iter().enumerate() {
        let x = 640 + i as i32 * 110;
        for dy in 0..4 {
            line(
                &mut img,
                (x as f32, 24.0 + dy as f32),
                (x as f32 + 24.0, 24.0 + dy as f32),
                c,
            );
        }
        text(&mut img, x + 30, 20, name, INK);
    }
    img
}

/// Write the curves to `path` as PNG.
pub fn save(history: &[EpochLog], path: &Path) -> Result<()> {
    render(history).save(path).map_err(|e| Error::Image {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curves_draw_both_series() {
        let h: Vec<EpochLog> = (0..5)
            .map(|i| EpochLog {
                epoch: i + 1,
                lr: 0.01,
                train_loss: 1.0 / (i + 1) as f64,
                train_acc: 0.5 + i as f64 * 0.1,
                val_loss: 1.2 / (i + 1) as f64,
                val_acc: 0.45 + i as f64 * 0.09,
                secs: 1.0,
                images_per_sec: 100.0,
            })
            .collect();
        let img = render(&h);
        assert_eq!(img.dimensions(), (W, H));
        let count = |c: Rgb<u8>| img.pixels().filter(|p| **p == c).count();
        assert!(
            count(TRAIN) > 500 && count(VAL) > 500,
            "{} {}",
            count(TRAIN),
            count(VAL)
        );
        assert!(count(INK) > 1000);
    }
}
