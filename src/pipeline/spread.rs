//! A model's passes spread over the frames of each followed face.
//!
//! The default model makes four network passes a face (two members, each on the face and on
//! its mirror image). On a live source most of that is spent again on a face that has hardly
//! changed since the frame before: at 30 frames/s the four passes were about half of the
//! process's CPU. So a paced source runs one pass a frame on each face it already follows,
//! the next pass in turn, and scores the face from the latest row of every pass: the four
//! rows then come from the last four frames (133 ms at 30 frames/s), and a face that holds
//! still gets exactly the scores all four passes on this frame would give. A face seen for the
//! first time gets every pass at once, so its first scores are whole. Unpaced runs (`--fps 0`,
//! the analysis of a recording) and `--every-pass` run every pass on every frame.

use std::collections::HashMap;

use crate::emotion::Scores;
use crate::error::Result;
use crate::model::{Classifier, FaceCrops};

/// The latest row of each pass for the faces of the last frame, by face id.
#[derive(Default)]
pub(super) struct PassSpreader {
    /// The pass the faces already followed run on the next frame.
    next: usize,
    rows: HashMap<u64, Vec<Vec<f32>>>,
}

impl PassSpreader {
    /// Forget every face (a new model, whose passes differ).
    pub fn reset(&mut self) {
        self.next = 0;
        self.rows.clear();
    }

