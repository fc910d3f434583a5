//! The common CNN graphs lowered onto emocam's own kernels ([`crate::model::ops`]), so that an
//! imported mini-Xception runs about as fast as the native one.
//!
//! Why not tract alone: tract runs the exported mini-Xception at 2.3x the native time on one core
//! (`cargo bench --bench onnx`), with 40% of it in matrix products it runs per face, 23% in
//! depthwise convolutions and 19% in strided max pools it walks element by element. The same
//! graph as a list of our batched kernels (channel-major `(C, N, H, W)` activations, every 1x1
//! convolution one matmul over the batch) costs what the native net costs.
//!
//! What lowers: `Conv` (3x3 stride 1 with padding 0 or 1, depthwise 3x3 "same", 1x1 with stride
//! 1 or 2), `BatchNormalization` (folded into the convolution before it), `Relu` (fused),
//! `MaxPool` (3x3 stride 2 with TensorFlow's "same" padding, 2x2 stride 2), `Add`, `Mul`, `Sub`
//! and `Div` by constants, `Add` of two maps, `GlobalAveragePool`, `ReduceMean` over height and
//! width, `Flatten`, `Reshape`, `Squeeze`, `Identity`, `Dropout`, `Gemm`, `MatMul`, `Softmax`, and
//! the transpose of an NHWC input. [`NativePlan::lower`] refuses anything else, with the reason,
//! and the model then runs in tract; a lowered plan runs only after its scores on probe faces
//! matched tract's (see `OnnxNet`).
//!
//! `step` holds the kernel calls a plan is made of, `layers` the lowering of the operators
//! with weights (convolutions, batch norm, pools, arithmetic, dense layers).

mod layers;
mod step;

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use tract_onnx::pb;

use super::import::{GraphShape, Layout};
use step::{Op, Step};

/// Index of a runtime value.
type Slot = usize;

/// The shape of a runtime value, batch left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `(C, N, H, W)`.
    Map { c: usize, h: usize, w: usize },
    /// `(N, K)`.
    Flat { k: usize },
    /// The graph's NHWC input, only to be transposed to NCHW.
    Nhwc,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Kind::Map { c, h, w } => write!(f, "a {c}x{h}x{w} map"),
            Kind::Flat { k } => write!(f, "{k} values per face"),
            Kind::Nhwc => write!(f, "the NHWC input"),
        }
    }
}

/// A value while lowering: a constant from the file, or one computed at run time.
#[derive(Debug, Clone)]
enum Val {
    Const {
        dims: Vec<usize>,
        data: Vec<f32>,
    },
    Ints(Vec<i64>),
    /// A constant of a type no lowered operator reads (external data, other element types).
    Opaque,
    Run {
        slot: Slot,
        kind: Kind,
    },
}

/// A graph lowered onto the native kernels: `(C, N, H, W)` pixels in, `(N, K)` scores out.
pub struct NativePlan {
    steps: Vec<Step>,
    /// Per step, the slots whose last reader it is (dropped after it, to keep memory low).
    frees: Vec<Vec<Slot>>,
    slots: usize,
    output: Slot,
    /// Scores per face.
    outputs: usize,
}

impl NativePlan {
    /// Lower `graph` (already checked by `import::inspect` as `shape`), or say what keeps it in
    /// tract.
    pub fn lower(graph: &pb::GraphProto, shape: &GraphShape) -> Result<Self, String> {
        Lowering::new(graph, shape)?.run(graph)
    }

    /// The graph's scores for a batch given channel-major: `pixels` is `(C, N, H, W)`, already
    /// scaled as the model wants. One row per face.
    pub fn run(&self, pixels: Tensor) -> Result<Vec<Vec<f32>>, String> {
        let mut v: Vec<Option<Tensor>> = vec![None; self.slots];
        v[0] = Some(pixels);
        for (step, frees) in self.steps.iter().zip(&self.frees) {
            let y = step
                .op
                .run(&v)
                .map_err(|e| format!("a native kernel failed: {e}"))?;
            v[step.y] = Some(y);
            for &s in frees {
                v[s] = None;
            }
        }
        let out = v[self.output]
            .take()
            .ok_or_else(|| "the plan computed no output".to_string())?;
        let rows = out
            .to_vec2::<f32>()
            .map_err(|e| format!("the plan's output is not (faces, scores): {e}"))?;
        match rows.first() {
            Some(r) if r.len() != self.outputs => Err(format!(
                "the plan gave {} scores per face, expected {}",
                r.len(),
                self.outputs
            )),
            _ => Ok(rows),
        }
    }

