//! ONNX classifiers: importing the models other tools make (PyTorch, Keras through tf2onnx,
//! FER+ and AffectNet models) and exporting ours, so that one file runs here, in onnxruntime,
//! in OpenCV's DNN module or in a browser.
//!
//! Import ([`OnnxNet::load`]) reads and types the graph with tract-onnx (pure Rust) and runs it
//! on emocam's own batched kernels where every operator lowers onto them (`native`, checked
//! against tract's scores when the model loads), else in tract's optimised plan; a call's
//! faces split across the cores, see [`OnnxNet::set_parallel`]. The graph must have one image input, `(N, C, H, W)` or
//! `(N, H, W, C)` float32 with 1 (gray) or 3 (RGB) channels, fixed height and width and any
//! batch, and one output of class scores. What the graph cannot say comes from its
//! `metadata_props` ([`meta`]): `name`, `classes`, `input_scaling`. Export
//! ([`export::export_onnx`]) writes our VGG, mini-Xception and ensembles as one graph each.

pub mod export;
mod graph;
pub mod import;
pub mod meta;
mod native;

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use image::{GrayImage, RgbImage};
use tract_onnx::prelude::{Tensor, TractError, TractResult, tvec};

use crate::error::{Error, Result};
use crate::imaging::{resize_gray, to_gray};
pub use export::{ExportOptions, export_onnx, export_onnx_bytes};
pub use import::{Batch, Layout};
pub use meta::{OnnxMeta, OnnxOptions, OnnxScaling, Origin};

/// One face crop for an imported model, in whatever form the caller has it: a 1-channel model
/// takes the gray image (an RGB crop is grayscaled with BT.601), a 3-channel model the RGB one
/// (a gray crop is repeated in all three channels, so such a model sees no colour).
#[derive(Debug, Clone, Copy)]
pub enum FaceCrop<'a> {
    Gray(&'a GrayImage),
    Rgb(&'a RgbImage),
}

/// Whether the graph's scores are probabilities already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SoftmaxFrom {
    /// The graph's last operator is a softmax.
    LastOp,
    /// The graph ends otherwise, but its scores on probe inputs are non-negative and sum to 1.
    Probe,
    /// The graph gives logits; emocam applies the softmax.
    Applied,
}

/// A loaded, checked ONNX classifier: face crops in, probabilities per class out.
pub struct OnnxNet {
    path: PathBuf,
    meta: OnnxMeta,
    shape: import::GraphShape,
    /// Plans by batch size, largest first.
    plans: Vec<(usize, import::Plan)>,
    /// `(multiplier, offset)` per channel.
    affine: Vec<(f32, f32)>,
    softmax: SoftmaxFrom,
    notice: Option<String>,
    /// Threads a call's faces are split across, the calling thread included.
    threads: usize,
    /// The graph on emocam's own kernels, when it lowers and matched tract on the probes.
    native: Option<native::NativePlan>,
    /// Why the graph runs in tract, when it does.
    tract_why: Option<String>,
    /// Whether calls use `native` when there is one ([`OnnxNet::set_native`]).
    use_native: bool,
}

/// Which engine runs an imported model's faces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// emocam's own batched kernels, the graph lowered onto them (checked against tract's
    /// scores on probe faces when the model loaded).
    Native,
    /// tract's optimised plan.
    Tract,
}

impl OnnxNet {
    /// Load and check the ONNX file at `path`; `opts` override what the file and its sidecar
    /// (`model.onnx` -> `model.json`) say. Nothing is returned unless the graph runs on probe
    /// faces and gives finite scores, one per class.
    pub fn load(path: &Path, opts: &OnnxOptions) -> Result<Self> {
        let fail = |reason: String| Error::weights(path, reason);
        let proto = import::read_proto(path).map_err(fail)?;
        Self::from_proto(path, &proto, opts)
    }

    /// [`OnnxNet::load`] from bytes already in memory; `path` names the model in messages and
    /// locates its sidecar.
    pub fn from_bytes(path: &Path, bytes: &[u8], opts: &OnnxOptions) -> Result<Self> {
        let proto = import::decode_proto(bytes).map_err(|r| Error::weights(path, r))?;
        Self::from_proto(path, &proto, opts)
    }

