//! Reports from recordings: how a session went, when, and for whom, as one self-contained HTML
//! page and a PNG summary (`emocam report`, and the app's summary window).
//!
//! [`Recording::read`] streams and checks a recording's CSV ([`read`]); [`Summary::from`]
//! computes the figures and the downsampled timelines ([`summary`]); [`html()`] and [`png()`]
//! draw them; [`write_report`] is the whole of `emocam report`. Nothing here touches egui.
//!
//! ```no_run
//! use emocam::report::{Recording, Summary, html};
//! let rec = Recording::read("session.csv".as_ref())?;
//! let summary = Summary::from(&rec);
//! std::fs::write("session.html", html(&summary)).ok();
//! # Ok::<(), emocam::Error>(())
//! ```

pub mod files;
pub mod format;
pub mod html;
pub mod png;
pub mod read;
pub mod summary;

pub use crate::palette::{self, Rgb, class_colors};
pub use files::{ReportRequest, ReportWritten, default_html_path, write_private, write_report};
pub use html::html;
pub use png::{PNG_SIZE, png, png_bytes};
pub use read::{FaceRows, Recording, TimeAxis};
pub use summary::{BriefFaces, Class, FaceSummary, Moment, Run, Series, Summary};