    /// Scores for one frame's faces (`ids[i]` is the id of `crops[i]`), all in one batch per
    /// pass. Models of one pass, and colour crops (imported models, one pass), go through
    /// [`Classifier::classify_crops`] unchanged.
    pub fn scores(
        &mut self,
        classifier: &Classifier,
        ids: &[u64],
        crops: &FaceCrops,
    ) -> Result<Vec<Scores>> {
        let passes = classifier.pass_count();
        let unique = ids.iter().enumerate().all(|(i, id)| !ids[..i].contains(id));
        let faces = match crops {
            FaceCrops::Gray(faces) if passes > 1 && faces.len() == ids.len() && unique => faces,
            _ => {
                self.reset();
                return classifier.classify_crops(crops);
            }
        };
        let pass = self.next % passes;
        self.next = (pass + 1) % passes;
        // Taken out while this frame is scored: if a pass fails, every face starts whole on
        // the next frame rather than from half-updated rows.
        let mut rows = std::mem::take(&mut self.rows);
        let (known, new): (Vec<usize>, Vec<usize>) =
            (0..faces.len()).partition(|&i| rows.get(&ids[i]).is_some_and(|r| r.len() == passes));
        let pick = |idx: &[usize]| idx.iter().map(|&i| faces[i].clone()).collect::<Vec<_>>();
        if !known.is_empty() {
            let fresh = if known.len() == faces.len() {
                classifier.pass_probs(faces, pass)?
            } else {
                classifier.pass_probs(&pick(&known), pass)?
            };
            for (&i, row) in known.iter().zip(fresh) {
                if let Some(r) = rows.get_mut(&ids[i]) {
                    r[pass] = row;
                }
            }
        }
        if !new.is_empty() {
            let all = classifier.all_pass_probs(&pick(&new))?;
            for (k, &i) in new.iter().enumerate() {
                rows.insert(ids[i], all.iter().map(|p| p[k].clone()).collect());
            }
        }
        let scores: Vec<Result<Scores>> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let r: Vec<&[f32]> = rows
                    .get(id)
                    .map_or_else(Vec::new, |r| r.iter().map(Vec::as_slice).collect());
                classifier.scores_of_face(&r, i, ids.len())
            })
            .collect();
        // Only this frame's faces are kept (one that comes back later starts whole again),
        // and none whose scores failed: a non-finite row would otherwise spoil the frames
        // until its pass comes round again.
        rows.retain(|id, _| ids.iter().zip(&scores).any(|(i, s)| i == id && s.is_ok()));
        self.rows = rows;
        scores.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use image::GrayImage;

    use super::*;

    fn face(seed: u32) -> GrayImage {
        GrayImage::from_fn(64, 64, |x, y| {
            image::Luma([((x * 3 + y * seed + x * y * seed / 7) % 256) as u8])
        })
    }

    fn close(a: &Scores, b: &Scores) -> bool {
        a.probs()
            .iter()
            .zip(b.probs())
            .all(|(x, y)| (x - y).abs() < 1e-6)
    }

    #[test]
    fn each_frame_runs_one_pass_and_keeps_the_latest_of_the_others() {
        let clf = Classifier::builtin().unwrap();
        assert_eq!(clf.pass_count(), 4);
        let (a, b) = (face(5), face(11));
        let pa = clf.all_pass_probs(std::slice::from_ref(&a)).unwrap();
        let pb = clf.all_pass_probs(std::slice::from_ref(&b)).unwrap();
        let mut s = PassSpreader::default();
        let gray = |f: &GrayImage| FaceCrops::Gray(vec![f.clone()]);
        // A new face gets every pass: its scores are the whole model's.
        let first = s.scores(&clf, &[7], &gray(&a)).unwrap();
        assert!(close(
            &first[0],
            &clf.classify(std::slice::from_ref(&a)).unwrap()[0]
        ));
        // Then one pass a frame, in turn: the second frame's scores take pass 1 from it.
        let second = s.scores(&clf, &[7], &gray(&b)).unwrap();
        let want = clf
            .scores_from_passes(&[&pa[0][0], &pb[1][0], &pa[2][0], &pa[3][0]])
            .unwrap();
        assert!(close(&second[0], &want), "{second:?} {want:?}");
        let third = s.scores(&clf, &[7], &gray(&b)).unwrap();
        let want = clf
            .scores_from_passes(&[&pa[0][0], &pb[1][0], &pb[2][0], &pa[3][0]])
            .unwrap();
        assert!(close(&third[0], &want));
        // A face that holds still has the whole model's scores again once every pass came round.
        for _ in 0..2 {
            s.scores(&clf, &[7], &gray(&b)).unwrap();
        }
        let still = s.scores(&clf, &[7], &gray(&b)).unwrap();
        assert!(close(
            &still[0],
            &clf.classify(std::slice::from_ref(&b)).unwrap()[0]
        ));
    }

    #[test]
    fn a_new_or_returning_face_and_a_new_model_start_whole() {
        let clf = Classifier::builtin().unwrap();
        let (a, b) = (face(3), face(13));
        let whole = |f: &GrayImage| clf.classify(std::slice::from_ref(f)).unwrap().remove(0);
        let mut s = PassSpreader::default();
        s.scores(&clf, &[1], &FaceCrops::Gray(vec![a.clone()]))
            .unwrap();
        // Face 2 joins: whole; face 1 goes on with one pass.
        let two = s
            .scores(&clf, &[1, 2], &FaceCrops::Gray(vec![a.clone(), b.clone()]))
            .unwrap();
        assert!(close(&two[0], &whole(&a)) && close(&two[1], &whole(&b)));
        // Face 1 leaves for a frame; when it comes back on b's picture it is scored whole.
        s.scores(&clf, &[2], &FaceCrops::Gray(vec![b.clone()]))
            .unwrap();
        let back = s
            .scores(&clf, &[1], &FaceCrops::Gray(vec![b.clone()]))
            .unwrap();
        assert!(close(&back[0], &whole(&b)));
        s.reset();
        let fresh = s
            .scores(&clf, &[2], &FaceCrops::Gray(vec![a.clone()]))
            .unwrap();
        assert!(close(&fresh[0], &whole(&a)));
    }

    #[test]
    fn a_frame_with_one_id_twice_runs_the_whole_model_on_each_face() {
        let clf = Classifier::builtin().unwrap();
        let (a, b) = (face(3), face(13));
        let mut s = PassSpreader::default();
        s.scores(&clf, &[4], &FaceCrops::Gray(vec![a.clone()]))
            .unwrap();
        let got = s
            .scores(&clf, &[4, 4], &FaceCrops::Gray(vec![a.clone(), b.clone()]))
            .unwrap();
        let want = clf.classify(&[a, b]).unwrap();
        assert!(close(&got[0], &want[0]) && close(&got[1], &want[1]));
    }
}
