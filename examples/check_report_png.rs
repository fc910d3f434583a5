//! Used by `.ci/run`: fail unless a picture of a report (a browser's screenshot of the HTML, or
//! the PNG summary) is drawn (not one flat colour) with its charts: pixels in the app's class
//! colours, as the share bars, legends and lines of a report are drawn.
//!
//! `cargo run --example check_report_png -- PICTURE.png`

use std::collections::HashMap;
use std::process::ExitCode;

/// The seven FER classes' colours (`report::palette`, the same as the app's bars).
const CLASS_COLOURS: [(&str, [u8; 3]); 7] = [
    ("angry", [220, 60, 50]),
    ("disgust", [120, 160, 40]),
    ("fear", [150, 90, 200]),
    ("happy", [250, 190, 40]),
    ("sad", [60, 120, 220]),
    ("surprise", [240, 120, 200]),
    ("neutral", [150, 150, 150]),
];

fn main() -> ExitCode {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: check_report_png PICTURE.png");
        return ExitCode::FAILURE;
    };
    match check(&path) {
        Ok(msg) => {
            println!("{path}: {msg}");
            ExitCode::SUCCESS
        }
        Err(msg) => {
            eprintln!("{path}: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn check(path: &str) -> Result<String, String> {
    let img = image::open(path).map_err(|e| e.to_string())?.to_rgb8();
    let (w, h) = img.dimensions();
    if w < 640 || h < 400 {
        return Err(format!("only {w}x{h}, expected a page or a slide"));
    }
    let mut counts: HashMap<[u8; 3], u64> = HashMap::new();
    for p in img.pixels() {
        *counts.entry(p.0).or_default() += 1;
    }
    let total = u64::from(w) * u64::from(h);
    let commonest = counts.values().copied().max().unwrap_or(0);
    if counts.len() < 200 || commonest as f64 > 0.98 * total as f64 {
        return Err(format!(
            "{} colours, the commonest on {:.1}% of the page: it looks blank",
            counts.len(),
            100.0 * commonest as f64 / total as f64
        ));
    }
    // A colour counts as drawn where 50 pixels or more have it (within 2 per channel, for
    // the browser's rounding).
    let near = |c: [u8; 3]| -> u64 {
        counts
            .iter()
            .filter(|(p, _)| p.iter().zip(c).all(|(a, b)| a.abs_diff(b) <= 2))
            .map(|(_, n)| *n)
            .sum()
    };
    let drawn: Vec<&str> = CLASS_COLOURS
        .iter()
        .filter(|(_, c)| near(*c) >= 50)
        .map(|(n, _)| *n)
        .collect();
    if drawn.len() < 3 {
        return Err(format!(
            "class colours found: {drawn:?}; expected at least three (share bars, legend, lines)"
        ));
    }
    Ok(format!(
        "{w}x{h}, {} colours, class colours drawn: {}",
        counts.len(),
        drawn.join(", ")
    ))
}
