//! Turning grayscale face crops into the input tensor a model's metadata asks for.

use candle_core::{Device, Tensor};
use image::GrayImage;

use super::{InputScaling, ModelSpec};
use crate::error::Result;
use crate::imaging::resize_gray;

/// Stack face crops into an `(N, 1, S, S)` f32 tensor, resizing any crop that is not `S` x `S`
/// (bilinear) and scaling pixels as the spec says.
pub fn batch_tensor(faces: &[GrayImage], spec: &ModelSpec, device: &Device) -> Result<Tensor> {
    Ok(stack(
        faces.iter(),
        faces.len(),
        spec.input_size,
        spec.scaling,
        device,
    )?)
}

/// [`batch_tensor`] for any `n` crops (training holds references into its data set).
pub fn stack<'a>(
    faces: impl Iterator<Item = &'a GrayImage>,
    n: usize,
    size: u32,
    scaling: InputScaling,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let (mul, add) = scaling.affine();
    let (mul, add) = (mul as f32, add as f32);
    let mut data = Vec::with_capacity(n * (size * size) as usize);
    for f in faces {
        let resized;
        let img = if f.dimensions() == (size, size) {
            f
        } else {
            resized = resize_gray(f, size, size);
            &resized
        };
        data.extend(img.as_raw().iter().map(|&p| p as f32 * mul + add));
    }
    let count = data.len() / (size * size) as usize;
    Tensor::from_vec(data, (count, 1, size as usize, size as usize), device)
}
