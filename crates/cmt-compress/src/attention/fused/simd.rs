//! Row primitives of the H pass with runtime dispatch: AVX-512F, then AVX2+FMA, then
//! portable. The portable bodies work on 16 independent lanes (no reassociation the
//! compiler would have to invent), so each `target_feature` copy vectorises; `exp` is a
//! polynomial (no libm call) for the same reason.

const L: usize = 16;

/// Expands to a function that dispatches to AVX-512F / AVX2+FMA copies of a portable body.
macro_rules! dispatch {
    ($(#[$m:meta])* pub fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)? => $body:ident) => {
        $(#[$m])*
        #[inline]
        pub fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                unsafe fn v4($($arg: $ty),*) $(-> $ret)? { $body($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn v3($($arg: $ty),*) $(-> $ret)? { $body($($arg),*) }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU supports AVX-512F (checked just above); the body is
                    // safe code.
                    return unsafe { v4($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU supports AVX2 and FMA (checked just above); the body
                    // is safe code.
                    return unsafe { v3($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}

/// e^x for x ≤ 88 (below −87 it returns ~e^−87 instead of denormals/zero), relative error
/// ~2e-7: 2^n · p(r) with n = round(x·log2 e), r = x − n·ln 2 in two parts.
#[inline(always)]
fn exp_lane(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let n = (x * std::f32::consts::LOG2_E + 0.5).floor();
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    p = p * r * r + r + 1.0;
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

#[inline(always)]
fn max_body(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; L];
    let mut c = x.chunks_exact(L);
    for v in &mut c {
        for l in 0..L {
            acc[l] = acc[l].max(v[l]);
        }
    }
    let m = acc.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    c.remainder().iter().fold(m, |a, &b| a.max(b))
}

#[inline(always)]
fn exp_shift_body(x: &mut [f32], shift: f32) -> f32 {
    let mut acc = [0.0f32; L];
    let mut c = x.chunks_exact_mut(L);
    for v in &mut c {
        for l in 0..L {
            v[l] = exp_lane(v[l] - shift);
            acc[l] += v[l];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for v in c.into_remainder() {
        *v = exp_lane(*v - shift);
        s += *v;
    }
    s
}

#[inline(always)]
fn dot_body(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; L];
    let (mut ca, mut cb) = (a.chunks_exact(L), b.chunks_exact(L));
    for (x, y) in (&mut ca).zip(&mut cb) {
        for l in 0..L {
            acc[l] += x[l] * y[l];
        }
    }
    let s: f32 = acc.iter().sum();
    s + ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum::<f32>()
}

#[inline(always)]
fn scale_body(x: &mut [f32], alpha: f32) {
    x.iter_mut().for_each(|v| *v *= alpha);
}

#[inline(always)]
fn scale_to_body(x: &[f32], alpha: f32, out: &mut [f32]) {
    out.iter_mut().zip(x).for_each(|(o, v)| *o = v * alpha);
}

#[inline(always)]
fn mul_to_body(x: &[f32], y: &[f32], out: &mut [f32]) {
    out.iter_mut()
        .zip(x)
        .zip(y)
        .for_each(|((o, a), b)| *o = a * b);
}

#[inline(always)]
fn mul_assign_body(x: &mut [f32], y: &[f32]) {
    x.iter_mut().zip(y).for_each(|(a, b)| *a *= b);
}

#[inline(always)]
fn bwd_probs_body(dpu: &mut [f32], s: &mut [f32], lse: f32, delta: f32) {
    for (a, b) in dpu.iter_mut().zip(s.iter_mut()) {
        let p = exp_lane(*b - lse);
        *b = p * (*a - delta);
        *a = p;
    }
}

#[inline(always)]
fn dh_body(dy: &[f32], y: &[f32], rinv: f32, dh: &mut [f32]) {
    let coef = dot_body(dy, y) / y.len() as f32;
    for ((o, a), b) in dh.iter_mut().zip(dy).zip(y) {
        *o += rinv * (a - coef * b);
    }
}

#[inline(always)]
fn acc_mul_body(x: &[f32], y: &[f32], acc: &mut [f32]) {
    acc.iter_mut()
        .zip(x)
        .zip(y)
        .for_each(|((o, a), b)| *o += a * b);
}

dispatch!(
    /// max of a non-empty row.
    pub fn max(x: &[f32]) -> f32 => max_body
);
dispatch!(
    /// x ← e^(x − shift) in place; returns Σ of the new values.
    pub fn exp_shift(x: &mut [f32], shift: f32) -> f32 => exp_shift_body
);
dispatch!(
    /// Σ a·b.
    pub fn dot(a: &[f32], b: &[f32]) -> f32 => dot_body
);
dispatch!(
    /// x ← alpha·x.
    pub fn scale(x: &mut [f32], alpha: f32) => scale_body
);
dispatch!(
    /// out ← alpha·x.
    pub fn scale_to(x: &[f32], alpha: f32, out: &mut [f32]) => scale_to_body
);
dispatch!(
    /// out ← x ⊙ y.
    pub fn mul_to(x: &[f32], y: &[f32], out: &mut [f32]) => mul_to_body
);
dispatch!(
    /// x ← x ⊙ y.
    pub fn mul_assign(x: &mut [f32], y: &[f32]) => mul_assign_body
);
dispatch!(
    /// acc += x ⊙ y.
    pub fn acc_mul(x: &[f32], y: &[f32], acc: &mut [f32]) => acc_mul_body
);
dispatch!(
    /// The backward's score step for one query row: with p = e^(s − lse),
    /// `dpu ← p` and `s ← p·(dpu − delta)` (i.e. ds).
    pub fn bwd_probs(dpu: &mut [f32], s: &mut [f32], lse: f32, delta: f32) => bwd_probs_body
);
dispatch!(
    /// The RMSNorm backward of one row: dh += rinv·(dy − (dy·y / d)·y).
    pub fn dh_row(dy: &[f32], y: &[f32], rinv: f32, dh: &mut [f32]) => dh_body
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_accurate_over_the_softmax_range() {
        let mut worst = 0.0f64;
        for i in 0..=200_000 {
            let x = -87.0 + 175.0 * i as f32 / 200_000.0;
            let got = exp_lane(x) as f64;
            let want = (x as f64).exp();
            worst = worst.max((got - want).abs() / want);
        }
        assert!(worst < 5e-7, "relative error {worst:e}");
    }

    #[test]
    fn dispatched_rows_match_scalar() {
        let x: Vec<f32> = (0..37)
            .map(|i| ((i * 7919) % 101) as f32 / 13.0 - 3.0)
            .collect();
        assert_eq!(max(&x), x.iter().cloned().fold(f32::MIN, f32::max));
        let mut e = x.clone();
        let s = exp_shift(&mut e, 1.5);
        let want: f64 = x.iter().map(|&v| ((v - 1.5) as f64).exp()).sum();
        assert!((s as f64 - want).abs() < 1e-5 * want);
        for (a, b) in e.iter().zip(&x) {
            assert!(((*a as f64) - ((b - 1.5) as f64).exp()).abs() < 1e-6 * (*a as f64));
        }
        let want: f32 = x.iter().map(|v| v * v).sum();
        assert!((dot(&x, &x) - want).abs() < 1e-4 * want);
    }
}
