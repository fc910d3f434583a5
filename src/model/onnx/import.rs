//! Reading an ONNX classifier: the file, its one image input and one score output, the
//! operators tract can run, and the plans that run it.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use tract_onnx::pb;
use tract_onnx::pb::tensor_shape_proto::dimension::Value as Dim;
use tract_onnx::prelude::*;

/// Largest ONNX file we agree to read; face classifiers are a few MB.
pub const MAX_ONNX_BYTES: u64 = 256 * 1024 * 1024;

/// Smallest and largest accepted input side, in pixels.
pub const SIDE_RANGE: std::ops::RangeInclusive<usize> = 8..=1024;

/// Batch sizes planned for a model with a symbolic batch, largest first: a call's faces run
/// in chunks of these sizes (with [8, 4, 2, 1], 13 faces would run as 8 + 4 + 1), built when the
/// model loads, so no call builds a plan. Only 1: tract ran the exported mini-Xception at 6.4 ms
/// per face one at a time against 11 ms per face in batches of 8 or of 2 (`cargo bench --bench
/// onnx`, docs/onnx.md).
pub const PLAN_BATCHES: [usize; 1] = [1];

/// A runnable, optimised tract plan for one batch size.
pub type Plan = Arc<TypedSimplePlan>;

/// How the image input is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `(N, C, H, W)` (PyTorch).
    Nchw,
    /// `(N, H, W, C)` (Keras, TensorFlow).
    Nhwc,
}

impl Layout {
    /// `NCHW` or `NHWC`.
    pub fn name(self) -> &'static str {
        match self {
            Layout::Nchw => "NCHW",
            Layout::Nhwc => "NHWC",
        }
    }
}

/// The batch dimension of the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Batch {
    /// Any number of faces (a symbolic dimension, named as in the file).
    Any(String),
    /// Exactly this many faces per run; fewer are padded.
    Fixed(usize),
}

/// What the graph's input and output look like.
#[derive(Debug, Clone)]
pub struct GraphShape {
    pub input_name: String,
    pub layout: Layout,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub batch: Batch,
    /// The operator that makes the output, looking through reshapes (`Softmax` for most).
    pub last_op: String,
}

/// Read the file at `path` (a regular file, at most [`MAX_ONNX_BYTES`]) and decode it.
/// The error is the reason only.
pub fn read_proto(path: &Path) -> Result<pb::ModelProto, String> {
    let bytes = crate::imaging::read_regular(path, MAX_ONNX_BYTES, "an ONNX model")?;
    decode_proto(&bytes)
}

/// Decode ONNX bytes; the error says whether the file is cut short or is no ONNX model.
pub fn decode_proto(bytes: &[u8]) -> Result<pb::ModelProto, String> {
    let proto = tract_onnx::onnx()
        .proto_model_for_read(&mut &bytes[..])
        .map_err(|e| {
            format!(
                "not an ONNX model, or truncated: the {} bytes do not decode as an ONNX protobuf ({})",
                bytes.len(),
                chain(&e)
            )
        })?;
    if proto.ir_version <= 0 || proto.graph.is_none() {
        return Err(format!(
            "not an ONNX model: the {} bytes decode, but hold no IR version and graph",
            bytes.len()
        ));
    }
    Ok(proto)
}

/// tract's error with its causes, one line.
pub fn chain(e: &TractError) -> String {
    e.chain()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(": ")
}

