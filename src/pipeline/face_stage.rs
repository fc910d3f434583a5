//! The face stage: finds faces in each frame with the detector and cuts the crops the model
//! takes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use image::GrayImage;

use super::{Counters, CropShape, FaceBatch, Frame, Notice, PipelineConfig, Waker, deliver};
use crate::detect::FaceDetector;
use crate::imaging::to_gray;
use crate::recognize::crop_for_model;

/// What the face-stage thread owns.
pub(super) struct FaceStage {
    pub config: PipelineConfig,
    pub lossy: bool,
    pub counters: Arc<Counters>,
    pub stop: Arc<AtomicBool>,
    /// The crops the running model takes (changes when weights are swapped).
    pub crop: Arc<CropShape>,
    pub demand: Sender<()>,
    pub frames: Receiver<Frame>,
    pub batches: Sender<FaceBatch>,
    /// The same channel's receiving end, to replace a stale batch when lossy.
    pub batches_rx: Receiver<FaceBatch>,
    pub notices: Sender<Notice>,
    pub waker: Waker,
}

impl FaceStage {
    /// Run until the frames stop coming or the pipeline stops.
    pub fn run(self) {
        // rustface's detector is not Send: it is made here, on the thread that uses it.
        let mut detector = match FaceDetector::new(self.config.detector) {
            Ok(d) => d,
            Err(e) => {
                let _ = self.notices.try_send(Notice::StageFailed(e.to_string()));
                (self.waker)();
                return;
            }
        };
        loop {
            if !self.lossy && self.demand.send(()).is_err() {
                break;
            }
            let Ok(frame) = self.frames.recv() else { break };
            let t0 = Instant::now();
            let gray: GrayImage = to_gray(&frame.rgb);
            let boxes = detector.detect(&gray);
            let (size, colour) = self.crop.get();
            let crops = crop_for_model(
                Some(&frame.rgb),
                &gray,
                &boxes,
                size,
                self.config.margin,
                colour,
            );
            let detect_ms = t0.elapsed().as_secs_f32() * 1e3;
            self.counters.detected.fetch_add(1, Ordering::Relaxed);
            let batch = FaceBatch {
                frame,
                boxes,
                crops,
                detect_ms,
            };
            if !deliver(
                &self.batches,
                &self.batches_rx,
                batch,
                self.lossy,
                &self.counters.dropped_faces,
                &self.stop,
            ) {
                break;
            }
        }
    }
}
