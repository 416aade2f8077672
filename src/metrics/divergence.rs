//! Kullback-Leibler divergences between binned distributions: the PMF accuracy metric.
//!
//! The metric is the forward divergence `D(ref || model) = sum_{i: p_ref,i > 0} p_ref,i
//! ln(p_ref,i / p_model,i)` over the bins of a histogram (100 x 100 over `[-pi, pi)^2` for the
//! (phi, psi) PMF, 100 bins over `[-2.5, 1.1]` for the 1D Müller-Brown test). Both arguments are
//! normalised inside every function here, so raw counts may be passed.
//!
//! A model that is itself a histogram (an MD run) has empty bins early on, where the divergence is
//! infinite; [`EmptyBinRule`] names the rule that fixes this, and the same rule must be applied to
//! every method being compared. The reference's own sampling noise adds about
//! `occupied bins / (2 N_eff)` ([`histogram_noise_floor`]); the divergence between two independent
//! halves of the reference measures it (expected about twice the floor for two equally noisy halves,
//! see the tests).

use crate::error::{Error, Result};
use crate::metrics::histogram::probabilities_from_free_energy;

/// Checks a distribution (non-empty, finite, non-negative, positive finite total) and normalises it.
fn normalised(values: &[f64], what: &str) -> Result<Vec<f64>> {
    if values.is_empty() {
        return Err(Error::invalid(format!("{what}: no bins")));
    }
    if let Some((i, v)) = values.iter().enumerate().find(|(_, v)| !v.is_finite() || **v < 0.0) {
        return Err(Error::invalid(format!("{what}: bin {i} is {v}; values must be finite and non-negative")));
    }
    let total: f64 = values.iter().sum();
    if !(total.is_finite() && total > 0.0) {
        return Err(Error::invalid(format!("{what}: total {total} cannot be normalised")));
    }
    Ok(values.iter().map(|v| v / total).collect())
}

/// Forward KL divergence `sum_{i: p_i > 0} p_i ln(p_i / q_i)` of `p_model` (q) from `p_ref` (p).
///
/// Both are normalised first (so counts may be passed). Errors when the lengths differ, a slice is
/// empty, a value is negative or non-finite, or a total is zero or overflows. Returns `+inf` when
/// `q_i = 0` in a bin where `p_i > 0`.
///
/// ```
/// use cgflow::metrics::kl_divergence;
/// let d = kl_divergence(&[0.5, 0.5], &[0.25, 0.75]).unwrap();
/// assert!((d - 0.143841036225890).abs() < 1e-14);
/// assert_eq!(kl_divergence(&[1.0, 1.0], &[1.0, 0.0]).unwrap(), f64::INFINITY);
/// assert_eq!(kl_divergence(&[1.0, 0.0], &[3.0, 0.0]).unwrap(), 0.0);
/// ```
pub fn kl_divergence(p_ref: &[f64], p_model: &[f64]) -> Result<f64> {
    if p_ref.len() != p_model.len() {
        return Err(Error::invalid(format!(
            "KL divergence: reference has {} bins, model {}",
            p_ref.len(),
            p_model.len()
        )));
    }
    let p = normalised(p_ref, "KL divergence reference")?;
    let q = normalised(p_model, "KL divergence model")?;
    let mut d = 0.0;
    for (&pi, &qi) in p.iter().zip(&q) {
        if pi > 0.0 {
            if qi == 0.0 {
                return Ok(f64::INFINITY);
            }
            d += pi * (pi / qi).ln();
        }
    }
    // Rounding can leave a tiny negative number for identical inputs; the divergence is >= 0.
    Ok(d.max(0.0))
}

/// How empty bins of a model histogram are handled before the divergence is taken.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum EmptyBinRule {
    /// Use the counts as they are: an empty bin where the reference has weight gives `+inf`.
    None,
    /// Add this many counts (finite, non-negative) to every bin before normalising.
    PseudoCount(f64),
}