/// Check the graph has one 4-D float image input (1 or 3 channels, fixed height and width,
/// any batch) and one output; the error is the reason only.
pub fn inspect(graph: &pb::GraphProto) -> Result<GraphShape, String> {
    let initializers: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs: Vec<&pb::ValueInfoProto> = graph
        .input
        .iter()
        .filter(|i| !initializers.contains(i.name.as_str()))
        .collect();
    let names = |v: &[&pb::ValueInfoProto]| {
        v.iter()
            .map(|i| format!("{:?}", i.name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let [input] = inputs.as_slice() else {
        return Err(format!(
            "the graph has {} inputs ({}), expected one image input",
            inputs.len(),
            names(&inputs)
        ));
    };
    let outputs: Vec<&pb::ValueInfoProto> = graph.output.iter().collect();
    let [output] = outputs.as_slice() else {
        return Err(format!(
            "the graph has {} outputs ({}), expected one output of class scores",
            outputs.len(),
            names(&outputs)
        ));
    };
    let Some(pb::type_proto::Value::TensorType(t)) =
        input.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return Err(format!("input {:?} is not a tensor", input.name));
    };
    if t.elem_type != pb::tensor_proto::DataType::Float as i32 {
        return Err(format!(
            "input {:?} has element type {}, expected float32",
            input.name,
            pb::tensor_proto::DataType::try_from(t.elem_type)
                .map_or_else(|_| t.elem_type.to_string(), |d| d.as_str_name().to_string())
        ));
    }
    let dims: Vec<Option<i64>> = t
        .shape
        .as_ref()
        .map(|s| {
            s.dim
                .iter()
                .map(|d| match &d.value {
                    Some(Dim::DimValue(v)) if *v > 0 => Some(*v),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let shown = |dims: &[Option<i64>]| {
        let parts: Vec<String> = dims
            .iter()
            .map(|d| d.map_or_else(|| "?".into(), |v| v.to_string()))
            .collect();
        format!("[{}]", parts.join(", "))
    };
    if dims.len() != 4 {
        return Err(format!(
            "input {:?} has rank {} ({}), expected 4 (NCHW or NHWC)",
            input.name,
            dims.len(),
            shown(&dims)
        ));
    }
    let chan = |d: Option<i64>| matches!(d, Some(1 | 3));
    let fixed_side = |d: Option<i64>| d.is_some_and(|v| SIDE_RANGE.contains(&(v as usize)));
    let layout = match (chan(dims[1]), chan(dims[3])) {
        (true, false) => Layout::Nchw,
        (false, true) => Layout::Nhwc,
        (true, true) if fixed_side(dims[2]) && fixed_side(dims[3]) => Layout::Nchw,
        (true, true) => Layout::Nhwc,
        (false, false) => {
            return Err(format!(
                "input {:?} has shape {}: neither dimension 1 (NCHW) nor dimension 3 (NHWC) is 1 or 3 channels",
                input.name,
                shown(&dims)
            ));
        }
    };
    let (c, h, w) = match layout {
        Layout::Nchw => (dims[1], dims[2], dims[3]),
        Layout::Nhwc => (dims[3], dims[1], dims[2]),
    };
    let (Some(h), Some(w)) = (h, w) else {
        return Err(format!(
            "input {:?} has shape {} ({}): its height and width are dynamic, expected fixed sizes",
            input.name,
            shown(&dims),
            layout.name()
        ));
    };
    for (what, v) in [("height", h), ("width", w)] {
        if !SIDE_RANGE.contains(&(v as usize)) {
            return Err(format!(
                "input {:?} has {what} {v}, expected {}..={} pixels",
                input.name,
                SIDE_RANGE.start(),
                SIDE_RANGE.end()
            ));
        }
    }
    let batch = match dims[0] {
        Some(b) if b <= 64 => Batch::Fixed(b as usize),
        Some(b) => {
            return Err(format!(
                "input {:?} has a fixed batch of {b}, expected at most 64 (or a symbolic batch)",
                input.name
            ));
        }
        None => Batch::Any(
            t.shape
                .as_ref()
                .and_then(|s| s.dim.first())
                .and_then(|d| match &d.value {
                    Some(Dim::DimParam(p)) if !p.is_empty() => Some(p.clone()),
                    _ => None,
                })
                .unwrap_or_else(|| "N".into()),
        ),
    };
    Ok(GraphShape {
        input_name: input.name.clone(),
        layout,
        channels: c.unwrap_or(1) as usize,
        height: h as usize,
        width: w as usize,
        batch,
        last_op: last_op(graph, &output.name),
    })
}

/// The operator that produces `output`, looking through ops that only reshape or rename.
fn last_op(graph: &pb::GraphProto, output: &str) -> String {
    const PASS: [&str; 6] = [
        "Identity",
        "Reshape",
        "Flatten",
        "Squeeze",
        "Unsqueeze",
        "Cast",
    ];
    let mut name = output;
    // Bounded by the node count, so a (malformed) cycle cannot loop forever.
    for _ in 0..=graph.node.len() {
        let Some(node) = graph
            .node
            .iter()
            .find(|n| n.output.iter().any(|o| o == name))
        else {
            return String::new();
        };
        match node.input.first() {
            Some(first) if PASS.contains(&node.op_type.as_str()) => name = first,
            _ => return node.op_type.clone(),
        }
    }
    String::new()
}

/// Build tract's model of the graph, refusing operators tract cannot run (named, with their
/// domain).
pub fn to_inference_model(proto: &pb::ModelProto) -> Result<InferenceModel, String> {
    let model = tract_onnx::onnx()
        .model_for_proto_model(proto)
        .map_err(|e| format!("tract cannot read the graph: {}", chain(&e)))?;
    // tract keeps an operator it does not know as an UnimplementedOp named
    // "Unimplemented(<op_type>)" and only fails much later with a generic message, so its
    // verdict is read here, where the operator can still be named.
    let mut missing: Vec<String> = Vec::new();
    for node in model.nodes() {
        let op = node.op.name();
        if let Some(op_type) = op
            .strip_prefix("Unimplemented(")
            .and_then(|s| s.strip_suffix(')'))
        {
            let domain = proto
                .graph
                .iter()
                .flat_map(|g| &g.node)
                .find(|n| n.op_type == op_type && !n.domain.is_empty())
                .map(|n| format!(" (domain {:?})", n.domain))
                .unwrap_or_default();
            let entry = format!("{op_type}{domain}");
            if !missing.contains(&entry) {
                missing.push(entry);
            }
        }
    }
    if !missing.is_empty() {
        return Err(format!(
            "the graph uses operator{} {} that tract-onnx does not implement",
            if missing.len() > 1 { "s" } else { "" },
            missing.join(", ")
        ));
    }
    Ok(model)
}

/// An optimised plan for batches of `batch`, and the shape of its one output.
pub fn plan_for(
    model: &InferenceModel,
    shape: &GraphShape,
    batch: usize,
) -> Result<(Plan, Vec<usize>), String> {
    let dims = input_dims(shape, batch);
    let fail = |stage: &str, e: TractError| {
        format!(
            "tract cannot {stage} the graph for input {dims:?}: {}",
            chain(&e)
        )
    };
    let typed = model
        .clone()
        .with_input_fact(0, f32::fact(dims).into())
        .and_then(|m| m.into_typed())
        .map_err(|e| fail("type", e))?;
    let out = typed.output_fact(0).map_err(|e| fail("type", e))?;
    if out.datum_type != f32::datum_type() {
        return Err(format!(
            "the output has element type {:?}, expected float32 scores",
            out.datum_type
        ));
    }
    let out_shape = out
        .shape
        .as_concrete()
        .map(|s| s.to_vec())
        .ok_or_else(|| format!("the output's shape {:?} is not fixed", out.shape))?;
    let plan = typed
        .into_optimized()
        .and_then(|m| m.into_runnable())
        .map_err(|e| fail("optimise", e))?;
    Ok((plan, out_shape))
}

/// The input dimensions for a batch, in the graph's layout.
pub fn input_dims(shape: &GraphShape, batch: usize) -> [usize; 4] {
    let (c, h, w) = (shape.channels, shape.height, shape.width);
    match shape.layout {
        Layout::Nchw => [batch, c, h, w],
        Layout::Nhwc => [batch, h, w, c],
    }
}

/// Scores per face from an output shape `(batch, ...)`: the output must hold one row of
/// scores per face, with every other dimension 1 (`(N, K)`, `(N, K, 1, 1)`).
pub fn scores_per_face(out: &[usize], batch: usize) -> Result<usize, String> {
    let rest: Vec<usize> = out.iter().skip(1).copied().filter(|&d| d != 1).collect();
    match (out.first(), rest.as_slice()) {
        (Some(&b), [k]) if b == batch && *k >= 2 => Ok(*k),
        _ => Err(format!(
            "the output has shape {out:?} for a batch of {batch}, expected one row of class scores per face ({batch}, classes), at least 2 classes"
        )),
    }
}
