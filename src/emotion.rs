//! The seven FER2013 emotion classes, the class set of a model (FER's or any other list, such
//! as FER+'s eight with `contempt`), and a model's scores over its classes.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::imaging::FaceBox;

/// One of the seven FER2013 expression classes, in FER order (class id 0..=6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Emotion {
    Angry,
    Disgust,
    Fear,
    Happy,
    Sad,
    Surprise,
    Neutral,
}

impl Emotion {
    /// All classes in FER2013 order; `ALL[id]` is the class with FER id `id`.
    pub const ALL: [Emotion; 7] = [
        Emotion::Angry,
        Emotion::Disgust,
        Emotion::Fear,
        Emotion::Happy,
        Emotion::Sad,
        Emotion::Surprise,
        Emotion::Neutral,
    ];

    /// Number of classes.
    pub const COUNT: usize = 7;

    /// The lower-case name used in CSV headers, JSON keys and weights metadata.
    pub fn name(self) -> &'static str {
        match self {
            Emotion::Angry => "angry",
            Emotion::Disgust => "disgust",
            Emotion::Fear => "fear",
            Emotion::Happy => "happy",
            Emotion::Sad => "sad",
            Emotion::Surprise => "surprise",
            Emotion::Neutral => "neutral",
        }
    }

    /// The FER2013 class id (0 angry ... 6 neutral).
    pub fn index(self) -> usize {
        self as usize
    }

    /// The class with this name (any case), if it is one of the seven; ids are not accepted.
    pub fn from_name(name: &str) -> Option<Emotion> {
        let t = name.trim();
        Self::ALL
            .into_iter()
            .find(|e| e.name().eq_ignore_ascii_case(t))
    }

    /// The class with FER2013 id `id`, if there is one.
    pub fn from_index(id: usize) -> Option<Emotion> {
        Self::ALL.get(id).copied()
    }
}

/// A class name equals a FER class when it is its name (`scores.top().0 == Emotion::Happy`).
impl PartialEq<Emotion> for &str {
    fn eq(&self, e: &Emotion) -> bool {
        *self == e.name()
    }
}

impl fmt::Display for Emotion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Emotion {
    type Err = String;

    /// Accepts the class name (any case) or its FER2013 id, as used by dataset folders.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim().to_ascii_lowercase();
        if let Ok(id) = t.parse::<usize>() {
            return Emotion::from_index(id).ok_or_else(|| format!("class id {id} is not in 0..=6"));
        }
        Emotion::ALL.into_iter().find(|e| e.name() == t).ok_or_else(|| {
            format!("unknown emotion {s:?}, expected one of angry, disgust, fear, happy, sad, surprise, neutral")
        })
    }
}

/// The classes a model scores, in the order its [`Scores`] hold them: the FER2013 classes the
/// model has, in FER order, then any others (e.g. `contempt`) in the model's own order. Cheap to
/// clone; two equal sets compare equal whatever their origin.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Classes(Arc<[String]>);

impl fmt::Debug for Classes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.iter()).finish()
    }
}

impl Classes {
    /// The seven FER2013 classes.
    pub fn fer() -> Self {
        Self::from_emotions(&Emotion::ALL)
    }

    /// Some of the FER2013 classes, put in FER order.
    pub fn from_emotions(classes: &[Emotion]) -> Self {
        let mut sorted = classes.to_vec();
        sorted.sort();
        sorted.dedup();
        Self(sorted.iter().map(|e| e.name().to_string()).collect())
    }

