//! Reading, validating and writing self-describing weights files (safetensors + `__metadata__`).
//!
//! A file is checked completely before anything runs: its header, its metadata (architecture,
//! input size, scaling, classes) and every tensor the architecture asks for (presence, dtype and
//! shape). The architecture's own `new(vb)` is the single list of expected tensors: it asks a
//! [`CheckedBackend`] for each one, which records the first problem with its name and shapes.
//! Every tensor's values are checked too: a NaN or an infinity anywhere, or a negative
//! batch-norm variance, would make every score NaN without an error.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use safetensors::{Dtype, SafeTensorError, SafeTensors};

use super::ModelSpec;
use crate::error::{Error, Result};
use crate::outfile::{self, OutputPolicy};

/// Largest weights file we agree to read; our models are well under 10 MB.
pub const MAX_WEIGHTS_BYTES: u64 = 256 * 1024 * 1024;

/// A parsed weights file: where it came from, what it says it is, and its tensors (as f32).
pub struct WeightsFile {
    /// The file's path, or a label such as `<built-in>` for embedded weights.
    pub path: PathBuf,
    /// The model description read from `__metadata__`.
    pub spec: ModelSpec,
    /// Every tensor in the file, converted to f32 on the CPU.
    pub tensors: HashMap<String, Tensor>,
}

impl WeightsFile {
    /// Read and parse a weights file from disk.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = crate::imaging::read_regular(path, MAX_WEIGHTS_BYTES, "a weights file")
            .map_err(|reason| Error::weights(path, reason))?;
        Self::parse(&bytes, path)
    }

    /// Parse the bytes of a weights file; `path` names it in errors.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Self> {
        let fail = |reason: String| Error::weights(path, reason);
        let st = SafeTensors::deserialize(bytes).map_err(|e| fail(describe(&e, bytes)))?;
        let (_, header) =
            SafeTensors::read_metadata(bytes).map_err(|e| fail(describe(&e, bytes)))?;
        let metadata = header.metadata().clone().unwrap_or_default();
        let spec = ModelSpec::from_metadata(&metadata).map_err(fail)?;
        let mut tensors = HashMap::new();
        for (name, view) in st.iter() {
            let dtype = match view.dtype() {
                Dtype::F32 => DType::F32,
                Dtype::F16 => DType::F16,
                Dtype::BF16 => DType::BF16,
                Dtype::F64 => DType::F64,
                other => {
                    return Err(fail(format!(
                        "tensor {name} has dtype {other:?}, expected F32 (or F16/BF16/F64)"
                    )));
                }
            };
            let t = Tensor::from_raw_buffer(view.data(), dtype, view.shape(), &Device::Cpu)
                .and_then(|t| t.to_dtype(DType::F32))
                .map_err(|e| fail(format!("tensor {name}: {e}")))?;
            check_values(name, &t).map_err(fail)?;
            tensors.insert(name.to_string(), t);
        }
        Ok(Self {
            path: path.to_path_buf(),
            spec,
            tensors,
        })
    }
}

/// Refuse a tensor holding a value no trained network has: NaN or an infinity anywhere, or a
/// negative batch-norm variance (`*running_var`; zero is kept: a channel that never varied in
/// training leaves it, and batch norm's epsilon keeps the division finite).
fn check_values(name: &str, t: &Tensor) -> std::result::Result<(), String> {
    let values = t
        .flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(|e| format!("tensor {name}: {e}"))?;
    if let Some((i, v)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(format!(
            "tensor {name} holds {v} at index {i} (of {}); weights must be finite numbers",
            values.len()
        ));
    }
    if name.ends_with("running_var")
        && let Some((i, v)) = values.iter().enumerate().find(|(_, v)| **v < 0.0)
    {
        return Err(format!(
            "tensor {name} holds {v} at index {i}; a batch-norm variance cannot be negative"
        ));
    }
    Ok(())
}

