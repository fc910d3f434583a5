//! Run-time dispatch of the kernels' inner loops to AVX-512 or AVX2 with FMA.

/// Define `$name` to run `$generic::<true>` compiled for AVX-512 or AVX2 (+ FMA) when the CPU
/// has them (the crate is built for baseline x86-64, whose SSE2 code runs these loops at half the
/// speed), else `$generic::<false>` as built. The const parameter says whether fused multiply-add is cheap.
macro_rules! with_avx2 {
    ($name:ident, $generic:ident, ($($arg:ident: $ty:ty),*)) => {
        fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                fn avx512($($arg: $ty),*) {
                    $generic::<true>($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) {
                    $generic::<true>($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU supports AVX-512F and FMA, checked just above.
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU supports AVX2 and FMA, checked just above.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $generic::<false>($($arg),*)
        }
    };
}
pub(super) use with_avx2;

/// `a + k * v`, fused where the CPU has FMA.
#[inline(always)]
pub(super) fn madd<const FMA: bool>(k: f32, v: f32, a: f32) -> f32 {
    if FMA { k.mul_add(v, a) } else { a + k * v }
}
