//! Writing our own models as ONNX: the VGG, the mini-Xception and ensembles of them (with
//! their members' mirror averaging), each as one graph that gives the scores
//! [`crate::model::Classifier::classify`] gives.
//!
//! The graph takes gray pixels `0..=255` (`input_scaling` `zero_to_255`) at one size, `(N, 1,
//! S, S)`, and does everything else inside: each member's mirror image (a Gather of the
//! columns in reverse), its resize to the member's own input size, its scaling, the network
//! with batch norms folded into the convolutions, a softmax per pass and the averages.
//! The resize is [`crate::imaging::resize_gray`] spelled out in elementwise operators (box
//! averaging of `f` x `f` blocks when shrinking by 2x or more, then OpenCV's bilinear taps and
//! rounding to whole grey levels), not ONNX's `Resize`: runtimes compute `Resize`'s weights in
//! their own order, and a grey level rounded the other way at a half moves a score by more
//! than 1e-4. Spelled out, the exported graph resizes bit for bit as the app does.

use std::path::Path;

use candle_core::Tensor;
use prost::Message;

use super::graph::{Attr, Builder};
use crate::error::{Error, Result};
use crate::imaging::axis_taps;
use crate::model::{Architecture, Classifier, INPUT_SIZE_RANGE, ModelSpec, WeightsFile, ensemble};
use crate::outfile::{self, OutputPolicy};

/// Name of the exported graph's input: gray pixels `(batch, 1, S, S)` in `0..=255`.
pub const INPUT_NAME: &str = "pixels";
/// Name of the exported graph's output: probabilities `(batch, classes)`.
pub const OUTPUT_NAME: &str = "probs";

/// How to export.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExportOptions {
    /// Side of the graph's square input; default the model's own `input_size` (an ensemble's
    /// is its largest member's, the size the app crops faces at). A native ensemble resizes
    /// whatever crop it gets to each member's size; the graph can only do that from one
    /// size, so its scores are the native ones exactly for crops of this size.
    pub input_size: Option<u32>,
}

/// Write `weights` as an ONNX model at `out`, whole or not at all, as `policy` allows (never
/// over a device or an input, nor an existing file unless it says so; see [`crate::outfile`]).
pub fn export_onnx(
    weights: &WeightsFile,
    out: &Path,
    opts: &ExportOptions,
    policy: &OutputPolicy,
) -> Result<()> {
    outfile::check_output(out, policy)?;
    let bytes = export_onnx_bytes(weights, opts)?;
    // A model is no personal data: readable by others, as weights files are.
    outfile::write_bytes_atomically(out, &bytes, &policy.clone().with_mode(0o644))
}

