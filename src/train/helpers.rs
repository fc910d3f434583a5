//! Models that help training (a `--teacher` or a `--partner`): their probabilities for every
//! image, computed once per run on every core and cached beside the output so that
//! `--resume` does not score the images again.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use candle_core::{Device, Tensor};

use super::checkpoint;
use super::config::Partner;
use super::step::on_threads;
use crate::dataset::LabeledFaces;
use crate::emotion::Emotion;
use crate::error::{Error, Result};
use crate::model::{Classifier, weights};

/// Load a model that helps training (`flag` names the option, for messages); it must score
/// every class the net learns.
fn load_helper(flag: &str, path: &Path, classes: &[Emotion]) -> Result<Classifier> {
    let mut model = Classifier::load(path)?;
    // Its tables are filled on `--threads` threads already.
    model.set_parallel(false);
    if let Some(missing) = classes.iter().find(|c| !model.spec().classes.contains(c)) {
        return Err(Error::InvalidInput {
            what: format!("{flag} {}", path.display()),
            reason: format!(
                "it has no '{missing}' class; it must score every class the net learns"
            ),
        });
    }
    Ok(model)
}

/// `model`'s probabilities for every image of `set`, `classes.len()` per image in the net's
/// class order, on `threads` threads; `tta` averages each image with its mirror image.
fn probability_table(
    model: &Classifier,
    set: &LabeledFaces,
    classes: &[Emotion],
    threads: usize,
    tta: bool,
) -> Result<Vec<f32>> {
    let chunk = set.len().div_ceil(threads.max(1)).max(1);
    let parts = on_threads(set.len(), chunk, "scorer", |r| {
        let mut out = Vec::with_capacity(r.len() * classes.len());
        for faces in set.images[r].chunks(64) {
            let scores = if tta {
                model.classify_tta(faces)?
            } else {
                model.classify(faces)?
            };
            for s in scores {
                out.extend(classes.iter().map(|c| s.of(*c)));
            }
        }
        Ok::<_, Error>(out)
    });
    let mut probs = Vec::with_capacity(set.len() * classes.len());
    for p in parts {
        probs.extend(p.map_err(|reason| Error::InvalidInput {
            what: model.name().to_string(),
            reason,
        })??);
    }
    Ok(probs)
}

/// A helper model's probability tables, one per `(set, tta)` (see [`probability_table`]),
/// computed once per run: they are kept in `cache` with a fingerprint of what they depend on
/// (the model file's bytes, the images, the classes, the mirroring), so that `--resume` does
/// not score every image again (minutes for a large teacher). A cache that is missing,
/// unreadable or made for anything else is replaced. Returns the model's name, the tables and
/// whether they came from the cache.
pub(super) fn helper_tables(
    flag: &str,
    path: &Path,
    cache: &Path,
    sets: &[(&LabeledFaces, bool)],
    classes: &[Emotion],
    threads: usize,
) -> Result<(String, Vec<Vec<f32>>, bool)> {
    let model = load_helper(flag, path, classes)?;
    let name = model.name().to_string();
    let key = table_key(path, sets, classes)?;
    if let Some(tables) = read_tables(cache, &key, sets.len()) {
        return Ok((name, tables, true));
    }
    let tables = sets
        .iter()
        .map(|(set, tta)| probability_table(&model, set, classes, threads, *tta))
        .collect::<Result<Vec<_>>>()?;
    write_tables(cache, &key, &tables)?;
    Ok((name, tables, false))
}

/// Metadata entry of a table cache holding the fingerprint it was made for.
const TABLE_KEY: &str = "emocam_table_key";

/// FNV-1a over everything a helper's tables depend on, as hex.
fn table_key(path: &Path, sets: &[(&LabeledFaces, bool)], classes: &[Emotion]) -> Result<String> {
    let mut h = crate::rng::FNV_OFFSET;
    let mut eat = |bytes: &[u8]| h = crate::rng::fnv1a(h, bytes);
    eat(&std::fs::read(path).map_err(|e| Error::io(path, e))?);
    for c in classes {
        eat(c.name().as_bytes());
    }
    for (set, tta) in sets {
        eat(&[u8::from(*tta)]);
        eat(&(set.len() as u64).to_le_bytes());
        for img in &set.images {
            eat(&img.width().to_le_bytes());
            eat(&img.height().to_le_bytes());
            eat(img.as_raw());
        }
    }
    Ok(format!("{h:016x}"))
}

/// Keep `tables` in `cache`, marked with `key`.
fn write_tables(cache: &Path, key: &str, tables: &[Vec<f32>]) -> Result<()> {
    let named: HashMap<String, Tensor> = tables
        .iter()
        .enumerate()
        .map(|(i, t)| {
            Ok((
                format!("table{i}"),
                Tensor::new(t.as_slice(), &Device::Cpu)?,
            ))
        })
        .collect::<candle_core::Result<_>>()?;
    let meta = HashMap::from([(TABLE_KEY.to_string(), key.to_string())]);
    let bytes = weights::encode_tensors(cache, &named, Some(meta))?;
    checkpoint::replace_whole(cache, &bytes)
}

