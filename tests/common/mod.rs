//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// `../shared` beside the checkout (or `$EMOCAM_SHARED`), or `None` with a printed reason so
/// that a user who has only the repository still gets a passing `cargo test`.
pub fn shared(what: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("EMOCAM_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared"));
    let p = dir.join(what);
    if p.exists() {
        Some(p)
    } else {
        println!(
            "SKIPPED: {} is absent (it lives in ../shared beside the repo)",
            p.display()
        );
        None
    }
}

/// A committed test fixture.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The shipped default weights file (the model compiled into the binary).
pub fn default_weights() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("weights/emocam-fer2013.safetensors")
}

/// The borrowed mini-Xception shipped beside the default.
pub fn mini_xception_weights() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("weights/mini-xception-fer2013.safetensors")
}

/// A CSV file's header and rows, read as a spreadsheet would (quoted fields undone).
pub fn read_csv(path: &std::path::Path) -> (Vec<String>, Vec<Vec<String>>) {
    let mut r = csv::Reader::from_path(path).unwrap();
    let header = r.headers().unwrap().iter().map(str::to_string).collect();
    let rows = r
        .records()
        .map(|rec| rec.unwrap().iter().map(str::to_string).collect())
        .collect();
    (header, rows)
}