/// The ONNX bytes of `weights` (see [`export_onnx`]). The weights are checked first by
/// building the native classifier from them.
pub fn export_onnx_bytes(weights: &WeightsFile, opts: &ExportOptions) -> Result<Vec<u8>> {
    let fail = |reason: String| Error::weights(&weights.path, reason);
    Classifier::from_weights(WeightsFile {
        path: weights.path.clone(),
        spec: weights.spec.clone(),
        tensors: weights.tensors.clone(),
    })?;
    let spec = &weights.spec;
    let side = opts.input_size.unwrap_or(spec.input_size);
    if !INPUT_SIZE_RANGE.contains(&side) {
        return Err(Error::InvalidInput {
            what: "ONNX input size".into(),
            reason: format!(
                "{side} pixels, expected {}..={}",
                INPUT_SIZE_RANGE.start(),
                INPUT_SIZE_RANGE.end()
            ),
        });
    }
    let members: Vec<(String, ModelSpec)> = if spec.architecture == Architecture::Ensemble {
        ensemble::member_specs(spec)
            .map_err(fail)?
            .into_iter()
            .enumerate()
            .map(|(i, m)| (format!("{}.", ensemble::member_prefix(i)), m))
            .collect()
    } else {
        vec![(String::new(), spec.clone())]
    };

    let mut g = Builder::default();
    let get = |name: &str| -> Result<Tensor> {
        weights
            .tensors
            .get(name)
            .cloned()
            .ok_or_else(|| fail(format!("has no tensor {name}")))
    };
    let mut member_probs = Vec::with_capacity(members.len());
    for (i, (prefix, m)) in members.iter().enumerate() {
        let tag = format!("m{i}");
        let net = match m.architecture {
            Architecture::Vgg => Net::Vgg(vgg_inits(&mut g, &tag, prefix, m, &get)?),
            Architecture::MiniXception => {
                Net::MiniX(mini_xception_inits(&mut g, &tag, prefix, m, &get)?)
            }
            Architecture::Ensemble => {
                return Err(fail(format!("member {i} is itself an ensemble")));
            }
            Architecture::Onnx => {
                return Err(fail("is an imported ONNX model already".into()));
            }
        };
        let mut passes = Vec::with_capacity(2);
        for mirrored in [false, true]
            .into_iter()
            .take(1 + usize::from(m.flip_average))
        {
            let tag = format!("{tag}{}", if mirrored { "_mirror" } else { "" });
            let x = preprocess(&mut g, &tag, side, m, mirrored);
            let logits = match &net {
                Net::Vgg(v) => emit_vgg(&mut g, &tag, &x, v),
                Net::MiniX(mx) => emit_mini_xception(&mut g, &tag, &x, mx, m.input_size),
            };
            passes.push(g.op(
                "Softmax",
                &format!("{tag}_softmax"),
                &[&logits],
                vec![Attr::Int("axis", -1)],
            ));
        }
        member_probs.push(mean(&mut g, &format!("m{i}_mean"), &passes));
    }
    let probs = mean(&mut g, "ensemble_mean", &member_probs);
    g.rename_output(&probs, OUTPUT_NAME);

    let classes: Vec<&str> = spec.classes.iter().map(|e| e.name()).collect();
    let metadata = vec![
        (super::meta::NAME.to_string(), spec.name.clone()),
        (
            super::meta::CLASSES.to_string(),
            serde_json::to_string(&classes).unwrap_or_default(),
        ),
        (
            super::meta::INPUT_SCALING.to_string(),
            "zero_to_255".to_string(),
        ),
    ];
    let doc = format!(
        "emocam {} ({}): input {INPUT_NAME} (batch, 1, {side}, {side}) gray pixels 0..255; output {OUTPUT_NAME} (batch, {}) probabilities over {}",
        spec.architecture,
        spec.name,
        classes.len(),
        classes.join(", ")
    );
    let model = g.finish(
        (INPUT_NAME, [1, side as usize, side as usize]),
        (OUTPUT_NAME, classes.len()),
        metadata,
        doc,
    );
    Ok(model.encode_to_vec())
}

/// The mean of `values` (itself when there is one), as the native classifier averages: a sum,
/// then a division by the count.
fn mean(g: &mut Builder, name: &str, values: &[String]) -> String {
    let Some((first, rest)) = values.split_first() else {
        return String::new();
    };
    if rest.is_empty() {
        return first.clone();
    }
    let mut sum = first.clone();
    for v in rest {
        sum = g.op("Add", &format!("{name}_sum"), &[&sum, v], vec![]);
    }
    let n = g.scalar(&format!("{name}_count"), values.len() as f32);
    g.op("Div", name, &[&sum, &n], vec![])
}

/// The member's input from the graph's pixels: mirrored if asked, resized to the member's
/// size as `resize_gray` does, then scaled as the member's metadata says.
fn preprocess(g: &mut Builder, tag: &str, side: u32, m: &ModelSpec, mirrored: bool) -> String {
    let mut x = INPUT_NAME.to_string();
    if mirrored {
        let rev: Vec<i64> = (0..side as i64).rev().collect();
        let idx = g.i64s(&format!("{tag}_reverse_columns"), &[rev.len()], &rev);
        x = g.op(
            "Gather",
            &format!("{tag}_mirror"),
            &[&x, &idx],
            vec![Attr::Int("axis", 3)],
        );
    }
    x = resize_gray(g, tag, &x, (side, side), (m.input_size, m.input_size));
    let (mul, add) = m.scaling.affine();
    // The same f32 constants and the same two roundings as `preprocess::stack`.
    let mul = g.scalar(&format!("{tag}_scale_mul"), mul as f32);
    let add = g.scalar(&format!("{tag}_scale_add"), add as f32);
    let y = g.op("Mul", &format!("{tag}_scaled"), &[&x, &mul], vec![]);
    g.op("Add", &format!("{tag}_input"), &[&y, &add], vec![])
}

