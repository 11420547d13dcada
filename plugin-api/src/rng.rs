//! A counter-based random generator for randomness that must be a pure function
//! of (seed, step): a resumed run then draws exactly what an uninterrupted run
//! would, with no generator state to save.

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, and fully determined by
/// its 64-bit state, so `SplitMix::at(seed, step)` is reproducible anywhere.
#[derive(Clone, Debug)]
pub struct SplitMix(u64);

impl SplitMix {
    /// A generator whose stream depends only on `seed` and `stream`
    /// (for example the training step or an epoch number).
    pub fn at(seed: u64, stream: u64) -> SplitMix {
        let mut mixer = SplitMix(seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03));
        // One draw decorrelates nearby (seed, stream) pairs.
        SplitMix(mixer.next_u64())
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform on the open interval (0, 1), so `ln` of it is finite.
    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let (u1, u2) = (self.uniform(), self.uniform());
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Uniform integer in `0..n` (`n > 0`), by multiply-shift (bias below 2^-64·n).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Shuffles `items` in place (Fisher-Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_and_stream_give_the_same_draws() {
        let a: Vec<u64> = (0..4).map(|_| SplitMix::at(3, 9).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        assert_ne!(
            SplitMix::at(3, 9).next_u64(),
            SplitMix::at(3, 10).next_u64()
        );
    }

    #[test]
    fn shuffle_is_a_permutation_and_uniformish() {
        let mut rng = SplitMix::at(1, 0);
        let mut first = [0usize; 4];
        for _ in 0..4000 {
            let mut v = [0, 1, 2, 3];
            rng.shuffle(&mut v);
            let mut sorted = v;
            sorted.sort();
            assert_eq!(sorted, [0, 1, 2, 3]);
            first[v[0]] += 1;
        }
        assert!(first.iter().all(|&c| (800..1200).contains(&c)), "{first:?}");
    }

    #[test]
    fn normal_has_unit_variance() {
        let mut rng = SplitMix::at(5, 5);
        let xs: Vec<f64> = (0..20000).map(|_| rng.normal()).collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!(
            mean.abs() < 0.03 && (var - 1.0).abs() < 0.05,
            "{mean} {var}"
        );
    }
}
