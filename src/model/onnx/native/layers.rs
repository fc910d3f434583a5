//! Lowering the operators that carry weights or shapes: convolutions, batch norm, max pools,
//! arithmetic with constants and dense layers.

use candle_core::Tensor;
use tract_onnx::pb;

use super::step::Op;
use super::{Kind, Lowering, Slot, Val, attr, ce, int, ints, string, tensor};
use crate::model::ops::tf_same_pool_geometry;

impl Lowering {
    pub(super) fn conv(&mut self, n: &pb::NodeProto, out: &str) -> Result<(), String> {
        let (x, c, h, w) = self.map(n.input.first().ok_or("no input")?)?;
        let (wd, wdata) = self.constant(n.input.get(1).ok_or("no weights")?)?;
        let (wd, wdata) = (wd.to_vec(), wdata.to_vec());
        let [cout, cin_g, kh, kw] = wd[..] else {
            return Err(format!("weights of shape {wd:?}"));
        };
        // Before anything is sized by them: dimensions a hostile file makes huge hold no data.
        if cout == 0 || cin_g == 0 || kh == 0 || kw == 0 || c % cin_g != 0 {
            return Err(format!("weights of shape {wd:?} for {c} input channels"));
        }
        let bias: Vec<f32> = match n.input.get(2).filter(|s| !s.is_empty()) {
            Some(b) => {
                let (_, data) = self.constant(b)?;
                if data.len() != cout {
                    return Err(format!("{} biases for {cout} outputs", data.len()));
                }
                data.to_vec()
            }
            None => vec![0.0; cout],
        };
        let group = int(n, "group").unwrap_or(1);
        let strides = ints(n, "strides").map_or(vec![1, 1], <[i64]>::to_vec);
        if ints(n, "dilations").is_some_and(|d| d.iter().any(|&v| v != 1)) {
            return Err("a dilated convolution is not lowered".into());
        }
        let pads: Vec<i64> = match string(n, "auto_pad").as_deref().unwrap_or("NOTSET") {
            "NOTSET" | "" => ints(n, "pads").map_or(vec![0; 4], <[i64]>::to_vec),
            "VALID" => vec![0; 4],
            "SAME_UPPER" | "SAME_LOWER" if strides == [1, 1] && kh == kw && kh % 2 == 1 => {
                vec![(kh / 2) as i64; 4]
            }
            other => return Err(format!("auto_pad {other} with strides {strides:?}")),
        };
        let even = pads.len() == 4 && pads.iter().all(|&p| p == pads[0]);
        let p = pads.first().copied().unwrap_or(0).max(0) as usize;
        let unsupported = || {
            format!(
                "a {kh}x{kw} convolution with strides {strides:?}, pads {pads:?} and group {group} on {c} channels is not lowered"
            )
        };
        if !even {
            return Err(unsupported());
        }
        match ((kh, kw), strides.as_slice()) {
            ((3, 3), [1, 1])
                if p <= 1 && group == 1 && cin_g == c && h + 2 * p >= 3 && w + 2 * p >= 3 =>
            {
                let wt = tensor(&wdata, (cout, c, 3, 3))?;
                let b = tensor(&bias, cout)?;
                let kind = Kind::Map {
                    c: cout,
                    h: h + 2 * p - 2,
                    w: w + 2 * p - 2,
                };
                self.emit(
                    out,
                    Op::Conv3 {
                        x,
                        w: wt,
                        b,
                        pad: p,
                        relu: false,
                    },
                    kind,
                );
            }
            ((3, 3), [1, 1]) if p == 1 && group == c as i64 && cin_g == 1 && cout == c => {
                let k = tensor(&wdata, (c, 1, 3, 3))?;
                let b = if bias.iter().any(|&v| v != 0.0) {
                    Some(tensor(&bias, (c, 1, 1, 1))?)
                } else {
                    None
                };
                self.emit(
                    out,
                    Op::Depthwise {
                        x,
                        k,
                        b,
                        relu: false,
                    },
                    Kind::Map { c, h, w },
                );
            }
            ((1, 1), [s, t])
                if p == 0 && group == 1 && cin_g == c && s == t && (*s == 1 || *s == 2) =>
            {
                let stride2 = *s == 2;
                let wt = tensor(&wdata, (cout, c))?;
                let b = tensor(&bias, (cout, 1))?;
                let (h, w) = if stride2 {
                    (h.div_ceil(2), w.div_ceil(2))
                } else {
                    (h, w)
                };
                self.emit(
                    out,
                    Op::Pointwise {
                        x,
                        w: wt,
                        b,
                        stride2,
                        relu: false,
                    },
                    Kind::Map { c: cout, h, w },
                );
            }
            _ => return Err(unsupported()),
        }
        Ok(())
    }

