//! The desktop window (eframe/egui, glow backend). The only module that touches egui.
//!
//! [`app::EmocamApp`] owns a [`crate::session::Session`] (pipeline, tracking, recording) and what
//! the window adds to it; [`menus`], [`panels`], [`dialogs`], [`video`], [`bars`] and [`chart`]
//! draw it.

pub mod afterwards;
pub mod app;
pub mod bars;
pub mod chart;
pub mod dialogs;
pub mod menus;
pub mod panels;
pub mod summary;
pub mod video;

pub use app::{AppOptions, EmocamApp};

use crate::error::{Error, Result};

/// SIGTERM (a logout, `kill`) and Ctrl-C in the terminal close the window the way its close
/// button does, so that a recording in progress is finished and every row kept. `None` where
/// the handlers cannot be installed (the window then simply dies with the process).
fn close_on_signals(ctx: &egui::Context) -> Option<signal_hook::iterator::Handle> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT]).ok()?;
    let handle = signals.handle();
    let ctx = ctx.clone();
    std::thread::Builder::new()
        .name("emocam-signals".into())
        .spawn(move || {
            if signals.forever().next().is_some() {
                ctx.send_viewport_cmd(egui::ViewportCommand::Close);
                ctx.request_repaint();
            }
        })
        .ok()?;
    Some(handle)
}

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
        Box::new(move |cc| {
            let mut app = EmocamApp::new(&cc.egui_ctx, cc.storage, opts);
            app.close_on_signals(close_on_signals(&cc.egui_ctx));
            Ok(Box::new(app))
        }),
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