/// The tables in `cache` if it holds `count` of them made for `key`, all finite.
fn read_tables(cache: &Path, key: &str, count: usize) -> Option<Vec<Vec<f32>>> {
    if weights::read_metadata(cache).ok()?.get(TABLE_KEY)? != key {
        return None;
    }
    let mut saved = weights::read_tensors(cache).ok()?.tensors;
    (0..count)
        .map(|i| {
            let t = saved.remove(&format!("table{i}"))?;
            weights::first_non_finite(&t)
                .ok()?
                .is_none()
                .then(|| t.to_vec1::<f32>().ok())?
        })
        .collect()
}

/// A partner's probabilities: for the training images averaged with their mirror images (so
/// that flipped augmentations keep them), for the validation images exactly as the pair's
/// ensemble will compute them.
pub(super) struct PartnerTables {
    pub train: Vec<f32>,
    pub val: Vec<f32>,
}

/// The partner's tables (cached in `cache`), and whether they came from the cache.
pub(super) fn partner_tables(
    p: &Partner,
    (train_set, val_set): (&LabeledFaces, &LabeledFaces),
    classes: &[Emotion],
    threads: usize,
    cache: &Path,
    progress: bool,
) -> Result<(PartnerTables, bool)> {
    let t0 = Instant::now();
    let (name, mut tables, reused) = helper_tables(
        "--partner",
        &p.path,
        cache,
        &[(train_set, true), (val_set, p.flip)],
        classes,
        threads,
    )?;
    let (val, train) = (tables.pop(), tables.pop());
    if progress {
        eprintln!(
            "partner {name}: training and validation images {} in {:.0} s; losses and \
             accuracies below are those of the pair",
            if reused { "scored earlier" } else { "scored" },
            t0.elapsed().as_secs_f64()
        );
    }
    let tables = PartnerTables {
        train: train.unwrap_or_default(),
        val: val.unwrap_or_default(),
    };
    Ok((tables, reused))
}

/// The rows of `table` (`classes` values per image) for the images `idx` of a batch, in order.
pub(super) fn batch_rows(table: &[f32], idx: &[usize], classes: usize) -> Vec<f32> {
    idx.iter()
        .flat_map(|&i| table[i * classes..(i + 1) * classes].iter().copied())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::GrayImage;

    fn set(pixels: &[u8]) -> LabeledFaces {
        let mut s = LabeledFaces::default();
        for &p in pixels {
            s.images.push(GrayImage::from_pixel(4, 4, image::Luma([p])));
            s.labels.push(Emotion::Happy);
        }
        s
    }

    #[test]
    fn batch_rows_picks_each_images_row_in_batch_order() {
        let table = [0.0, 0.1, 1.0, 1.1, 2.0, 2.1];
        assert_eq!(batch_rows(&table, &[2, 0], 2), vec![2.0, 2.1, 0.0, 0.1]);
        assert!(batch_rows(&table, &[], 2).is_empty());
    }

    /// The key changes with anything the tables depend on, and only then.
    #[test]
    fn the_table_key_follows_the_model_images_classes_and_mirroring() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let model = dir.path().join("m.safetensors");
        std::fs::write(&model, b"model bytes").map_err(|e| Error::io(&model, e))?;
        let (a, b) = (set(&[1, 2]), set(&[1, 3]));
        let classes = [Emotion::Happy, Emotion::Sad];
        let key = table_key(&model, &[(&a, true)], &classes)?;
        assert_eq!(key, table_key(&model, &[(&a, true)], &classes)?);
        assert_eq!(key.len(), 16);
        for other in [
            table_key(&model, &[(&b, true)], &classes)?,
            table_key(&model, &[(&a, false)], &classes)?,
            table_key(&model, &[(&a, true)], &classes[..1])?,
            table_key(&model, &[(&a, true), (&a, true)], &classes)?,
        ] {
            assert_ne!(key, other);
        }
        std::fs::write(&model, b"other bytes").map_err(|e| Error::io(&model, e))?;
        assert_ne!(key, table_key(&model, &[(&a, true)], &classes)?);
        Ok(())
    }

    #[test]
    fn cached_tables_come_back_only_for_their_key_and_count() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let cache = dir.path().join("run.teacher.safetensors");
        assert!(read_tables(&cache, "k", 1).is_none(), "no file yet");
        let tables = vec![vec![0.25f32, 0.75], vec![1.0, 0.0, 0.5]];
        write_tables(&cache, "k", &tables)?;
        assert_eq!(read_tables(&cache, "k", 2), Some(tables.clone()));
        assert_eq!(read_tables(&cache, "k", 1), Some(tables[..1].to_vec()));
        assert!(read_tables(&cache, "other", 2).is_none());
        assert!(read_tables(&cache, "k", 3).is_none());
        // A table that is not finite is never written.
        let err = write_tables(&cache, "k", &[vec![f32::NAN]]).unwrap_err();
        assert!(err.to_string().contains("table0"), "{err}");
        assert_eq!(read_tables(&cache, "k", 2), Some(tables));
        Ok(())
    }
}
