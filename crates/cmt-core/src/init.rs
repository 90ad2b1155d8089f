//! Seeded initialisation helpers.
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// `n` draws of N(0, std²), deterministic in `seed` (Box–Muller; 1 − u keeps ln finite).
pub fn normal_vec(n: usize, std: f32, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let u: f64 = 1.0 - rng.random::<f64>();
            let v: f64 = rng.random::<f64>();
            ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32 * std
        })
        .collect()
}