    /// Scores per face.
    pub fn outputs(&self) -> usize {
        self.outputs
    }
}

/// The state of a lowering: values by name, steps so far, and how often each name is read.
struct Lowering {
    vals: HashMap<String, Val>,
    readers: HashMap<String, usize>,
    steps: Vec<Step>,
    slots: usize,
    /// The input as NCHW would have it.
    input: Kind,
}

impl Lowering {
    fn new(graph: &pb::GraphProto, shape: &GraphShape) -> Result<Self, String> {
        let mut vals = HashMap::new();
        for t in &graph.initializer {
            vals.insert(t.name.clone(), constant(t)?);
        }
        let input = Kind::Map {
            c: shape.channels,
            h: shape.height,
            w: shape.width,
        };
        let kind = match shape.layout {
            Layout::Nchw => input,
            Layout::Nhwc => Kind::Nhwc,
        };
        vals.insert(shape.input_name.clone(), Val::Run { slot: 0, kind });
        let mut readers: HashMap<String, usize> = HashMap::new();
        for name in graph.node.iter().flat_map(|n| &n.input) {
            *readers.entry(name.clone()).or_default() += 1;
        }
        for o in &graph.output {
            *readers.entry(o.name.clone()).or_default() += 1;
        }
        Ok(Self {
            vals,
            readers,
            steps: Vec::new(),
            slots: 1,
            input,
        })
    }

    fn run(mut self, graph: &pb::GraphProto) -> Result<NativePlan, String> {
        let [out] = graph.output.as_slice() else {
            return Err("the graph has more than one output".into());
        };
        // Only the nodes the output depends on: an unused branch (which tract prunes) must not
        // keep the graph from lowering.
        let mut needed: std::collections::HashSet<&str> =
            std::iter::once(out.name.as_str()).collect();
        let mut live = vec![false; graph.node.len()];
        for (i, node) in graph.node.iter().enumerate().rev() {
            if node.output.iter().any(|o| needed.contains(o.as_str())) {
                live[i] = true;
                needed.extend(node.input.iter().map(String::as_str));
            }
        }
        for (node, _) in graph.node.iter().zip(&live).filter(|(_, l)| **l) {
            let name = match (node.name.as_str(), node.output.first()) {
                ("", Some(o)) => o.as_str(),
                (n, _) => n,
            };
            self.node(node)
                .map_err(|e| format!("{} node {name:?}: {e}", node.op_type))?;
        }
        let (mut slot, kind) = self.run_val(&out.name)?;
        let outputs = match kind {
            Kind::Flat { k } => k,
            Kind::Map { c, h: 1, w: 1 } => {
                let y = self.slot();
                self.steps.push(Step {
                    op: Op::Mean {
                        x: slot,
                        flat: true,
                    },
                    y,
                });
                slot = y;
                c
            }
            other => return Err(format!("the output is {other}, not one score per class")),
        };
        let mut last_read = vec![usize::MAX; self.slots];
        for (i, s) in self.steps.iter().enumerate() {
            for x in s.op.inputs() {
                last_read[x] = i;
            }
        }
        let mut frees = vec![Vec::new(); self.steps.len()];
        for (s, &i) in last_read.iter().enumerate() {
            if i != usize::MAX && s != slot {
                frees[i].push(s);
            }
        }
        Ok(NativePlan {
            steps: self.steps,
            frees,
            slots: self.slots,
            output: slot,
            outputs,
        })
    }

    fn slot(&mut self) -> Slot {
        self.slots += 1;
        self.slots - 1
    }

    fn val(&self, name: &str) -> Result<&Val, String> {
        self.vals
            .get(name)
            .ok_or_else(|| format!("input {name:?} is not computed before it is read"))
    }

