//! [`Classifier`]: a loaded model (one network, an ensemble, or an imported ONNX graph) that
//! turns face crops into [`Scores`], running a model's several passes side by side.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;
use crossbeam_channel::{Receiver, Sender};
use image::{GrayImage, RgbImage};

use super::{
    Architecture, BUILTIN_LABEL, BUILTIN_WEIGHTS, FORWARD_CHUNK, InputScaling, LoadOptions, Member,
    ModelSpec, Net, NetError, WeightsFile, build_members, meta, onnx, preprocess, weights,
};
use crate::emotion::{Classes, Emotion, Scores};
use crate::error::{Error, Result};

/// A loaded, validated emotion classifier: face crops in, [`Scores`] out.
pub struct Classifier {
    /// The networks whose probabilities are averaged: one, or an ensemble's members.
    members: Vec<Arc<Member>>,
    spec: ModelSpec,
    /// The classes of the scores, in display order (see [`Classes`]).
    classes: Classes,
    /// For each class of `classes`, its index in the network's output.
    order: Vec<usize>,
    source: PathBuf,
    device: Device,
    /// Threads that run passes side by side with the calling thread (see
    /// [`Classifier::set_parallel`]).
    lanes: Option<Lanes>,
}

impl Classifier {
    /// Load and validate a weights file (safetensors, or ONNX by its `.onnx` name or its
    /// bytes); nothing is returned unless every tensor checks out.
    pub fn load(path: &Path) -> Result<Self> {
        Self::load_with(path, &LoadOptions::default())
    }

    /// [`Classifier::load`] with the caller's word on an ONNX model's classes and scaling
    /// (`--classes`, `--input-scaling`); a safetensors file says both itself and refuses them.
    pub fn load_with(path: &Path, opts: &LoadOptions) -> Result<Self> {
        if onnx::is_onnx_file(path) {
            return Self::from_onnx(onnx::OnnxNet::load(path, opts)?);
        }
        if *opts != LoadOptions::default() {
            return Err(Error::weights(
                path,
                "--classes and --input-scaling apply to ONNX models; a safetensors file states both in its metadata",
            ));
        }
        Self::from_weights(WeightsFile::read(path)?)
    }

    /// A classifier running an imported ONNX model.
    pub fn from_onnx(net: onnx::OnnxNet) -> Result<Self> {
        let path = net.path().to_path_buf();
        let (classes, order) =
            Classes::from_model_order(net.classes()).map_err(|e| Error::weights(&path, e))?;
        let (w, h) = net.input_size();
        let mut metadata = HashMap::from([
            (meta::ARCHITECTURE.to_string(), "onnx".to_string()),
            (meta::NAME.to_string(), net.name().to_string()),
            ("onnx_description".to_string(), net.description()),
        ]);
        if let Some(n) = net.notice() {
            metadata.insert("onnx_notice".into(), n.to_string());
        }
        // The spec's class list holds Emotions only: the FER classes the model has (what
        // `train --teacher` checks); the full list is `classes()`.
        let spec = ModelSpec {
            architecture: Architecture::Onnx,
            input_size: w.max(h),
            // Unused: the ONNX model scales pixels as its own metadata says.
            scaling: InputScaling::ZeroToOne,
            classes: net
                .classes()
                .iter()
                .filter_map(|c| Emotion::from_name(c))
                .collect(),
            name: net.name().to_string(),
            bn_eps: Architecture::Onnx.default_bn_eps(),
            flip_average: false,
            metadata,
        };
        Ok(Self {
            members: vec![Arc::new(Member {
                net: Net::Onnx(Box::new(net)),
                spec: spec.clone(),
            })],
            spec,
            classes,
            order,
            source: path,
            device: Device::Cpu,
            lanes: None,
        })
    }

    /// Something to tell the user about the loaded model (an ONNX model whose classes were
    /// assumed to be FER2013's), if anything.
    pub fn notice(&self) -> Option<&str> {
        self.spec.metadata.get("onnx_notice").map(String::as_str)
    }

    /// The model compiled into the binary ([`BUILTIN_WEIGHTS`]).
    pub fn builtin() -> Result<Self> {
        Self::from_weights(WeightsFile::parse(
            BUILTIN_WEIGHTS,
            Path::new(BUILTIN_LABEL),
        )?)
    }

