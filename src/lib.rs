//! emocam: live facial-emotion recognition.
//!
//! Faces are found with rustface ([`detect`]), cropped, grayscaled and resized ([`imaging`]), and
//! classified by a candle CNN ([`model`]) into softmax scores over the seven FER2013 emotions
//! ([`emotion`]). [`eval`] measures a classifier on labelled crops from a [`dataset`].

pub mod dataset;
pub mod detect;
pub mod emotion;
pub mod error;
pub mod eval;
pub mod imaging;
pub mod model;
pub mod recognize;

pub use detect::{DetectorConfig, FaceDetector};
pub use emotion::{Emotion, Scores};
pub use error::{Error, Result};
pub use imaging::FaceBox;
pub use model::{Classifier, ModelSpec};
pub use recognize::{FaceResult, Recognizer};