    fn run_val(&self, name: &str) -> Result<(Slot, Kind), String> {
        match self.val(name)? {
            Val::Run { slot, kind } => Ok((*slot, *kind)),
            _ => Err(format!(
                "{name:?} is a constant where a computed value was expected"
            )),
        }
    }

    fn map(&self, name: &str) -> Result<(Slot, usize, usize, usize), String> {
        match self.run_val(name)? {
            (s, Kind::Map { c, h, w }) => Ok((s, c, h, w)),
            (_, k) => Err(format!("{name:?} is {k}, expected a feature map")),
        }
    }

    fn constant(&self, name: &str) -> Result<(&[usize], &[f32]), String> {
        match self.val(name)? {
            Val::Const { dims, data } => Ok((dims, data)),
            _ => Err(format!("{name:?} is not a float constant")),
        }
    }

    /// Whether the step just emitted made `name` and nothing but the node at hand reads it:
    /// then that node can be fused into it.
    /// Whether the step just emitted made `name`, nothing but the node at hand reads it, and
    /// no other name (an `Identity`, a `Dropout`) stands for the same value: then that node can
    /// be fused into the step.
    fn fusable(&self, name: &str) -> bool {
        let Ok((slot, _)) = self.run_val(name) else {
            return false;
        };
        let names = self
            .vals
            .values()
            .filter(|v| matches!(v, Val::Run { slot: s, .. } if *s == slot))
            .count();
        names == 1
            && self.readers.get(name) == Some(&1)
            && self.steps.last().is_some_and(|s| s.y == slot)
    }

    /// `out` names the value `consumed` named, now that a node has been fused into the step
    /// that made it (`consumed` had no other reader).
    fn fused(&mut self, consumed: &str, out: &str, slot: Slot, kind: Kind) {
        self.vals.remove(consumed);
        self.alias(out, slot, kind);
    }

    fn emit(&mut self, out: &str, op: Op, kind: Kind) {
        let y = self.slot();
        self.steps.push(Step { op, y });
        self.alias(out, y, kind);
    }

    fn alias(&mut self, out: &str, slot: Slot, kind: Kind) {
        self.vals.insert(out.to_string(), Val::Run { slot, kind });
    }