/// `crate::imaging::resize_gray` from `(sw, sh)` to `(w, h)` on `(N, 1, sh, sw)` pixels.
fn resize_gray(
    g: &mut Builder,
    tag: &str,
    x: &str,
    (sw, sh): (u32, u32),
    (w, h): (u32, u32),
) -> String {
    if (sw, sh) == (w, h) {
        return x.to_string();
    }
    let factor = (sw / w.max(1)).min(sh / h.max(1));
    if factor >= 2 {
        let (small, dims) = box_shrink(g, tag, x, (sw, sh), factor);
        return resize_gray(g, tag, &small, dims, (w, h));
    }
    bilinear(g, tag, x, (sw, sh), (w, h))
}

/// The averages of `f` x `f` blocks, rounded as `imaging::box_shrink` rounds: a sum by a
/// convolution with ones (exact on whole grey levels), then `floor((sum + n / 2) / n)` with
/// `n` the pixels in each (possibly partial) block.
fn box_shrink(
    g: &mut Builder,
    tag: &str,
    x: &str,
    (sw, sh): (u32, u32),
    f: u32,
) -> (String, (u32, u32)) {
    let (w, h) = (sw.div_ceil(f), sh.div_ceil(f));
    let ones = g.f32s(
        &format!("{tag}_box{f}_ones"),
        &[1, 1, f as usize, f as usize],
        &vec![1.0; (f * f) as usize],
    );
    let sum = g.op(
        "Conv",
        &format!("{tag}_box{f}_sum"),
        &[x, &ones],
        vec![
            Attr::Ints("kernel_shape", vec![f as i64, f as i64]),
            Attr::Ints("strides", vec![f as i64, f as i64]),
            Attr::Ints("pads", vec![0, 0, (h * f - sh) as i64, (w * f - sw) as i64]),
        ],
    );
    let mut half = Vec::with_capacity((w * h) as usize);
    let mut count = Vec::with_capacity((w * h) as usize);
    for by in 0..h {
        for bx in 0..w {
            let n = ((by * f + f).min(sh) - by * f) * ((bx * f + f).min(sw) - bx * f);
            half.push((n / 2) as f32);
            count.push(n as f32);
        }
    }
    let dims = [1, 1, h as usize, w as usize];
    let half = g.f32s(&format!("{tag}_box{f}_half"), &dims, &half);
    let count = g.f32s(&format!("{tag}_box{f}_count"), &dims, &count);
    let s = g.op(
        "Add",
        &format!("{tag}_box{f}_rounding"),
        &[&sum, &half],
        vec![],
    );
    let q = g.op("Div", &format!("{tag}_box{f}_mean"), &[&s, &count], vec![]);
    (
        g.op("Floor", &format!("{tag}_box{f}"), &[&q], vec![]),
        (w, h),
    )
}

/// OpenCV-style bilinear resize with `imaging::axis_taps`' taps: along the rows first, then
/// the columns, each `a * (1 - t) + b * t` in f32 as `imaging::bilinear` computes it, then
/// rounded half away from zero (`floor(v + 0.5)`, as the values are never negative) and
/// clamped to 0..=255.
fn bilinear(
    g: &mut Builder,
    tag: &str,
    x: &str,
    (sw, sh): (u32, u32),
    (w, h): (u32, u32),
) -> String {
    let mut y = x.to_string();
    for (axis, src, dst) in [(3i64, sw, w), (2, sh, h)] {
        let taps = axis_taps(src, dst);
        let i0: Vec<i64> = taps.iter().map(|t| t.0 as i64).collect();
        let i1: Vec<i64> = taps.iter().map(|t| t.1 as i64).collect();
        let w0: Vec<f32> = taps.iter().map(|t| 1.0 - t.2).collect();
        let w1: Vec<f32> = taps.iter().map(|t| t.2).collect();
        let n = dst as usize;
        let dims = if axis == 3 {
            [1, 1, 1, n]
        } else {
            [1, 1, n, 1]
        };
        let a = if axis == 3 { "x" } else { "y" };
        let name = |s: &str| format!("{tag}_resize{dst}{a}_{s}");
        let i0 = g.i64s(&name("i0"), &[n], &i0);
        let i1 = g.i64s(&name("i1"), &[n], &i1);
        let w0 = g.f32s(&name("w0"), &dims, &w0);
        let w1 = g.f32s(&name("w1"), &dims, &w1);
        let axis_attr = || vec![Attr::Int("axis", axis)];
        let a0 = g.op("Gather", &name("a"), &[&y, &i0], axis_attr());
        let a1 = g.op("Gather", &name("b"), &[&y, &i1], axis_attr());
        let p0 = g.op("Mul", &name("a_w"), &[&a0, &w0], vec![]);
        let p1 = g.op("Mul", &name("b_w"), &[&a1, &w1], vec![]);
        y = g.op("Add", &name("lerp"), &[&p0, &p1], vec![]);
    }
    let half = g.scalar(&format!("{tag}_resize_half"), 0.5);
    let lo = g.scalar(&format!("{tag}_resize_min"), 0.0);
    let hi = g.scalar(&format!("{tag}_resize_max"), 255.0);
    let r = g.op(
        "Add",
        &format!("{tag}_resize_plus_half"),
        &[&y, &half],
        vec![],
    );
    let r = g.op("Floor", &format!("{tag}_resize_rounded"), &[&r], vec![]);
    g.op("Clip", &format!("{tag}_resized"), &[&r, &lo, &hi], vec![])
}