    fn from_proto(
        path: &Path,
        proto: &tract_onnx::pb::ModelProto,
        opts: &OnnxOptions,
    ) -> Result<Self> {
        let fail = |reason: String| Error::weights(path, reason);
        let graph = proto
            .graph
            .as_ref()
            .ok_or_else(|| fail("not an ONNX model: it has no graph".into()))?;
        let shape = import::inspect(graph).map_err(fail)?;
        let model = import::to_inference_model(proto).map_err(fail)?;
        let sizes: Vec<usize> = match shape.batch {
            import::Batch::Fixed(b) => vec![b],
            import::Batch::Any(_) => import::PLAN_BATCHES.to_vec(),
        };
        let mut plans = Vec::with_capacity(sizes.len());
        let mut outputs = None;
        for b in sizes {
            let (plan, out) = import::plan_for(&model, &shape, b).map_err(fail)?;
            let k = import::scores_per_face(&out, b).map_err(fail)?;
            if outputs.is_some_and(|o| o != k) {
                return Err(fail(format!(
                    "the output has {k} scores per face at batch {b}, but a different count at another batch"
                )));
            }
            outputs = Some(k);
            plans.push((b, plan));
        }
        let outputs = outputs.ok_or_else(|| fail("no batch size to plan for".into()))?;

        let file_props: std::collections::HashMap<String, String> = proto
            .metadata_props
            .iter()
            .map(|e| (e.key.clone(), e.value.clone()))
            .collect();
        let sidecar = meta::read_sidecar(path).map_err(fail)?;
        let meta =
            meta::resolve(path, &file_props, sidecar.as_ref(), opts, outputs).map_err(fail)?;
        let affine = meta.scaling.affine(shape.channels).map_err(fail)?;
        let notice = (meta.classes_from == Origin::Assumed).then(|| {
            format!(
                "{}: no class names in the file, a sidecar or --classes; its 7 outputs are taken to be FER2013's order ({})",
                path.display(),
                meta.classes.join(", ")
            )
        });
        let mut net = Self {
            path: path.to_path_buf(),
            meta,
            shape,
            plans,
            affine,
            softmax: SoftmaxFrom::Applied,
            notice,
            threads: 1,
            native: None,
            tract_why: None,
            use_native: true,
        };
        net.set_parallel(true);
        net.softmax = net.probe()?;
        match native::NativePlan::lower(graph, &net.shape) {
            Ok(plan) if plan.outputs() == outputs => {
                net.native = Some(plan);
                net.tract_why = net.check_native();
                if net.tract_why.is_some() {
                    net.native = None;
                }
            }
            Ok(plan) => {
                net.tract_why = Some(format!(
                    "the lowered graph gives {} scores, tract {outputs}",
                    plan.outputs()
                ))
            }
            Err(why) => net.tract_why = Some(why),
        }
        Ok(net)
    }

    /// Run the graph on probe faces (mid-gray and a colour gradient): every score must be
    /// finite; tells whether the scores are probabilities already.
    fn probe(&self) -> Result<SoftmaxFrom> {
        let (gray, rgb) = self.probe_faces();
        let rows = self
            .raw_scores(&[FaceCrop::Gray(&gray), FaceCrop::Rgb(&rgb)])
            .map_err(|e| match e {
                Error::Weights { path, reason } => Error::Weights {
                    path,
                    reason: format!("on a probe input: {reason}"),
                },
                other => other,
            })?;
        if self.shape.last_op == "Softmax" {
            return Ok(SoftmaxFrom::LastOp);
        }
        let probabilities = rows.iter().all(|r| {
            r.iter().all(|&v| v >= 0.0)
                && (r.iter().map(|&v| v as f64).sum::<f64>() - 1.0).abs() < 1e-3
        });
        Ok(if probabilities {
            SoftmaxFrom::Probe
        } else {
            SoftmaxFrom::Applied
        })
    }