    fn node(&mut self, n: &pb::NodeProto) -> Result<(), String> {
        let out = match n.output.as_slice() {
            [o] => o.as_str(),
            [o, rest @ ..] if n.op_type == "Dropout" || rest.iter().all(|r| r.is_empty()) => {
                o.as_str()
            }
            _ => return Err(format!("{} outputs", n.output.len())),
        };
        if !n.domain.is_empty() && n.domain != "ai.onnx" {
            return Err(format!("domain {:?}", n.domain));
        }
        let input = |i: usize| -> Result<&str, String> {
            n.input
                .get(i)
                .map(String::as_str)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| format!("input {i} is missing"))
        };
        match n.op_type.as_str() {
            "Constant" => {
                let t = attr(n, "value")
                    .and_then(|a| a.t.as_ref())
                    .ok_or("only a tensor `value` is supported")?;
                let v = constant(t)?;
                self.vals.insert(out.to_string(), v);
            }
            "Identity" | "Dropout" => {
                let v = self.val(input(0)?)?.clone();
                self.vals.insert(out.to_string(), v);
            }
            "Transpose" => {
                let (slot, kind) = self.run_val(input(0)?)?;
                if kind != Kind::Nhwc || ints(n, "perm") != Some(&[0, 3, 1, 2][..]) {
                    return Err("only the NHWC input to NCHW is supported".into());
                }
                self.alias(out, slot, self.input);
            }
            "Reshape" | "Flatten" | "Squeeze" => self.reshape(n, out)?,
            "Conv" => self.conv(n, out)?,
            "BatchNormalization" => self.batch_norm(n, out)?,
            "Relu" => {
                let x = input(0)?;
                let (slot, kind) = self.run_val(x)?;
                if self.fusable(x)
                    && let Some(
                        Op::Conv3 { relu, .. }
                        | Op::Depthwise { relu, .. }
                        | Op::Pointwise { relu, .. },
                    ) = self.steps.last_mut().map(|s| &mut s.op)
                {
                    *relu = true;
                    self.fused(x, out, slot, kind);
                    return Ok(());
                }
                self.emit(out, Op::Relu { x: slot }, kind);
            }
            "MaxPool" => self.max_pool(n, out)?,
            "Add" | "Mul" | "Sub" | "Div" => self.binary(n, out)?,
            "GlobalAveragePool" => {
                let (x, c, _, _) = self.map(input(0)?)?;
                self.emit(
                    out,
                    Op::Mean { x, flat: false },
                    Kind::Map { c, h: 1, w: 1 },
                );
            }
            "ReduceMean" => {
                let (x, c, _, _) = self.map(input(0)?)?;
                let axes: Vec<i64> = match (ints(n, "axes"), n.input.get(1)) {
                    (Some(a), _) => a.to_vec(),
                    (None, Some(name)) if !name.is_empty() => match self.val(name)? {
                        Val::Ints(a) => a.clone(),
                        _ => return Err("axes must be int64 constants".into()),
                    },
                    _ => return Err("a mean over every axis is not supported".into()),
                };
                let mut axes: Vec<i64> = axes
                    .iter()
                    .map(|&a| if a < 0 { a + 4 } else { a })
                    .collect();
                axes.sort_unstable();
                if axes != [2, 3] {
                    return Err(format!("mean over axes {axes:?}, only [2, 3] is supported"));
                }
                let flat = int(n, "keepdims").unwrap_or(1) == 0;
                let kind = if flat {
                    Kind::Flat { k: c }
                } else {
                    Kind::Map { c, h: 1, w: 1 }
                };
                self.emit(out, Op::Mean { x, flat }, kind);
            }
            "Gemm" => self.gemm(n, out)?,
            "MatMul" => {
                let (x, k_in) = self.flat(input(0)?)?;
                let (dims, data) = self.constant(input(1)?)?;
                if k_in == 0 || dims.len() != 2 || dims[0] != k_in || dims[1] == 0 {
                    return Err(format!("weights {dims:?} do not take {k_in} inputs"));
                }
                let k = dims[1];
                let w = tensor(data, (k_in, k))?;
                self.emit(out, Op::Dense { x, w, b: None }, Kind::Flat { k });
            }
            "Softmax" => {
                let (x, k) = self.flat(input(0)?)?;
                let axis = int(n, "axis").unwrap_or(-1);
                if axis != 1 && axis != -1 {
                    return Err(format!("softmax over axis {axis}"));
                }
                self.emit(out, Op::Softmax { x }, Kind::Flat { k });
            }
            other => return Err(format!("operator {other} is not lowered")),
        }
        Ok(())
    }

    fn flat(&self, name: &str) -> Result<(Slot, usize), String> {
        match self.run_val(name)? {
            (s, Kind::Flat { k }) => Ok((s, k)),
            (_, k) => Err(format!("{name:?} is {k}, expected (faces, values)")),
        }
    }

    fn reshape(&mut self, n: &pb::NodeProto, out: &str) -> Result<(), String> {
        let x = n.input.first().ok_or("no input")?;
        let (slot, kind) = self.run_val(x)?;
        let target: Option<Vec<i64>> = match n.op_type.as_str() {
            "Reshape" => match self.val(n.input.get(1).ok_or("no shape")?)? {
                Val::Ints(s) => Some(s.clone()),
                _ => return Err("the shape must be an int64 constant".into()),
            },
            _ => None,
        };
        match (kind, target) {
            // NHWC input with one channel reshaped to (N, 1, H, W): the same memory.
            (Kind::Nhwc, Some(s)) => {
                let Kind::Map { c, h, w } = self.input else {
                    return Err("the input's shape is unknown".into());
                };
                let nchw = [1, h as i64, w as i64];
                if c != 1 || s.len() != 4 || s[1..] != nchw {
                    return Err(format!("reshape of the NHWC input to {s:?}"));
                }
                self.alias(out, slot, Kind::Map { c, h, w });
            }
            (Kind::Flat { k }, Some(s)) if s.len() == 2 && (s[1] == k as i64 || s[1] == -1) => {
                self.alias(out, slot, kind)
            }
            (Kind::Flat { .. }, None) => self.alias(out, slot, kind),
            (Kind::Map { c, h, w }, s) => {
                let fits = match &s {
                    Some(s) => s.len() == 2 && (s[1] == (c * h * w) as i64 || s[1] == -1),
                    None if n.op_type == "Flatten" => int(n, "axis").unwrap_or(1) == 1,
                    // Squeeze of the 1x1 height and width.
                    None => h == 1 && w == 1,
                };
                if !fits {
                    return Err(format!("{} of a {c}x{h}x{w} map", n.op_type));
                }
                let k = c * h * w;
                if h == 1 && w == 1 {
                    self.emit(
                        out,
                        Op::Mean {
                            x: slot,
                            flat: true,
                        },
                        Kind::Flat { k },
                    );
                } else {
                    self.emit(out, Op::Flatten { x: slot }, Kind::Flat { k });
                }
            }
            (k, s) => return Err(format!("{} of {k} to {s:?}", n.op_type)),
        }
        Ok(())
    }
}

