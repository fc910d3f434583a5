//! Turning grayscale face crops into the input tensor a model's metadata asks for.

use candle_core::{Device, Tensor};
use image::GrayImage;

use super::ModelSpec;
use crate::error::Result;
use crate::imaging::resize_gray;

/// Stack face crops into an `(N, 1, S, S)` f32 tensor, resizing any crop that is not `S` x `S`
/// (bilinear) and scaling pixels as the spec says.
pub fn batch_tensor(faces: &[GrayImage], spec: &ModelSpec, device: &Device) -> Result<Tensor> {
    let s = spec.input_size;
    let (mul, add) = spec.scaling.affine();
    let (mul, add) = (mul as f32, add as f32);
    let mut data = Vec::with_capacity(faces.len() * (s * s) as usize);
    for f in faces {
        let resized;
        let img = if f.dimensions() == (s, s) {
            f
        } else {
            resized = resize_gray(f, s, s);
            &resized
        };
        data.extend(img.as_raw().iter().map(|&p| p as f32 * mul + add));
    }
    Ok(Tensor::from_vec(
        data,
        (faces.len(), 1, s as usize, s as usize),
        device,
    )?)
}