    /// The display order of a model's classes (FER classes in FER order first, then the rest in
    /// the given order), and for each position the index of that class in `model_order`.
    /// Names are trimmed and FER names lower-cased; they must be distinct and non-empty, and
    /// there must be at least two.
    pub fn from_model_order<S: AsRef<str>>(
        model_order: &[S],
    ) -> Result<(Self, Vec<usize>), String> {
        let names: Vec<String> = model_order
            .iter()
            .map(|n| {
                let t = n.as_ref().trim();
                Emotion::from_name(t).map_or_else(|| t.to_string(), |e| e.name().to_string())
            })
            .collect();
        if names.len() < 2 {
            return Err(format!("{} classes, expected at least 2", names.len()));
        }
        if let Some(n) = names.iter().find(|n| n.is_empty()) {
            return Err(format!("a class name is empty ({n:?})"));
        }
        for (i, n) in names.iter().enumerate() {
            if names[..i].contains(n) {
                return Err(format!("class {n:?} is named twice"));
            }
        }
        let mut order: Vec<usize> = (0..names.len()).collect();
        // FER classes by FER id, the others after them in the model's order.
        order.sort_by_key(|&i| match Emotion::from_name(&names[i]) {
            Some(e) => (0, e.index(), i),
            None => (1, 0, i),
        });
        let sorted: Arc<[String]> = order.iter().map(|&i| names[i].clone()).collect();
        Ok((Self(sorted), order))
    }

    /// Number of classes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are none (never for a loaded model).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The class names in order.
    pub fn names(&self) -> &[String] {
        &self.0
    }

    /// Name of class `i`.
    pub fn name(&self, i: usize) -> &str {
        &self.0[i]
    }

    /// Position of a class by name.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.0.iter().position(|n| n == name)
    }

    /// Position of a FER class, if this set has it.
    pub fn index_of_emotion(&self, e: Emotion) -> Option<usize> {
        self.index_of(e.name())
    }

    /// The FER class at position `i`, if it is one.
    pub fn emotion(&self, i: usize) -> Option<Emotion> {
        self.0.get(i).and_then(|n| Emotion::from_name(n))
    }

    /// True for exactly the seven FER classes.
    pub fn is_fer(&self) -> bool {
        self.len() == Emotion::COUNT && (0..self.len()).all(|i| self.emotion(i).is_some())
    }
}

/// One face in a frame: where it is and how it scored.
#[derive(Debug, Clone, PartialEq)]
pub struct FaceResult {
    pub bbox: FaceBox,
    pub scores: Scores,
}

/// The colour of a class, shared by the window's bars, boxes and chart, annotated videos and
/// reports: fixed for the FER classes and `contempt`, and for any other name one of a palette
/// chosen by a hash of the name, so the same class has the same colour everywhere.
pub fn class_rgb(name: &str) -> [u8; 3] {
    match Emotion::from_name(name) {
        Some(Emotion::Angry) => [220, 60, 50],
        Some(Emotion::Disgust) => [120, 160, 40],
        Some(Emotion::Fear) => [150, 90, 200],
        Some(Emotion::Happy) => [250, 190, 40],
        Some(Emotion::Sad) => [60, 120, 220],
        Some(Emotion::Surprise) => [240, 120, 200],
        Some(Emotion::Neutral) => [150, 150, 150],
        None if name.eq_ignore_ascii_case("contempt") => [40, 170, 160],
        None => {
            const PALETTE: [[u8; 3]; 6] = [
                [230, 140, 30],
                [90, 180, 90],
                [180, 80, 120],
                [70, 160, 200],
                [200, 170, 90],
                [120, 100, 210],
            ];
            let h = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            });
            PALETTE[(h % PALETTE.len() as u64) as usize]
        }
    }
}

/// Probabilities over a model's [`Classes`], in their order; they sum to 1.
#[derive(Debug, Clone, PartialEq)]
pub struct Scores {
    classes: Classes,
    probs: Vec<f32>,
}

impl Scores {
    /// Scores over `classes`; `probs` must have one value per class.
    pub fn new(classes: Classes, probs: Vec<f32>) -> Self {
        debug_assert_eq!(classes.len(), probs.len(), "one probability per class");
        Self { classes, probs }
    }

    /// Scores over the seven FER classes, in FER order.
    pub fn fer(probs: [f32; Emotion::COUNT]) -> Self {
        Self::new(Classes::fer(), probs.to_vec())
    }

    /// The classes these scores are over.
    pub fn classes(&self) -> &Classes {
        &self.classes
    }

