//! A `--teacher`'s probabilities for every training image: read from a teacher table made
//! elsewhere, or computed by a teacher model (see [`super::helpers`]), then softened.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};

use super::checkpoint;
use super::config::Distill;
use super::helpers::helper_tables;
use super::loss::soften;
use crate::dataset::LabeledFaces;
use crate::emotion::Emotion;
use crate::error::{Error, Result};
use crate::model::{TEACHER_TABLE, meta, parse_classes, weights};

/// Metadata entry of a teacher table: its rows' image names, as a JSON list.
pub const TABLE_IMAGES: &str = "images";

/// The name a teacher table gives a training image: its class and file name (`happy/1.jpg`).
pub fn table_image_name(source: &str, class: Emotion) -> String {
    let file = Path::new(source)
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("{}/{file}", class.name())
}

/// Write a teacher table that `--teacher` reads instead of a model: `probs` holds
/// `classes.len()` probabilities per image, one row per name of `images` (`class/file`, see
/// [`table_image_name`]). Tables made outside emocam (`weights/teacher/oof_table.py`) have the
/// same layout.
pub fn save_teacher_table(
    path: &Path,
    name: &str,
    classes: &[Emotion],
    images: &[String],
    probs: &[f32],
) -> Result<()> {
    if probs.len() != images.len() * classes.len() {
        return Err(Error::InvalidInput {
            what: format!("teacher table {}", path.display()),
            reason: format!(
                "{} probabilities for {} images of {} classes",
                probs.len(),
                images.len(),
                classes.len()
            ),
        });
    }
    let tensor = Tensor::from_slice(probs, (images.len(), classes.len()), &Device::Cpu)?;
    let class_names: Vec<&str> = classes.iter().map(|c| c.name()).collect();
    let meta = HashMap::from([
        (meta::ARCHITECTURE.to_string(), TEACHER_TABLE.to_string()),
        (meta::NAME.to_string(), name.to_string()),
        (
            meta::CLASSES.to_string(),
            serde_json::to_string(&class_names).unwrap_or_default(),
        ),
        (
            TABLE_IMAGES.to_string(),
            serde_json::to_string(images).unwrap_or_default(),
        ),
    ]);
    let tensors = HashMap::from([("probs".to_string(), tensor)]);
    let bytes = weights::encode_tensors(path, &tensors, Some(meta))?;
    checkpoint::replace_whole(path, &bytes)
}