    pub(super) fn batch_norm(&mut self, n: &pb::NodeProto, out: &str) -> Result<(), String> {
        if int(n, "training_mode").unwrap_or(0) != 0 {
            return Err("training mode".into());
        }
        let x_name = n.input.first().ok_or("no input")?;
        let (x, c, h, w) = self.map(x_name)?;
        let mut params = Vec::with_capacity(4);
        for i in 1..5 {
            let (_, data) = self.constant(n.input.get(i).ok_or("a parameter is missing")?)?;
            if data.len() != c {
                return Err(format!("{} values for {c} channels", data.len()));
            }
            params.push(data.to_vec());
        }
        let eps = attr(n, "epsilon").map_or(1e-5, |a| a.f);
        let scale: Vec<f32> = (0..c)
            .map(|i| params[0][i] / (params[3][i] + eps).sqrt())
            .collect();
        let shift: Vec<f32> = (0..c)
            .map(|i| params[1][i] - params[2][i] * scale[i])
            .collect();
        let kind = Kind::Map { c, h, w };
        if self.fusable(x_name) {
            let folded = match self.steps.last_mut().map(|s| &mut s.op) {
                Some(Op::Conv3 {
                    w, b, relu: false, ..
                }) => fold(w, b, &scale, &shift, (c, 1, 1, 1), c)?,
                Some(Op::Pointwise {
                    w, b, relu: false, ..
                }) => fold(w, b, &scale, &shift, (c, 1), (c, 1))?,
                Some(Op::Depthwise {
                    k, b, relu: false, ..
                }) => {
                    let mut bias = match b.take() {
                        Some(b) => b,
                        None => tensor(&vec![0.0; c], (c, 1, 1, 1))?,
                    };
                    fold(k, &mut bias, &scale, &shift, (c, 1, 1, 1), (c, 1, 1, 1))?;
                    *b = Some(bias);
                    true
                }
                _ => false,
            };
            if folded {
                self.fused(x_name, out, x, kind);
                return Ok(());
            }
        }
        let mul = tensor(&scale, (c, 1, 1, 1))?;
        let add = tensor(&shift, (c, 1, 1, 1))?;
        self.emit(out, Op::Affine { x, mul, add }, kind);
        Ok(())
    }

