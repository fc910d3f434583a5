//! A small builder of ONNX graphs on tract-onnx's protobuf types: named initializers, nodes
//! with their attributes, and the model around them.

use tract_onnx::pb;
use tract_onnx::pb::attribute_proto::AttributeType;
use tract_onnx::pb::tensor_proto::DataType;

/// The operator set exported graphs declare.
pub const OPSET: i64 = 13;
/// The IR version that goes with [`OPSET`].
pub const IR_VERSION: i64 = 7;

/// Nodes and initializers being put together; every value gets a fresh, readable name.
#[derive(Default)]
pub struct Builder {
    nodes: Vec<pb::NodeProto>,
    initializers: Vec<pb::TensorProto>,
    used: std::collections::HashSet<String>,
}

/// One attribute of a node.
pub enum Attr {
    Int(&'static str, i64),
    Ints(&'static str, Vec<i64>),
}

impl Builder {
    /// A name not used yet, from `base`.
    fn fresh(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut k = 1;
        while self.used.contains(&name) {
            k += 1;
            name = format!("{base}_{k}");
        }
        self.used.insert(name.clone());
        name
    }

    /// A float32 initializer of shape `dims`.
    pub fn f32s(&mut self, name: &str, dims: &[usize], data: &[f32]) -> String {
        let name = self.fresh(name);
        self.initializers.push(pb::TensorProto {
            name: name.clone(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: DataType::Float as i32,
            raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        name
    }

    /// A float32 scalar initializer.
    pub fn scalar(&mut self, name: &str, v: f32) -> String {
        self.f32s(name, &[], &[v])
    }

    /// An int64 initializer of shape `dims` (indices).
    pub fn i64s(&mut self, name: &str, dims: &[usize], data: &[i64]) -> String {
        let name = self.fresh(name);
        self.initializers.push(pb::TensorProto {
            name: name.clone(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: DataType::Int64 as i32,
            raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        name
    }

    /// Add a node `op(inputs)` with one output, named from `name`; returns the output's name.
    pub fn op(&mut self, op: &str, name: &str, inputs: &[&str], attrs: Vec<Attr>) -> String {
        let out = self.fresh(name);
        self.nodes.push(pb::NodeProto {
            op_type: op.to_string(),
            name: out.clone(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.clone()],
            attribute: attrs.into_iter().map(attribute).collect(),
            ..Default::default()
        });
        out
    }

    /// The finished model: input `input` `(batch, c, h, w)` float32, output `output` `(batch,
    /// classes)`, and `metadata` as `metadata_props`.
    pub fn finish(
        self,
        input: (&str, [usize; 3]),
        output: (&str, usize),
        metadata: Vec<(String, String)>,
        doc: String,
    ) -> pb::ModelProto {
        let dim = |d: Dim| pb::tensor_shape_proto::Dimension {
            value: Some(match d {
                Dim::Batch => pb::tensor_shape_proto::dimension::Value::DimParam("batch".into()),
                Dim::Fixed(v) => pb::tensor_shape_proto::dimension::Value::DimValue(v as i64),
            }),
            ..Default::default()
        };
        let value = |name: &str, dims: Vec<Dim>| pb::ValueInfoProto {
            name: name.to_string(),
            r#type: Some(pb::TypeProto {
                value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                    elem_type: DataType::Float as i32,
                    shape: Some(pb::TensorShapeProto {
                        dim: dims.into_iter().map(dim).collect(),
                    }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        };
        let [c, h, w] = input.1;
        let graph = pb::GraphProto {
            name: "emocam".into(),
            node: self.nodes,
            initializer: self.initializers,
            input: vec![value(
                input.0,
                vec![Dim::Batch, Dim::Fixed(c), Dim::Fixed(h), Dim::Fixed(w)],
            )],
            output: vec![value(output.0, vec![Dim::Batch, Dim::Fixed(output.1)])],
            ..Default::default()
        };
        pb::ModelProto {
            ir_version: IR_VERSION,
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: OPSET,
            }],
            producer_name: "emocam".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            doc_string: doc,
            graph: Some(graph),
            metadata_props: metadata
                .into_iter()
                .map(|(key, value)| pb::StringStringEntryProto { key, value })
                .collect(),
            ..Default::default()
        }
    }

    /// Rename the value `from` to `to` where it is made (the graph's output gets a fixed name).
    pub fn rename_output(&mut self, from: &str, to: &str) {
        for n in &mut self.nodes {
            for o in &mut n.output {
                if o == from {
                    *o = to.to_string();
                }
            }
            for i in &mut n.input {
                if i == from {
                    *i = to.to_string();
                }
            }
        }
    }
}

enum Dim {
    Batch,
    Fixed(usize),
}

fn attribute(a: Attr) -> pb::AttributeProto {
    match a {
        Attr::Int(name, i) => pb::AttributeProto {
            name: name.into(),
            r#type: AttributeType::Int as i32,
            i,
            ..Default::default()
        },
        Attr::Ints(name, ints) => pb::AttributeProto {
            name: name.into(),
            r#type: AttributeType::Ints as i32,
            ints,
            ..Default::default()
        },
    }
}