/// Say what a safetensors parse error means for a user holding the file (`bytes`).
fn describe(e: &SafeTensorError, bytes: &[u8]) -> String {
    use SafeTensorError as E;
    let len = bytes.len();
    match e {
        E::HeaderTooSmall => format!(
            "not a safetensors file: it is {len} bytes, too short for the 8-byte header length"
        ),
        E::HeaderTooLarge | E::InvalidHeaderLength => format!(
            "not a safetensors file (or truncated): the header length in the first 8 bytes does not fit the file's {len} bytes"
        ),
        E::InvalidHeader(_) | E::InvalidHeaderDeserialization(_) | E::JsonError(_) => {
            format!("not a safetensors file: the header is not valid JSON ({e})")
        }
        E::MetadataIncompleteBuffer => format!(
            "truncated or padded: the header's tensors do not end where the file ends ({len} bytes)"
        ),
        // These say which tensor is wrong only in part or not at all; the header says more.
        E::TensorInvalidInfo
        | E::InvalidOffset(_)
        | E::ValidationOverflow
        | E::MisalignedSlice
        | E::InvalidTensorView(..) => {
            bad_tensor(bytes).unwrap_or_else(|| format!("not a valid safetensors file: {e}"))
        }
        other => format!("not a valid safetensors file: {other}"),
    }
}

/// The first tensor whose header entry safetensors refuses, and why, found by walking the
/// header as `SafeTensors::deserialize` does: tensors in order of their data offsets, each
/// starting where the previous one ends and holding exactly its shape times its dtype's size.
fn bad_tensor(bytes: &[u8]) -> Option<String> {
    let n = usize::try_from(u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?)).ok()?;
    let header = bytes.get(8..8usize.checked_add(n)?)?;
    let entries: HashMap<String, serde_json::Value> = serde_json::from_slice(header).ok()?;
    let mut tensors: Vec<(String, safetensors::tensor::TensorInfo)> = entries
        .into_iter()
        .filter(|(name, _)| name != "__metadata__")
        .filter_map(|(name, v)| Some((name, serde_json::from_value(v).ok()?)))
        .collect();
    tensors.sort_by(|a, b| a.1.data_offsets.cmp(&b.1.data_offsets).then(a.0.cmp(&b.0)));
    let mut expected_start = 0;
    for (name, info) in &tensors {
        let (start, end) = info.data_offsets;
        if start != expected_start {
            return Some(format!(
                "tensor {name} has data_offsets [{start}, {end}], expected it to start at byte {expected_start}, where the tensor before it ends"
            ));
        }
        if end < start {
            return Some(format!(
                "tensor {name} has data_offsets [{start}, {end}], which end before they start"
            ));
        }
        expected_start = end;
        let dtype = info.dtype;
        let bits = info
            .shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .and_then(|n| n.checked_mul(dtype.bitsize()));
        let Some(bits) = bits else {
            return Some(format!(
                "tensor {name} has shape {:?}, too large to exist",
                info.shape
            ));
        };
        if bits % 8 != 0 {
            return Some(format!(
                "tensor {name} of dtype {dtype:?} and shape {:?} does not fill whole bytes",
                info.shape
            ));
        }
        if end - start != bits / 8 {
            return Some(format!(
                "tensor {name} of dtype {dtype:?} and shape {:?} needs {} bytes, but its data_offsets [{start}, {end}] hold {}",
                info.shape,
                bits / 8,
                end - start
            ));
        }
    }
    None
}

/// Write tensors and metadata as a safetensors file (used by training and tools), replacing
/// `path` whole as [`write_replacing`] does.
pub fn save(
    path: &Path,
    tensors: &HashMap<String, Tensor>,
    metadata: HashMap<String, String>,
) -> Result<()> {
    write_replacing(path, &serialize(tensors, metadata, path)?)
}