fn ce(e: candle_core::Error) -> String {
    e.to_string()
}

fn tensor(data: &[f32], shape: impl Into<candle_core::Shape>) -> Result<Tensor, String> {
    Tensor::from_slice(data, shape, &Device::Cpu).map_err(ce)
}

fn attr<'a>(n: &'a pb::NodeProto, name: &str) -> Option<&'a pb::AttributeProto> {
    n.attribute.iter().find(|a| a.name == name)
}

fn ints<'a>(n: &'a pb::NodeProto, name: &str) -> Option<&'a [i64]> {
    attr(n, name).map(|a| a.ints.as_slice())
}

fn int(n: &pb::NodeProto, name: &str) -> Option<i64> {
    attr(n, name).map(|a| a.i)
}

fn string(n: &pb::NodeProto, name: &str) -> Option<String> {
    attr(n, name).map(|a| String::from_utf8_lossy(&a.s).into_owned())
}

/// A constant from the file: float32 or int64 data, inline. Anything else is kept opaque and
/// refused only where a lowered operator reads it.
fn constant(t: &pb::TensorProto) -> Result<Val, String> {
    use pb::tensor_proto::DataType;
    let opaque = Val::Opaque;
    if t.data_location == Some(pb::tensor_proto::DataLocation::External as i32) {
        return Ok(opaque);
    }
    let Ok(dims) = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<Result<Vec<usize>, _>>()
    else {
        return Ok(opaque);
    };
    let Some(count) = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) else {
        return Ok(opaque);
    };
    if t.data_type == DataType::Float as i32 {
        let data: Vec<f32> = if t.raw_data.is_empty() {
            t.float_data.clone()
        } else {
            t.raw_data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        };
        if data.len() != count {
            return Err(format!(
                "constant {:?} holds {} values for shape {dims:?}",
                t.name,
                data.len()
            ));
        }
        Ok(Val::Const { dims, data })
    } else if t.data_type == DataType::Int64 as i32 {
        let data: Vec<i64> = if t.raw_data.is_empty() {
            t.int64_data.clone()
        } else {
            t.raw_data
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
                .collect()
        };
        Ok(Val::Ints(data))
    } else {
        Ok(opaque)
    }
}

#[cfg(test)]
mod tests {
    use super::super::graph::{Attr, Builder};
    use super::super::import::inspect;
    use super::*;

    /// `(N, 1, 8, 8)` -> `op` with `attrs` (a 3x3 conv to 2 channels, or a max pool) ->
    /// global average pool -> flatten -> softmax, lowered.
    fn lowered(op: &str, attrs: Vec<Attr>) -> Result<NativePlan, String> {
        let mut b = Builder::default();
        let x = match op {
            "Conv" => {
                let w = b.f32s("w", &[2, 1, 3, 3], &[0.1; 18]);
                b.op("Conv", "conv", &["x", &w], attrs)
            }
            _ => b.op(op, "pool", &["x"], attrs),
        };
        let g = b.op("GlobalAveragePool", "gap", &[&x], vec![]);
        let f = b.op("Flatten", "flat", &[&g], vec![Attr::Int("axis", 1)]);
        let s = b.op("Softmax", "probs", &[&f], vec![]);
        let classes = if op == "Conv" { 2 } else { 1 };
        let model = b.finish(("x", [1, 8, 8]), (&s, classes), vec![], String::new());
        let graph = model.graph.expect("a graph");
        let shape = inspect(&graph).expect("a checked input");
        NativePlan::lower(&graph, &shape)
    }