impl EmptyBinRule {
    /// The counts after applying the rule. Errors on a negative or non-finite pseudo-count or count.
    ///
    /// ```
    /// use cgflow::metrics::EmptyBinRule;
    /// assert_eq!(EmptyBinRule::PseudoCount(0.5).apply(&[0.0, 2.0]).unwrap(), vec![0.5, 2.5]);
    /// assert_eq!(EmptyBinRule::None.apply(&[0.0, 2.0]).unwrap(), vec![0.0, 2.0]);
    /// assert!(EmptyBinRule::PseudoCount(-1.0).apply(&[1.0]).is_err());
    /// ```
    pub fn apply(&self, counts: &[f64]) -> Result<Vec<f64>> {
        if let Some((i, c)) = counts.iter().enumerate().find(|(_, c)| !c.is_finite() || **c < 0.0) {
            return Err(Error::invalid(format!("model histogram: bin {i} has count {c}")));
        }
        match *self {
            EmptyBinRule::None => Ok(counts.to_vec()),
            EmptyBinRule::PseudoCount(a) => {
                if !a.is_finite() || a < 0.0 {
                    return Err(Error::invalid(format!("pseudo-count {a} must be finite and non-negative")));
                }
                Ok(counts.iter().map(|c| c + a).collect())
            }
        }
    }
}

/// KL divergence of a model histogram (raw counts) from the reference, after applying `rule` to the
/// counts (e.g. a pseudo-count added to every bin). Errors as [`kl_divergence`] does.
///
/// ```
/// use cgflow::metrics::{kl_to_histogram, EmptyBinRule};
/// let p = [0.5, 0.5];
/// assert_eq!(kl_to_histogram(&p, &[2.0, 0.0], EmptyBinRule::None).unwrap(), f64::INFINITY);
/// // Pseudo-count 1: q = [3/4, 1/4], D = 0.5 ln(2/3) + 0.5 ln 2.
/// let d = kl_to_histogram(&p, &[2.0, 0.0], EmptyBinRule::PseudoCount(1.0)).unwrap();
/// assert!((d - 0.5 * (4.0f64 / 3.0).ln()).abs() < 1e-15);
/// ```
pub fn kl_to_histogram(p_ref: &[f64], counts: &[f64], rule: EmptyBinRule) -> Result<f64> {
    let model = rule.apply(counts)?;
    kl_divergence(p_ref, &model)
}

/// KL divergence of a model given as free energies in kT at the bin centres:
/// `p_model,i = exp(-F_i) / sum_j exp(-F_j)` (computed stably; `+inf` gives 0). Errors as
/// [`kl_divergence`] and [`probabilities_from_free_energy`] do.
///
/// ```
/// use cgflow::metrics::kl_to_free_energy;
/// // F = [0, ln 3] -> q = [3/4, 1/4].
/// let d = kl_to_free_energy(&[0.5, 0.5], &[0.0, 3f64.ln()]).unwrap();
/// assert!((d - 0.5 * (4.0f64 / 3.0).ln()).abs() < 1e-15);
/// ```
pub fn kl_to_free_energy(p_ref: &[f64], free_energy_kt: &[f64]) -> Result<f64> {
    let q = probabilities_from_free_energy(free_energy_kt)?;
    kl_divergence(p_ref, &q)
}

/// Expected KL divergence `occupied / (2 N)` that the sampling noise of an `N`-sample histogram adds
/// to a divergence from (or to) the exact distribution, to second order. Gives `+inf` when
/// `effective_samples` is zero or negative and NaN when it is NaN.
///
/// ```
/// use cgflow::metrics::histogram_noise_floor;
/// assert_eq!(histogram_noise_floor(5000, 1e6), 0.0025);
/// assert_eq!(histogram_noise_floor(10, 0.0), f64::INFINITY);
/// ```
pub fn histogram_noise_floor(occupied_bins: usize, effective_samples: f64) -> f64 {
    if effective_samples.is_nan() {
        return f64::NAN;
    }
    if effective_samples <= 0.0 {
        return f64::INFINITY;
    }
    occupied_bins as f64 / (2.0 * effective_samples)
}