/// The bytes of a safetensors file holding `tensors` (as f32, in name order) and `metadata`;
/// `path` names the file in errors.
pub fn serialize(
    tensors: &HashMap<String, Tensor>,
    metadata: HashMap<String, String>,
    path: &Path,
) -> Result<Vec<u8>> {
    let mut data = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        data.push((name.clone(), t.to_dtype(DType::F32)?.contiguous()?));
    }
    data.sort_by(|a, b| a.0.cmp(&b.0));
    let views: Vec<(String, TensorBytes)> = data
        .iter()
        .map(|(n, t)| Ok((n.clone(), TensorBytes::new(t)?)))
        .collect::<Result<_>>()?;
    safetensors::serialize(views, Some(metadata))
        .map_err(|e| Error::weights(path, format!("cannot serialise: {e}")))
}

/// Replace `path` with `bytes` whole, through [`outfile::write_bytes_atomically`]: a run cut
/// off midway leaves the old file, never a truncated one. An existing regular file is
/// replaced (training rewrites its checkpoints every epoch); a directory, device or FIFO is
/// refused. The new file is owner-only, as every output is.
pub fn write_replacing(path: &Path, bytes: &[u8]) -> Result<()> {
    outfile::write_bytes_atomically(path, bytes, &OutputPolicy::new().with_overwrite(true))
}

struct TensorBytes {
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl TensorBytes {
    fn new(t: &Tensor) -> Result<Self> {
        let v = t.flatten_all()?.to_vec1::<f32>()?;
        Ok(Self {
            shape: t.dims().to_vec(),
            bytes: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        })
    }
}

impl safetensors::View for TensorBytes {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// A VarBuilder backend over a file's tensors that remembers the first missing or misshapen
/// tensor, so that the loader can report it by name with expected and found shapes.
pub struct CheckedBackend {
    tensors: HashMap<String, Tensor>,
    problem: Problem,
}

/// Shared slot holding the first problem a [`CheckedBackend`] met.
#[derive(Clone, Default)]
pub struct Problem(Arc<Mutex<Option<String>>>);

impl Problem {
    /// The first problem met while building a model, if any.
    pub fn get(&self) -> Option<String> {
        self.0.lock().ok().and_then(|p| p.clone())
    }
}

impl CheckedBackend {
    /// Wrap a file's tensors; the returned [`Problem`] reads what went wrong after the backend
    /// has been handed to a `VarBuilder`.
    pub fn new(tensors: HashMap<String, Tensor>) -> (Self, Problem) {
        let problem = Problem::default();
        (
            Self {
                tensors,
                problem: problem.clone(),
            },
            problem,
        )
    }

