//! Used by `.ci/run`: fail unless a screenshot of the app shows a drawn window (not one flat
//! colour), with the video area showing the demo photo.
fn main() {
    let path = std::env::args()
        .nth(1)
        .expect("usage: check_screenshot PNG");
    let img = image::open(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .to_rgb8();
    let (w, h) = img.dimensions();
    assert!(w >= 640 && h >= 400, "{path}: window is only {w}x{h}");
    let mut colours = std::collections::HashSet::new();
    for p in img.pixels() {
        colours.insert(p.0);
    }
    println!("{path}: {w}x{h}, {} distinct colours", colours.len());
    assert!(
        colours.len() > 1000,
        "{path}: only {} colours, the window looks blank",
        colours.len()
    );
}
