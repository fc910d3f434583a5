//! The "Session summary" window: a [`Summary`] of a recording, shown in the app with the same
//! figures as the HTML report, and a button to save that report.

use egui::{Color32, CornerRadius, RichText, Sense, Ui, vec2};
use egui_plot::{Legend, Line, Plot, PlotPoints};

use crate::report::format::{clock, count, duration, percent, utc};
use crate::report::{Class, FaceSummary, Summary};

/// Faces whose section starts open; the others start collapsed.
const OPEN_FACES: usize = 3;

/// What the user asked for in the summary window; the caller acts on it (the window opens no
/// dialogs and writes no files).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SummaryAction {
    /// Save the HTML report: the caller asks where and writes it.
    SaveReport,
    /// Close the window (its close button or **Close**).
    Close,
}

/// Show `summary` in a window titled "Session summary"; returns what the user clicked in this
/// frame, if anything.
pub fn show_summary(ctx: &egui::Context, summary: &Summary) -> Option<SummaryAction> {
    let mut open = true;
    let mut action = None;
    egui::Window::new("Session summary")
        .open(&mut open)
        .default_width(760.0)
        .default_height(600.0)
        .vscroll(true)
        .show(ctx, |ui| action = summary_contents(ui, summary));
    if !open {
        action = Some(SummaryAction::Close);
    }
    action
}

