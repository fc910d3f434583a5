//! Every CSV and JSON format emocam writes, in one place: `predict`'s rows and JSON lines,
//! recordings, `eval --per-image`. These are stable interfaces (see `docs/cli.md`); the CSV
//! quoting is the `csv` crate's (RFC 4180) and every probability has [`PROB_DECIMALS`] decimals.

use std::fmt;
use std::fs::File;
use std::path::Path;

use crate::emotion::{Classes, FaceResult};
use crate::error::{Error, Result};
use crate::text::printable;

/// Create a new file readable by its owner only (recordings are emotion data about people);
/// an existing file is refused unless `overwrite`, and anything but a regular file always is.
pub fn create_private(path: &Path, overwrite: bool) -> Result<File> {
    use std::fs::OpenOptions;
    let refuse = |reason: String| Error::Output {
        path: path.to_path_buf(),
        reason,
    };
    if path.as_os_str().is_empty() {
        return Err(refuse("the path is empty".into()));
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.is_file() => {
            return Err(refuse(
                "exists and is not a regular file; expected a new file's path".into(),
            ));
        }
        Ok(_) if !overwrite => {
            return Err(refuse(
                "already exists; choose another name, or pass --overwrite to replace it".into(),
            ));
        }
        _ => {}
    }
    let mut o = OpenOptions::new();
    o.write(true);
    if overwrite {
        o.create(true).truncate(true);
    } else {
        o.create_new(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path).map_err(|e| Error::io(path, e))
}

/// Decimals of every probability in CSV output.
pub const PROB_DECIMALS: usize = 6;

/// One CSV line, line break included, with fields quoted where they hold a comma, a quote or a
/// line break. Built whole in memory so that a writer can hand it to the file in one call.
pub fn csv_line<I, S>(fields: I) -> Vec<u8>
where
    I: IntoIterator<Item = S>,
    S: AsRef<[u8]>,
{
    let mut w = csv::WriterBuilder::new()
        .buffer_capacity(256)
        .from_writer(Vec::with_capacity(256));
    // Writing to memory cannot fail; an empty line would only come from a bug.
    if w.write_record(fields).is_err() {
        return b"\n".to_vec();
    }
    w.into_inner().unwrap_or_else(|_| b"\n".to_vec())
}

/// A probability as CSV writes it.
pub fn prob(p: f32) -> String {
    format!("{p:.prec$}", prec = PROB_DECIMALS)
}

/// A probability as JSON writes it: rounded to [`PROB_DECIMALS`] decimals.
pub fn prob_json(p: f32) -> f64 {
    let k = 10f64.powi(PROB_DECIMALS as i32);
    (f64::from(p) * k).round() / k
}

/// Header of `emocam predict --format csv`: `image,face,x,y,w,h`, the model's classes,
/// `top_emotion`.
pub fn predict_csv_header(classes: &Classes) -> Vec<u8> {
    let fixed = ["image", "face", "x", "y", "w", "h"].map(String::from);
    let cols = fixed
        .into_iter()
        .chain(classes.names().iter().cloned())
        .chain(["top_emotion".to_string()]);
    csv_line(cols)
}

/// `predict --format csv` rows for one image, one per face, matching [`predict_csv_header`].
pub fn predict_csv_rows(image: &str, faces: &[FaceResult]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, f) in faces.iter().enumerate() {
        let b = f.bbox;
        let mut fields = vec![
            image.to_string(),
            i.to_string(),
            b.x.to_string(),
            b.y.to_string(),
            b.w.to_string(),
            b.h.to_string(),
        ];
        fields.extend(f.scores.probs().iter().map(|&p| prob(p)));
        fields.push(f.scores.top().0.to_string());
        out.extend(csv_line(fields));
    }
    out
}