    pub(super) fn max_pool(&mut self, n: &pb::NodeProto, out: &str) -> Result<(), String> {
        let (x, c, h, w) = self.map(n.input.first().ok_or("no input")?)?;
        if int(n, "ceil_mode").unwrap_or(0) != 0
            || int(n, "storage_order").unwrap_or(0) != 0
            || ints(n, "dilations").is_some_and(|d| d.iter().any(|&v| v != 1))
        {
            return Err("ceil mode, storage order or dilations".into());
        }
        let k = ints(n, "kernel_shape").unwrap_or(&[]).to_vec();
        let strides = ints(n, "strides").map_or(vec![1, 1], <[i64]>::to_vec);
        let (oh, bh) = tf_same_pool_geometry(h);
        let (ow, bw) = tf_same_pool_geometry(w);
        let tf_same = [
            bh as i64,
            bw as i64,
            ((oh - 1) * 2 + 3).saturating_sub(h + bh) as i64,
            ((ow - 1) * 2 + 3).saturating_sub(w + bw) as i64,
        ];
        let pads: Vec<i64> = match string(n, "auto_pad").as_deref().unwrap_or("NOTSET") {
            "NOTSET" | "" => ints(n, "pads").map_or(vec![0; 4], <[i64]>::to_vec),
            "VALID" => vec![0; 4],
            "SAME_UPPER" => tf_same.to_vec(),
            other => return Err(format!("auto_pad {other}")),
        };
        match (k.as_slice(), strides.as_slice()) {
            ([3, 3], [2, 2]) if pads == tf_same => self.emit(
                out,
                Op::MaxPool3 { x, add: None },
                Kind::Map { c, h: oh, w: ow },
            ),
            ([2, 2], [2, 2]) if pads.iter().all(|&p| p == 0) && h >= 2 && w >= 2 => self.emit(
                out,
                Op::MaxPool2 { x },
                Kind::Map {
                    c,
                    h: h / 2,
                    w: w / 2,
                },
            ),
            _ => {
                return Err(format!(
                    "a {k:?} max pool with strides {strides:?} and pads {pads:?} on {h}x{w} is not lowered"
                ));
            }
        }
        Ok(())
    }

    pub(super) fn binary(&mut self, n: &pb::NodeProto, out: &str) -> Result<(), String> {
        let [a, b] = n.input.as_slice() else {
            return Err(format!("{} inputs", n.input.len()));
        };
        let op = n.op_type.as_str();
        match (self.val(a)?.clone(), self.val(b)?.clone()) {
            (Val::Run { slot: sa, kind: ka }, Val::Run { slot: sb, kind: kb })
                if op == "Add" && ka == kb && ka != Kind::Nhwc =>
            {
                // A max pool's output plus another map, in one pass.
                for (pooled, other) in [(a, sb), (b, sa)] {
                    if self.fusable(pooled)
                        && let Some(Op::MaxPool3 {
                            add: add @ None, ..
                        }) = self.steps.last_mut().map(|s| &mut s.op)
                    {
                        *add = Some(other);
                        let slot = self.run_val(pooled)?.0;
                        self.fused(pooled, out, slot, ka);
                        return Ok(());
                    }
                }
                self.emit(out, Op::Add { a: sa, b: sb }, ka);
            }
            (Val::Run { slot, kind }, Val::Const { dims, data }) => {
                let (mul, add) = match op {
                    "Add" => (vec![1.0], data),
                    "Sub" => (vec![1.0], data.iter().map(|v| -v).collect()),
                    "Mul" => (data, vec![0.0]),
                    "Div" => (data.iter().map(|v| 1.0 / v).collect(), vec![0.0]),
                    _ => return Err(format!("{op} of a value and a constant")),
                };
                self.affine(out, slot, kind, &dims, mul, add)?;
            }
            (Val::Const { dims, data }, Val::Run { slot, kind }) if op == "Add" || op == "Mul" => {
                let (mul, add) = if op == "Add" {
                    (vec![1.0], data)
                } else {
                    (data, vec![0.0])
                };
                self.affine(out, slot, kind, &dims, mul, add)?;
            }
            _ => return Err(format!("{op} of these operands is not lowered")),
        }
        Ok(())
    }