    /// The probabilities, in the order of [`Scores::classes`].
    pub fn probs(&self) -> &[f32] {
        &self.probs
    }

    /// Probability of a class by name (`None` if the model lacks it).
    pub fn get(&self, name: &str) -> Option<f32> {
        self.classes.index_of(name).map(|i| self.probs[i])
    }

    /// Probability of a FER class (0 when the model lacks it).
    pub fn of(&self, e: Emotion) -> f32 {
        self.get(e.name()).unwrap_or(0.0)
    }

    /// Position of the most likely class (the first one on a tie).
    pub fn top_index(&self) -> usize {
        let mut best = 0;
        for i in 1..self.probs.len() {
            if self.probs[i] > self.probs[best] {
                best = i;
            }
        }
        best
    }

    /// The most likely class and its probability (the first one on a tie).
    pub fn top(&self) -> (&str, f32) {
        let i = self.top_index();
        (
            self.classes.name(i),
            self.probs.get(i).copied().unwrap_or(0.0),
        )
    }

    /// Iterate over `(class, probability)` in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, f32)> + '_ {
        self.classes
            .names()
            .iter()
            .map(String::as_str)
            .zip(self.probs.iter().copied())
    }

    /// Sum of the probabilities (1 up to rounding for a model's output).
    pub fn sum(&self) -> f32 {
        self.probs.iter().sum()
    }

    /// True when every probability is a finite number.
    pub fn is_finite(&self) -> bool {
        self.probs.iter().all(|p| p.is_finite())
    }

    /// `k * self + (1 - k) * other`, for smoothing; `other` when the class sets differ.
    pub fn blend(&self, other: &Scores, k: f32) -> Scores {
        if self.classes != other.classes {
            return other.clone();
        }
        let probs = self
            .probs
            .iter()
            .zip(&other.probs)
            .map(|(a, b)| k * a + (1.0 - k) * b)
            .collect();
        Scores::new(self.classes.clone(), probs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_in_fer_order() {
        for (i, e) in Emotion::ALL.into_iter().enumerate() {
            assert_eq!(e.index(), i);
            assert_eq!(e.name().parse::<Emotion>().unwrap(), e);
            assert_eq!(i.to_string().parse::<Emotion>().unwrap(), e);
        }
        assert!("joy".parse::<Emotion>().is_err());
        assert!("7".parse::<Emotion>().is_err());
    }

    #[test]
    fn top_picks_the_largest() {
        let s = Scores::fer([0.1, 0.0, 0.05, 0.6, 0.1, 0.05, 0.1]);
        assert_eq!(s.top().0, "happy");
        assert!((s.sum() - 1.0).abs() < 1e-6);
        assert_eq!(s.of(Emotion::Sad), 0.1);
    }

    #[test]
    fn model_order_puts_fer_classes_first_in_fer_order() {
        let model = ["Neutral", "happy", "contempt", "angry", "other"];
        let (c, order) = Classes::from_model_order(&model).unwrap();
        assert_eq!(
            c.names(),
            ["angry", "happy", "neutral", "contempt", "other"]
        );
        assert_eq!(order, [3, 1, 0, 2, 4]);
        assert_eq!(c.emotion(1), Some(Emotion::Happy));
        assert_eq!(c.emotion(3), None);
        assert!(!c.is_fer());
        assert!(Classes::fer().is_fer());
        assert!(Classes::from_model_order(&["a", "a"]).is_err());
        assert!(Classes::from_model_order(&["a"]).is_err());
        assert!(Classes::from_model_order(&["a", " "]).is_err());
    }

    #[test]
    fn blending_other_class_sets_takes_the_new_scores() {
        let a = Scores::fer([1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
        let b = Scores::fer([0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
        assert_eq!(a.blend(&b, 0.25).probs()[0], 0.25);
        let (c, _) = Classes::from_model_order(&["x", "y"]).unwrap();
        let other = Scores::new(c, vec![0.5, 0.5]);
        assert_eq!(a.blend(&other, 0.9), other);
    }
}
