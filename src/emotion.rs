//! The seven FER2013 emotion classes and a set of scores over them.

use std::fmt;
use std::str::FromStr;

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

    /// The class with FER2013 id `id`, if there is one.
    pub fn from_index(id: usize) -> Option<Emotion> {
        Self::ALL.get(id).copied()
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

/// Probabilities over the seven classes, indexed in FER order; they sum to 1.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Scores(pub [f32; Emotion::COUNT]);

impl Scores {
    /// Probability of one class.
    pub fn get(&self, e: Emotion) -> f32 {
        self.0[e.index()]
    }

    /// The most likely class and its probability (the first one on a tie).
    pub fn top(&self) -> (Emotion, f32) {
        let mut best = 0;
        for i in 1..Emotion::COUNT {
            if self.0[i] > self.0[best] {
                best = i;
            }
        }
        (Emotion::ALL[best], self.0[best])
    }

    /// Iterate over `(class, probability)` in FER order.
    pub fn iter(&self) -> impl Iterator<Item = (Emotion, f32)> + '_ {
        Emotion::ALL.into_iter().zip(self.0.iter().copied())
    }

    /// Sum of the probabilities (1 up to rounding for a model's output).
    pub fn sum(&self) -> f32 {
        self.0.iter().sum()
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
        let s = Scores([0.1, 0.0, 0.05, 0.6, 0.1, 0.05, 0.1]);
        assert_eq!(s.top().0, Emotion::Happy);
        assert!((s.sum() - 1.0).abs() < 1e-6);
    }
}