/// A member's initializers, named once and shared by its passes.
enum Net {
    Vgg(VggInits),
    MiniX(MiniXInits),
}

/// A convolution's kernel and (folded) bias.
struct ConvInit {
    weight: String,
    bias: Option<String>,
    cout: usize,
}

struct VggInits {
    /// Two per block, batch norm folded in.
    convs: Vec<[ConvInit; 2]>,
    fc1: (String, String),
    fc2: (String, String),
}

struct MiniXBlock {
    residual: ConvInit,
    depthwise1: ConvInit,
    pointwise1: ConvInit,
    depthwise2: ConvInit,
    pointwise2: ConvInit,
}

struct MiniXInits {
    stem: [ConvInit; 2],
    blocks: Vec<MiniXBlock>,
    head: ConvInit,
}

/// Store a candle tensor as an initializer.
fn init(g: &mut Builder, name: &str, t: &Tensor) -> Result<String> {
    let dims = t.dims().to_vec();
    let data = t.flatten_all()?.to_vec1::<f32>()?;
    Ok(g.f32s(name, &dims, &data))
}

fn vgg_inits(
    g: &mut Builder,
    tag: &str,
    prefix: &str,
    m: &ModelSpec,
    get: &dyn Fn(&str) -> Result<Tensor>,
) -> Result<VggInits> {
    let cfg = crate::model::vgg::VggConfig::from_metadata(
        &m.metadata,
        m.classes.len(),
        m.input_size as usize,
        m.bn_eps,
    )
    .map_err(|e| Error::InvalidInput {
        what: "VGG metadata".into(),
        reason: e,
    })?;
    let mut convs = Vec::with_capacity(cfg.widths.len());
    for i in 1..=cfg.widths.len() {
        let mut conv_bn = |j: usize| -> Result<ConvInit> {
            let p = format!("{prefix}block{i}.");
            let w = get(&format!("{p}conv{j}.weight"))?;
            let bn = |k: &str| get(&format!("{p}bn{j}.{k}"));
            // As `BatchNorm2d::folded` and `ConvBnRelu::fold` compute it.
            let scale = (bn("running_var")? + m.bn_eps)?
                .sqrt()?
                .recip()?
                .mul(&bn("weight")?)?;
            let shift = (bn("bias")? - bn("running_mean")?.mul(&scale)?)?;
            let (cout, cin) = (w.dim(0)?, w.dim(1)?);
            let kernel = w
                .reshape((cout, cin * 9))?
                .broadcast_mul(&scale.unsqueeze(1)?)?
                .reshape((cout, cin, 3, 3))?;
            let name = format!("{tag}_block{i}_conv{j}");
            Ok(ConvInit {
                weight: init(g, &format!("{name}_weight"), &kernel)?,
                bias: Some(init(g, &format!("{name}_bias"), &shift)?),
                cout,
            })
        };
        let pair = [conv_bn(1)?, conv_bn(2)?];
        convs.push(pair);
    }
    let fc = |g: &mut Builder, k: &str| -> Result<(String, String)> {
        Ok((
            init(
                g,
                &format!("{tag}_{k}_weight"),
                &get(&format!("{prefix}head.{k}.weight"))?,
            )?,
            init(
                g,
                &format!("{tag}_{k}_bias"),
                &get(&format!("{prefix}head.{k}.bias"))?,
            )?,
        ))
    };
    Ok(VggInits {
        convs,
        fc1: fc(g, "fc1")?,
        fc2: fc(g, "fc2")?,
    })
}

