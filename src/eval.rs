//! Measuring a classifier on labelled face crops: accuracy, per-class precision/recall/F1 and
//! the confusion matrix. `emocam eval` and the accuracy test both run [`evaluate`].

use std::fmt;
use std::io::Write;
use std::path::Path;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::dataset::LabeledFaces;
use crate::emotion::{Classes, Emotion, Scores};
use crate::error::{Error, Result};
use crate::model::Classifier;
use crate::outfile::{OutputPolicy, create_private};
use crate::output::{per_image_header, per_image_row};

/// Faces per forward pass during evaluation.
pub const EVAL_BATCH: usize = 64;

/// The result of an evaluation. Per-class figures are in the order of the model's classes.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// Number of samples.
    pub n: usize,
    /// Fraction of samples whose top class is the true class.
    pub accuracy: f64,
    /// Whether each face was averaged with its mirror image.
    pub tta: bool,
    /// The model's classes, the rows and columns of `confusion`.
    #[serde(skip)]
    pub classes: Classes,
    /// `confusion[true][predicted]` counts.
    pub confusion: Vec<Vec<usize>>,
}

impl EvalReport {
    fn classes_len(&self) -> usize {
        self.confusion.len()
    }

    /// Recall of each class (`None` where the class has no samples).
    pub fn recall(&self) -> Vec<Option<f64>> {
        (0..self.classes_len())
            .map(|t| {
                let row: usize = self.confusion[t].iter().sum();
                (row > 0).then(|| self.confusion[t][t] as f64 / row as f64)
            })
            .collect()
    }

    /// Precision of each class (`None` where the class was never predicted).
    pub fn precision(&self) -> Vec<Option<f64>> {
        (0..self.classes_len())
            .map(|p| {
                let col: usize = self.confusion.iter().map(|row| row[p]).sum();
                (col > 0).then(|| self.confusion[p][p] as f64 / col as f64)
            })
            .collect()
    }

    /// F1 of each class (`None` where precision or recall is undefined).
    pub fn f1(&self) -> Vec<Option<f64>> {
        let (p, r) = (self.precision(), self.recall());
        p.into_iter()
            .zip(r)
            .map(|pr| match pr {
                (Some(p), Some(r)) if p + r > 0.0 => Some(2.0 * p * r / (p + r)),
                (Some(_), Some(_)) => Some(0.0),
                _ => None,
            })
            .collect()
    }

    /// Mean recall over the classes that have samples (balanced accuracy).
    pub fn mean_recall(&self) -> f64 {
        let r: Vec<f64> = self.recall().into_iter().flatten().collect();
        if r.is_empty() {
            0.0
        } else {
            r.iter().sum::<f64>() / r.len() as f64
        }
    }