    /// Probe faces of the model's size: mid-gray, and a colour gradient.
    fn probe_faces(&self) -> (GrayImage, RgbImage) {
        let (w, h) = (self.shape.width as u32, self.shape.height as u32);
        let gray = GrayImage::from_pixel(w, h, image::Luma([128]));
        let rgb = RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([
                (x * 255 / w.max(1)) as u8,
                (y * 255 / h.max(1)) as u8,
                ((x + y) * 97 % 256) as u8,
            ])
        });
        (gray, rgb)
    }

    /// Compare the lowered graph with tract on probe faces, one batch of them on the lowered
    /// graph (so that batching is checked too); `None` when every score agrees within 1e-4
    /// (relative to the score's size above 1) and every score above 1e-3 within 0.1% of its
    /// size (so that a saturated softmax does not hide a difference), else why not.
    fn check_native(&self) -> Option<String> {
        let (gray, rgb) = self.probe_faces();
        let (w, h) = gray.dimensions();
        let texture = GrayImage::from_fn(w, h, |x, y| {
            image::Luma([((x * 37 + y * 91 + x * y) % 256) as u8])
        });
        // A bright oval on a dark ground, with darker eyes and mouth: something face-like.
        let blob = GrayImage::from_fn(w, h, |x, y| {
            let (u, v) = (x as f32 / w as f32 - 0.5, y as f32 / h as f32 - 0.5);
            let eye = |cx: f32| ((u - cx).powi(2) + (v + 0.1).powi(2)) < 0.004;
            let mouth = v > 0.15 && v < 0.2 && u.abs() < 0.15;
            let inside = u * u / 0.12 + v * v / 0.2 < 1.0;
            image::Luma([match (inside, eye(-0.15) || eye(0.15) || mouth) {
                (true, true) => 60,
                (true, false) => 200,
                (false, _) => 30,
            }])
        });
        let faces = [
            FaceCrop::Gray(&texture),
            FaceCrop::Gray(&blob),
            FaceCrop::Gray(&gray),
            FaceCrop::Rgb(&rgb),
        ];
        let tract = match self.run_tract(&faces, 0) {
            Ok(rows) => rows,
            Err(e) => return Some(format!("tract failed on the probes: {e}")),
        };
        let native = match self.run_native(&faces, 0) {
            Ok(rows) => rows,
            Err(e) => return Some(format!("the lowered graph failed on the probes: {e}")),
        };
        let pairs = || tract.iter().flatten().zip(native.iter().flatten());
        let worst = pairs()
            .map(|(a, b)| (a - b).abs() / a.abs().max(1.0))
            .fold(0f32, f32::max);
        let worst_share = pairs()
            .filter(|(a, b)| a.abs().max(b.abs()) > 1e-3)
            .map(|(a, b)| (a - b).abs() / a.abs().max(b.abs()))
            .fold(0f32, f32::max);
        (tract.len() != native.len() || worst > 1e-4 || worst_share > 1e-3).then(|| {
            format!(
                "the lowered graph's scores differ from tract's by {worst:.2e} on the probes (at most {:.3}% of a score)",
                100.0 * worst_share
            )
        })
    }

    /// Whether calls run on emocam's own kernels when the graph lowered onto them (on by
    /// default; off runs every call in tract, to compare the two).
    pub fn set_native(&mut self, on: bool) {
        self.use_native = on;
    }

    /// The engine that runs this model's calls now.
    pub fn engine(&self) -> Engine {
        if self.use_native && self.native.is_some() {
            Engine::Native
        } else {
            Engine::Tract
        }
    }

    /// Why the graph is not run on emocam's own kernels (the first operator or shape the
    /// lowering does not take, or a mismatch with tract), when it is not.
    pub fn tract_reason(&self) -> Option<&str> {
        self.tract_why.as_deref()
    }

    /// Whether a call with several faces splits them across the machine's cores (at most one
    /// thread per face): the calling thread takes the first share, scoped threads started for
    /// the call the others. On by default: eight faces come back in about half the time on two
    /// idle cores (docs/onnx.md, "Speed"); turn it off where the caller keeps every core busy
    /// already. Each face runs through the same plan either way, so the scores do not depend
    /// on it; where no thread can be started, the faces run one share after the other.
    pub fn set_parallel(&mut self, on: bool) {
        self.threads = if on {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            1
        };
    }

    /// Probabilities per face, one row of [`OnnxNet::classes`] each. Each crop is resized to
    /// the model's height and width with [`crate::imaging::resize_gray`] (per channel), scaled
    /// as its metadata says and laid out as its input asks. A NaN or infinite score fails the
    /// call.
    pub fn probs(&self, faces: &[FaceCrop]) -> Result<Vec<Vec<f32>>> {
        let mut rows = self.raw_scores(faces)?;
        if self.softmax == SoftmaxFrom::Applied {
            rows.iter_mut().for_each(|r| softmax_in_place(r));
        }
        Ok(rows)
    }

    /// The graph's scores per face, checked finite; the faces split across
    /// [`OnnxNet::set_parallel`]'s threads.
    fn raw_scores(&self, faces: &[FaceCrop]) -> Result<Vec<Vec<f32>>> {
        let threads = self.threads.min(faces.len());
        // Shares in whole multiples of the smallest plan, so that splitting never pads: a graph
        // with a fixed batch of 8 runs 8 faces as one share.
        let unit = self.plans.last().map_or(1, |(b, _)| (*b).max(1));
        let share = faces.len().div_ceil(threads.max(1)).next_multiple_of(unit);
        if threads <= 1 || share >= faces.len() {
            return self.run_faces(faces, 0);
        }
        std::thread::scope(|s| {
            let mut shares = faces.chunks(share).enumerate();
            let own = shares.next().map_or(&[][..], |(_, c)| c);
            // A share whose thread cannot be started runs on the calling thread afterwards.
            let helpers: Vec<_> = shares
                .map(|(i, chunk)| {
                    let first = i * share;
                    std::thread::Builder::new()
                        .name("emocam-onnx".into())
                        .spawn_scoped(s, move || self.run_faces(chunk, first))
                        .map_err(|_| (chunk, first))
                })
                .collect();
            let mut rows = self.run_faces(own, 0)?;
            for h in helpers {
                let part = match h {
                    Ok(h) => h.join().map_err(|_| {
                        Error::weights(&self.path, "a thread running the model panicked")
                    })??,
                    Err((chunk, first)) => self.run_faces(chunk, first)?,
                };
                rows.extend(part);
            }
            Ok(rows)
        })
    }

    /// The graph's scores for `faces` on this thread, checked finite; `first` is the index of
    /// `faces[0]` in the call, for messages.
    fn run_faces(&self, faces: &[FaceCrop], first: usize) -> Result<Vec<Vec<f32>>> {
        if self.engine() == Engine::Native {
            self.run_native(faces, first)
        } else {
            self.run_tract(faces, first)
        }
    }

    /// [`OnnxNet::run_faces`] on the lowered graph: all of `faces` as one batch.
    fn run_native(&self, faces: &[FaceCrop], first: usize) -> Result<Vec<Vec<f32>>> {
        let plan = self
            .native
            .as_ref()
            .ok_or_else(|| Error::weights(&self.path, "the graph is not lowered"))?;
        let (c, plane) = (self.shape.channels, self.shape.height * self.shape.width);
        let n = faces.len();
        // Channel-major, as the kernels take it: (C, N, H, W).
        let mut data = vec![0f32; c * n * plane];
        for (i, face) in faces.iter().enumerate() {
            for (ch, (p, &(mul, add))) in self.planes(face).iter().zip(&self.affine).enumerate() {
                data[(ch * n + i) * plane..][..plane]
                    .iter_mut()
                    .zip(p.as_raw())
                    .for_each(|(d, &v)| *d = v as f32 * mul + add);
            }
        }
        let dims = (c, n, self.shape.height, self.shape.width);
        let pixels = candle_core::Tensor::from_vec(data, dims, &candle_core::Device::Cpu)
            .map_err(|e| Error::weights(&self.path, format!("input tensor: {e}")))?;
        let rows = plan
            .run(pixels)
            .map_err(|e| Error::weights(&self.path, e))?;
        if rows.len() != n {
            return Err(Error::weights(
                &self.path,
                format!("the lowered graph gave {} rows for {n} faces", rows.len()),
            ));
        }
        for (i, row) in rows.iter().enumerate() {
            self.check_finite(row, first + i)?;
        }
        Ok(rows)
    }

    /// A face's scores must be finite; `index` counts from 0 in the call.
    fn check_finite(&self, row: &[f32], index: usize) -> Result<()> {
        match row.iter().position(|v| !v.is_finite()) {
            Some(bad) => Err(Error::weights(
                &self.path,
                format!(
                    "the model gave a non-finite score ({}) for class {:?} of face {}",
                    row[bad],
                    self.meta.classes[bad],
                    index + 1
                ),
            )),
            None => Ok(()),
        }
    }

    /// [`OnnxNet::run_faces`] in tract.
    fn run_tract(&self, faces: &[FaceCrop], first: usize) -> Result<Vec<Vec<f32>>> {
        let k = self.meta.classes.len();
        let mut rows = Vec::with_capacity(faces.len());
        let mut rest = faces;
        while !rest.is_empty() {
            // The largest plan that fits, or the smallest (padded) when none does.
            let &(b, ref plan) = self
                .plans
                .iter()
                .find(|(b, _)| *b <= rest.len())
                .or(self.plans.last())
                .ok_or_else(|| Error::weights(&self.path, "no plan to run"))?;
            let take = b.min(rest.len());
            let (chunk, tail) = rest.split_at(take);
            rest = tail;
            let input = self.input_tensor(chunk, b).map_err(|e| self.run_error(e))?;
            let out = plan
                .run(tvec!(input.into()))
                .map_err(|e| self.run_error(e))?;
            let view = out
                .first()
                .ok_or_else(|| Error::weights(&self.path, "the graph gave no output"))?
                .try_as_plain_ram()
                .map_err(|e| self.run_error(e))?;
            let scores = view.as_slice::<f32>().map_err(|e| self.run_error(e))?;
            if scores.len() != b * k {
                return Err(Error::weights(
                    &self.path,
                    format!(
                        "the graph gave {} scores for {b} faces, expected {}",
                        scores.len(),
                        b * k
                    ),
                ));
            }
            for (i, row) in scores.chunks_exact(k).take(take).enumerate() {
                self.check_finite(row, first + rows.len() + i)?;
            }
            rows.extend(scores.chunks_exact(k).take(take).map(<[f32]>::to_vec));
        }
        Ok(rows)
    }

    fn run_error(&self, e: TractError) -> Error {
        Error::weights(
            &self.path,
            format!("tract failed to run the model: {}", import::chain(&e)),
        )
    }

    /// The input tensor for `faces`, padded with blank faces to `batch`.
    fn input_tensor(&self, faces: &[FaceCrop], batch: usize) -> TractResult<Tensor> {
        let (c, h, w) = (self.shape.channels, self.shape.height, self.shape.width);
        let plane = h * w;
        let mut data = vec![0f32; batch * c * plane];
        for (i, face) in faces.iter().enumerate() {
            let planes = self.planes(face);
            let item = &mut data[i * c * plane..][..c * plane];
            for (ch, (p, &(mul, add))) in planes.iter().zip(&self.affine).enumerate() {
                let px = p.as_raw().iter().map(|&v| v as f32 * mul + add);
                match self.shape.layout {
                    Layout::Nchw => item[ch * plane..][..plane]
                        .iter_mut()
                        .zip(px)
                        .for_each(|(d, v)| *d = v),
                    Layout::Nhwc => item[ch..]
                        .iter_mut()
                        .step_by(c)
                        .zip(px)
                        .for_each(|(d, v)| *d = v),
                }
            }
        }
        Tensor::from_shape(&import::input_dims(&self.shape, batch), &data)
    }

    /// The face as the model's channels, each resized to its input (borrowed when it fits).
    fn planes<'a>(&self, face: &FaceCrop<'a>) -> Vec<Cow<'a, GrayImage>> {
        let (w, h) = (self.shape.width as u32, self.shape.height as u32);
        let fit = |g: Cow<'a, GrayImage>| {
            if g.dimensions() == (w, h) {
                g
            } else {
                Cow::Owned(resize_gray(&g, w, h))
            }
        };
        match (self.shape.channels, *face) {
            (1, FaceCrop::Gray(g)) => vec![fit(Cow::Borrowed(g))],
            (1, FaceCrop::Rgb(rgb)) => vec![fit(Cow::Owned(to_gray(rgb)))],
            (_, FaceCrop::Gray(g)) => {
                let one = fit(Cow::Borrowed(g));
                vec![one.clone(), one.clone(), one]
            }
            (_, FaceCrop::Rgb(rgb)) => (0..3)
                .map(|ch| {
                    let (rw, rh) = rgb.dimensions();
                    let raw: Vec<u8> = rgb.as_raw().iter().skip(ch).step_by(3).copied().collect();
                    // A buffer of rw*rh bytes always fits rw x rh.
                    let plane =
                        GrayImage::from_raw(rw, rh, raw).unwrap_or_else(|| GrayImage::new(rw, rh));
                    fit(Cow::Owned(plane))
                })
                .collect(),
        }
    }

    /// The file the model was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Display name (metadata `name`, else the file name).
    pub fn name(&self) -> &str {
        &self.meta.name
    }

    /// Class names in output order.
    pub fn classes(&self) -> &[String] {
        &self.meta.classes
    }

    /// Name, classes and scaling, and where each came from.
    pub fn meta(&self) -> &OnnxMeta {
        &self.meta
    }

    /// `(width, height)` of the model's input.
    pub fn input_size(&self) -> (u32, u32) {
        (self.shape.width as u32, self.shape.height as u32)
    }

    /// 1 (gray) or 3 (RGB).
    pub fn channels(&self) -> usize {
        self.shape.channels
    }

    /// The input layout.
    pub fn layout(&self) -> Layout {
        self.shape.layout
    }

    /// The batch dimension of the input.
    pub fn batch(&self) -> &Batch {
        &self.shape.batch
    }

    /// Whether the graph gives probabilities itself, and how that was found.
    pub fn softmax(&self) -> SoftmaxFrom {
        self.softmax
    }

    /// Something the user should be told about this model, e.g. that its classes were assumed
    /// to be FER2013's.
    pub fn notice(&self) -> Option<&str> {
        self.notice.as_deref()
    }

    /// One line describing the model as loaded.
    pub fn description(&self) -> String {
        let batch = match &self.shape.batch {
            Batch::Any(name) => format!(
                "any batch ({name}; plans for {})",
                self.plans
                    .iter()
                    .map(|(b, _)| b.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Batch::Fixed(b) => format!("fixed batch {b}"),
        };
        let softmax = match self.softmax {
            SoftmaxFrom::LastOp => "softmax in the graph (last op)",
            SoftmaxFrom::Probe => "softmax in the graph (probe scores sum to 1)",
            SoftmaxFrom::Applied => "softmax applied by emocam (the graph gives logits)",
        };
        let engine = match (self.engine(), &self.tract_why) {
            (Engine::Native, _) => "run on emocam's kernels".to_string(),
            (Engine::Tract, Some(why)) => format!("run in tract ({why})"),
            (Engine::Tract, None) => "run in tract".to_string(),
        };
        format!(
            "ONNX {:?}: {} {}x{}x{} {}, {batch}; scaling {} ({}); {} classes ({}): {}; {softmax}; {engine}",
            self.meta.name,
            self.shape.layout.name(),
            self.shape.channels,
            self.shape.height,
            self.shape.width,
            if self.shape.channels == 1 {
                "gray"
            } else {
                "RGB"
            },
            self.meta.scaling.describe(),
            self.meta.scaling_from.word(),
            self.meta.classes.len(),
            self.meta.classes_from.word(),
            self.meta.classes.join(", ")
        )
    }
}

/// Softmax of one row, in place (max subtracted first, so large logits do not overflow).
fn softmax_in_place(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    row.iter_mut().for_each(|v| *v /= sum);
}

/// Whether `path` is to be read as ONNX: by its `.onnx` extension, or by its first bytes
/// (an ONNX file starts with its IR version, protobuf field 1, byte 0x08; a safetensors file
/// with its header length and, at byte 8, the header's `{`).
pub fn is_onnx_file(path: &Path) -> bool {
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
    {
        return true;
    }
    // Not a regular file (a FIFO, a device): left to the safetensors reader, which refuses it
    // without blocking on it.
    let Ok(mut f) = crate::imaging::open_regular(path, u64::MAX, "a model file") else {
        return false;
    };
    let mut head = [0u8; 9];
    std::io::Read::read_exact(&mut f, &mut head).is_ok() && head[0] == 0x08 && head[8] != b'{'
}