fn mini_xception_inits(
    g: &mut Builder,
    tag: &str,
    prefix: &str,
    m: &ModelSpec,
    get: &dyn Fn(&str) -> Result<Tensor>,
) -> Result<MiniXInits> {
    let eps = m.bn_eps;
    // `FoldedBn::new`: scale = gamma / sqrt(var + eps), shift = beta - mean * scale.
    let folded = |bn: &str| -> Result<(Tensor, Tensor)> {
        let t = |k: &str| get(&format!("{prefix}{bn}.{k}"));
        let scale = t("weight")?.div(&(t("running_var")? + eps)?.sqrt()?)?;
        let shift = (t("bias")? - t("running_mean")?.mul(&scale)?)?;
        Ok((scale, shift))
    };
    let conv_bn = |g: &mut Builder, conv: &str, bn: &str, name: &str| -> Result<ConvInit> {
        let w = get(&format!("{prefix}{conv}.weight"))?;
        let (scale, shift) = folded(bn)?;
        let cout = w.dim(0)?;
        let w = w.broadcast_mul(&scale.reshape((cout, 1, 1, 1))?)?;
        Ok(ConvInit {
            weight: init(g, &format!("{tag}_{name}_weight"), &w)?,
            bias: Some(init(g, &format!("{tag}_{name}_bias"), &shift)?),
            cout,
        })
    };
    let stem = [
        conv_bn(g, "stem.conv1", "stem.bn1", "stem1")?,
        conv_bn(g, "stem.conv2", "stem.bn2", "stem2")?,
    ];
    let mut blocks = Vec::with_capacity(crate::model::mini_xception::BLOCK_CHANNELS.len());
    for k in 1..=crate::model::mini_xception::BLOCK_CHANNELS.len() {
        let b = format!("block{k}");
        let depthwise = |g: &mut Builder, sep: &str| -> Result<ConvInit> {
            let w = get(&format!("{prefix}{b}.{sep}.depthwise.weight"))?;
            Ok(ConvInit {
                cout: w.dim(0)?,
                weight: init(g, &format!("{tag}_{b}_{sep}_depthwise"), &w)?,
                bias: None,
            })
        };
        blocks.push(MiniXBlock {
            residual: conv_bn(
                g,
                &format!("{b}.residual.conv"),
                &format!("{b}.residual.bn"),
                &format!("{b}_residual"),
            )?,
            depthwise1: depthwise(g, "sep1")?,
            pointwise1: conv_bn(
                g,
                &format!("{b}.sep1.pointwise"),
                &format!("{b}.sep1.bn"),
                &format!("{b}_sep1_pointwise"),
            )?,
            depthwise2: depthwise(g, "sep2")?,
            pointwise2: conv_bn(
                g,
                &format!("{b}.sep2.pointwise"),
                &format!("{b}.sep2.bn"),
                &format!("{b}_sep2_pointwise"),
            )?,
        });
    }
    let hw = get(&format!("{prefix}head.conv.weight"))?;
    let head = ConvInit {
        cout: hw.dim(0)?,
        weight: init(g, &format!("{tag}_head_weight"), &hw)?,
        bias: Some(init(
            g,
            &format!("{tag}_head_bias"),
            &get(&format!("{prefix}head.conv.bias"))?,
        )?),
    };
    Ok(MiniXInits { stem, blocks, head })
}

/// A convolution node: `k` x `k` kernel, its stride and groups, pads `[top, left, bottom, right]`.
fn conv(
    g: &mut Builder,
    name: &str,
    x: &str,
    c: &ConvInit,
    (k, stride, group): (i64, i64, i64),
    pads: [i64; 4],
) -> String {
    let mut inputs = vec![x, c.weight.as_str()];
    if let Some(b) = &c.bias {
        inputs.push(b);
    }
    let mut attrs = vec![
        Attr::Ints("kernel_shape", vec![k, k]),
        Attr::Ints("strides", vec![stride, stride]),
        Attr::Ints("pads", vec![pads[0], pads[1], pads[2], pads[3]]),
    ];
    if group > 1 {
        attrs.push(Attr::Int("group", group));
    }
    g.op("Conv", name, &inputs, attrs)
}

fn relu(g: &mut Builder, name: &str, x: &str) -> String {
    g.op("Relu", name, &[x], vec![])
}