/// Number of bins with positive weight.
///
/// ```
/// use cgflow::metrics::occupied_bins;
/// assert_eq!(occupied_bins(&[0.0, 1.0, 3.0, 0.0]), 2);
/// ```
pub fn occupied_bins(counts: &[f64]) -> usize {
    counts.iter().filter(|c| **c > 0.0).count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn hand_computed_divergences() {
        // 0.5 ln(0.5/0.25) + 0.5 ln(0.5/0.75) = 0.5 ln 2 + 0.5 ln(2/3)
        let d = kl_divergence(&[0.5, 0.5], &[0.25, 0.75]).unwrap();
        assert!((d - 0.143_841_036_225_890_2).abs() < 1e-15);
        // Unnormalised input is normalised: same numbers times constants.
        let d2 = kl_divergence(&[3.0, 3.0], &[1.0, 3.0]).unwrap();
        assert!((d2 - d).abs() < 1e-15);
        // p = [0.2, 0.3, 0.5], q = [0.1, 0.6, 0.3]: 0.2 ln 2 + 0.3 ln(1/2) + 0.5 ln(5/3)
        //   = -0.1 ln 2 + 0.5 ln(5/3) = 0.1860980938... by hand.
        let d3 = kl_divergence(&[0.2, 0.3, 0.5], &[0.1, 0.6, 0.3]).unwrap();
        assert!((d3 - 0.186_098_093_827_001).abs() < 1e-12);
        // Bins with p = 0 do not contribute even where q = 0 there.
        let d4 = kl_divergence(&[0.5, 0.5, 0.0], &[0.25, 0.75, 0.0]).unwrap();
        assert!((d4 - d).abs() < 1e-15);
        assert_eq!(kl_divergence(&[0.1, 0.7, 0.2], &[0.1, 0.7, 0.2]).unwrap(), 0.0);
        assert_eq!(kl_divergence(&[0.5, 0.5], &[1.0, 0.0]).unwrap(), f64::INFINITY);
    }

    #[test]
    fn divergence_input_errors() {
        assert!(kl_divergence(&[1.0], &[1.0, 1.0]).is_err());
        assert!(kl_divergence(&[], &[]).is_err());
        assert!(kl_divergence(&[0.0, 0.0], &[1.0, 1.0]).is_err());
        assert!(kl_divergence(&[1.0, 1.0], &[0.0, 0.0]).is_err());
        assert!(kl_divergence(&[1.0, -0.5], &[1.0, 1.0]).is_err());
        assert!(kl_divergence(&[1.0, f64::NAN], &[1.0, 1.0]).is_err());
        assert!(kl_divergence(&[1.0, 1.0], &[1.0, f64::INFINITY]).is_err());
        assert!(kl_divergence(&[f64::MAX, f64::MAX], &[1.0, 1.0]).is_err());
        assert!(kl_to_histogram(&[1.0], &[1.0], EmptyBinRule::PseudoCount(f64::NAN)).is_err());
        assert!(kl_to_free_energy(&[1.0, 1.0], &[0.0, f64::NAN]).is_err());
    }

    #[test]
    fn model_as_histogram_and_as_free_energy() {
        let p = [0.25, 0.25, 0.5];
        let counts = [0.0, 3.0, 5.0];
        assert_eq!(kl_to_histogram(&p, &counts, EmptyBinRule::None).unwrap(), f64::INFINITY);
        assert_eq!(kl_to_histogram(&p, &counts, EmptyBinRule::PseudoCount(0.0)).unwrap(), f64::INFINITY);
        // Pseudo-count 1 -> q = [1, 4, 6] / 11.
        let d = kl_to_histogram(&p, &counts, EmptyBinRule::PseudoCount(1.0)).unwrap();
        let expected =
            0.25 * (0.25f64 * 11.0).ln() + 0.25 * (0.25f64 * 11.0 / 4.0).ln() + 0.5 * (0.5f64 * 11.0 / 6.0).ln();
        assert!((d - expected).abs() < 1e-15);
        // F = -ln q + const must give the same as the probabilities themselves.
        let f = [(11.0f64).ln() + 7.0, (11.0f64 / 4.0).ln() + 7.0, (11.0f64 / 6.0).ln() + 7.0];
        assert!((kl_to_free_energy(&p, &f).unwrap() - expected).abs() < 1e-14);
        // +inf free energy where the reference has weight -> +inf.
        assert_eq!(kl_to_free_energy(&p, &[f64::INFINITY, 0.0, 0.0]).unwrap(), f64::INFINITY);
        assert_eq!(occupied_bins(&counts), 2);
        assert_eq!(histogram_noise_floor(400, 200.0), 1.0);
        assert!(histogram_noise_floor(4, f64::NAN).is_nan());
    }

    /// Draws `n` samples over bins by inverse CDF; returns the counts.
    fn sample_counts(cdf: &[f64], n: usize, rng: &mut ChaCha8Rng) -> Vec<f64> {
        let mut counts = vec![0.0; cdf.len()];
        let total = cdf[cdf.len() - 1];
        for _ in 0..n {
            let u = rng.gen::<f64>() * total;
            let i = cdf.partition_point(|&c| c <= u).min(cdf.len() - 1);
            counts[i] += 1.0;
        }
        counts
    }

    /// Noise floor of the plug-in estimate. With p̂ = p + δ from N multinomial samples,
    /// E[δ_i²] = p_i (1 - p_i) / N and, to second order, KL(a || b) ≈ ½ Σ (a_i - b_i)² / p_i. So
    /// - KL(p̂ || p) ≈ ½ Σ δ_i² / p_i has expectation (K - 1) / (2N) (the brief's floor with the
    ///   normalisation constraint removing one degree of freedom);
    /// - KL(p̂₁ || p̂₂) for two independent histograms has expectation ½ Σ 2 p_i(1 - p_i) / (N p_i)
    ///   = (K - 1) / N: twice the floor, since both sides are noisy.
    ///
    /// Both are (1/N) χ²-like with K - 1 degrees of freedom (relative standard deviation
    /// √(2 / (K - 1)) ≈ 7 % for K = 400), so the mean over 8 seeds has ~2.5 % scatter; the test
    /// asserts a ±10 % band and that the two are separated by the factor 2.
    #[test]
    fn two_histogram_divergence_matches_noise_floor() {
        let k = 400;
        // A smooth 20 x 20 distribution, p ∝ exp(-F), F within [-1.5, 1.5]: the smallest bin expects
        // ~ 100 of 200000 counts, so an empty bin has probability ~ e^-100.
        let p: Vec<f64> = (0..k)
            .map(|i| {
                let (x, y) = ((i / 20) as f64, (i % 20) as f64);
                let t = std::f64::consts::TAU / 20.0;
                (-(x * t).cos() - 0.5 * (y * t).sin()).exp()
            })
            .collect();
        let total: f64 = p.iter().sum();
        let p: Vec<f64> = p.iter().map(|v| v / total).collect();
        let cdf: Vec<f64> = p
            .iter()
            .scan(0.0, |acc, v| {
                *acc += v;
                Some(*acc)
            })
            .collect();
        let n = 200_000;
        let seeds = 8;
        let (mut two_sample, mut one_sample) = (0.0, 0.0);
        for seed in 0..seeds {
            let mut rng = ChaCha8Rng::seed_from_u64(1000 + seed);
            let a = sample_counts(&cdf, n, &mut rng);
            let b = sample_counts(&cdf, n, &mut rng);
            two_sample += kl_to_histogram(&a, &b, EmptyBinRule::None).unwrap() / seeds as f64;
            one_sample += kl_divergence(&a, &p).unwrap() / seeds as f64;
        }
        let floor = histogram_noise_floor(k - 1, n as f64); // (K - 1) / (2N) = 9.975e-4
        assert!((floor - 9.975e-4).abs() < 1e-15);
        assert!((one_sample / floor - 1.0).abs() < 0.10, "KL(hist || truth) = {one_sample}, floor {floor}");
        assert!((two_sample / (2.0 * floor) - 1.0).abs() < 0.10, "KL(hist || hist) = {two_sample}, 2 floor {floor}");
    }
}