/// A teacher table's probabilities for every image of `set`, `classes.len()` per image in the
/// net's class order, and the table's name; `None` when `path` is not a teacher table (it is
/// then loaded as a model). Rows are matched to images by their last two path components
/// (`class/file`), so the table may list them in any order and list more.
fn read_teacher_table(
    path: &Path,
    set: &LabeledFaces,
    classes: &[Emotion],
) -> Result<Option<(String, Vec<f32>)>> {
    let bad = |reason: String| Error::weights(path, reason);
    // Only the header: a teacher that is a model is read again, whole, by the model loader,
    // which also says what is wrong with a file that is not safetensors.
    let Ok(meta) = weights::read_metadata(path) else {
        return Ok(None);
    };
    if meta.get(meta::ARCHITECTURE).map(String::as_str) != Some(TEACHER_TABLE) {
        return Ok(None);
    }
    let table_classes = parse_classes(meta.get(meta::CLASSES).ok_or_else(|| {
        bad("a teacher table needs a \"classes\" metadata entry (JSON list of names)".into())
    })?)
    .map_err(bad)?;
    let names: Vec<String> = match meta.get(TABLE_IMAGES) {
        None => {
            return Err(bad(format!(
                "a teacher table needs an \"{TABLE_IMAGES}\" metadata entry: a JSON list of 'class/file' names"
            )));
        }
        Some(s) => serde_json::from_str(s).map_err(|e| {
            bad(format!(
                "metadata \"{TABLE_IMAGES}\" is not a JSON list of 'class/file' names: {e}"
            ))
        })?,
    };
    let probs = weights::read_tensors(path)?
        .tensors
        .remove("probs")
        .ok_or_else(|| bad("a teacher table needs a tensor \"probs\" (images x classes)".into()))?;
    let k = table_classes.len();
    if probs.dims() != [names.len(), k] {
        return Err(bad(format!(
            "tensor \"probs\" is {:?}, expected [{}, {k}] ({} images, {k} classes)",
            probs.dims(),
            names.len(),
            names.len()
        )));
    }
    let probs = probs
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let columns = classes
        .iter()
        .map(|c| {
            table_classes.iter().position(|t| t == c).ok_or_else(|| {
                bad(format!(
                    "it has no '{c}' class; it must score every class the net learns"
                ))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut rows: HashMap<&str, usize> = HashMap::with_capacity(names.len());
    for (i, n) in names.iter().enumerate() {
        if rows.insert(n.as_str(), i).is_some() {
            return Err(bad(format!(
                "image {n:?} is listed twice; each image needs one row"
            )));
        }
    }
    if set.sources.len() < set.len() {
        return Err(bad(format!(
            "the training set names {} of its {} images, so they cannot be matched to the table's rows",
            set.sources.len(),
            set.len()
        )));
    }
    let mut out = Vec::with_capacity(set.len() * classes.len());
    for (source, label) in set.sources.iter().zip(&set.labels) {
        if Path::new(source)
            .parent()
            .is_none_or(|d| d.as_os_str().is_empty())
        {
            return Err(bad(format!(
                "training image {source:?} has no file name to match: a table's rows are matched to class-folder images by 'class/file' (CSV rows have none)"
            )));
        }
        let key = table_image_name(source, *label);
        let row = *rows.get(key.as_str()).ok_or_else(|| {
            bad(format!(
                "it has no scores for training image {source} (looked for {key:?}); a table must cover every training image"
            ))
        })?;
        let p = &probs[row * k..(row + 1) * k];
        if let Some(v) = p.iter().find(|v| !(v.is_finite() && **v >= 0.0)) {
            return Err(bad(format!(
                "row {row} ({key}) holds {v}: expected probabilities, finite and at least 0"
            )));
        }
        let picked: Vec<f32> = columns.iter().map(|&c| p[c]).collect();
        let sum: f32 = picked.iter().sum();
        if sum <= 0.0 {
            return Err(bad(format!(
                "row {row} ({key}) gives the net's classes no probability: {p:?}"
            )));
        }
        out.extend(picked.iter().map(|v| v / sum));
    }
    let name = meta
        .get(meta::NAME)
        .cloned()
        .unwrap_or_else(|| path.display().to_string());
    Ok(Some((name, out)))
}

/// Softened teacher probabilities for every training image, `classes.len()` per image in the
/// student's class order, and whether they came from `cache` (used for a teacher model).
pub(super) fn teacher_targets(
    d: &Distill,
    set: &LabeledFaces,
    classes: &[Emotion],
    threads: usize,
    cache: &Path,
    progress: bool,
) -> Result<(Vec<f32>, bool)> {
    let t0 = Instant::now();
    if let Some((name, mut probs)) = read_teacher_table(&d.teacher, set, classes)? {
        soften(&mut probs, classes.len(), d.temperature);
        if progress {
            eprintln!(
                "teacher {name}: {} training images read from the table {}",
                set.len(),
                d.teacher.display()
            );
        }
        return Ok((probs, false));
    }
    let (name, mut tables, reused) = helper_tables(
        "--teacher",
        &d.teacher,
        cache,
        &[(set, true)],
        classes,
        threads,
    )?;
    let mut probs = tables.pop().unwrap_or_default();
    soften(&mut probs, classes.len(), d.temperature);
    if progress {
        eprintln!(
            "teacher {name}: {} training images {} in {:.0} s",
            set.len(),
            if reused {
                format!("labelled earlier ({})", cache.display())
            } else {
                "labelled".to_string()
            },
            t0.elapsed().as_secs_f64()
        );
    }
    Ok((probs, reused))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named_set(names: &[(&str, Emotion)]) -> LabeledFaces {
        let mut s = LabeledFaces::default();
        for (n, c) in names {
            s.images.push(image::GrayImage::new(4, 4));
            s.labels.push(*c);
            s.sources.push(n.to_string());
        }
        s
    }

    #[test]
    fn an_image_is_named_by_its_class_and_file() {
        assert_eq!(
            table_image_name("data/train/happy/1.jpg", Emotion::Happy),
            "happy/1.jpg"
        );
        // The label decides the folder name, whatever folder the file came from.
        assert_eq!(table_image_name("x/angry/2.png", Emotion::Sad), "sad/2.png");
    }

    /// A saved table is read back matched by name, in the net's class order, each row
    /// renormalised over the net's classes; a model file is not a table.
    #[test]
    fn a_saved_table_reads_back_matched_by_name() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let path = dir.path().join("t.safetensors");
        let table_classes = [Emotion::Sad, Emotion::Happy, Emotion::Angry];
        let images = [
            "happy/b.jpg".to_string(),
            "sad/a.jpg".to_string(),
            "sad/c.jpg".to_string(),
        ];
        let probs = [0.2, 0.6, 0.2, 0.5, 0.25, 0.25, 1.0, 0.0, 0.0];
        save_teacher_table(&path, "t", &table_classes, &images, &probs)?;
        let set = named_set(&[
            ("d/sad/a.jpg", Emotion::Sad),
            ("d/happy/b.jpg", Emotion::Happy),
        ]);
        let (name, rows) =
            read_teacher_table(&path, &set, &[Emotion::Happy, Emotion::Sad])?.expect("a table");
        assert_eq!(name, "t");
        let expect = [0.25 / 0.75, 0.5 / 0.75, 0.6 / 0.8, 0.2 / 0.8];
        assert!(
            rows.iter().zip(expect).all(|(a, b)| (a - b).abs() < 1e-6),
            "{rows:?}"
        );

        let missing = named_set(&[("d/fear/z.jpg", Emotion::Fear)]);
        let err = read_teacher_table(&path, &missing, &[Emotion::Fear, Emotion::Sad]);
        assert!(err.is_err_and(|e| e.to_string().contains("no 'fear' class")));
        let unlisted = named_set(&[("d/sad/z.jpg", Emotion::Sad)]);
        let err = read_teacher_table(&path, &unlisted, &[Emotion::Happy, Emotion::Sad]);
        assert!(err.is_err_and(|e| e.to_string().contains("\"sad/z.jpg\"")));

        let model = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("weights/mini-xception-fer2013.safetensors");
        assert!(read_teacher_table(&model, &set, &[Emotion::Happy])?.is_none());
        Ok(())
    }
}