/// `vgg::Vgg::forward`: blocks of conv-bn-relu x 2 and a 2x2 max pool, flatten (NCHW order,
/// as the native net's transpose gives), dense + ReLU, dense.
fn emit_vgg(g: &mut Builder, tag: &str, x: &str, v: &VggInits) -> String {
    let mut y = x.to_string();
    for (i, [c1, c2]) in v.convs.iter().enumerate() {
        let n = |s: &str| format!("{tag}_block{}_{s}", i + 1);
        y = conv(g, &n("conv1"), &y, c1, (3, 1, 1), [1; 4]);
        y = relu(g, &n("relu1"), &y);
        y = conv(g, &n("conv2"), &y, c2, (3, 1, 1), [1; 4]);
        y = relu(g, &n("relu2"), &y);
        y = g.op(
            "MaxPool",
            &n("pool"),
            &[&y],
            vec![
                Attr::Ints("kernel_shape", vec![2, 2]),
                Attr::Ints("strides", vec![2, 2]),
            ],
        );
    }
    let y = g.op(
        "Flatten",
        &format!("{tag}_flatten"),
        &[&y],
        vec![Attr::Int("axis", 1)],
    );
    let gemm = |g: &mut Builder, name: &str, x: &str, (w, b): &(String, String)| {
        g.op("Gemm", name, &[x, w, b], vec![Attr::Int("transB", 1)])
    };
    let y = gemm(g, &format!("{tag}_fc1"), &y, &v.fc1);
    let y = relu(g, &format!("{tag}_fc1_relu"), &y);
    gemm(g, &format!("{tag}_fc2"), &y, &v.fc2)
}

/// `mini_xception::MiniXception::forward` for an `s` x `s` input: two valid 3x3 stem convs,
/// four residual blocks ending in TF-"same" 3x3/2 max pooling (the odd padding row at the
/// bottom and right), a 3x3 head conv and global average pooling.
fn emit_mini_xception(g: &mut Builder, tag: &str, x: &str, mx: &MiniXInits, s: u32) -> String {
    let mut y = x.to_string();
    let (mut h, mut w) = (s as usize, s as usize);
    for (i, c) in mx.stem.iter().enumerate() {
        y = conv(g, &format!("{tag}_stem{}", i + 1), &y, c, (3, 1, 1), [0; 4]);
        y = relu(g, &format!("{tag}_stem{}_relu", i + 1), &y);
        (h, w) = (h - 2, w - 2);
    }
    let mut cin = mx.stem[1].cout as i64;
    for (k, b) in mx.blocks.iter().enumerate() {
        let n = |s: &str| format!("{tag}_block{}_{s}", k + 1);
        let r = conv(g, &n("residual"), &y, &b.residual, (1, 2, 1), [0; 4]);
        let s1 = conv(
            g,
            &n("sep1_depthwise"),
            &y,
            &b.depthwise1,
            (3, 1, cin),
            [1; 4],
        );
        let s1 = conv(
            g,
            &n("sep1_pointwise"),
            &s1,
            &b.pointwise1,
            (1, 1, 1),
            [0; 4],
        );
        let s1 = relu(g, &n("sep1_relu"), &s1);
        let cout = b.pointwise1.cout as i64;
        let s2 = conv(
            g,
            &n("sep2_depthwise"),
            &s1,
            &b.depthwise2,
            (3, 1, cout),
            [1; 4],
        );
        let s2 = conv(
            g,
            &n("sep2_pointwise"),
            &s2,
            &b.pointwise2,
            (1, 1, 1),
            [0; 4],
        );
        let (ho, top) = crate::model::ops::tf_same_pool_geometry(h);
        let (wo, left) = crate::model::ops::tf_same_pool_geometry(w);
        let bottom = ((ho - 1) * 2 + 3).saturating_sub(h) - top;
        let right = ((wo - 1) * 2 + 3).saturating_sub(w) - left;
        let p = g.op(
            "MaxPool",
            &n("pool"),
            &[&s2],
            vec![
                Attr::Ints("kernel_shape", vec![3, 3]),
                Attr::Ints("strides", vec![2, 2]),
                Attr::Ints(
                    "pads",
                    vec![top as i64, left as i64, bottom as i64, right as i64],
                ),
            ],
        );
        y = g.op("Add", &n("add"), &[&p, &r], vec![]);
        (h, w, cin) = (ho, wo, cout);
    }
    let y = conv(g, &format!("{tag}_head"), &y, &mx.head, (3, 1, 1), [1; 4]);
    let y = g.op("GlobalAveragePool", &format!("{tag}_gap"), &[&y], vec![]);
    g.op(
        "Flatten",
        &format!("{tag}_logits"),
        &[&y],
        vec![Attr::Int("axis", 1)],
    )
}