/// The summary's contents in any `ui` (the window's body; a panel could show it too).
pub fn summary_contents(ui: &mut Ui, s: &Summary) -> Option<SummaryAction> {
    let mut action = None;
    let file = s.path.file_name().map_or_else(
        || s.path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    ui.heading(file);
    egui::Grid::new("summary-facts")
        .num_columns(2)
        .spacing([16.0, 2.0])
        .show(ui, |ui| {
            let mut fact = |k: &str, v: String| {
                ui.label(RichText::new(k).weak());
                ui.label(v);
                ui.end_row();
            };
            fact("Source", names(&s.sources, s.more_sources));
            fact("Model", names(&s.models, s.more_models));
            fact("Date", s.started.map_or_else(|| "not recorded".into(), utc));
            fact("Duration", duration(s.duration_ms()));
            fact("Frames", format!("{} with faces", count(s.frames)));
            fact(
                "Faces",
                format!(
                    "{} ({} seen for 1 s or more)",
                    count(s.face_count() as u64),
                    count((s.faces.len() + s.unlisted_faces) as u64)
                ),
            );
        });
    ui.horizontal(|ui| {
        if ui.button("Save report...").clicked() {
            action = Some(SummaryAction::SaveReport);
        }
        if ui.button("Close").clicked() {
            action = Some(SummaryAction::Close);
        }
    });
    for n in &s.notes {
        ui.colored_label(ui.visuals().warn_fg_color, format!("Note: {n}."));
    }
    ui.separator();
    if s.rows == 0 {
        ui.label("No faces were recorded.");
        return action;
    }
    ui.label(RichText::new("Across all faces, time on top").strong());
    share_bar(ui, &s.classes, &s.overall_shares);
    for (i, f) in s.detailed().enumerate() {
        face(ui, s, f, i < OPEN_FACES);
    }
    let listed = s.faces.iter().filter(|f| !f.detailed).count() + s.unlisted_faces;
    if listed > 0 {
        ui.label(format!(
            "{} more faces seen for 1 s or more: see the report.",
            count(listed as u64)
        ));
    }
    if s.brief.faces > 0 {
        ui.label(format!(
            "{} {} seen for less than a second ({} rows in all).",
            count(s.brief.faces as u64),
            if s.brief.faces == 1 {
                "face was"
            } else {
                "faces were"
            },
            count(s.brief.rows)
        ));
    }
    action
}

fn names(v: &[String], more: usize) -> String {
    if v.is_empty() {
        return "not recorded".into();
    }
    let mut s = v.join("; ");
    if more > 0 {
        s += &format!(" and {more} more");
    }
    s
}

fn color(c: &Class) -> Color32 {
    Color32::from_rgb(c.color[0], c.color[1], c.color[2])
}

/// A stacked bar of `shares` and a legend line with the percentages, largest first.
fn share_bar(ui: &mut Ui, classes: &[Class], shares: &[f64]) {
    let mut order: Vec<usize> = (0..classes.len()).collect();
    order.sort_by(|&a, &b| shares[b].total_cmp(&shares[a]));
    let width = ui.available_width().min(700.0);
    let (rect, _) = ui.allocate_exact_size(vec2(width, 14.0), Sense::hover());
    let painter = ui.painter();
    painter.rect_filled(rect, CornerRadius::same(3), ui.visuals().faint_bg_color);
    let mut x = rect.left();
    for &c in &order {
        let w = shares[c] as f32 * rect.width();
        if w > 0.0 {
            let r = egui::Rect::from_min_size(egui::pos2(x, rect.top()), vec2(w, rect.height()));
            painter.rect_filled(r, CornerRadius::ZERO, color(&classes[c]));
        }
        x += w;
    }
    ui.horizontal_wrapped(|ui| {
        for &c in &order {
            swatch(ui, color(&classes[c]));
            ui.label(format!("{} {}", classes[c].name, percent(shares[c])));
        }
    });
}

/// A small square of the class colour (painted: the app's font has no square glyph).
fn swatch(ui: &mut Ui, c: Color32) {
    let (rect, _) = ui.allocate_exact_size(vec2(10.0, 10.0), Sense::hover());
    ui.painter().rect_filled(rect, CornerRadius::same(2), c);
}

fn face(ui: &mut Ui, s: &Summary, f: &FaceSummary, open: bool) {
    let dom = f.dominant();
    let title = format!(
        "Face #{}: mostly {} ({})",
        f.id,
        s.classes[dom].name,
        percent(f.shares[dom])
    );
    egui::CollapsingHeader::new(title)
        .id_salt(("summary-face", f.id))
        .default_open(open)
        .show(ui, |ui| {
            let mut meta = format!(
                "Seen for {}, from {} to {} · {} rows",
                duration(f.seen_ms),
                clock(f.first_ms),
                clock(f.last_ms),
                count(f.rows)
            );
            if let Some(c) = f.carried {
                meta += &format!(" · carried by the tracker in {}", count(c));
            }
            ui.label(meta);
            timeline(ui, s, f);
            share_bar(ui, &s.classes, &f.shares);
            egui::Grid::new(("summary-table", f.id))
                .num_columns(4)
                .striped(true)
                .spacing([14.0, 3.0])
                .show(ui, |ui| {
                    for h in ["Class", "On top", "Mean", "Strongest moments"] {
                        ui.label(RichText::new(h).weak());
                    }
                    ui.end_row();
                    for (c, class) in s.classes.iter().enumerate() {
                        let name = RichText::new(&class.name).color(color(class));
                        ui.label(if c == dom { name.strong() } else { name });
                        ui.label(percent(f.shares[c]));
                        ui.label(percent(f.means[c]));
                        let moments: Vec<String> = f.moments[c]
                            .iter()
                            .map(|m| format!("{} ({})", clock(m.t_ms), percent(m.score as f64)))
                            .collect();
                        ui.label(moments.join("   "));
                        ui.end_row();
                    }
                });
        });
}

/// Smoothed scores as lines, the raw extremes as faint lines behind; x in seconds.
fn timeline(ui: &mut Ui, s: &Summary, f: &FaceSummary) {
    let series = &f.timeline;
    Plot::new(("summary-timeline", f.id))
        .height(170.0)
        .legend(Legend::default().follow_insertion_order(true))
        .include_y(0.0)
        .include_y(1.0)
        .allow_scroll(false)
        .x_axis_formatter(|mark, _| clock(mark.value * 1000.0))
        .y_axis_formatter(|mark, _| format!("{:.0}%", mark.value * 100.0))
        .show(ui, |plot| {
            for (c, class) in s.classes.iter().enumerate() {
                let faint = color(class).gamma_multiply(0.3);
                for seg in &series.segments {
                    let pts: PlotPoints = seg
                        .clone()
                        .flat_map(|p| {
                            let t = series.t_ms[p] / 1000.0;
                            let [a, b] = series.raw[c][p];
                            [[t, a as f64], [t, b as f64]]
                        })
                        .collect();
                    // No name: raw lines stay out of the legend.
                    plot.line(Line::new("", pts).color(faint).width(1.0));
                }
            }
            for (c, class) in s.classes.iter().enumerate() {
                for seg in &series.segments {
                    let pts: PlotPoints = seg
                        .clone()
                        .map(|p| [series.t_ms[p] / 1000.0, series.smooth[c][p] as f64])
                        .collect();
                    plot.line(
                        Line::new(class.name.clone(), pts)
                            .color(color(class))
                            .width(2.0),
                    );
                }
            }
        });
}
