//! A line chart of the last 30 seconds of (smoothed) scores for one face.

use std::collections::VecDeque;

use egui::Ui;
use egui_plot::{Legend, Line, Plot, PlotPoints};

use super::bars::color;
use crate::emotion::Scores;

/// Seconds of history shown.
pub const HISTORY_SECS: f64 = 30.0;

/// Scores over time for one face.
#[derive(Debug, Default)]
pub struct History {
    points: VecDeque<(f64, Scores)>,
}

impl History {
    /// Add a sample at `t` seconds and forget samples older than [`HISTORY_SECS`]; a sample
    /// over other classes (a model with another class set was loaded) starts the chart afresh.
    pub fn push(&mut self, t: f64, s: Scores) {
        if self
            .points
            .back()
            .is_some_and(|(_, last)| last.classes() != s.classes())
        {
            self.points.clear();
        }
        self.points.push_back((t, s));
        while self
            .points
            .front()
            .is_some_and(|(t0, _)| t - t0 > HISTORY_SECS)
        {
            self.points.pop_front();
        }
    }

    /// Number of samples held.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// True when no sample is held.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// Draw one line per class, time in seconds before now on the x axis.
    pub fn show(&self, ui: &mut Ui, now: f64) {
        Plot::new("score-history")
            // In the bars' order, not alphabetical, so both read the same way.
            .legend(
                Legend::default()
                    .position(egui_plot::Corner::LeftTop)
                    .follow_insertion_order(true),
            )
            .include_y(0.0)
            .include_y(1.0)
            .include_x(-HISTORY_SECS)
            .include_x(0.0)
            .allow_drag(false)
            .allow_zoom(false)
            .allow_scroll(false)
            .height(ui.available_height().max(120.0))
            .show(ui, |plot| {
                let Some((_, last)) = self.points.back() else {
                    return;
                };
                for (i, name) in last.classes().names().iter().enumerate() {
                    let pts: PlotPoints = self
                        .points
                        .iter()
                        .map(|(t, s)| [t - now, s.probs()[i] as f64])
                        .collect();
                    plot.line(Line::new(name.as_str(), pts).color(color(name)));
                }
            });
    }
}