    fn record(&self, msg: String) -> candle_core::Error {
        if let Ok(mut p) = self.problem.0.lock() {
            p.get_or_insert_with(|| msg.clone());
        }
        candle_core::Error::Msg(msg)
    }
}

impl SimpleBackend for CheckedBackend {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        match self.tensors.get(name) {
            None => Err(self.record(format!(
                "tensor {name} is missing (expected shape {:?})",
                s.dims()
            ))),
            Some(t) if t.shape() != &s => Err(self.record(format!(
                "tensor {name} has shape {:?}, expected {:?}",
                t.dims(),
                s.dims()
            ))),
            Some(t) => t.to_dtype(dtype)?.to_device(dev),
        }
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        match self.tensors.get(name) {
            None => Err(self.record(format!("tensor {name} is missing"))),
            Some(t) => t.to_dtype(dtype)?.to_device(dev),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
}

// ---------------------------------------------------------------------------------------------
// Named tensors that are not models (training's checkpoints, optimiser state, score tables):
// serialised with a check that every value is finite, read back in their own dtype, and a file's
// metadata read from its header alone.

/// Metadata and tensors of a safetensors file read by [`read_tensors`].
pub struct NamedTensors {
    /// The `__metadata__` entries (empty when the file has none).
    pub metadata: HashMap<String, String>,
    /// Every tensor by name, on the CPU, in its stored dtype (F32, F64, F16 or BF16).
    pub tensors: HashMap<String, Tensor>,
}

/// The first value of `t` that is not finite, as `(flat index, value)`; `None` if all are.
pub fn first_non_finite(t: &Tensor) -> Result<Option<(usize, f64)>> {
    let values = t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
    Ok(values.into_iter().enumerate().find(|(_, v)| !v.is_finite()))
}

/// `Err` naming `path` and the tensor if any of `tensors` holds a NaN or an infinity.
pub fn check_finite<'a>(
    path: &Path,
    tensors: impl IntoIterator<Item = (&'a String, &'a Tensor)>,
) -> Result<()> {
    for (name, t) in tensors {
        if let Some((i, v)) = first_non_finite(t)? {
            return Err(Error::weights(
                path,
                format!(
                    "tensor {name} holds {v} at element {i} of {:?}: expected finite values",
                    t.dims()
                ),
            ));
        }
    }
    Ok(())
}

/// Safetensors bytes of `tensors` (F32 and F64 kept as they are, other dtypes stored as F32)
/// with `metadata`, refused (naming `path`, where they are meant to go, and the tensor) if a
/// value is not finite, so that a diverged state is never written.
pub fn encode_tensors(
    path: &Path,
    tensors: &HashMap<String, Tensor>,
    metadata: Option<HashMap<String, String>>,
) -> Result<Vec<u8>> {
    check_finite(path, tensors)?;
    let mut views = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        views.push((name.clone(), RawTensor::new(t)?));
    }
    views.sort_by(|a, b| a.0.cmp(&b.0));
    safetensors::serialize(views, metadata)
        .map_err(|e| Error::weights(path, format!("cannot serialise: {e}")))
}

/// Largest file [`read_tensors`] reads: an AdamW state holds two tensors per weight of a
/// model of up to [`MAX_WEIGHTS_BYTES`].
pub const MAX_NAMED_TENSORS_BYTES: u64 = 3 * MAX_WEIGHTS_BYTES;

/// Every tensor of a safetensors file in its stored dtype, and its metadata, without reading
/// them as a model. The file may be at most [`MAX_NAMED_TENSORS_BYTES`].
pub fn read_tensors(path: &Path) -> Result<NamedTensors> {
    let bytes = crate::imaging::read_regular(path, MAX_NAMED_TENSORS_BYTES, "a safetensors file")
        .map_err(|reason| Error::weights(path, reason))?;
    let fail = |reason: String| Error::weights(path, reason);
    let st = SafeTensors::deserialize(&bytes).map_err(|e| fail(describe(&e, &bytes)))?;
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| fail(describe(&e, &bytes)))?;
    let mut tensors = HashMap::new();
    for (name, view) in st.iter() {
        let dtype = match view.dtype() {
            Dtype::F32 => DType::F32,
            Dtype::F64 => DType::F64,
            Dtype::F16 => DType::F16,
            Dtype::BF16 => DType::BF16,
            other => {
                return Err(fail(format!(
                    "tensor {name} has dtype {other:?}, expected F32, F64, F16 or BF16"
                )));
            }
        };
        let t = Tensor::from_raw_buffer(view.data(), dtype, view.shape(), &Device::Cpu)
            .map_err(|e| fail(format!("tensor {name}: {e}")))?;
        tensors.insert(name.to_string(), t);
    }
    Ok(NamedTensors {
        metadata: header.metadata().clone().unwrap_or_default(),
        tensors,
    })
}

/// The `__metadata__` of a safetensors file, read from its header alone (not the tensors
/// after it), e.g. to tell what kind of file it is before reading it whole.
pub fn read_metadata(path: &Path) -> Result<HashMap<String, String>> {
    use std::io::Read;
    let fail = |reason: String| Error::weights(path, reason);
    let mut f = crate::imaging::open_regular(path, MAX_NAMED_TENSORS_BYTES, "a safetensors file")
        .map_err(fail)?;
    let file_len = f.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut n = [0u8; 8];
    f.read_exact(&mut n).map_err(|_| {
        fail(format!(
            "not a safetensors file: it is {file_len} bytes, too short for the 8-byte header length"
        ))
    })?;
    let n = u64::from_le_bytes(n);
    // The header must fit the file and safetensors' own 100 MB limit on headers.
    if n > 100_000_000 || n > file_len.saturating_sub(8) {
        return Err(fail(format!(
            "not a safetensors file (or truncated): the header length in the first 8 bytes does not fit the file's {file_len} bytes"
        )));
    }
    let mut header = Vec::with_capacity(n as usize);
    f.take(n)
        .read_to_end(&mut header)
        .map_err(|e| Error::io(path, e))?;
    let meta: safetensors::tensor::Metadata = serde_json::from_slice(&header).map_err(|e| {
        fail(format!(
            "not a safetensors file: the header is not valid JSON ({e})"
        ))
    })?;
    Ok(meta.metadata().clone().unwrap_or_default())
}

