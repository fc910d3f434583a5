//! emocam: live facial-emotion recognition.
//!
//! Frames come from a [`capture`] source; faces are found with rustface ([`detect`]), cropped,
//! grayscaled and resized ([`imaging`]), and classified by a candle CNN ([`model`]) into softmax
//! scores over the seven FER2013 emotions ([`emotion`]). The [`pipeline`] runs these stages on
//! their own threads; [`track`] keeps face ids stable and smooths scores, [`record`] writes CSV,
//! [`report`] turns recordings into HTML and PNG reports, and [`gui`] is the desktop window.
//! [`eval`] measures a classifier on a labelled [`dataset`].

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
pub mod pipeline;
pub mod recognize;
pub mod record;
pub mod report;
pub mod rng;
pub mod runtime;
pub mod track;
pub mod train;

pub use detect::{DetectorConfig, FaceDetector};
pub use emotion::{Emotion, Scores};
pub use error::{Error, Result};
pub use imaging::FaceBox;
pub use model::{Classifier, ModelSpec};
pub use recognize::{FaceResult, Recognizer};
