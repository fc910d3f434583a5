//! emocam: live facial-emotion recognition.
//!
//! Frames come from a [`capture`] source; faces are found with rustface ([`detect`]), cropped,
//! grayscaled and resized ([`imaging`]), and classified by a candle CNN ([`model`]) into softmax
//! scores over the seven FER2013 emotions ([`emotion`]). The [`pipeline`] runs these stages on
//! their own threads; [`track`] keeps face ids stable and smooths scores, [`record`] writes CSV,
//! and [`gui`] is the desktop window. [`eval`] measures a classifier on a labelled [`dataset`].

pub mod capture;
pub mod dataset;
pub mod detect;
pub mod emotion;
pub mod error;
pub mod eval;
pub mod gui;
pub mod headless;
pub mod imaging;
pub mod model;
pub mod output;
pub mod pipeline;
pub mod recognize;
pub mod record;
pub mod rng;
pub mod runtime;
pub mod session;
pub mod text;
pub mod track;
pub mod train;

pub use detect::{DetectorConfig, FaceDetector};
pub use emotion::{Classes, Emotion, FaceResult, Scores};
pub use error::{Error, Result};
pub use imaging::FaceBox;
pub use model::{Classifier, ModelSpec};
pub use recognize::Recognizer;
