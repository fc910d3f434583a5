//! Measuring a classifier on labelled face crops: accuracy, per-class precision/recall/F1 and
//! the confusion matrix. `emocam eval` and the accuracy test both run [`evaluate`].

use std::fmt;
use std::io::Write;
use std::path::Path;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::dataset::LabeledFaces;
use crate::emotion::{Emotion, Scores};
use crate::error::{Error, Result};
use crate::model::Classifier;
use crate::recognize::csv_field;

/// Faces per forward pass during evaluation.
pub const EVAL_BATCH: usize = 64;

/// The result of an evaluation. Per-class figures are in FER order.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// Number of samples.
    pub n: usize,
    /// Fraction of samples whose top class is the true class.
    pub accuracy: f64,
    /// Whether each face was averaged with its mirror image.
    pub tta: bool,
    /// `confusion[true][predicted]` counts, FER order.
    pub confusion: [[usize; Emotion::COUNT]; Emotion::COUNT],
}

impl EvalReport {
    /// Recall of each class (`None` where the class has no samples).
    pub fn recall(&self) -> [Option<f64>; Emotion::COUNT] {
        std::array::from_fn(|t| {
            let row: usize = self.confusion[t].iter().sum();
            (row > 0).then(|| self.confusion[t][t] as f64 / row as f64)
        })
    }

    /// Precision of each class (`None` where the class was never predicted).
    pub fn precision(&self) -> [Option<f64>; Emotion::COUNT] {
        std::array::from_fn(|p| {
            let col: usize = (0..Emotion::COUNT).map(|t| self.confusion[t][p]).sum();
            (col > 0).then(|| self.confusion[p][p] as f64 / col as f64)
        })
    }

    /// F1 of each class (`None` where precision or recall is undefined).
    pub fn f1(&self) -> [Option<f64>; Emotion::COUNT] {
        let (p, r) = (self.precision(), self.recall());
        std::array::from_fn(|i| match (p[i], r[i]) {
            (Some(p), Some(r)) if p + r > 0.0 => Some(2.0 * p * r / (p + r)),
            (Some(_), Some(_)) => Some(0.0),
            _ => None,
        })
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

    /// The report as one JSON object: `n`, `accuracy`, `per_class_recall`, `per_class_precision`,
    /// `per_class_f1` (objects keyed by class name, FER order), `confusion` (rows are true classes).
    pub fn to_json(&self) -> Value {
        let per_class = |v: [Option<f64>; Emotion::COUNT]| {
            let mut m = Map::new();
            for (e, x) in Emotion::ALL.iter().zip(v) {
                m.insert(e.name().into(), x.map_or(Value::Null, |x| round4(x).into()));
            }
            Value::Object(m)
        };
        serde_json::json!({
            "n": self.n,
            "accuracy": round4(self.accuracy),
            "balanced_accuracy": round4(self.mean_recall()),
            "tta": self.tta,
            "classes": Emotion::ALL.map(|e| e.name()),
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
        let pct = |x: Option<f64>| x.map_or("    -".to_string(), |x| format!("{:5.1}", 100.0 * x));
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
        for (i, e) in Emotion::ALL.iter().enumerate() {
            let n: usize = self.confusion[i].iter().sum();
            writeln!(
                f,
                "{:<9} {}%    {}%  {}%  {:8}",
                e.name(),
                pct(r[i]),
                pct(p[i]),
                pct(f1[i]),
                n
            )?;
        }
        writeln!(f)?;
        write!(f, "confusion (rows: true, columns: predicted)\n{:>9}", "")?;
        for e in Emotion::ALL {
            write!(f, " {:>8}", e.name())?;
        }
        writeln!(f)?;
        for (i, e) in Emotion::ALL.iter().enumerate() {
            write!(f, "{:<9}", e.name())?;
            for c in self.confusion[i] {
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
    let mut confusion = [[0usize; Emotion::COUNT]; Emotion::COUNT];
    for (k, (imgs, labels)) in data
        .images
        .chunks(EVAL_BATCH)
        .zip(data.labels.chunks(EVAL_BATCH))
        .enumerate()
    {
        let scores = if tta {
            clf.classify_tta(imgs)?
        } else {
            clf.classify(imgs)?
        };
        for (i, (s, l)) in scores.iter().zip(labels).enumerate() {
            confusion[l.index()][s.top().0.index()] += 1;
            each(k * EVAL_BATCH + i, s)?;
        }
    }
    let correct: usize = (0..Emotion::COUNT).map(|i| confusion[i][i]).sum();
    let n = data.len();
    Ok(EvalReport {
        n,
        accuracy: if n == 0 {
            0.0
        } else {
            correct as f64 / n as f64
        },
        tta,
        confusion,
    })
}

/// [`evaluate`], also writing one CSV row per sample to `path`: `source,true,predicted,correct`
/// and the probability of each class (FER order), for finding the faces a model gets wrong.
/// The file is replaced; an error writing it names it.
pub fn evaluate_to_csv(
    clf: &Classifier,
    data: &LabeledFaces,
    tta: bool,
    path: &Path,
) -> Result<EvalReport> {
    let io = |e| Error::io(path, e);
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).map_err(io)?);
    let header = ["source", "true", "predicted", "correct"]
        .into_iter()
        .chain(Emotion::ALL.iter().map(|e| e.name()))
        .collect::<Vec<_>>()
        .join(",");
    writeln!(out, "{header}").map_err(io)?;
    let report = evaluate_each(clf, data, tta, |i, s| {
        let (truth, top) = (data.labels[i], s.top().0);
        let probs: Vec<String> = s.0.iter().map(|p| format!("{p:.5}")).collect();
        writeln!(
            out,
            "{},{},{},{},{}",
            csv_field(&data.source(i)),
            truth.name(),
            top.name(),
            u8::from(truth == top),
            probs.join(",")
        )
        .map_err(io)
    })?;
    out.flush().map_err(io)?;
    Ok(report)
}
