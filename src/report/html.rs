//! The report as one self-contained HTML page: inline CSS and SVG, no scripts, fonts or images
//! from anywhere, readable in light and dark, printable.

use std::fmt::Write;

use super::format::{clock, count, duration, percent, tick, tick_step_ms, utc, utc_time};
use super::read::TimeAxis;
use super::summary::{
    Class, FaceSummary, GAP_MS, MAX_POINTS, MAX_SECTIONS, MIN_SEEN_MS, MOMENT_SEPARATION_MS,
    SMOOTH_WINDOW_MS, Series, Summary,
};
use crate::palette::hex;

const CSS: &str = r#"
:root{--bg:#fff;--fg:#1f2328;--muted:#59636e;--line:#d1d9e0;--soft:#f6f8fa;--grid:#e6eaef;color-scheme:light dark}
@media (prefers-color-scheme:dark){:root{--bg:#0f1217;--fg:#e6edf3;--muted:#9198a1;--line:#3d444d;--soft:#161b22;--grid:#262c36}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1080px;margin:0 auto;padding:28px 20px 48px}
h1{font-size:1.75rem;line-height:1.25;margin:.15rem 0 1rem;overflow-wrap:anywhere}
h2{font-size:1.25rem;margin:0 0 .3rem;display:flex;align-items:center;gap:.5rem;flex-wrap:wrap}
h3{font-size:.8rem;color:var(--muted);text-transform:uppercase;letter-spacing:.06em;margin:1.1rem 0 .2rem}
a{color:inherit}
.kicker{color:var(--muted);text-transform:uppercase;letter-spacing:.09em;font-size:.78rem;margin:0}
.facts{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:10px 20px;margin:0 0 .8rem;padding:14px 18px;background:var(--soft);border:1px solid var(--line);border-radius:10px}
.facts div{min-width:0}
.facts .wide{grid-column:span 2}
@media (max-width:520px){.facts .wide{grid-column:auto}}
.facts dt{color:var(--muted);font-size:.74rem;text-transform:uppercase;letter-spacing:.06em}
.facts dd{margin:0;font-weight:600;overflow-wrap:anywhere}
.facts dd small{font-weight:400;color:var(--muted)}
section{margin:30px 0 0;padding-top:18px;border-top:1px solid var(--line)}
.mostly{font-size:.95rem;font-weight:400;color:var(--muted)}
.dot{display:inline-block;width:.7em;height:.7em;border-radius:50%}
.bar{display:flex;height:20px;border-radius:5px;overflow:hidden;background:var(--grid);margin:.4rem 0 .3rem}
.bar span{display:block;height:100%;min-width:1px}
.legend{list-style:none;display:flex;flex-wrap:wrap;gap:2px 16px;padding:0;margin:.2rem 0 .6rem;font-size:.88rem}
.sw{display:inline-block;width:.8em;height:.8em;border-radius:2px;margin-right:.35em;vertical-align:-.06em}
svg{display:block;width:100%;height:auto}
svg text{fill:var(--muted);font-size:12px}
svg a text{fill:var(--fg);font-weight:600}
.grid{stroke:var(--grid);stroke-width:1;vector-effect:non-scaling-stroke}
.track{fill:var(--soft)}
.raw{fill:none;stroke-width:1;opacity:.3;vector-effect:non-scaling-stroke}
.smooth{fill:none;stroke-width:2;stroke-linejoin:round;stroke-linecap:round;vector-effect:non-scaling-stroke}
.wrap{overflow-x:auto}
table{border-collapse:collapse;width:100%;font-size:.92rem;font-variant-numeric:tabular-nums}
th{text-align:left;color:var(--muted);font-weight:600;font-size:.74rem;text-transform:uppercase;letter-spacing:.05em;border-bottom:1px solid var(--line);padding:6px 8px}
td{padding:5px 8px;border-bottom:1px solid var(--grid);vertical-align:top}
td.n,th.n{text-align:right;white-space:nowrap}
tr.top td:first-child{font-weight:700}
.meta{color:var(--muted);margin:.1rem 0 .5rem}
.m{display:inline-block;white-space:nowrap;margin-right:1.1em}
.m small{color:var(--muted)}
.note{padding:8px 12px;border-left:3px solid #d29922;background:var(--soft);border-radius:0 6px 6px 0}
.empty{font-size:1.1rem;padding:24px;text-align:center;background:var(--soft);border-radius:10px}
footer{margin-top:36px;padding-top:14px;border-top:1px solid var(--line);color:var(--muted);font-size:.86rem}
footer p{margin:.35rem 0}
@media print{:root{--bg:#fff;--fg:#000;--muted:#444;--line:#bbb;--soft:#f4f4f4;--grid:#e2e2e2}
main{max-width:none;padding:0}section.face{break-inside:avoid}
.bar span,.sw,.dot,.track{print-color-adjust:exact;-webkit-print-color-adjust:exact}a{text-decoration:none}}
"#;

/// Width of every SVG's coordinate system; the page scales it to its width.
const W: f64 = 1000.0;

/// The report of `s` as one HTML document.
pub fn html(s: &Summary) -> String {
    // About 40 bytes per drawn point and class, plus the tables.
    let points: usize = s.detailed().map(|f| f.timeline.t_ms.len() * 3).sum();
    let mut out = String::with_capacity(64 * 1024 + points * s.classes.len() * 40);
    let file = file_name(s);
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    let _ = writeln!(
        out,
        "<meta name=\"generator\" content=\"emocam {}\">",
        env!("CARGO_PKG_VERSION")
    );
    out.push_str("<title>Emotion report: ");
    esc(&mut out, &file);
    out.push_str("</title>\n<style>");
    out.push_str(CSS.trim());
    out.push_str("</style>\n</head>\n<body>\n<main>\n");
    header(&mut out, s, &file);
    if s.rows == 0 {
        out.push_str(
            "<p class=\"empty\">No faces were recorded: the file has a header and no rows.</p>\n",
        );
    } else {
        overview(&mut out, s);
        for f in s.detailed() {
            face_section(&mut out, s, f);
        }
        listed_faces(&mut out, s);
        brief_faces(&mut out, s);
    }
    footer(&mut out, s, &file);
    out.push_str("</main>\n</body>\n</html>\n");
    out
}

fn file_name(s: &Summary) -> String {
    s.path.file_name().map_or_else(
        || s.path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// Append `text` with the characters HTML gives a meaning escaped (safe in text and in quoted
/// attributes).
fn esc(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
}

fn names(out: &mut String, names: &[String], more: usize) {
    if names.is_empty() {
        out.push_str("<small>not recorded</small>");
        return;
    }
    for (i, n) in names.iter().enumerate() {
        if i > 0 {
            out.push_str("; ");
        }
        esc(out, n);
    }
    if more > 0 {
        let _ = write!(out, " <small>and {more} more</small>");
    }
}

fn fact(out: &mut String, label: &str, body: impl FnOnce(&mut String)) {
    // Names (of a model, a video) are long; give them two columns where there is room.
    let wide = if matches!(label, "Source" | "Model") {
        " class=\"wide\""
    } else {
        ""
    };
    let _ = write!(out, "<div{wide}><dt>{label}</dt><dd>");
    body(out);
    out.push_str("</dd></div>");
}

fn header(out: &mut String, s: &Summary, file: &str) {
    out.push_str("<header>\n<p class=\"kicker\">emocam session report</p>\n<h1>");
    esc(out, file);
    out.push_str("</h1>\n<dl class=\"facts\">");
    fact(out, "Source", |o| names(o, &s.sources, s.more_sources));
    fact(out, "Model", |o| names(o, &s.models, s.more_models));
    fact(out, "Date", |o| match (s.started, s.ended) {
        (Some(a), Some(b)) => {
            o.push_str(&utc(a));
            let _ = write!(o, " <small>to {}</small>", utc_time(b));
        }
        (Some(a), None) => o.push_str(&utc(a)),
        _ => o.push_str("<small>not recorded</small>"),
    });
    fact(out, "Duration", |o| {
        o.push_str(&duration(s.duration_ms()));
        let axis = match s.time_axis {
            TimeAxis::Source => "video time",
            TimeAxis::Elapsed => "recording time",
            TimeAxis::Mixed => "video and recording time",
        };
        let _ = write!(o, " <small>{axis}</small>");
    });
    fact(out, "Frames", |o| {
        o.push_str(&count(s.frames));
        let _ = write!(o, " <small>with faces, {} rows</small>", count(s.rows));
    });
    fact(out, "Faces", |o| {
        o.push_str(&count(s.face_count() as u64));
        let long = s.faces.len() + s.unlisted_faces;
        let _ = write!(
            o,
            " <small>({} seen for 1 s or more)</small>",
            count(long as u64)
        );
    });
    out.push_str("</dl>\n");
    let axis_note = match s.time_axis {
        TimeAxis::Source => "Times are positions in the video (<code>source_ms</code>).",
        TimeAxis::Elapsed => {
            "Times are counted from the start of the recording (<code>elapsed_ms</code>)."
        }
        TimeAxis::Mixed => {
            "Times are positions in the video (<code>source_ms</code>) where the recording has them, \
             and time since the recording started (<code>elapsed_ms</code>) elsewhere."
        }
    };
    let _ = writeln!(out, "<p class=\"meta\">{axis_note}</p>");
    for n in &s.notes {
        out.push_str("<p class=\"note\">Note: ");
        esc(out, n);
        out.push_str(".</p>\n");
    }
    out.push_str("</header>\n");
}

/// A stacked bar of shares with a legend.
fn share_bar(out: &mut String, classes: &[Class], shares: &[f64]) {
    out.push_str("<div class=\"bar\" role=\"img\" aria-label=\"share of time on top\">");
    let mut order: Vec<usize> = (0..classes.len()).collect();
    order.sort_by(|&a, &b| shares[b].total_cmp(&shares[a]));
    for &c in order.iter().filter(|&&c| shares[c] > 0.0) {
        let _ = write!(
            out,
            "<span style=\"width:{:.2}%;background:{}\" title=\"",
            100.0 * shares[c],
            hex(classes[c].color)
        );
        esc(out, &classes[c].name);
        let _ = write!(out, " {}\"></span>", percent(shares[c]));
    }
    out.push_str("</div>\n<ul class=\"legend\">");
    for &c in &order {
        let _ = write!(
            out,
            "<li><span class=\"sw\" style=\"background:{}\"></span>",
            hex(classes[c].color)
        );
        esc(out, &classes[c].name);
        let _ = write!(out, " <b>{}</b></li>", percent(shares[c]));
    }
    out.push_str("</ul>\n");
}

fn overview(out: &mut String, s: &Summary) {
    out.push_str("<section class=\"overview\">\n<h2>Across all faces</h2>\n");
    out.push_str(
        "<p class=\"meta\">Share of the time faces were seen that each class was on top.</p>\n",
    );
    share_bar(out, &s.classes, &s.overall_shares);
    let rows: Vec<&FaceSummary> = s.detailed().collect();
    if rows.is_empty() {
        out.push_str("</section>\n");
        return;
    }
    out.push_str("<h3>Who was seen when</h3>\n");
    out.push_str("<p class=\"meta\">One row per face, coloured by the class on top; a face's name links to its section.</p>\n");
    let (left, right, row_h, bar_h, axis_h) = (64.0, 18.0, 22.0, 14.0, 22.0);
    let height = rows.len() as f64 * row_h + axis_h + 4.0;
    let pw = W - left - right;
    let span = s.duration_ms().max(1.0);
    let x = |t: f64| left + (t - s.start_ms) / span * pw;
    let _ = writeln!(
        out,
        "<svg viewBox=\"0 0 {W} {height}\" role=\"img\" aria-label=\"faces over the session\">"
    );
    time_grid(
        out,
        s.start_ms,
        s.end_ms,
        left,
        pw,
        0.0,
        height - axis_h,
        10,
    );
    for (r, f) in rows.iter().enumerate() {
        let y = r as f64 * row_h + (row_h - bar_h) / 2.0;
        let _ = write!(
            out,
            "<a href=\"#face-{id}\"><text x=\"{tx}\" y=\"{ty:.1}\" text-anchor=\"end\">#{id}</text></a>",
            id = f.id,
            tx = left - 8.0,
            ty = y + bar_h - 2.5
        );
        let _ = write!(
            out,
            "<rect class=\"track\" x=\"{left}\" y=\"{y:.1}\" width=\"{pw}\" height=\"{bar_h}\" rx=\"3\"/>"
        );
        for run in &f.presence {
            let (x0, x1) = (x(run.start_ms), x(run.end_ms));
            let c = &s.classes[run.class];
            let _ = write!(
                out,
                "<rect x=\"{x0:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{bar_h}\" fill=\"{}\"><title>#{} ",
                (x1 - x0).max(0.8),
                hex(c.color),
                f.id
            );
            esc(out, &c.name);
            let _ = write!(
                out,
                " {}–{}</title></rect>",
                clock(run.start_ms),
                clock(run.end_ms)
            );
        }
        out.push('\n');
    }
    out.push_str("</svg>\n");
    if s.faces.len() + s.unlisted_faces > rows.len() {
        let _ = writeln!(
            out,
            "<p class=\"meta\">The {} faces seen longest are drawn; the others are listed below.</p>",
            rows.len()
        );
    }
    out.push_str("</section>\n");
}

/// Vertical grid lines with time labels along the bottom, from `y0` to `y1`.
#[allow(clippy::too_many_arguments)]
fn time_grid(
    out: &mut String,
    t0: f64,
    t1: f64,
    left: f64,
    pw: f64,
    y0: f64,
    y1: f64,
    max_ticks: usize,
) {
    let span = (t1 - t0).max(1.0);
    let step = tick_step_ms(span, max_ticks);
    let first = (t0 / step).ceil() * step;
    out.push_str("<g>");
    // Ticks by index, so that many small steps do not add up rounding errors.
    for t in (0..)
        .map(|i| first + i as f64 * step)
        .take_while(|t| *t <= t1 + 1e-6)
    {
        let x = left + (t - t0) / span * pw;
        let _ = write!(
            out,
            "<line class=\"grid\" x1=\"{x:.1}\" y1=\"{y0:.1}\" x2=\"{x:.1}\" y2=\"{y1:.1}\"/>\
             <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            y1 + 15.0,
            tick(t, step)
        );
    }
    out.push_str("</g>\n");
}

fn face_section(out: &mut String, s: &Summary, f: &FaceSummary) {
    let dom = f.dominant();
    let _ = write!(
        out,
        "<section class=\"face\" id=\"face-{}\">\n<h2><span class=\"dot\" style=\"background:{}\"></span>Face #{} <span class=\"mostly\">mostly ",
        f.id,
        hex(s.classes[dom].color),
        f.id
    );
    esc(out, &s.classes[dom].name);
    let _ = writeln!(out, " ({} of the time)</span></h2>", percent(f.shares[dom]));
    let _ = write!(
        out,
        "<p class=\"meta\">Seen for <b>{}</b>, from {} to {}",
        duration(f.seen_ms),
        clock(f.first_ms),
        clock(f.last_ms)
    );
    if let (Some(a), Some(b)) = (f.first_timestamp, f.last_timestamp) {
        let _ = write!(out, " ({}–{} UTC)", utc_time(a), utc_time(b));
    }
    let _ = write!(out, " · {} rows", count(f.rows));
    if let Some(c) = f.carried {
        let _ = write!(
            out,
            " · carried by the tracker in {} of them ({})",
            count(c),
            percent(c as f64 / f.rows.max(1) as f64)
        );
    }
    out.push_str("</p>\n");
    timeline(out, s, f);
    out.push_str("<h3>Time on top</h3>\n");
    share_bar(out, &s.classes, &f.shares);
    out.push_str("<div class=\"wrap\"><table>\n<thead><tr><th>Class</th><th class=\"n\">On top</th><th class=\"n\">Mean score</th><th>Strongest moments</th></tr></thead>\n<tbody>\n");
    for (c, class) in s.classes.iter().enumerate() {
        let _ = write!(
            out,
            "<tr{}><td><span class=\"sw\" style=\"background:{}\"></span>",
            if c == dom { " class=\"top\"" } else { "" },
            hex(class.color)
        );
        esc(out, &class.name);
        let _ = write!(
            out,
            "</td><td class=\"n\">{} <small>{}</small></td><td class=\"n\">{}</td><td>",
            percent(f.shares[c]),
            duration(f.shares[c] * f.seen_ms),
            percent(f.means[c])
        );
        for m in &f.moments[c] {
            let _ = write!(
                out,
                "<span class=\"m\" title=\"frame {}\">{} <small>{} · frame {}</small></span>",
                m.frame,
                clock(m.t_ms),
                percent(m.score as f64),
                m.frame
            );
        }
        out.push_str("</td></tr>\n");
    }
    out.push_str("</tbody></table></div>\n</section>\n");
}

/// Append an SVG path through `pts` (already in SVG units); one point becomes a dot-long dash.
fn path(out: &mut String, pts: &[(f64, f64)]) {
    for (i, (x, y)) in pts.iter().enumerate() {
        let _ = match i {
            0 => write!(out, "M{x:.1},{y:.1}"),
            1 => write!(out, "L{x:.1},{y:.1}"),
            _ => write!(out, " {x:.1},{y:.1}"),
        };
    }
    if pts.len() == 1 {
        out.push_str("h1");
    }
}

fn timeline(out: &mut String, s: &Summary, f: &FaceSummary) {
    let (left, right, top, plot_h, axis_h) = (44.0, 18.0, 8.0, 190.0, 22.0);
    let height = top + plot_h + axis_h;
    let pw = W - left - right;
    let (t0, t1) = (f.first_ms, f.last_ms.max(f.first_ms + 1.0));
    let x = |t: f64| left + (t - t0) / (t1 - t0) * pw;
    let y = |v: f32| top + (1.0 - v.clamp(0.0, 1.0) as f64) * plot_h;
    let _ = writeln!(
        out,
        "<svg viewBox=\"0 0 {W} {height}\" role=\"img\" aria-label=\"scores of face {} over time\">",
        f.id
    );
    out.push_str("<g>");
    for q in 0..=4 {
        let v = q as f32 / 4.0;
        let yy = y(v);
        let _ = write!(
            out,
            "<line class=\"grid\" x1=\"{left}\" y1=\"{yy:.1}\" x2=\"{:.1}\" y2=\"{yy:.1}\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}%</text>",
            left + pw,
            left - 6.0,
            yy + 4.0,
            q * 25
        );
    }
    out.push_str("</g>\n");
    time_grid(out, t0, t1, left, pw, top, top + plot_h, 8);
    let series: &Series = &f.timeline;
    let mut pts: Vec<(f64, f64)> = Vec::with_capacity(2 * series.t_ms.len());
    // Raw lines first, so the smoothed ones are drawn over all of them.
    for (pass, class_attr) in [(0, "raw"), (1, "smooth")] {
        for (c, class) in s.classes.iter().enumerate() {
            let _ = write!(
                out,
                "<path class=\"{class_attr}\" stroke=\"{}\" d=\"",
                hex(class.color)
            );
            for seg in &series.segments {
                pts.clear();
                for p in seg.clone() {
                    let xp = x(series.t_ms[p]);
                    if pass == 0 {
                        let [a, b] = series.raw[c][p];
                        pts.push((xp, y(a)));
                        if b != a {
                            pts.push((xp, y(b)));
                        }
                    } else {
                        pts.push((xp, y(series.smooth[c][p])));
                    }
                }
                path(out, &pts);
            }
            out.push_str("\"><title>");
            esc(out, &class.name);
            out.push_str(if pass == 0 { " (raw)" } else { " (smoothed)" });
            out.push_str("</title></path>\n");
        }
    }
    out.push_str("</svg>\n<ul class=\"legend\">");
    for class in &s.classes {
        let _ = write!(
            out,
            "<li><span class=\"sw\" style=\"background:{}\"></span>",
            hex(class.color)
        );
        esc(out, &class.name);
        out.push_str("</li>");
    }
    out.push_str("</ul>\n");
}

fn listed_faces(out: &mut String, s: &Summary) {
    let rest: Vec<&FaceSummary> = s.faces.iter().filter(|f| !f.detailed).collect();
    if rest.is_empty() && s.unlisted_faces == 0 {
        return;
    }
    let _ = writeln!(
        out,
        "<section class=\"more\">\n<h2>More faces</h2>\n<p class=\"meta\">Seen for a second or more; only the {MAX_SECTIONS} seen longest have a section of their own.</p>"
    );
    out.push_str("<div class=\"wrap\"><table>\n<thead><tr><th>Face</th><th class=\"n\">Seen</th><th class=\"n\">From</th><th class=\"n\">To</th><th>Mostly</th></tr></thead>\n<tbody>\n");
    for f in rest {
        let dom = f.dominant();
        let _ = write!(
            out,
            "<tr id=\"face-{}\"><td>#{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td><span class=\"sw\" style=\"background:{}\"></span>",
            f.id,
            f.id,
            duration(f.seen_ms),
            clock(f.first_ms),
            clock(f.last_ms),
            hex(s.classes[dom].color)
        );
        esc(out, &s.classes[dom].name);
        let _ = writeln!(out, " {}</td></tr>", percent(f.shares[dom]));
    }
    out.push_str("</tbody></table></div>\n");
    if s.unlisted_faces > 0 {
        let _ = writeln!(
            out,
            "<p class=\"meta\">and {} more faces seen for a second or more, not listed.</p>",
            count(s.unlisted_faces as u64)
        );
    }
    out.push_str("</section>\n");
}

fn brief_faces(out: &mut String, s: &Summary) {
    let b = &s.brief;
    if b.faces == 0 {
        return;
    }
    let _ = write!(
        out,
        "<section class=\"brief\">\n<h2>Seen briefly</h2>\n<p>{} {} seen for less than a second ({} rows in all): ",
        count(b.faces as u64),
        if b.faces == 1 {
            "face was"
        } else {
            "faces were"
        },
        count(b.rows)
    );
    let ids: Vec<String> = b.ids.iter().map(|id| format!("#{id}")).collect();
    out.push_str(&ids.join(", "));
    if b.faces > b.ids.len() {
        let _ = write!(out, " and {} more", count((b.faces - b.ids.len()) as u64));
    }
    out.push_str(
        ". Too short to chart; their rows count in the shares across all faces.</p>\n</section>\n",
    );
}

fn footer(out: &mut String, s: &Summary, file: &str) {
    out.push_str("<footer>\n");
    let _ = writeln!(
        out,
        "<p><b>Lines</b>: each class's score smoothed by a centred moving average over {:.0} s; the light lines behind are the raw scores. \
         A line has at most {MAX_POINTS} points: where a face has more rows, each point stands for one time column, with the mean of its smoothed scores \
         and the lowest and highest raw score, so no spike is lost. A pause of more than {:.0} s breaks the line.</p>",
        SMOOTH_WINDOW_MS / 1000.0,
        GAP_MS / 1000.0
    );
    let _ = writeln!(
        out,
        "<p><b>On top</b>: the share of the time a face was seen during which the class had its highest score. \
         Each row counts until the next one; pauses of more than {:.0} s count as one frame. Faces seen for less than {:.0} s are counted under “Seen briefly”.</p>",
        GAP_MS / 1000.0,
        MIN_SEEN_MS / 1000.0
    );
    let _ = writeln!(
        out,
        "<p><b>Strongest moments</b>: the rows with a class's highest raw scores, at least {:.0} s apart. \
         Shares, means and moments use every row; only the lines are downsampled.</p>",
        MOMENT_SEPARATION_MS / 1000.0
    );
    let _ = write!(out, "<p>Made by emocam {} from ", env!("CARGO_PKG_VERSION"));
    esc(out, file);
    let _ = writeln!(
        out,
        " ({} rows). Scores are a model's reading of facial expressions, not of what a person feels.</p>",
        count(s.rows)
    );
    out.push_str("</footer>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_text_and_attributes() {
        let mut s = String::new();
        esc(&mut s, "<b>\"Tom\" & 'Jerry'</b>");
        assert_eq!(
            s,
            "&lt;b&gt;&quot;Tom&quot; &amp; &#39;Jerry&#39;&lt;/b&gt;"
        );
    }

    #[test]
    fn paths_draw_lines_and_single_points() {
        let mut s = String::new();
        path(&mut s, &[(1.0, 2.0), (3.0, 4.3), (5.0, 6.0)]);
        assert_eq!(s, "M1.0,2.0L3.0,4.3 5.0,6.0");
        s.clear();
        path(&mut s, &[(1.0, 2.0)]);
        assert_eq!(s, "M1.0,2.0h1");
    }
}