    /// Load from `path`, or the built-in model when `path` is `None`.
    pub fn load_or_builtin(path: Option<&Path>) -> Result<Self> {
        match path {
            Some(p) => Self::load(p),
            None => Self::builtin(),
        }
    }

    /// Build the network a parsed file describes.
    pub fn from_weights(file: WeightsFile) -> Result<Self> {
        let WeightsFile {
            path,
            spec,
            tensors,
        } = file;
        let device = Device::Cpu;
        let (backend, problem) = weights::CheckedBackend::new(tensors);
        let vb = VarBuilder::from_backend(Box::new(backend), DType::F32, device.clone());
        let members = build_members(vb, &spec).map_err(|e| {
            Error::weights(
                &path,
                match e {
                    NetError::Spec(reason) => reason,
                    NetError::Tensor(e) => problem.get().unwrap_or_else(|| e.to_string()),
                },
            )
        })?;
        let names: Vec<&str> = spec.classes.iter().map(|c| c.name()).collect();
        let (classes, order) =
            Classes::from_model_order(&names).map_err(|e| Error::weights(&path, e))?;
        let mut clf = Self {
            members,
            spec,
            classes,
            order,
            source: path,
            device,
            lanes: None,
        };
        clf.set_parallel(true);
        // A last check that the weights run and give one probability per class.
        let s = clf.spec.input_size;
        let probe = clf.raw_probs(&[GrayImage::new(s, s)], false).map_err(|e| {
            Error::weights(
                &clf.source,
                format!("the network does not run on its input size: {e}"),
            )
        })?;
        if probe.len() != 1 || probe[0].len() != clf.spec.classes.len() {
            return Err(Error::weights(
                &clf.source,
                format!(
                    "the network gives {} outputs, expected {} for the classes in its metadata",
                    probe.first().map_or(0, |p| p.len()),
                    clf.spec.classes.len()
                ),
            ));
        }
        Ok(clf)
    }

    /// What the weights file says about this model.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// The file this model was loaded from (or the built-in label).
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// Display name of the model.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The classes its scores are over, in display order.
    pub fn classes(&self) -> &Classes {
        &self.classes
    }

    /// Whether a model that needs several network passes per face (an ensemble's members, a
    /// face and its mirror image) runs them side by side: the calling thread and helper threads
    /// that live as long as the classifier (one fewer than the machine's cores, and than the
    /// passes) take the passes from a shared list until none is left. On by default: a face's
    /// scores come back sooner (README, "Speed"), for somewhat more CPU time, since cores that
    /// compute at once slow each other down. Turn it off where the caller already keeps every
    /// core busy with classifiers of its own. Where no thread can be started, the passes run
    /// one after the other. The scores do not depend on it.
    pub fn set_parallel(&mut self, on: bool) {
        // An imported model splits a call's faces across the cores itself.
        for m in &mut self.members {
            if let Some(m) = Arc::get_mut(m)
                && let Net::Onnx(net) = &mut m.net
            {
                net.set_parallel(on);
            }
        }
        if on == self.lanes.is_some() {
            return;
        }
        let passes: usize = self.members.iter().map(|m| m.passes(false).len()).sum();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let helpers = cores.min(passes).saturating_sub(1);
        // Dropping the old lanes ends their threads first.
        self.lanes = None;
        if on && helpers > 0 {
            self.lanes = Lanes::start(helpers);
        }
    }

    /// How many helper threads run passes beside the calling thread (0 when not parallel).
    pub fn helper_threads(&self) -> usize {
        self.lanes.as_ref().map_or(0, |l| l.threads.len())
    }

    /// Side of the square face crop the model takes.
    pub fn input_size(&self) -> u32 {
        self.spec.input_size
    }

