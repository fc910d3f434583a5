// This file is part of the open-source port of SeetaFace engine, which originally includes three modules:
//      SeetaFace Detection, SeetaFace Alignment, and SeetaFace Identification.
//
// This file is part of the SeetaFace Detection module, containing codes implementing the face detection method described in the following paper:
//
//      Funnel-structured cascade for multi-view face detection with alignment awareness,
//      Shuzhe Wu, Meina Kan, Zhenliang He, Shiguang Shan, Xilin Chen.
//      In Neurocomputing (under review)
//
// Copyright (C) 2016, Visual Information Processing and Learning (VIPL) group,
// Institute of Computing Technology, Chinese Academy of Sciences, Beijing, China.
//
// As an open-source face recognition engine: you can redistribute SeetaFace source codes
// and/or modify it under the terms of the BSD 2-Clause License.
//
// You should have received a copy of the BSD 2-Clause License along with the software.
// If not, see < https://opensource.org/licenses/BSD-2-Clause>.

#[inline]
pub fn copy_u8_to_i32(src: &[u8], dest: &mut [i32]) {
    let dest = &mut dest[0..src.len()]; // eliminates a branch from the loop
    for (value, dest) in src.iter().copied().zip(dest.iter_mut()) {
        *dest = i32::from(value);
    }
}

pub fn square(src: &[i32], dest: &mut [u32]) {
    for (value, dest) in src.iter().copied().zip(dest.iter_mut()) {
        *dest = i32::pow(value, 2) as u32;
    }
}

pub unsafe fn abs(src: *const i32, dest: *mut i32, length: usize) {
    for i in 0..length as isize {
        let value = *src.offset(i);
        *dest.offset(i) = if value >= 0 { value } else { -value };
    }
}

pub unsafe fn vector_add(left: *const i32, right: *const i32, dest: *mut i32, length: usize) {
    for i in 0..length as isize {
        *dest.offset(i) = *left.offset(i) + *right.offset(i);
    }
}

pub unsafe fn vector_sub(left: *const i32, right: *const i32, dest: *mut i32, length: usize) {
    for i in 0..length as isize {
        *dest.offset(i) = *left.offset(i) - *right.offset(i);
    }
}

/// emocam: sixteen running sums instead of one. A single f32 sum cannot be reordered by the
/// compiler, so each product waited for the one before (four cycles of add latency a value);
/// this is where the SURF-MLP stages spent 58% of a face region's search. The sums are
/// independent, so they vectorise on any x86-64 (SSE2), and with fused multiply-adds where the
/// CPU has AVX2 and FMA (then 30% of a region's search became 15%).
pub fn vector_inner_product(left: &[f32], right: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn fused(left: &[f32], right: &[f32]) -> f32 {
            // Written out: from the portable loop the compiler made 2-wide loads here.
            use std::arch::x86_64::*;
            let n = left.len().min(right.len());
            let (lp, rp) = (left.as_ptr(), right.as_ptr());
            let mut acc = [_mm256_setzero_ps(); 4];
            let mut i = 0;
            while i + 32 <= n {
                for (k, a) in acc.iter_mut().enumerate() {
                    let l = _mm256_loadu_ps(lp.add(i + 8 * k));
                    let r = _mm256_loadu_ps(rp.add(i + 8 * k));
                    *a = _mm256_fmadd_ps(l, r, *a);
                }
                i += 32;
            }
            let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
            let mut lanes = [0.0f32; 8];
            _mm256_storeu_ps(lanes.as_mut_ptr(), sum);
            let mut total = lanes.iter().sum::<f32>();
            while i < n {
                total += left[i] * right[i];
                i += 1;
            }
            total
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports AVX2 and FMA, checked just above.
            return unsafe { fused(left, right) };
        }
    }
    dot(left, right)
}

fn dot(left: &[f32], right: &[f32]) -> f32 {
    const LANES: usize = 16;
    let n = left.len().min(right.len());
    let (left, right) = (&left[..n], &right[..n]);
    let mut acc = [0.0f32; LANES];
    let (l_chunks, r_chunks) = (left.chunks_exact(LANES), right.chunks_exact(LANES));
    let (l_rest, r_rest) = (l_chunks.remainder(), r_chunks.remainder());
    for (l, r) in l_chunks.zip(r_chunks) {
        for i in 0..LANES {
            acc[i] += l[i] * r[i];
        }
    }
    let mut tail = 0.0f32;
    for (l, r) in l_rest.iter().zip(r_rest) {
        tail += l * r;
    }
    let mut half = LANES / 2;
    while half > 0 {
        for i in 0..half {
            acc[i] += acc[i + half];
        }
        half /= 2;
    }
    acc[0] + tail
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn test_square() {
        let mut vec = vec![1, 2, 3];
        square(&[1, 2, 3], &mut vec);
        assert_eq!(vec![1, 4, 9], vec);
    }

    #[test]
    fn test_abs() {
        let mut vec = vec![-1, 2, -3];
        unsafe { abs(vec.as_ptr(), vec.as_mut_ptr(), vec.len()) };
        assert_eq!(vec![1, 2, 3], vec);
    }

    #[test]
    fn test_vector_add() {
        let mut vec = vec![1, 2, 3];
        unsafe { vector_add(vec.as_ptr(), vec.as_ptr(), vec.as_mut_ptr(), vec.len()) };
        assert_eq!(vec![2, 4, 6], vec);
    }

    #[test]
    fn test_vector_sub() {
        let mut vec = vec![1, 2, 3];
        unsafe { vector_sub(vec.as_ptr(), vec.as_ptr(), vec.as_mut_ptr(), vec.len()) };
        assert_eq!(vec![0, 0, 0], vec);
    }

    #[test]
    fn test_vector_inner_product() {
        let vec = vec![1.0, 2.0, 3.0];
        let result = vector_inner_product(&vec, &vec);
        assert_eq!(14.0, result);
    }

    #[test]
    fn inner_product_of_long_vectors_has_every_term() {
        for n in [31usize, 32, 33, 100, 2048 + 7] {
            let a: Vec<f32> = (0..n).map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0).collect();
            let b: Vec<f32> = (0..n).map(|i| ((i * 53) % 97) as f32 / 40.0 - 1.2).collect();
            let exact: f64 = a.iter().zip(&b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
            assert!((f64::from(vector_inner_product(&a, &b)) - exact).abs() < 1e-3, "{}", n);
            assert!((f64::from(dot(&a, &b)) - exact).abs() < 1e-3, "{}", n);
        }
    }
}
