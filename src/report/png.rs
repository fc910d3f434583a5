//! The summary as one 16:9 picture for slides and chat, drawn with plotters on an RGB bitmap.
//!
//! Text uses the bundled DejaVu Sans through plotters' ab_glyph backend, so that nothing looks
//! for system fonts (fontconfig is never touched): it draws the same on a machine with none.

use std::path::Path;
use std::sync::OnceLock;

use image::ImageEncoder;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::prelude::*;
use plotters::style::{FontStyle, RGBAColor, register_font};

use super::files::write_private;
use super::format::{clock, count, duration, percent, tick, tick_step_ms, utc};
use super::summary::{FaceSummary, Summary};
use crate::error::{Error, Result};

/// Width and height of the picture, in pixels.
pub const PNG_SIZE: (u32, u32) = (1280, 720);

/// Faces drawn; the rest are counted and left to the HTML report.
pub const PNG_FACES: usize = 3;

const FONT: &str = "DejaVu Sans";
const FONT_BYTES: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

const BG: RGBColor = RGBColor(255, 255, 255);
const FG: RGBColor = RGBColor(31, 35, 40);
const MUTED: RGBColor = RGBColor(89, 99, 110);
const GRID: RGBColor = RGBColor(230, 234, 239);
const TRACK: RGBColor = RGBColor(240, 242, 245);

fn register() -> Result<(), String> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        register_font(FONT, FontStyle::Normal, FONT_BYTES)
            .map_err(|_| "the bundled font DejaVuSans.ttf cannot be read".to_string())
    })
    .clone()
}

/// Draw the summary and write it to `path` as PNG (created or replaced, readable by the owner
/// only).
pub fn png(s: &Summary, path: &Path) -> Result<()> {
    let bytes = png_bytes(s)?;
    write_private(path, &bytes, true)
}

/// The summary as an encoded PNG of [`PNG_SIZE`].
pub fn png_bytes(s: &Summary) -> Result<Vec<u8>> {
    let fail = |e: String| Error::Io {
        path: s.path.clone(),
        error: std::io::Error::other(format!("cannot draw the PNG summary: {e}")),
    };
    register().map_err(fail)?;
    let (w, h) = PNG_SIZE;
    let mut rgb = vec![0u8; (w * h * 3) as usize];
    draw(s, &mut rgb).map_err(fail)?;
    let mut out = Vec::with_capacity(256 * 1024);
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(&rgb, w, h, image::ExtendedColorType::Rgb8)
        .map_err(|e| fail(e.to_string()))?;
    Ok(out)
}

fn rgb(c: [u8; 3]) -> RGBColor {
    RGBColor(c[0], c[1], c[2])
}

fn font(size: u32, color: RGBColor) -> TextStyle<'static> {
    (FONT, size).into_font().color(&color)
}

