//! The capture thread: pulls frames from the source, stamps them with their times, paces them,
//! and obeys play/pause/seek.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError, select};

use super::{Counters, Frame, Notice, Waker, deliver};
use crate::capture::{FrameSource, Pacing};

/// Requests to the capture thread.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Control {
    /// Stop (true) or resume (false) taking frames.
    Pause(bool),
    /// Go to this time in the source (ms); while paused, one frame from there is delivered.
    Seek(f64),
}

/// What the capture thread owns.
pub(super) struct SourceLoop {
    pub source: Box<dyn FrameSource>,
    pub pacing: Pacing,
    pub counters: Arc<Counters>,
    pub stop: Arc<AtomicBool>,
    /// Closed (its sender dropped) to stop the source, even mid-pause or mid-wait.
    pub stop_rx: Receiver<()>,
    pub control: Receiver<Control>,
    /// Unpaced sources make a frame only when the face stage asks for one.
    pub demand: Receiver<()>,
    pub frames: Sender<Frame>,
    /// The same channel's receiving end, to replace a stale frame when lossy.
    pub frames_rx: Receiver<Frame>,
    pub notices: Sender<Notice>,
    pub waker: Waker,
}

/// Whether to go on after handling controls.
enum Flow {
    Go,
    Stop,
}

struct State {
    index: u64,
    due: Instant,
    /// The first frame's capture time and source time since the start or the last seek: the
    /// origin of a camera's clock and of the schedule of a source played at its own rate.
    origin: Option<(Instant, f64)>,
    paused: bool,
    /// Deliver one frame although paused (after a seek, so the new position shows).
    step: bool,
}

impl SourceLoop {
    /// Run until the source ends, fails, or the pipeline stops.
    pub fn run(mut self) {
        let lossy = self.pacing != Pacing::Unpaced;
        let mut st = State {
            index: 0,
            due: Instant::now(),
            origin: None,
            paused: false,
            step: false,
        };
        loop {
            if self.stop.load(Ordering::Relaxed) || self.stopped() {
                break;
            }
            if let Flow::Stop = self.controls(&mut st) {
                break;
            }
            if !lossy && self.demand.recv().is_err() {
                break;
            }
            let sf = match self.source.next_frame() {
                Ok(Some(sf)) => sf,
                Ok(None) => {
                    self.notify(Notice::SourceEnded);
                    break;
                }
                Err(e) => {
                    self.notify(Notice::SourceFailed(e.to_string()));
                    break;
                }
            };
            let captured = Instant::now();
            let (t0, ms0) = *st
                .origin
                .get_or_insert((captured, sf.source_ms.unwrap_or(0.0)));
            let source_ms = match (sf.source_ms, self.pacing) {
                (Some(ms), _) => Some(ms),
                (None, Pacing::Live) => Some(captured.duration_since(t0).as_secs_f64() * 1e3),
                (None, _) => None,
            };
            if self.pacing == Pacing::SourceTime
                && let Some(ms) = source_ms
                && !st.step
            {
                // Wait until this frame's time comes, counted from the origin.
                let at = t0 + Duration::from_secs_f64(((ms - ms0) / 1e3).max(0.0));
                if !self.sleep_until(at) {
                    break;
                }
            }
            st.step = false;
            let frame = Frame {
                index: st.index,
                captured: Instant::now(),
                captured_at: SystemTime::now(),
                source_ms,
                rgb: Arc::new(sf.rgb),
            };
            st.index += 1;
            self.counters.captured.fetch_add(1, Ordering::Relaxed);
            if !deliver(
                &self.frames,
                &self.frames_rx,
                frame,
                lossy,
                &self.counters.dropped_capture,
                &self.stop,
            ) {
                break;
            }
            if let Pacing::Interval(iv) = self.pacing {
                let now = Instant::now();
                st.due = (st.due + iv).max(now);
                if !self.sleep_until(st.due) {
                    break;
                }
            }
        }
    }

    /// True once the pipeline asked the source to stop.
    fn stopped(&self) -> bool {
        matches!(self.stop_rx.try_recv(), Err(TryRecvError::Disconnected))
    }

    /// Wait until `at`; false if the source was stopped meanwhile.
    fn sleep_until(&self, at: Instant) -> bool {
        let now = Instant::now();
        if at <= now {
            return true;
        }
        !matches!(
            self.stop_rx.recv_timeout(at - now),
            Ok(()) | Err(RecvTimeoutError::Disconnected)
        )
    }

    /// Apply waiting controls; while paused, wait for the next one.
    fn controls(&mut self, st: &mut State) -> Flow {
        loop {
            let c = if st.paused && !st.step {
                select! {
                    recv(self.control) -> c => match c {
                        Ok(c) => c,
                        Err(_) => return Flow::Stop,
                    },
                    recv(self.stop_rx) -> _ => return Flow::Stop,
                }
            } else {
                match self.control.try_recv() {
                    Ok(c) => c,
                    Err(_) => return Flow::Go,
                }
            };
            match c {
                Control::Pause(p) => {
                    st.paused = p;
                    // Playing on starts the schedule afresh from the next frame.
                    st.origin = None;
                    st.due = Instant::now();
                }
                Control::Seek(ms) => match self.source.seek(ms) {
                    Ok(()) => {
                        st.origin = None;
                        st.due = Instant::now();
                        st.step = st.paused;
                    }
                    Err(e) => self.notify(Notice::SeekFailed(e.to_string())),
                },
            }
        }
    }

    fn notify(&self, n: Notice) {
        let _ = self.notices.try_send(n);
        (self.waker)();
    }
}
