//! The inference thread: scores every face of a batch with the model, and swaps the model
//! when asked, keeping the running one if the new file is bad.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, select};

use super::spread::PassSpreader;
use super::{Command, Counters, CropShape, FaceBatch, Notice, Scored, ScoredFace, Waker, deliver};
use crate::model::Classifier;

/// What the inference thread owns.
pub(super) struct Inference {
    pub classifier: Classifier,
    pub lossy: bool,
    /// Spread a several-pass model's passes over the frames of each followed face (see
    /// [`super::spread`]); `None` runs every pass on every frame.
    pub spread: Option<PassSpreader>,
    pub counters: Arc<Counters>,
    pub stop: Arc<AtomicBool>,
    pub crop: Arc<CropShape>,
    pub commands: Receiver<Command>,
    pub batches: Receiver<FaceBatch>,
    pub results: Sender<Scored>,
    /// The same channel's receiving end, to replace a stale result when lossy.
    pub results_rx: Receiver<Scored>,
    pub notices: Sender<Notice>,
    pub waker: Waker,
}

impl Inference {
    /// Run until the batches stop coming or the pipeline stops.
    pub fn run(mut self) {
        // Some candle ops use rayon: keep them on this thread (see `use_own_rayon_pool`).
        crate::runtime::use_own_rayon_pool();
        let mut model: Arc<str> = self.classifier.name().into();
        loop {
            select! {
                recv(self.commands) -> cmd => match cmd {
                    Ok(Command::SwapWeights(path)) => match Classifier::load(&path) {
                        Ok(c) => {
                            self.crop.set(&c);
                            model = c.name().into();
                            self.notify(Notice::ModelLoaded {
                                name: c.name().to_string(),
                                source: path,
                                classes: c.classes().clone(),
                            });
                            self.classifier = c;
                            if let Some(s) = &mut self.spread {
                                s.reset();
                            }
                        }
                        Err(e) => self.notify(Notice::SwapFailed { path, error: e.to_string() }),
                    },
                    Err(_) => break,
                },
                recv(self.batches) -> batch => {
                    let Ok(batch) = batch else { break };
                    let t0 = Instant::now();
                    let scored = match &mut self.spread {
                        Some(s) => {
                            let ids: Vec<u64> = batch.faces.iter().map(|f| f.id).collect();
                            s.scores(&self.classifier, &ids, &batch.crops)
                        }
                        None => self.classifier.classify_crops(&batch.crops),
                    };
                    let scores = match scored {
                        Ok(s) => s,
                        Err(e) => {
                            self.notify(Notice::StageFailed(format!("inference: {e}")));
                            continue;
                        }
                    };
                    let infer_ms = t0.elapsed().as_secs_f32() * 1e3;
                    let faces = batch
                        .faces
                        .into_iter()
                        .zip(scores)
                        .map(|(f, scores)| ScoredFace {
                            id: f.id,
                            detected: f.detected,
                            bbox: f.bbox,
                            scores,
                        })
                        .collect();
                    self.counters.scored.fetch_add(1, Ordering::Relaxed);
                    let scored = Scored {
                        frame: batch.frame,
                        faces,
                        model: model.clone(),
                        detect_ms: batch.detect_ms,
                        infer_ms,
                        scored_at: Instant::now(),
                    };
                    if !deliver(
                        &self.results,
                        &self.results_rx,
                        scored,
                        self.lossy,
                        &self.counters.dropped_results,
                        &self.stop,
                    ) {
                        break;
                    }
                    (self.waker)();
                }
            }
        }
    }

    fn notify(&self, n: Notice) {
        let _ = self.notices.try_send(n);
        (self.waker)();
    }
}