    #[test]
    fn a_same_padded_conv_lowers_and_runs() {
        let plan = lowered(
            "Conv",
            vec![
                Attr::Ints("kernel_shape", vec![3, 3]),
                Attr::Ints("pads", vec![1, 1, 1, 1]),
            ],
        )
        .unwrap();
        let x = Tensor::ones((1, 3, 8, 8), candle_core::DType::F32, &Device::Cpu).unwrap();
        let rows = plan.run(x).unwrap();
        assert_eq!(rows.len(), 3);
        assert!(
            rows.iter()
                .all(|r| (r[0] - 0.5).abs() < 1e-6 && r.len() == 2)
        );
    }

    #[test]
    fn what_the_kernels_do_not_take_is_refused_by_name() {
        let k3 = || Attr::Ints("kernel_shape", vec![3, 3]);
        let cases = [
            (
                "Conv",
                vec![k3(), Attr::Ints("strides", vec![2, 2])],
                "strides [2, 2]",
            ),
            (
                "Conv",
                vec![k3(), Attr::Ints("pads", vec![0, 0, 1, 1])],
                "pads [0, 0, 1, 1]",
            ),
            (
                "Conv",
                vec![k3(), Attr::Ints("dilations", vec![2, 2])],
                "dilated",
            ),
            // PyTorch's symmetric padding on an even side shifts every window against
            // TensorFlow's "same", which the kernel computes.
            (
                "MaxPool",
                vec![
                    k3(),
                    Attr::Ints("strides", vec![2, 2]),
                    Attr::Ints("pads", vec![1, 1, 1, 1]),
                ],
                "pads [1, 1, 1, 1] on 8x8",
            ),
            (
                "AveragePool",
                vec![k3()],
                "operator AveragePool is not lowered",
            ),
        ];
        for (op, attrs, want) in cases {
            let why = lowered(op, attrs).err().expect("refused");
            assert!(why.contains(want), "{op}: {why}");
        }
        // TensorFlow's "same" padding of the same pool lowers.
        lowered(
            "MaxPool",
            vec![
                k3(),
                Attr::Ints("strides", vec![2, 2]),
                Attr::Ints("pads", vec![0, 0, 1, 1]),
            ],
        )
        .unwrap();
    }

