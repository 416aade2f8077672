//! Batch means: the mean of a correlated series from the means of blocks long enough to be
//! nearly independent (independent walkers, or stretches of time longer than the slowest
//! relaxation), and its standard error from the spread of the blocks.
//!
//! Blocks may differ in size (log-spaced checkpoints make later blocks longer): the mean is the
//! size-weighted mean, and the error is normalised so that it is unbiased whenever each block
//! mean's variance is inversely proportional to its size; it reduces to the textbook
//! `sd / sqrt(B)` for equal blocks.

use crate::error::{Error, Result};

/// A mean with its standard error.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MeanWithError {
    /// The size-weighted mean of the block means.
    pub mean: f64,
    /// Its batch-means standard error (`NaN` with a single block).
    pub standard_error: f64,
}

/// The size-weighted mean of `block_means` (one per block, with `block_sizes` samples each) and
/// its standard error,
///
/// `se^2 = sum_b n_b^2 (x_b - mean)^2 / (N^2 - sum_b n_b^2)`, `N = sum_b n_b`
///
/// (with `Var x_b = s^2 / n_b` the numerator's expectation is `s^2 (N - sum_b n_b^2 / N)`, so this
/// is unbiased for `Var mean = s^2 / N`; with equal blocks it is `sd^2 / B`).
///
/// Errors on no blocks, lengths that differ, a size that is not finite and positive, or a mean
/// that is not finite.
pub fn weighted_batch_means(block_means: &[f64], block_sizes: &[f64]) -> Result<MeanWithError> {
    if block_means.is_empty() || block_means.len() != block_sizes.len() {
        return Err(Error::invalid(format!(
            "batch means need one size per block, got {} means and {} sizes",
            block_means.len(),
            block_sizes.len()
        )));
    }
    if block_sizes.iter().any(|n| !(n.is_finite() && *n > 0.0)) {
        return Err(Error::invalid("every block size must be finite and positive"));
    }
    if block_means.iter().any(|x| !x.is_finite()) {
        return Err(Error::invalid("every block mean must be finite"));
    }
    let total: f64 = block_sizes.iter().sum();
    let mean = block_means.iter().zip(block_sizes).map(|(x, n)| x * n).sum::<f64>() / total;
    let sum_squared_sizes: f64 = block_sizes.iter().map(|n| n * n).sum();
    let standard_error = if block_means.len() < 2 {
        f64::NAN
    } else {
        let spread: f64 = block_means.iter().zip(block_sizes).map(|(x, n)| (n * (x - mean)).powi(2)).sum();
        (spread / (total * total - sum_squared_sizes)).sqrt()
    };
    Ok(MeanWithError { mean, standard_error })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn equal_blocks_give_the_textbook_error() {
        let x = [1.0, 2.0, 4.0, 7.0];
        let got = weighted_batch_means(&x, &[3.0; 4]).unwrap();
        let mean = 3.5;
        let sd = (x.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / 3.0).sqrt();
        assert!((got.mean - mean).abs() < 1e-15);
        assert!((got.standard_error - sd / 2.0).abs() < 1e-14, "{got:?}");
        assert!(weighted_batch_means(&[1.0], &[2.0]).unwrap().standard_error.is_nan());
    }

    #[test]
    fn the_error_of_unequal_blocks_matches_the_spread_of_repeated_experiments() {
        // Blocks of 1 to 40 independent unit normals: the true variance of the pooled mean is
        // 1 / N. The mean of se^2 over many experiments must match it.
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let sizes: Vec<f64> = [1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0, 40.0].to_vec();
        let total: f64 = sizes.iter().sum();
        let experiments = 20_000;
        let mut mean_se2 = 0.0;
        for _ in 0..experiments {
            let means: Vec<f64> = sizes
                .iter()
                .map(|&n| {
                    let sum: f64 = (0..n as usize)
                        .map(|_| {
                            // Box-Muller.
                            let (u, v): (f64, f64) = (rng.gen::<f64>().max(1e-300), rng.gen());
                            (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
                        })
                        .sum();
                    sum / n
                })
                .collect();
            mean_se2 += weighted_batch_means(&means, &sizes).unwrap().standard_error.powi(2) / experiments as f64;
        }
        let truth = 1.0 / total;
        // (The plain B / (B - 1) correction would read 16 % low with these sizes.)
        assert!((mean_se2 / truth - 1.0).abs() < 0.03, "{mean_se2} vs {truth}");
    }

    #[test]
    fn bad_blocks_are_refused() {
        assert!(weighted_batch_means(&[], &[]).is_err());
        assert!(weighted_batch_means(&[1.0], &[1.0, 2.0]).is_err());
        assert!(weighted_batch_means(&[1.0, 2.0], &[1.0, 0.0]).is_err());
        assert!(weighted_batch_means(&[f64::NAN, 2.0], &[1.0, 1.0]).is_err());
    }
}