/// Shorten `text` to about `max` characters.
fn fit(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let cut: String = text.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

fn draw(s: &Summary, buf: &mut [u8]) -> Result<(), String> {
    let e = |e: DrawingAreaErrorKind<_>| e.to_string();
    let root = BitMapBackend::with_buffer(buf, PNG_SIZE).into_drawing_area();
    root.fill(&BG).map_err(e)?;
    let (w, h) = (PNG_SIZE.0 as i32, PNG_SIZE.1 as i32);
    let file = s.path.file_name().map_or_else(
        || s.path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let text = |t: &str, x: i32, y: i32, style: TextStyle| {
        root.draw(&Text::new(t.to_string(), (x, y), style))
            .map_err(e)
    };
    text("EMOCAM SESSION SUMMARY", 40, 24, font(15, MUTED))?;
    text(&fit(&file, 60), 40, 44, font(34, FG))?;
    let mut facts = Vec::new();
    if let Some(t) = s.started {
        facts.push(utc(t));
    }
    facts.push(duration(s.duration_ms()));
    let faces = s.face_count();
    facts.push(format!(
        "{} face{}",
        count(faces as u64),
        if faces == 1 { "" } else { "s" }
    ));
    facts.push(format!("{} rows", count(s.rows)));
    if let Some(m) = s.models.first() {
        facts.push(fit(m, 40));
    }
    text(&facts.join("  ·  "), 40, 90, font(19, MUTED))?;

    if s.rows == 0 {
        text("No faces were recorded.", 40, 300, font(40, FG))?;
        return root.present().map_err(e);
    }

    // Across all faces: a stacked bar and a legend with the shares.
    let (bx, by, bw, bh) = (40, 132, w - 80, 22);
    root.draw(&Rectangle::new(
        [(bx, by), (bx + bw, by + bh)],
        TRACK.filled(),
    ))
    .map_err(e)?;
    let mut order: Vec<usize> = (0..s.classes.len()).collect();
    order.sort_by(|&a, &b| s.overall_shares[b].total_cmp(&s.overall_shares[a]));
    let mut x = bx as f64;
    for &c in &order {
        let x1 = x + s.overall_shares[c] * bw as f64;
        if x1 - x >= 0.5 {
            root.draw(&Rectangle::new(
                [(x.round() as i32, by), (x1.round() as i32, by + bh)],
                rgb(s.classes[c].color).filled(),
            ))
            .map_err(e)?;
        }
        x = x1;
    }
    let mut lx = bx;
    for &c in &order {
        let label = format!(
            "{} {}",
            fit(&s.classes[c].name, 16),
            percent(s.overall_shares[c])
        );
        let lw = 14 + 8 + (label.chars().count() as i32) * 9 + 22;
        if lx + lw > w - 40 {
            break;
        }
        root.draw(&Rectangle::new(
            [(lx, by + bh + 12), (lx + 14, by + bh + 26)],
            rgb(s.classes[c].color).filled(),
        ))
        .map_err(e)?;
        text(&label, lx + 20, by + bh + 10, font(16, FG))?;
        lx += lw;
    }

    // The faces seen longest, in the order they appeared.
    let mut shown: Vec<&FaceSummary> = s.detailed().collect();
    shown.sort_by(|a, b| b.seen_ms.total_cmp(&a.seen_ms));
    shown.truncate(PNG_FACES);
    shown.sort_by(|a, b| a.first_ms.total_cmp(&b.first_ms));
    let area_top = 200;
    let area_bottom = h - 36;
    if shown.is_empty() {
        text(
            "Every face was seen for less than a second: nothing to chart.",
            40,
            area_top + 40,
            font(22, MUTED),
        )?;
    } else {
        let row_h = (area_bottom - area_top) / shown.len() as i32;
        for (i, f) in shown.iter().enumerate() {
            let top = area_top + i as i32 * row_h;
            let area = root.clone().shrink((20, top), (w - 40, row_h - 6));
            face_row(s, f, &area)?;
        }
    }
    let more = faces.saturating_sub(shown.len());
    if more > 0 {
        text(
            &format!(
                "+ {} more face{} in the HTML report",
                count(more as u64),
                if more == 1 { "" } else { "s" }
            ),
            40,
            h - 28,
            font(15, MUTED),
        )?;
    }
    root.present().map_err(e)
}

fn face_row<DB: DrawingBackend>(
    s: &Summary,
    f: &FaceSummary,
    area: &DrawingArea<DB, plotters::coord::Shift>,
) -> Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let (aw, _) = area.dim_in_pixel();
    let (left, right) = area.split_horizontally((aw as f64 * 0.72) as u32);
    let dom = f.dominant();
    let title = format!(
        "Face #{}  ·  seen {} ({}–{})",
        f.id,
        duration(f.seen_ms),
        clock(f.first_ms),
        clock(f.last_ms)
    );
    let (t0, t1) = (f.first_ms, f.last_ms.max(f.first_ms + 1.0));
    let step = tick_step_ms(t1 - t0, 7);
    let mut chart = ChartBuilder::on(&left)
        .caption(title, font(18, FG))
        .margin_left(6)
        .margin_right(14)
        .x_label_area_size(22)
        .y_label_area_size(46)
        .build_cartesian_2d(Clock { t0, t1, step }, 0f32..1f32)
        .map_err(e)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .y_labels(5)
        .x_label_formatter(&|t| tick(*t, step))
        .y_label_formatter(&|v| format!("{:.0}%", v * 100.0))
        .label_style(font(13, MUTED))
        .axis_style(GRID.stroke_width(1))
        .light_line_style(TRANSPARENT)
        .bold_line_style(GRID.stroke_width(1))
        .draw()
        .map_err(e)?;
    let series = &f.timeline;
    for (pass, c) in (0..2).flat_map(|p| (0..s.classes.len()).map(move |c| (p, c))) {
        let color = rgb(s.classes[c].color);
        for seg in &series.segments {
            if pass == 0 {
                let pts: Vec<(f64, f32)> = seg
                    .clone()
                    .flat_map(|p| {
                        let [a, b] = series.raw[c][p];
                        [(series.t_ms[p], a), (series.t_ms[p], b)]
                    })
                    .collect();
                let faint = RGBAColor(color.0, color.1, color.2, 0.22);
                chart
                    .draw_series(LineSeries::new(pts, faint.stroke_width(1)))
                    .map_err(e)?;
            } else {
                let pts: Vec<(f64, f32)> = seg
                    .clone()
                    .map(|p| (series.t_ms[p], series.smooth[c][p]))
                    .collect();
                chart
                    .draw_series(LineSeries::new(pts, color.stroke_width(2)))
                    .map_err(e)?;
            }
        }
    }

    // On the right: the classes on top longest, as bars.
    let mut order: Vec<usize> = (0..s.classes.len()).collect();
    order.sort_by(|&a, &b| f.shares[b].total_cmp(&f.shares[a]));
    let (rw, rh) = right.dim_in_pixel();
    let text = |t: &str, x: i32, y: i32, style: TextStyle| {
        right
            .draw(&Text::new(t.to_string(), (x, y), style))
            .map_err(e)
    };
    text("on top", 16, 4, font(14, MUTED))?;
    text(
        &format!("mostly {}", fit(&s.classes[dom].name, 18)),
        16,
        22,
        font(20, rgb(s.classes[dom].color)),
    )?;
    let lines = ((rh as i32 - 60) / 26).clamp(1, 5) as usize;
    let bar_w = rw as i32 - 150;
    for (i, &c) in order.iter().take(lines).enumerate() {
        let y = 56 + i as i32 * 26;
        text(&fit(&s.classes[c].name, 10), 16, y, font(14, FG))?;
        let x0 = 100;
        right
            .draw(&Rectangle::new(
                [(x0, y + 2), (x0 + bar_w, y + 16)],
                TRACK.filled(),
            ))
            .map_err(e)?;
        let len = (f.shares[c] * bar_w as f64).round() as i32;
        if len > 0 {
            right
                .draw(&Rectangle::new(
                    [(x0, y + 2), (x0 + len, y + 16)],
                    rgb(s.classes[c].color).filled(),
                ))
                .map_err(e)?;
        }
        text(&percent(f.shares[c]), x0 + bar_w + 6, y, font(14, MUTED))?;
    }
    Ok(())
}

/// A time axis in milliseconds whose ticks fall on round times (0:30, 1:00, ...) rather than on
/// plotters' round numbers of milliseconds.
struct Clock {
    t0: f64,
    t1: f64,
    /// Between ticks, from [`tick_step_ms`].
    step: f64,
}

impl Ranged for Clock {
    type ValueType = f64;
    // Labels come from the mesh's formatter (`format::clock`).
    type FormatOption = DefaultFormatting;

    fn map(&self, v: &f64, (p0, p1): (i32, i32)) -> i32 {
        let f = (v - self.t0) / (self.t1 - self.t0).max(1e-9);
        p0 + (f * (p1 - p0) as f64).round() as i32
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        if hint.max_num_points() == 0 {
            return Vec::new();
        }
        let first = (self.t0 / self.step).ceil() * self.step;
        (0..)
            .map(|i| first + i as f64 * self.step)
            .take_while(|t| *t <= self.t1)
            .collect()
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.t0..self.t1
    }
}