/// The JSON line `emocam predict --format json` prints for one image (a stable interface):
/// `{"image": PATH, "faces": [{"box": {..}, "scores": {"angry": ..}, "top": "happy"}]}`, the
/// scores keyed by the model's classes in order.
pub fn predict_json(image: &str, faces: &[FaceResult]) -> serde_json::Value {
    let faces: Vec<serde_json::Value> = faces
        .iter()
        .map(|f| {
            let mut scores = serde_json::Map::new();
            for (class, p) in f.scores.iter() {
                scores.insert(class.into(), prob_json(p).into());
            }
            serde_json::json!({
                "box": {"x": f.bbox.x, "y": f.bbox.y, "w": f.bbox.w, "h": f.bbox.h},
                "scores": scores,
                "top": f.scores.top().0,
            })
        })
        .collect();
    serde_json::json!({"image": image, "faces": faces})
}

/// `predict`'s text output for one image: a line per face with its box and top class, and a
/// line of every class's percentage.
pub struct PredictText<'a> {
    pub image: &'a str,
    pub faces: &'a [FaceResult],
}

/// Names from files are printed with control characters escaped (see [`printable`]).
impl fmt::Display for PredictText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let image = printable(self.image);
        if self.faces.is_empty() {
            return writeln!(f, "{image}: no face found");
        }
        for (i, face) in self.faces.iter().enumerate() {
            let (top, p) = face.scores.top();
            let b = face.bbox;
            writeln!(
                f,
                "{image}: face {i} at x={} y={} w={} h={}: {} ({:.1}%)",
                b.x,
                b.y,
                b.w,
                b.h,
                printable(top),
                100.0 * p
            )?;
            let bars: Vec<String> = face
                .scores
                .iter()
                .map(|(c, p)| format!("{} {:.1}%", printable(c), 100.0 * p))
                .collect();
            writeln!(f, "    {}", bars.join("  "))?;
        }
        Ok(())
    }
}

/// Header of `eval --per-image`: `source,true,predicted,correct` and the model's classes.
pub fn per_image_header(classes: &Classes) -> Vec<u8> {
    let fixed = ["source", "true", "predicted", "correct"].map(String::from);
    csv_line(fixed.into_iter().chain(classes.names().iter().cloned()))
}

/// One `eval --per-image` row.
pub fn per_image_row(source: &str, truth: &str, predicted: &str, probs: &[f32]) -> Vec<u8> {
    let mut fields = vec![
        source.to_string(),
        truth.to_string(),
        predicted.to_string(),
        u8::from(truth == predicted).to_string(),
    ];
    fields.extend(probs.iter().map(|&p| prob(p)));
    csv_line(fields)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emotion::Scores;
    use crate::imaging::FaceBox;

    #[test]
    fn fields_are_quoted_only_when_needed() {
        assert_eq!(csv_line(["a", "b,c", "d\"e"]), b"a,\"b,c\",\"d\"\"e\"\n");
        assert_eq!(csv_line(["plain"]), b"plain\n");
    }

    #[test]
    fn predict_rows_follow_the_header() {
        let face = FaceResult {
            bbox: FaceBox {
                x: 1,
                y: 2,
                w: 3,
                h: 4,
                score: 0.0,
            },
            scores: Scores::fer([0.0, 0.0, 0.0, 0.9, 0.0, 0.0, 0.1]),
        };
        let header = String::from_utf8(predict_csv_header(face.scores.classes())).unwrap();
        assert_eq!(
            header.trim_end(),
            "image,face,x,y,w,h,angry,disgust,fear,happy,sad,surprise,neutral,top_emotion"
        );
        let row =
            String::from_utf8(predict_csv_rows("a,b.png", std::slice::from_ref(&face))).unwrap();
        assert_eq!(
            row,
            "\"a,b.png\",0,1,2,3,4,0.000000,0.000000,0.000000,0.900000,0.000000,0.000000,0.100000,happy\n"
        );
        let json = predict_json("x.png", &[face]);
        assert_eq!(json["faces"][0]["top"], "happy");
        assert_eq!(json["faces"][0]["scores"]["neutral"], 0.1);
    }
}