    /// The report as one JSON object: `n`, `accuracy`, `classes`, `per_class_recall`,
    /// `per_class_precision`, `per_class_f1` (objects keyed by class name, in the model's class
    /// order), `confusion` (rows are true classes).
    pub fn to_json(&self) -> Value {
        let per_class = |v: Vec<Option<f64>>| {
            let mut m = Map::new();
            for (name, x) in self.classes.names().iter().zip(v) {
                m.insert(name.clone(), x.map_or(Value::Null, |x| round4(x).into()));
            }
            Value::Object(m)
        };
        serde_json::json!({
            "n": self.n,
            "accuracy": round4(self.accuracy),
            "balanced_accuracy": round4(self.mean_recall()),
            "tta": self.tta,
            "classes": self.classes.names(),
            "per_class_recall": per_class(self.recall()),
            "per_class_precision": per_class(self.precision()),
            "per_class_f1": per_class(self.f1()),
            "confusion": self.confusion,
        })
    }
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

impl fmt::Display for EvalReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // An undefined figure (a class with no samples, or never predicted) is a bare "-".
        let pct =
            |x: Option<f64>| x.map_or("     -".to_string(), |x| format!("{:5.1}%", 100.0 * x));
        writeln!(
            f,
            "n = {}   accuracy = {:.2}%   balanced accuracy = {:.2}%{}",
            self.n,
            100.0 * self.accuracy,
            100.0 * self.mean_recall(),
            if self.tta { "   (with flip TTA)" } else { "" }
        )?;
        writeln!(f)?;
        writeln!(f, "class      recall  precision     F1   samples")?;
        let (p, r, f1) = (self.precision(), self.recall(), self.f1());
        for (i, name) in self.classes.names().iter().enumerate() {
            let n: usize = self.confusion[i].iter().sum();
            writeln!(
                f,
                "{:<9} {}    {}  {}  {:8}",
                name,
                pct(r[i]),
                pct(p[i]),
                pct(f1[i]),
                n
            )?;
        }
        writeln!(f)?;
        write!(f, "confusion (rows: true, columns: predicted)\n{:>9}", "")?;
        for name in self.classes.names() {
            write!(f, " {name:>8}")?;
        }
        writeln!(f)?;
        for (i, name) in self.classes.names().iter().enumerate() {
            write!(f, "{name:<9}")?;
            for c in &self.confusion[i] {
                write!(f, " {c:>8}")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

/// Classify every sample (in batches of [`EVAL_BATCH`]) and tally the results.
pub fn evaluate(clf: &Classifier, data: &LabeledFaces, tta: bool) -> Result<EvalReport> {
    evaluate_each(clf, data, tta, |_, _| Ok(()))
}

/// Like [`evaluate`], handing each sample's index and scores to `each` as they come (for
/// per-image reports); an error from `each` ends the evaluation.
pub fn evaluate_each(
    clf: &Classifier,
    data: &LabeledFaces,
    tta: bool,
    mut each: impl FnMut(usize, &Scores) -> Result<()>,
) -> Result<EvalReport> {
    let classes = clf.classes().clone();
    let truth = label_indices(clf, data)?;
    let mut confusion = vec![vec![0usize; classes.len()]; classes.len()];
    for (k, (imgs, labels)) in data
        .images
        .chunks(EVAL_BATCH)
        .zip(truth.chunks(EVAL_BATCH))
        .enumerate()
    {
        let scores = if tta {
            clf.classify_tta(imgs)?
        } else {
            clf.classify(imgs)?
        };
        for (i, (s, l)) in scores.iter().zip(labels).enumerate() {
            confusion[*l][s.top_index()] += 1;
            each(k * EVAL_BATCH + i, s)?;
        }
    }
    let correct: usize = (0..classes.len()).map(|i| confusion[i][i]).sum();
    let n = data.len();
    Ok(EvalReport {
        n,
        accuracy: if n == 0 {
            0.0
        } else {
            correct as f64 / n as f64
        },
        tta,
        classes,
        confusion,
    })
}

/// Each sample's true class as an index into the model's classes; a class of the data that
/// the model lacks is refused by name, since its samples could never be right.
fn label_indices(clf: &Classifier, data: &LabeledFaces) -> Result<Vec<usize>> {
    let classes = clf.classes();
    let mut missing: Vec<Emotion> = Vec::new();
    let idx: Vec<usize> = data
        .labels
        .iter()
        .map(|&e| {
            classes.index_of_emotion(e).unwrap_or_else(|| {
                if !missing.contains(&e) {
                    missing.push(e);
                }
                0
            })
        })
        .collect();
    if let Some(e) = missing.first() {
        return Err(Error::InvalidInput {
            what: "evaluation data".into(),
            reason: format!(
                "it has samples of class {e:?} but model {} scores only {}; remove that class's \
                 samples or use a model that has it",
                clf.name(),
                classes.names().join(", ")
            ),
        });
    }
    Ok(idx)
}

/// [`evaluate`], also writing one CSV row per sample to `path`: `source,true,predicted,correct`
/// and the probability of each of the model's classes, for finding the faces a model gets
/// wrong. `policy` guards the output (an existing file, the dataset or weights being read);
/// an error writing it names it.
pub fn evaluate_to_csv(
    clf: &Classifier,
    data: &LabeledFaces,
    tta: bool,
    path: &Path,
    policy: &OutputPolicy,
) -> Result<EvalReport> {
    let io = |e| Error::io(path, e);
    let mut out = std::io::BufWriter::new(create_private(path, policy)?);
    out.write_all(&per_image_header(clf.classes()))
        .map_err(io)?;
    let report = evaluate_each(clf, data, tta, |i, s| {
        let row = per_image_row(&data.source(i), data.labels[i].name(), s.top().0, s.probs());
        out.write_all(&row).map_err(io)
    })?;
    out.flush().map_err(io)?;
    Ok(report)
}
