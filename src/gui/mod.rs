//! The desktop window (eframe/egui, glow backend). The only module that touches egui.
//!
//! [`app::EmocamApp`] holds the state (pipeline, tracker, recorder, menus) and draws it; the
//! drawing helpers live in [`video`], [`bars`] and [`chart`].

pub mod app;
pub mod bars;
pub mod chart;
pub mod summary;
pub mod video;

pub use app::{AppOptions, EmocamApp};

use crate::error::{Error, Result};

/// Open the window and run until it is closed.
pub fn run(opts: AppOptions) -> Result<()> {
    let native = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("emocam")
            .with_inner_size([1180.0, 720.0])
            .with_min_inner_size([640.0, 420.0])
            .with_drag_and_drop(true),
        renderer: eframe::Renderer::Glow,
        ..Default::default()
    };
    eframe::run_native(
        "emocam",
        native,
        Box::new(move |cc| Ok(Box::new(EmocamApp::new(&cc.egui_ctx, cc.storage, opts)))),
    )
    .map_err(|e| {
        let headless = std::env::var_os("DISPLAY").is_none() && std::env::var_os("WAYLAND_DISPLAY").is_none();
        let hint = if headless {
            " (no display here: run the pipeline without a window with `emocam run --source demo`, or start Xvfb)"
        } else {
            ""
        };
        Error::Gui(format!("{e}{hint}"))
    })
}
