//! A colour per class, the same everywhere a class is drawn: the window's bars, boxes and
//! chart, annotated videos and snapshots, the HTML report, the PNG summary and the summary
//! window. The seven FER classes and `contempt` have fixed colours; other classes get distinct
//! ones in the order of their model's classes.

/// An sRGB colour.
pub type Rgb = [u8; 3];

/// The seven FER classes' colours.
const FER: [(&str, Rgb); 7] = [
    ("angry", [220, 60, 50]),
    ("disgust", [120, 160, 40]),
    ("fear", [150, 90, 200]),
    ("happy", [250, 190, 40]),
    ("sad", [60, 120, 220]),
    ("surprise", [240, 120, 200]),
    ("neutral", [150, 150, 150]),
];

/// `contempt`, the eighth class of AffectNet-style models: a teal none of the seven is near.
const CONTEMPT: Rgb = [0, 150, 140];

/// Colours for other class names, handed out in the order of their columns: distinct from the
/// fixed ones and from each other (Tableau-like hues, darkened where they would clash).
const OTHERS: [Rgb; 10] = [
    [31, 119, 180],
    [255, 127, 14],
    [140, 86, 75],
    [23, 190, 207],
    [188, 189, 34],
    [214, 39, 40],
    [148, 103, 189],
    [44, 160, 44],
    [227, 119, 194],
    [90, 90, 160],
];

/// The colour of a class that has a fixed one (the seven FER classes and `contempt`, any case).
pub fn fixed_color(name: &str) -> Option<Rgb> {
    let lower = name.trim().to_ascii_lowercase();
    if lower == "contempt" {
        return Some(CONTEMPT);
    }
    FER.iter().find(|(n, _)| *n == lower).map(|(_, c)| *c)
}

/// Colours for a model's classes, in their order: fixed ones where the name has one, the others
/// from a palette in the order of their columns, so the same header always gets the same
/// colours. Past the palette, hues go round the colour wheel by the golden angle.
pub fn class_colors(names: &[String]) -> Vec<Rgb> {
    let mut next = 0usize;
    names
        .iter()
        .map(|n| {
            fixed_color(n).unwrap_or_else(|| {
                let c = OTHERS
                    .get(next)
                    .copied()
                    .unwrap_or_else(|| hsl_to_rgb((next as f64 * 137.508) % 360.0, 0.55, 0.45));
                next += 1;
                c
            })
        })
        .collect()
}

/// `#rrggbb`.
pub fn hex(c: Rgb) -> String {
    format!("#{:02x}{:02x}{:02x}", c[0], c[1], c[2])
}

fn hsl_to_rgb(h: f64, s: f64, l: f64) -> Rgb {
    let c = (1.0 - (2.0 * l - 1.0).abs()) * s;
    let hp = h / 60.0;
    let x = c * (1.0 - (hp % 2.0 - 1.0).abs());
    let (r, g, b) = match hp as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = l - c / 2.0;
    let to = |v: f64| ((v + m) * 255.0).round().clamp(0.0, 255.0) as u8;
    [to(r), to(g), to(b)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn fixed_classes_keep_their_colour_and_others_are_distinct_and_stable() {
        let a = class_colors(&names(&["Happy", "contempt", "joy", "awe", "sad"]));
        assert_eq!(a[0], [250, 190, 40]);
        assert_eq!(a[1], CONTEMPT);
        assert_eq!(a[4], [60, 120, 220]);
        assert_ne!(a[2], a[3]);
        assert_eq!(
            a,
            class_colors(&names(&["Happy", "contempt", "joy", "awe", "sad"]))
        );
        let many: Vec<String> = (0..30).map(|i| format!("c{i}")).collect();
        let colours = class_colors(&many);
        let distinct: std::collections::HashSet<_> = colours.iter().collect();
        assert_eq!(distinct.len(), 30);
        assert_eq!(hex([250, 190, 40]), "#fabe28");
    }
}