/// A tensor's little-endian bytes for [`encode_tensors`].
struct RawTensor {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl RawTensor {
    fn new(t: &Tensor) -> Result<Self> {
        let flat = t.flatten_all()?;
        let (dtype, bytes) = match t.dtype() {
            DType::F64 => (
                Dtype::F64,
                flat.to_vec1::<f64>()?
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect(),
            ),
            _ => (
                Dtype::F32,
                flat.to_dtype(DType::F32)?
                    .to_vec1::<f32>()?
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect(),
            ),
        };
        Ok(Self {
            dtype,
            shape: t.dims().to_vec(),
            bytes,
        })
    }
}

impl safetensors::View for RawTensor {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

#[cfg(test)]
mod named_tensor_tests {
    use super::*;

    fn tensors() -> candle_core::Result<HashMap<String, Tensor>> {
        Ok(HashMap::from([
            (
                "a.weight".to_string(),
                Tensor::new(&[[1f32, -2.5], [0.0, 3.0]], &Device::Cpu)?,
            ),
            (
                "step".to_string(),
                Tensor::new(&[123456789f64], &Device::Cpu)?,
            ),
        ]))
    }

    #[test]
    fn tensors_and_metadata_round_trip_in_their_dtypes() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let path = dir.path().join("state.safetensors");
        let meta = HashMap::from([("kind".to_string(), "test".to_string())]);
        let bytes = encode_tensors(&path, &tensors()?, Some(meta.clone()))?;
        std::fs::write(&path, bytes).map_err(|e| Error::io(&path, e))?;
        assert_eq!(read_metadata(&path)?, meta);
        let back = read_tensors(&path)?;
        assert_eq!(back.metadata, meta);
        assert_eq!(
            back.tensors["a.weight"].to_vec2::<f32>()?,
            vec![vec![1.0, -2.5], vec![0.0, 3.0]]
        );
        let step = &back.tensors["step"];
        assert_eq!(step.dtype(), DType::F64);
        assert_eq!(step.to_vec1::<f64>()?, vec![123456789.0]);
        Ok(())
    }

    #[test]
    fn a_value_that_is_not_finite_is_never_encoded() -> Result<()> {
        for bad in [f32::NAN, f32::INFINITY] {
            let mut t = tensors()?;
            t.insert(
                "b.bias".into(),
                Tensor::new(&[0f32, bad, 1.0], &Device::Cpu)?,
            );
            let err = encode_tensors(Path::new("out.safetensors"), &t, None)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("out.safetensors")
                    && err.contains("tensor b.bias")
                    && err.contains("element 1"),
                "{err}"
            );
        }
        assert_eq!(
            first_non_finite(&Tensor::new(&[1f64, 2.0], &Device::Cpu)?)?,
            None
        );
        Ok(())
    }

    #[test]
    fn metadata_of_a_file_that_is_not_safetensors_is_refused() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        for (name, bytes) in [
            ("short", &b"abc"[..]),
            (
                "huge-header",
                &[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, b'{', b'}'][..],
            ),
            (
                "not-json",
                &[4, 0, 0, 0, 0, 0, 0, 0, b'n', b'o', b'p', b'e'][..],
            ),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).map_err(|e| Error::io(&path, e))?;
            let err = read_metadata(&path).unwrap_err().to_string();
            assert!(
                err.contains(name) && err.contains("not a safetensors file"),
                "{err}"
            );
            assert!(read_tensors(&path).is_err());
        }
        assert!(read_metadata(&dir.path().join("absent")).is_err());
        Ok(())
    }
}