    /// `graph` (built on `x`, a `(N, 1, 8, 8)` input, ending in `probs` over 2 classes) as an
    /// imported model, and the same forced into tract; both give the scores of `faces`.
    fn both_engines(build: impl Fn(&mut Builder) -> String) -> (super::super::Engine, f32) {
        use prost::Message;
        let mut b = Builder::default();
        let out = build(&mut b);
        let meta = vec![
            ("classes".to_string(), r#"["a", "b"]"#.to_string()),
            ("input_scaling".to_string(), "zero_to_one".to_string()),
        ];
        let bytes = b
            .finish(("x", [1, 8, 8]), (&out, 2), meta, String::new())
            .encode_to_vec();
        let path = std::path::Path::new("test.onnx");
        let opts = super::super::OnnxOptions::default();
        let native = super::super::OnnxNet::from_bytes(path, &bytes, &opts).unwrap();
        let mut tract = super::super::OnnxNet::from_bytes(path, &bytes, &opts).unwrap();
        tract.set_native(false);
        let faces: Vec<image::GrayImage> = (0..3u32)
            .map(|k| {
                image::GrayImage::from_fn(8, 8, |x, y| {
                    image::Luma([((x * 29 + y * 7 + k * 50) % 256) as u8])
                })
            })
            .collect();
        let crops: Vec<super::super::FaceCrop> =
            faces.iter().map(super::super::FaceCrop::Gray).collect();
        let (a, b) = (native.probs(&crops).unwrap(), tract.probs(&crops).unwrap());
        let worst = a
            .iter()
            .flatten()
            .zip(b.iter().flatten())
            .map(|(p, q)| (p - q).abs())
            .fold(0f32, f32::max);
        (native.engine(), worst)
    }

    /// Two 3x3 convs to 2 channels with distinct weights, from `x`.
    fn conv(b: &mut Builder, x: &str, name: &str, w: f32) -> String {
        let k: Vec<f32> = (0..18).map(|i| w * (i as f32 - 8.0) / 9.0).collect();
        let w = b.f32s(&format!("{name}_w"), &[2, 1, 3, 3], &k);
        b.op(
            "Conv",
            name,
            &[x, &w],
            vec![
                Attr::Ints("kernel_shape", vec![3, 3]),
                Attr::Ints("pads", vec![1, 1, 1, 1]),
            ],
        )
    }

    fn head(b: &mut Builder, x: &str) -> String {
        let g = b.op("GlobalAveragePool", "gap", &[x], vec![]);
        let f = b.op("Flatten", "flat", &[&g], vec![Attr::Int("axis", 1)]);
        b.op("Softmax", "probs", &[&f], vec![])
    }

    #[test]
    fn a_value_read_through_an_identity_is_not_fused_away() {
        // conv -> a; identity(a) -> b; relu(b) -> c; a + c: the sum needs `a` before the ReLU.
        let (engine, worst) = both_engines(|b| {
            let a = conv(b, "x", "conv", 1.0);
            let id = b.op("Identity", "alias", &[&a], vec![]);
            let c = b.op("Relu", "relu", &[&id], vec![]);
            let d = b.op("Add", "sum", &[&a, &c], vec![]);
            head(b, &d)
        });
        assert_eq!(engine, super::super::Engine::Native);
        assert!(worst < 1e-6, "{worst}");
    }

    #[test]
    fn an_unused_branch_does_not_keep_a_graph_in_tract() {
        let (engine, worst) = both_engines(|b| {
            let a = conv(b, "x", "conv", 1.0);
            let idx = b.i64s("idx", &[2], &[1, 0]);
            // Read by nothing: tract prunes it, and so does the lowering.
            b.op("Gather", "unused", &[&a, &idx], vec![Attr::Int("axis", 1)]);
            let r = b.op("Relu", "relu", &[&a], vec![]);
            head(b, &r)
        });
        assert_eq!(engine, super::super::Engine::Native);
        assert!(worst < 1e-6, "{worst}");
    }

    /// A deep graph on a small input shrinks its maps to 1x1 and below what the native nets
    /// see; every kernel a plan can call must take them without panicking.
    #[test]
    fn the_kernels_take_the_smallest_maps() {
        use crate::model::ops::*;
        let dev = &Device::Cpu;
        for side in [1usize, 2, 3] {
            let x = Tensor::ones((2, 1, side, side), candle_core::DType::F32, dev).unwrap();
            let k = Tensor::ones((2, 1, 3, 3), candle_core::DType::F32, dev).unwrap();
            let w = Tensor::ones((2, 2, 3, 3), candle_core::DType::F32, dev).unwrap();
            let b = Tensor::zeros(2, candle_core::DType::F32, dev).unwrap();
            let (o, _) = tf_same_pool_geometry(side);
            assert_eq!(max_pool3x3_s2_same(&x).unwrap().dims(), [2, 1, o, o]);
            assert_eq!(
                max_pool3x3_s2_same_add(&x, &max_pool3x3_s2_same(&x).unwrap())
                    .unwrap()
                    .dims(),
                [2, 1, o, o]
            );
            assert_eq!(
                depthwise_conv3x3(&x, &k).unwrap().dims(),
                [2, 1, side, side]
            );
            assert_eq!(
                conv3x3_direct(&x, &w, &b, 1, true).unwrap().dims(),
                [2, 1, side, side]
            );
            assert_eq!(im2col3x3(&x, 1).unwrap().dims(), [18, side * side]);
            assert_eq!(
                subsample2(&x).unwrap().dims(),
                [2, 1, side.div_ceil(2), side.div_ceil(2)]
            );
            if side >= 2 {
                assert_eq!(max_pool2x2(&x).unwrap().dims(), [2, 1, side / 2, side / 2]);
            }
        }
    }
}
