//! A PNG of the training curves: loss and accuracy per epoch, train and val, drawn with
//! `plotters` and the bundled DejaVu Sans (never the system's fonts, so it draws the same on a
//! machine with none installed).

use std::path::Path;
use std::sync::OnceLock;

use image::RgbImage;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use super::progress::EpochLog;
use crate::error::{Error, Result};

const W: u32 = 900;
const H: u32 = 420;
const TRAIN: RGBColor = RGBColor(40, 110, 220);
const VAL: RGBColor = RGBColor(230, 110, 30);
const INK: RGBColor = RGBColor(40, 40, 40);
/// The family plotters' default text style names, so that every label uses the bundled font.
const FAMILY: &str = "sans-serif";

/// DejaVu Sans 2.37 (Debian's fonts-dejavu-core), see `assets/SOURCES.md`.
static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// Register the bundled font with plotters once per process.
fn font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| register_font(FAMILY, FontStyle::Normal, FONT).is_ok());
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidInput {
            what: "bundled font assets/fonts/DejaVuSans.ttf".into(),
            reason: "not a font plotters can read".into(),
        })
    }
}

/// Draw loss (left) and accuracy (right) per epoch, train in blue and val in orange.
pub fn render(history: &[EpochLog]) -> Result<RgbImage> {
    font()?;
    let mut buf = vec![255u8; (W * H * 3) as usize];
    draw(history, &mut buf).map_err(|e| Error::InvalidInput {
        what: "training curves".into(),
        reason: e,
    })?;
    RgbImage::from_raw(W, H, buf).ok_or_else(|| Error::InvalidInput {
        what: "training curves".into(),
        reason: format!("the drawing is not {W}x{H} RGB"),
    })
}

/// Write the curves to `path` as PNG, replacing it whole.
pub fn save(history: &[EpochLog], path: &Path) -> Result<()> {
    let mut png = std::io::Cursor::new(Vec::new());
    render(history)?
        .write_to(&mut png, image::ImageFormat::Png)
        .map_err(|e| Error::Image {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    super::checkpoint::replace_whole(path, png.get_ref())
}

/// A panel's lines: name, value per epoch, colour.
type Series<'a> = [(&'a str, Vec<f64>, RGBColor); 2];

fn draw(history: &[EpochLog], buf: &mut [u8]) -> std::result::Result<(), String> {
    let root = BitMapBackend::with_buffer(buf, (W, H)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (left, right) = root.split_horizontally(W / 2);
    let get = |f: fn(&EpochLog) -> f64| history.iter().map(f).collect::<Vec<f64>>();
    panel(
        &left,
        "loss",
        &[
            ("train", get(|e| e.train_loss), TRAIN),
            ("val", get(|e| e.val_loss), VAL),
        ],
        // Losses fall and accuracies rise: the legends go where the curves are not.
        SeriesLabelPosition::UpperRight,
    )?;
    panel(
        &right,
        "accuracy",
        &[
            ("train", get(|e| e.train_acc), TRAIN),
            ("val", get(|e| e.val_acc), VAL),
        ],
        SeriesLabelPosition::LowerRight,
    )?;
    root.present().map_err(|e| e.to_string())
}

/// One chart of `series` over epochs 1..=n, its y axis from 0 (or below) to the largest value.
fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    series: &Series,
    legend: SeriesLabelPosition,
) -> std::result::Result<(), String> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let n = series.iter().map(|s| s.1.len()).max().unwrap_or(0);
    let finite = series
        .iter()
        .flat_map(|s| s.1.iter().copied())
        .filter(|v| v.is_finite());
    let (lo, hi) = finite.fold((0f64, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    let hi = if hi > lo {
        hi + (hi - lo) * 0.05
    } else {
        lo + 1.0
    };
    // Half an epoch of room either side, so that the first and a single epoch sit inside.
    let x_end = n.max(1) as f64 + 0.5;
    let epoch_label = |x: &f64| {
        let whole = x.round();
        if (x - whole).abs() < 1e-9 && whole >= 1.0 && whole <= n as f64 {
            format!("{whole:.0}")
        } else {
            String::new()
        }
    };
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FAMILY, 22).into_font().color(&INK))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(0.5f64..x_end, lo..hi)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .x_labels(n.clamp(2, 12))
        .x_label_formatter(&epoch_label)
        .y_labels(6)
        .y_label_formatter(&|y| format!("{y:.2}"))
        .label_style((FAMILY, 14).into_font().color(&INK))
        .axis_desc_style((FAMILY, 15).into_font().color(&INK))
        .light_line_style(WHITE)
        .bold_line_style(RGBColor(225, 225, 225))
        .draw()
        .map_err(err)?;
    for (name, values, colour) in series {
        let points = values
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_finite())
            .map(|(i, v)| ((i + 1) as f64, *v));
        chart
            .draw_series(LineSeries::new(points, colour.stroke_width(2)).point_size(3))
            .map_err(err)?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 22, y)], colour.stroke_width(3))
            });
    }
    chart
        .configure_series_labels()
        .position(legend)
        .label_font((FAMILY, 14).into_font().color(&INK))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(200, 200, 200))
        .draw()
        .map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(n: usize) -> Vec<EpochLog> {
        (0..n)
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
            .collect()
    }

    /// Pixels of exactly `c` among `pixels`.
    fn count<'a>(pixels: impl Iterator<Item = &'a image::Rgb<u8>>, c: RGBColor) -> usize {
        pixels.filter(|p| p.0 == [c.0, c.1, c.2]).count()
    }

    #[test]
    fn curves_draw_both_series_in_both_panels_and_text() -> Result<()> {
        let img = render(&history(5))?;
        assert_eq!(img.dimensions(), (W, H));
        let (train, val) = (count(img.pixels(), TRAIN), count(img.pixels(), VAL));
        assert!(train > 500 && val > 500, "{train} {val}");
        for x0 in [0, W / 2] {
            let half = image::imageops::crop_imm(&img, x0, 0, W / 2, H).to_image();
            let n = count(half.pixels(), TRAIN);
            assert!(n > 200, "panel at x {x0}: {n} train pixels");
        }
        // Anti-aliased glyphs leave grey pixels that are neither ink, white nor a series.
        let grey = img
            .pixels()
            .filter(|p| {
                let [r, g, b] = p.0;
                r == g && g == b && r > 60 && r < 200
            })
            .count();
        assert!(grey > 300, "{grey} grey pixels: no text drawn?");
        Ok(())
    }

    #[test]
    fn one_epoch_no_epochs_and_a_missing_value_still_draw() -> Result<()> {
        let one = render(&history(1))?;
        assert!(
            count(one.pixels(), TRAIN) > 20,
            "a marker for the single epoch"
        );
        render(&[])?;
        let mut odd = history(3);
        odd[1].val_loss = f64::NAN;
        render(&odd)?;
        Ok(())
    }

    #[test]
    fn the_png_is_written_whole() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let path = dir.path().join("run.curves.png");
        save(&history(4), &path)?;
        let back = image::open(&path).map_err(|e| Error::Image {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        assert_eq!((back.width(), back.height()), (W, H));
        assert!(!dir.path().join("run.curves.png.partial").exists());
        Ok(())
    }
}