    /// Run the network on a preprocessed batch `(N, 1, S, S)`; returns probabilities `(N, classes)`,
    /// averaged with the mirrored batch's when the model is `flip_average`, as
    /// [`Classifier::classify`] does (to float rounding: face and mirror go through as one batch
    /// here, as two passes there). An ensemble has no single input tensor (its members take
    /// different sizes) and returns an error here: use [`Classifier::classify`].
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let [member] = self.members.as_slice() else {
            return Err(Error::InvalidInput {
                what: self.source.display().to_string(),
                reason: "an ensemble takes face crops (Classifier::classify), not one input tensor"
                    .into(),
            });
        };
        if !member.spec.flip_average {
            return forward_chunked(&member.net, x);
        }
        let n = x.dim(0)?;
        let w = x.dim(3)?;
        let reversed: Vec<u32> = (0..w as u32).rev().collect();
        let reversed = Tensor::new(reversed.as_slice(), x.device())?;
        let both = Tensor::cat(&[x, &x.index_select(&reversed, 3)?], 0)?;
        let p = forward_chunked(&member.net, &both)?;
        Ok(((p.narrow(0, 0, n)? + p.narrow(0, n, n)?)? / 2.0)?)
    }

    /// Classify a batch of grayscale face crops (any size; resized to the input size if needed).
    /// All faces go through the network in one batch.
    pub fn classify(&self, faces: &[GrayImage]) -> Result<Vec<Scores>> {
        self.gray_scores(faces, false)
    }

    /// Scores of gray crops, each averaged with its mirror image when `mirror`.
    fn gray_scores(&self, faces: &[GrayImage], mirror: bool) -> Result<Vec<Scores>> {
        Ok(self
            .raw_probs(faces, mirror)?
            .iter()
            .map(|p| self.to_scores(p))
            .collect())
    }

    /// Whether the model takes colour: an imported model with 3 input channels. Callers that
    /// have the colour frame then crop RGB faces for [`Classifier::classify_crops`]; every other
    /// model reads grayscale.
    pub fn wants_colour(&self) -> bool {
        self.onnx_net().is_some_and(|net| net.channels() == 3)
    }

    /// The imported graph, when the model is one.
    fn onnx_net(&self) -> Option<&onnx::OnnxNet> {
        match self.members.as_slice() {
            [m] => match &m.net {
                Net::Onnx(net) => Some(net),
                _ => None,
            },
            _ => None,
        }
    }

    /// `rows` as one row of every class per face, or the error naming the network.
    fn checked_rows(&self, rows: Rows, faces: usize, name: &str) -> Result<Rows> {
        if rows.len() != faces || rows.iter().any(|r| r.len() != self.order.len()) {
            return Err(Error::weights(
                &self.source,
                format!("the network ({name}) gives outputs of the wrong shape"),
            ));
        }
        Ok(rows)
    }

    /// Classify crops in the form the caller cut them: a colour model gets colour crops as they
    /// are, any other model their grayscale (a colour model given gray crops sees the gray
    /// repeated in each channel).
    pub fn classify_crops(&self, crops: &FaceCrops) -> Result<Vec<Scores>> {
        match crops {
            FaceCrops::Gray(faces) => self.classify(faces),
            FaceCrops::Rgb(faces) => self.classify_rgb(faces),
        }
    }

    /// [`Classifier::classify`] for colour face crops.
    pub fn classify_rgb(&self, faces: &[RgbImage]) -> Result<Vec<Scores>> {
        self.rgb_scores(faces, false)
    }

    /// [`Classifier::classify_tta`] for colour face crops.
    pub fn classify_rgb_tta(&self, faces: &[RgbImage]) -> Result<Vec<Scores>> {
        self.rgb_scores(faces, true)
    }

    fn rgb_scores(&self, faces: &[RgbImage], mirror: bool) -> Result<Vec<Scores>> {
        let Some(net) = self.onnx_net() else {
            let gray: Vec<GrayImage> = faces.iter().map(crate::imaging::to_gray).collect();
            return self.gray_scores(&gray, mirror);
        };
        let rows = |faces: &[RgbImage]| -> Result<Rows> {
            let crops: Vec<onnx::FaceCrop> = faces.iter().map(onnx::FaceCrop::Rgb).collect();
            self.checked_rows(net.probs(&crops)?, faces.len(), &self.spec.name)
        };
        let mut probs = rows(faces)?;
        if mirror {
            let flipped: Vec<RgbImage> =
                faces.iter().map(image::imageops::flip_horizontal).collect();
            for (row, other) in probs.iter_mut().zip(rows(&flipped)?) {
                row.iter_mut()
                    .zip(other)
                    .for_each(|(a, b)| *a = (*a + b) / 2.0);
            }
        }
        Ok(probs.iter().map(|p| self.to_scores(p)).collect())
    }

    /// Probabilities per face in the model's class order; an ensemble averages its members,
    /// each fed at its own input size. `mirror` averages every member with the mirror images
    /// (test-time augmentation), as `flip_average` does for some.
    fn raw_probs(&self, faces: &[GrayImage], mirror: bool) -> Result<Rows> {
        if faces.is_empty() {
            return Ok(Vec::new());
        }
        let per_pass = self.all_pass_rows(faces, mirror)?;
        let counts = self.pass_counts(mirror);
        (0..faces.len())
            .map(|f| self.combine(&counts, |p| &per_pass[p][f], f, faces.len()))
            .collect()
    }

    /// Every pass's rows for `faces`, in pass order (member by member, each member's face
    /// before its mirror image), run side by side on the lanes when there are any.
    fn all_pass_rows(&self, faces: &[GrayImage], mirror: bool) -> Result<Vec<Rows>> {
        let passes: Vec<Pass> = self.members.iter().flat_map(|m| m.passes(mirror)).collect();
        let names: Vec<Arc<Member>> = passes.iter().map(|p| Arc::clone(&p.member)).collect();
        let results = match &self.lanes {
            Some(lanes) => lanes.run(passes, faces, &self.device),
            None => passes
                .iter()
                .map(|p| p.probs(faces, &self.device))
                .collect(),
        };
        results
            .into_iter()
            .zip(names)
            .map(|(rows, m)| self.checked_rows(rows?, faces.len(), &m.spec.name))
            .collect()
    }

    /// How many passes each member makes.
    fn pass_counts(&self, mirror: bool) -> Vec<usize> {
        self.members
            .iter()
            .map(|m| m.passes(mirror).len())
            .collect()
    }

    /// One face's probabilities from its row of each pass (`row(p)` for pass `p`): each member
    /// the mean of its passes, the members averaged. `face` of `faces` names it in errors.
    fn combine<'a>(
        &self,
        counts: &[usize],
        row: impl Fn(usize) -> &'a [f32],
        face: usize,
        faces: usize,
    ) -> Result<Vec<f32>> {
        let mut sum = vec![0f32; self.order.len()];
        let mut p = 0;
        for &count in counts {
            let mut probs = row(p).to_vec();
            for i in 1..count {
                probs.iter_mut().zip(row(p + i)).for_each(|(a, b)| *a += b);
            }
            if count > 1 {
                probs.iter_mut().for_each(|v| *v /= count as f32);
            }
            sum.iter_mut().zip(&probs).for_each(|(a, v)| *a += v);
            p += count;
        }
        let k = self.members.len().max(1) as f32;
        sum.iter_mut().for_each(|v| *v /= k);
        // A NaN would otherwise leave as a row of scores ("angry (NaN%)").
        if sum.iter().any(|v| !v.is_finite()) {
            return Err(Error::weights(
                &self.source,
                format!(
                    "model {} gave a non-finite score for face {} of {}: the network overflows on it, so it has no scores",
                    crate::text::printable(&self.spec.name),
                    face + 1,
                    faces
                ),
            ));
        }
        Ok(sum)
    }

    /// How many network passes a face costs: each member once, or twice when it averages the
    /// face with its mirror image. Callers that follow a face over frames may run these one
    /// at a time ([`Classifier::pass_probs`]) and combine the latest row of each
    /// ([`Classifier::scores_from_passes`]).
    pub fn pass_count(&self) -> usize {
        self.pass_counts(false).iter().sum()
    }

    /// Pass `pass` alone (of [`Classifier::pass_count`]) over gray faces: one row per face,
    /// in the network's class order, for [`Classifier::scores_from_passes`]. An error when
    /// `pass` is out of range.
    pub fn pass_probs(&self, faces: &[GrayImage], pass: usize) -> Result<Vec<Vec<f32>>> {
        let Some(p) = self.members.iter().flat_map(|m| m.passes(false)).nth(pass) else {
            return Err(Error::InvalidInput {
                what: self.source.display().to_string(),
                reason: format!("pass {pass}: the model makes {} passes", self.pass_count()),
            });
        };
        if faces.is_empty() {
            return Ok(Vec::new());
        }
        let rows = p.probs(faces, &self.device)?;
        self.checked_rows(rows, faces.len(), &p.member.spec.name)
    }

    /// Every pass's rows for gray faces at once (the passes side by side, as
    /// [`Classifier::classify`] runs them): `result[pass][face]`.
    pub fn all_pass_probs(&self, faces: &[GrayImage]) -> Result<Vec<Vec<Vec<f32>>>> {
        if faces.is_empty() {
            return Ok(vec![Vec::new(); self.pass_count()]);
        }
        self.all_pass_rows(faces, false)
    }

    /// A face's scores from one row of each pass, combined as [`Classifier::classify`] does;
    /// the same rows give the same scores. An error when a row is missing or of the wrong
    /// length, or the result is not finite.
    pub fn scores_from_passes(&self, rows: &[&[f32]]) -> Result<Scores> {
        self.scores_of_face(rows, 0, 1)
    }

    /// [`Classifier::scores_from_passes`] for face `face` of a frame's `faces`, which its
    /// errors name.
    pub(crate) fn scores_of_face(
        &self,
        rows: &[&[f32]],
        face: usize,
        faces: usize,
    ) -> Result<Scores> {
        let classes = self.order.len();
        if rows.len() != self.pass_count() || rows.iter().any(|r| r.len() != classes) {
            return Err(Error::InvalidInput {
                what: self.source.display().to_string(),
                reason: format!(
                    "expected {} rows of {classes} probabilities, one per pass",
                    self.pass_count()
                ),
            });
        }
        let p = self.combine(&self.pass_counts(false), |i| rows[i], face, faces)?;
        Ok(self.to_scores(&p))
    }

    /// Like [`Classifier::classify`], averaging each face with its mirror image (test-time
    /// augmentation). A member that is already `flip_average` runs once, not on both again.
    pub fn classify_tta(&self, faces: &[GrayImage]) -> Result<Vec<Scores>> {
        self.gray_scores(faces, true)
    }

    /// Map one output row (in the network's class order) into scores in display order.
    fn to_scores(&self, p: &[f32]) -> Scores {
        let probs = self.order.iter().map(|&i| p[i]).collect();
        Scores::new(self.classes.clone(), probs)
    }
}