    /// `x * mul + add` with constants of shape `dims` that broadcast over `kind` as one value
    /// or one per channel (per value of a flat row).
    fn affine(
        &mut self,
        out: &str,
        x: Slot,
        kind: Kind,
        dims: &[usize],
        mul: Vec<f32>,
        add: Vec<f32>,
    ) -> Result<(), String> {
        if kind == Kind::Nhwc {
            return Err("arithmetic on the NHWC input before its transpose".into());
        }
        let count = mul.len().max(add.len());
        let wide = |v: Vec<f32>| if v.len() == 1 { vec![v[0]; count] } else { v };
        let (mul, add) = (wide(mul), wide(add));
        let shape: Vec<usize> = match kind {
            _ if count == 1 => match kind {
                Kind::Flat { .. } => vec![1, 1],
                _ => vec![1, 1, 1, 1],
            },
            // Per channel: NCHW constants (C, 1, 1) or (1, C, 1, 1).
            Kind::Map { c, .. }
                if count == c
                    && dims.len() >= 3
                    && dims[dims.len() - 2..] == [1, 1]
                    && dims[dims.len() - 3] == c =>
            {
                vec![c, 1, 1, 1]
            }
            Kind::Flat { k } if count == k && dims.last() == Some(&k) => vec![1, k],
            _ => {
                return Err(format!(
                    "a constant of shape {dims:?} does not broadcast over {kind} as one value or one per channel"
                ));
            }
        };
        let mul = tensor(&mul, shape.as_slice())?;
        let add = tensor(&add, shape.as_slice())?;
        self.emit(out, Op::Affine { x, mul, add }, kind);
        Ok(())
    }

    pub(super) fn gemm(&mut self, n: &pb::NodeProto, out: &str) -> Result<(), String> {
        let (x, k_in) = self.flat(n.input.first().ok_or("no input")?)?;
        if int(n, "transA").unwrap_or(0) != 0 {
            return Err("transA".into());
        }
        let alpha = attr(n, "alpha").map_or(1.0, |a| a.f);
        let beta = attr(n, "beta").map_or(1.0, |a| a.f);
        let (bd, bdata) = self.constant(n.input.get(1).ok_or("no weights")?)?;
        let trans_b = int(n, "transB").unwrap_or(0) != 0;
        let k = match (bd, trans_b) {
            ([k, i], true) if *i == k_in => *k,
            ([i, k], false) if *i == k_in => *k,
            _ => return Err(format!("weights {bd:?} do not take {k_in} inputs")),
        };
        if k == 0 || k_in == 0 {
            return Err(format!("weights {bd:?} hold no values"));
        }
        let scaled: Vec<f32> = bdata.iter().map(|v| v * alpha).collect();
        let w = if trans_b {
            tensor(&scaled, (k, k_in))?
                .t()
                .and_then(|t| t.contiguous())
                .map_err(ce)?
        } else {
            tensor(&scaled, (k_in, k))?
        };
        let b = match n.input.get(2).filter(|s| !s.is_empty()) {
            Some(name) => {
                let (_, data) = self.constant(name)?;
                let row: Vec<f32> = match data.len() {
                    1 => vec![data[0] * beta; k],
                    l if l == k => data.iter().map(|v| v * beta).collect(),
                    l => return Err(format!("{l} biases for {k} outputs")),
                };
                Some(tensor(&row, (1, k))?)
            }
            None => None,
        };
        self.emit(out, Op::Dense { x, w, b }, Kind::Flat { k });
        Ok(())
    }
}

/// Fold `y * scale + shift` (per output channel) into a kernel and its bias.
fn fold(
    w: &mut Tensor,
    b: &mut Tensor,
    scale: &[f32],
    shift: &[f32],
    w_shape: impl Into<candle_core::Shape>,
    b_shape: impl Into<candle_core::Shape> + Copy,
) -> Result<bool, String> {
    let c = scale.len();
    let s = tensor(scale, w_shape)?;
    *w = w.broadcast_mul(&s).map_err(ce)?;
    let sb = tensor(scale, b_shape)?;
    let sh = tensor(shift, b_shape)?;
    *b = b
        .reshape(b_shape)
        .and_then(|b| b.mul(&sb))
        .and_then(|b| b.add(&sh))
        .map_err(ce)?;
    debug_assert_eq!(b.elem_count(), c);
    Ok(true)
}
