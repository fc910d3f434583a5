//! How far a model's passes spread over frames (what paced sources do, `pipeline::spread`)
//! move a face's scores from those of every pass on every frame.
//!
//! `cargo run --release --example spread_agreement -- SOURCE...` (a video, or `demo:astronaut`
//! with `--max-frames`). Each frame is searched whole with the thorough detector and its largest
//! face cut as the pipeline cuts it; every pass runs on it, and three scores are formed: all
//! passes of this frame ("full"), the pass this frame's turn names plus the latest row of each
//! other pass ("spread", a face seen for the first time gets every pass), and the first pass
//! alone (what running one network instead would give). Printed per source: frames with a
//! face, how often spread and one-pass pick full's top class, and their total-variation
//! distance from full (half the sum of absolute differences: 0 same, 1 disjoint).

use std::path::Path;

use emocam::capture::{SourceOptions, SourceSpec};
use emocam::recognize::crop_for_model;
use emocam::{Classifier, DetectorConfig, FaceDetector, Scores};

fn distance(a: &Scores, b: &Scores) -> f32 {
    a.probs()
        .iter()
        .zip(b.probs())
        .map(|(x, y)| (x - y).abs())
        .sum::<f32>()
        / 2.0
}

/// The window's default smoothing (`SessionConfig::smoothing`).
const SMOOTHING: f32 = 0.6;

fn refs(rows: &[Vec<f32>]) -> Vec<&[f32]> {
    rows.iter().map(Vec::as_slice).collect()
}

fn percentile(v: &mut [f32], q: f32) -> f32 {
    v.sort_by(f32::total_cmp);
    v.get(((v.len() as f32 - 1.0) * q).round() as usize)
        .copied()
        .unwrap_or(0.0)
}

fn main() -> anyhow::Result<()> {
    emocam::runtime::init_cpu_runtime();
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut max_frames = u64::MAX;
    if let Some(i) = args.iter().position(|a| a == "--max-frames") {
        max_frames = args.get(i + 1).and_then(|v| v.parse().ok()).unwrap_or(300);
        args.drain(i..(i + 2).min(args.len()));
    }
    let weights = std::env::var_os("EMOCAM_WEIGHTS");
    let clf = Classifier::load_or_builtin(weights.as_deref().map(Path::new))?;
    let passes = clf.pass_count();
    let mut det = FaceDetector::new(DetectorConfig::thorough())?;
    println!("model {} ({passes} passes)", clf.name());
    for arg in args {
        let spec: SourceSpec = arg.parse().map_err(anyhow::Error::msg)?;
        let opts = SourceOptions {
            fps: Some(0.0),
            ..SourceOptions::default()
        };
        let mut source = emocam::capture::open(&spec, opts)?;
        let (mut frames, mut agree_spread, mut agree_one) = (0u64, 0u64, 0u64);
        let (mut d_spread, mut d_one) = (Vec::new(), Vec::new());
        let mut held: Option<Vec<Vec<f32>>> = None;
        let mut last: Option<(emocam::FaceBox, Scores)> = None;
        let mut d_step = Vec::new();
        // As the window shows them: smoothed with the session's default weight of the past.
        let mut shown: Option<(Scores, Scores)> = None;
        let (mut agree_shown, mut d_shown) = (0u64, Vec::new());
        let mut index = 0u64;
        while let Some(frame) = source.next_frame()? {
            if index >= max_frames {
                break;
            }
            index += 1;
            let gray = emocam::imaging::to_gray(&frame.rgb);
            let faces = det.detect(&gray);
            let Some(face) = faces.iter().max_by_key(|f| f.w) else {
                (held, last, shown) = (None, None, None);
                continue;
            };
            // Another face (the largest changed): its rows start afresh, as a new track's do.
            if last.as_ref().is_some_and(|(b, _)| b.iou(face) < 0.3) {
                (held, last, shown) = (None, None, None);
            }
            let crops = crop_for_model(
                None,
                &gray,
                std::slice::from_ref(face),
                clf.input_size(),
                emocam::recognize::DEFAULT_MARGIN,
                false,
            );
            let emocam::model::FaceCrops::Gray(crops) = crops else {
                anyhow::bail!("a gray model got colour crops");
            };
            let all: Vec<Vec<f32>> = clf
                .all_pass_probs(&crops)?
                .into_iter()
                .map(|mut p| p.remove(0))
                .collect();
            let turn = (index as usize) % passes;
            let rows = match held.take() {
                Some(mut rows) => {
                    rows[turn] = all[turn].clone();
                    rows
                }
                None => all.clone(),
            };
            let full = clf.scores_from_passes(&refs(&all))?;
            let spread = clf.scores_from_passes(&refs(&rows))?;
            let one = clf.scores_from_passes(&vec![all[0].as_slice(); passes])?;
            held = Some(rows);
            let (sf, ss) = match shown.take() {
                Some((f, s)) => (f.blend(&full, SMOOTHING), s.blend(&spread, SMOOTHING)),
                None => (full.clone(), spread.clone()),
            };
            agree_shown += u64::from(sf.top_index() == ss.top_index());
            d_shown.push(distance(&sf, &ss));
            shown = Some((sf, ss));
            if let Some((_, before)) = &last {
                d_step.push(distance(&full, before));
            }
            last = Some((*face, full.clone()));
            frames += 1;
            agree_spread += u64::from(spread.top_index() == full.top_index());
            agree_one += u64::from(one.top_index() == full.top_index());
            d_spread.push(distance(&spread, &full));
            d_one.push(distance(&one, &full));
        }
        let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len().max(1) as f32;
        let pct = |n: u64| 100.0 * n as f64 / frames.max(1) as f64;
        println!(
            "{arg}: {frames} frames with a face; full's own change from frame to frame: mean {:.4}, 95th percentile {:.4}\n  spread:     top class as full in {:.1}%, distance mean {:.4}, 95th percentile {:.4}\n  first pass: top class as full in {:.1}%, distance mean {:.4}, 95th percentile {:.4}\n  as shown (smoothed): spread's top class as full's in {:.1}%, distance mean {:.4}, 95th percentile {:.4}",
            mean(&d_step),
            percentile(&mut d_step, 0.95),
            pct(agree_spread),
            mean(&d_spread),
            percentile(&mut d_spread, 0.95),
            pct(agree_one),
            mean(&d_one),
            percentile(&mut d_one, 0.95),
            pct(agree_shown),
            mean(&d_shown),
            percentile(&mut d_shown, 0.95),
        );
    }
    Ok(())
}