/// A frame's face crops, cut for the running model: grayscale, or colour for a model that
/// [wants colour](Classifier::wants_colour).
#[derive(Debug, Clone)]
pub enum FaceCrops {
    Gray(Vec<GrayImage>),
    Rgb(Vec<RgbImage>),
}

impl FaceCrops {
    /// How many faces.
    pub fn len(&self) -> usize {
        match self {
            FaceCrops::Gray(v) => v.len(),
            FaceCrops::Rgb(v) => v.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Probabilities per face, one row of the network's classes each.
type Rows = Vec<Vec<f32>>;

impl Member {
    /// The passes this member makes over a batch: the faces, and their mirror images where the
    /// member is `flip_average` or the caller asks for `mirror` (test-time augmentation).
    fn passes(self: &Arc<Self>, mirror: bool) -> Vec<Pass> {
        let both = self.spec.flip_average || mirror;
        [false, true]
            .into_iter()
            .take(1 + usize::from(both))
            .map(|mirrored| Pass {
                member: Arc::clone(self),
                mirrored,
            })
            .collect()
    }
}

/// One network pass: a member's probabilities for the faces, or for their mirror images.
struct Pass {
    member: Arc<Member>,
    mirrored: bool,
}

impl Pass {
    /// The member's probabilities for `faces` (mirrored first if this is a mirror pass).
    fn probs(&self, faces: &[GrayImage], device: &Device) -> Result<Rows> {
        if let Net::Onnx(net) = &self.member.net {
            let flipped: Vec<GrayImage>;
            let faces = if self.mirrored {
                flipped = faces.iter().map(crate::imaging::flip_horizontal).collect();
                &flipped
            } else {
                faces
            };
            let crops: Vec<onnx::FaceCrop> = faces.iter().map(onnx::FaceCrop::Gray).collect();
            return net.probs(&crops);
        }
        let x = if self.mirrored {
            let flipped: Vec<GrayImage> =
                faces.iter().map(crate::imaging::flip_horizontal).collect();
            preprocess::batch_tensor(&flipped, &self.member.spec, device)?
        } else {
            preprocess::batch_tensor(faces, &self.member.spec, device)?
        };
        Ok(forward_chunked(&self.member.net, &x)?.to_vec2::<f32>()?)
    }
}

/// One call's passes, shared by the threads that run them: each takes the next pass not yet
/// taken, so a thread that finishes early takes more.
struct Call {
    faces: Arc<[GrayImage]>,
    passes: Vec<Pass>,
    /// Index of the next pass nobody has taken yet.
    next: AtomicUsize,
    /// One slot per pass; `None` until a thread has run it.
    results: Mutex<Vec<Option<Result<Rows>>>>,
    device: Device,
}

impl Call {
    /// Run passes until none is left.
    fn work(&self) {
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            let Some(pass) = self.passes.get(i) else {
                return;
            };
            let probs = pass.probs(&self.faces, &self.device);
            if let Ok(mut results) = self.results.lock() {
                results[i] = Some(probs);
            }
        }
    }
}

/// Threads that help the calling thread run a call's passes, for the classifier's lifetime;
/// dropping this ends and joins them.
struct Lanes {
    calls: Vec<Sender<(Arc<Call>, Sender<()>)>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Lanes {
    /// `helpers` threads; `None` if any cannot be started.
    fn start(helpers: usize) -> Option<Self> {
        let mut lanes = Self {
            calls: Vec::with_capacity(helpers),
            threads: Vec::with_capacity(helpers),
        };
        for i in 0..helpers {
            // Several threads may share one classifier; their calls wait their turn here.
            let (tx, rx) = crossbeam_channel::bounded::<(Arc<Call>, Sender<()>)>(2);
            let thread = std::thread::Builder::new()
                .name(format!("classify-lane-{}", i + 1))
                .spawn(move || {
                    crate::runtime::use_own_rayon_pool();
                    for (call, done) in rx {
                        call.work();
                        // The caller may be gone; nothing to tell then.
                        let _ = done.send(());
                    }
                })
                .ok()?;
            lanes.calls.push(tx);
            lanes.threads.push(thread);
        }
        Some(lanes)
    }

    /// Every pass's probabilities for `faces`, in order, the calling thread taking passes
    /// beside the lanes. A pass a lane took but never finished (it panicked) runs here.
    fn run(&self, passes: Vec<Pass>, faces: &[GrayImage], device: &Device) -> Vec<Result<Rows>> {
        let n = passes.len();
        let call = Arc::new(Call {
            faces: faces.into(),
            passes,
            next: AtomicUsize::new(0),
            results: Mutex::new((0..n).map(|_| None).collect()),
            device: device.clone(),
        });
        let waits: Vec<Receiver<()>> = self
            .calls
            .iter()
            .take(n.saturating_sub(1))
            .filter_map(|tx| {
                let (done, wait) = crossbeam_channel::bounded(1);
                // A lane with calls of other threads queued is skipped rather than waited for.
                tx.try_send((Arc::clone(&call), done)).ok().map(|_| wait)
            })
            .collect();
        call.work();
        for w in waits {
            // An error means the lane is gone; its pass, if any, is redone below.
            let _ = w.recv();
        }
        let results = match call.results.lock() {
            Ok(mut r) => std::mem::take(&mut *r),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        };
        results
            .into_iter()
            .zip(&call.passes)
            .map(|(r, pass)| r.unwrap_or_else(|| pass.probs(faces, device)))
            .collect()
    }
}

impl Drop for Lanes {
    fn drop(&mut self) {
        // Closing the call channels ends the threads' loops.
        self.calls.clear();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Softmax of `net` over `x`, in chunks of [`FORWARD_CHUNK`] faces.
fn forward_chunked(net: &Net, x: &Tensor) -> Result<Tensor> {
    let n = x.dim(0)?;
    let chunk = FORWARD_CHUNK;
    let logits = if n <= chunk {
        net.forward(x)?
    } else {
        let parts = (0..n)
            .step_by(chunk)
            .map(|i| net.forward(&x.narrow(0, i, chunk.min(n - i))?))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Tensor::cat(&parts, 0)?
    };
    Ok(candle_nn::ops::softmax_last_dim(&logits)?)
}

/// Where a weights path came from, for messages: the path, or the built-in label.
pub fn describe_source(path: Option<&Path>) -> String {
    path.map(|p| p.display().to_string())
        .unwrap_or_else(|| BUILTIN_LABEL.to_string())
}
