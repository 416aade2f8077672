//! Importance weights handled in log space: log-sum-exp, normalised weights, effective sample size
//! and the importance-sampling free-energy estimate.
//!
//! A log-weight is `ln w = -u_target(x) + u_proposal(x)` (or any quantity shifted by a constant),
//! in kT. Everything here subtracts the largest log-weight before exponentiating, so log-weights of
//! any magnitude (1e4 and beyond) are fine. `-inf` means weight 0; NaN and `+inf` are errors (except
//! in [`log_sum_exp`], which propagates them).

use crate::error::{Error, Result};

/// `ln sum_i exp(v_i)`, computed stably (the maximum is subtracted first).
///
/// Returns `-inf` for an empty slice or when every value is `-inf`, NaN if any value is NaN, and
/// `+inf` if any value is `+inf` (and none is NaN).
///
/// ```
/// use cgflow::metrics::log_sum_exp;
/// assert!((log_sum_exp(&[1000.0, 1000.0]) - (1000.0 + 2f64.ln())).abs() < 1e-12);
/// assert_eq!(log_sum_exp(&[]), f64::NEG_INFINITY);
/// assert!(log_sum_exp(&[0.0, f64::NAN]).is_nan());
/// ```
pub fn log_sum_exp(values: &[f64]) -> f64 {
    let mut max = f64::NEG_INFINITY;
    for &v in values {
        if v.is_nan() {
            return f64::NAN;
        }
        if v > max {
            max = v;
        }
    }
    if !max.is_finite() {
        // Empty, all -inf (-> -inf), or some +inf (-> +inf).
        return max;
    }
    let sum: f64 = values.iter().map(|v| (v - max).exp()).sum();
    max + sum.ln()
}

/// Checks log-weights: non-empty, no NaN, no `+inf`.
fn check_log_weights(log_weights: &[f64]) -> Result<()> {
    if log_weights.is_empty() {
        return Err(Error::invalid("log-weights: none given"));
    }
    if let Some((i, v)) = log_weights.iter().enumerate().find(|(_, v)| v.is_nan() || **v == f64::INFINITY) {
        return Err(Error::invalid(format!("log-weights: entry {i} is {v}")));
    }
    Ok(())
}

/// Weights `w_i / sum_j w_j` from log-weights, computed stably. Errors on an empty slice, NaN or
/// `+inf` entries, and when every entry is `-inf` (all weights zero).
///
/// ```
/// use cgflow::metrics::normalized_weights;
/// let w = normalized_weights(&[0.0, 3f64.ln(), f64::NEG_INFINITY]).unwrap();
/// assert!((w[0] - 0.25).abs() < 1e-15 && (w[1] - 0.75).abs() < 1e-15 && w[2] == 0.0);
/// assert!(normalized_weights(&[f64::NEG_INFINITY]).is_err());
/// ```
pub fn normalized_weights(log_weights: &[f64]) -> Result<Vec<f64>> {
    check_log_weights(log_weights)?;
    let max = log_weights.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        return Err(Error::invalid("log-weights: every weight is zero (-inf)"));
    }
    let w: Vec<f64> = log_weights.iter().map(|v| (v - max).exp()).collect();
    let total: f64 = w.iter().sum();
    Ok(w.into_iter().map(|x| x / total).collect())
}

/// Kish effective sample size `(sum w)^2 / sum w^2` of importance weights given as log-weights,
/// between 1 and `n`. Errors as [`normalized_weights`] does.
///
/// ```
/// use cgflow::metrics::effective_sample_size;
/// // Weights 1, 2, 3: 36 / 14.
/// let ess = effective_sample_size(&[0.0, 2f64.ln(), 3f64.ln()]).unwrap();
/// assert!((ess - 36.0 / 14.0).abs() < 1e-13);
/// ```
pub fn effective_sample_size(log_weights: &[f64]) -> Result<f64> {
    let w = normalized_weights(log_weights)?;
    let sum_sq: f64 = w.iter().map(|x| x * x).sum();
    Ok(1.0 / sum_sq)
}

/// Effective sample size divided by the number of weights, in `(0, 1]`. Errors as
/// [`normalized_weights`] does.
///
/// ```
/// use cgflow::metrics::relative_ess;
/// assert!((relative_ess(&[5.0; 10]).unwrap() - 1.0).abs() < 1e-14);
/// ```
pub fn relative_ess(log_weights: &[f64]) -> Result<f64> {
    Ok(effective_sample_size(log_weights)? / log_weights.len() as f64)
}

/// Importance-sampling free-energy estimate in kT: `A = -ln((1/n) sum_i exp(ln w_i))` (the mean of
/// the weights, not their sum). Returns `+inf` when every log-weight is `-inf`. Errors on an empty
/// slice and on NaN or `+inf` entries.
///
/// ```
/// use cgflow::metrics::free_energy_from_log_weights;
/// // Weights 1, 2, 3: mean 2.
/// let a = free_energy_from_log_weights(&[0.0, 2f64.ln(), 3f64.ln()]).unwrap();
/// assert!((a + 2f64.ln()).abs() < 1e-14);
/// ```
pub fn free_energy_from_log_weights(log_weights: &[f64]) -> Result<f64> {
    check_log_weights(log_weights)?;
    let lse = log_sum_exp(log_weights);
    if lse == f64::NEG_INFINITY {
        return Ok(f64::INFINITY);
    }
    Ok(-(lse - (log_weights.len() as f64).ln()))
}

/// The log-weights with the `k` largest set to the `(k+1)`-th largest (all values above the
/// `(k+1)`-th largest are lowered to it; ties with it are untouched). `k = 0` returns a copy.
/// Errors unless `k < n`, and on NaN or `+inf` entries.
///
/// ```
/// use cgflow::metrics::clip_top_k_log_weights;
/// assert_eq!(clip_top_k_log_weights(&[1.0, 5.0, 3.0, 4.0], 2).unwrap(), vec![1.0, 3.0, 3.0, 3.0]);
/// assert!(clip_top_k_log_weights(&[1.0, 2.0], 2).is_err());
/// ```
pub fn clip_top_k_log_weights(log_weights: &[f64], k: usize) -> Result<Vec<f64>> {
    check_log_weights(log_weights)?;
    if k >= log_weights.len() {
        return Err(Error::invalid(format!(
            "clipping the top {k} log-weights needs more than {k} of them, got {}",
            log_weights.len()
        )));
    }
    let mut sorted = log_weights.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let threshold = sorted[k];
    Ok(log_weights.iter().map(|&v| v.min(threshold)).collect())
}

/// [`free_energy_from_log_weights`] after [`clip_top_k_log_weights`]: the `k` largest log-weights
/// are lowered to the `(k+1)`-th largest before averaging (the reference protocol clips the 3 largest
/// weights per point, which trades a small upward bias for much less variance). Errors unless
/// `k < n`, and on NaN or `+inf` entries.
///
/// ```
/// use cgflow::metrics::free_energy_with_top_k_clipped;
/// // Weights 1, 2, 3 -> 1, 2, 2 (mean 5/3).
/// let a = free_energy_with_top_k_clipped(&[0.0, 2f64.ln(), 3f64.ln()], 1).unwrap();
/// assert!((a + (5.0f64 / 3.0).ln()).abs() < 1e-14);
/// ```
pub fn free_energy_with_top_k_clipped(log_weights: &[f64], k: usize) -> Result<f64> {
    let clipped = clip_top_k_log_weights(log_weights, k)?;
    free_energy_from_log_weights(&clipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEG_INF: f64 = f64::NEG_INFINITY;

    #[test]
    fn log_sum_exp_values_and_edge_cases() {
        assert!((log_sum_exp(&[0.0, 0.0, 0.0]) - 3f64.ln()).abs() < 1e-15);
        assert!((log_sum_exp(&[2f64.ln(), 3f64.ln(), NEG_INF]) - 5f64.ln()).abs() < 1e-15);
        assert!((log_sum_exp(&[-1e4, -1e4 + 2f64.ln()]) - (-1e4 + 3f64.ln())).abs() < 1e-11);
        assert!((log_sum_exp(&[1e308, 1e308]) - 1e308).abs() <= 1e292);
        assert_eq!(log_sum_exp(&[]), NEG_INF);
        assert_eq!(log_sum_exp(&[NEG_INF, NEG_INF]), NEG_INF);
        assert_eq!(log_sum_exp(&[0.0, f64::INFINITY]), f64::INFINITY);
        assert!(log_sum_exp(&[f64::INFINITY, f64::NAN]).is_nan());
    }

    #[test]
    fn normalized_weights_and_errors() {
        let w = normalized_weights(&[1e4, 1e4 + 3f64.ln(), 1e4]).unwrap();
        assert!((w[0] - 0.2).abs() < 1e-12 && (w[1] - 0.6).abs() < 1e-12 && (w[2] - 0.2).abs() < 1e-12);
        assert!(normalized_weights(&[]).is_err());
        assert!(normalized_weights(&[NEG_INF, NEG_INF]).is_err());
        assert!(normalized_weights(&[0.0, f64::NAN]).is_err());
        assert!(normalized_weights(&[0.0, f64::INFINITY]).is_err());
    }

    #[test]
    fn effective_sample_size_cases() {
        // Equal weights -> n.
        assert!((effective_sample_size(&[-3.0; 17]).unwrap() - 17.0).abs() < 1e-12);
        assert!((relative_ess(&[-3.0; 17]).unwrap() - 1.0).abs() < 1e-14);
        // One dominant weight: (2 + e^50)^2 / (2 + e^100) = 1 + 4 e^-50 + ... = 1 to 1e-12.
        assert!((effective_sample_size(&[0.0, 0.0, 50.0]).unwrap() - 1.0).abs() < 1e-12);
        // Hand-computed: weights 1, 2, 3 -> 36 / 14; relative 36 / 42.
        let lw = [0.0, 2f64.ln(), 3f64.ln()];
        assert!((effective_sample_size(&lw).unwrap() - 2.571_428_571_428_571).abs() < 1e-13);
        assert!((relative_ess(&lw).unwrap() - 6.0 / 7.0).abs() < 1e-13);
        // Huge log-weights (weights 1 : 1 : 2 at e^1e4) do not overflow: 16 / 6.
        let big = [1e4, 1e4, 1e4 + 2f64.ln()];
        assert!((effective_sample_size(&big).unwrap() - 16.0 / 6.0).abs() < 1e-10);
        // -inf weights count as zero weights but still count in n for the relative ESS.
        let with_zero = [0.0, 0.0, NEG_INF, NEG_INF];
        assert!((effective_sample_size(&with_zero).unwrap() - 2.0).abs() < 1e-14);
        assert!((relative_ess(&with_zero).unwrap() - 0.5).abs() < 1e-14);
        assert!(effective_sample_size(&[f64::NAN]).is_err());
    }

    #[test]
    fn free_energy_estimates() {
        let lw = [0.0, 2f64.ln(), 3f64.ln()];
        // -ln(mean(1, 2, 3)) = -ln 2
        assert!((free_energy_from_log_weights(&lw).unwrap() + 2f64.ln()).abs() < 1e-14);
        // Huge: mean of e^1e4 (1, 1, 2) = e^1e4 * 4/3.
        let big = [1e4, 1e4, 1e4 + 2f64.ln()];
        assert!((free_energy_from_log_weights(&big).unwrap() + 1e4 + (4.0f64 / 3.0).ln()).abs() < 1e-10);
        let tiny = [-1e4, -1e4];
        assert!((free_energy_from_log_weights(&tiny).unwrap() - 1e4).abs() < 1e-10);
        assert_eq!(free_energy_from_log_weights(&[NEG_INF, NEG_INF]).unwrap(), f64::INFINITY);
        // -inf entries count in n: weights 2, 0 -> mean 1 -> A = 0.
        assert!(free_energy_from_log_weights(&[2f64.ln(), NEG_INF]).unwrap().abs() < 1e-15);
        assert!(free_energy_from_log_weights(&[]).is_err());
        assert!(free_energy_from_log_weights(&[0.0, f64::INFINITY]).is_err());
    }

    #[test]
    fn top_k_clipping() {
        // Weights 1, 2, 3, 10: k = 0 -> mean 4; k = 1 -> 1, 2, 3, 3 (mean 9/4);
        // k = 3 -> all 1 (A = 0).
        let lw = [0.0, 2f64.ln(), 3f64.ln(), 10f64.ln()];
        assert!((free_energy_with_top_k_clipped(&lw, 0).unwrap() + 4f64.ln()).abs() < 1e-14);
        assert!((free_energy_with_top_k_clipped(&lw, 1).unwrap() + 2.25f64.ln()).abs() < 1e-14);
        assert!(free_energy_with_top_k_clipped(&lw, 3).unwrap().abs() < 1e-14);
        // Ties: the 3 largest of [5, 5, 5, 5, 1] set to the 4th largest (5) change nothing.
        assert_eq!(clip_top_k_log_weights(&[5.0, 5.0, 5.0, 5.0, 1.0], 3).unwrap(), vec![5.0, 5.0, 5.0, 5.0, 1.0]);
        // Clipping 3 of [9, 1, 8, 7, 2, 6] -> [6, 1, 6, 6, 2, 6], order kept.
        assert_eq!(
            clip_top_k_log_weights(&[9.0, 1.0, 8.0, 7.0, 2.0, 6.0], 3).unwrap(),
            vec![6.0, 1.0, 6.0, 6.0, 2.0, 6.0]
        );
        assert!(clip_top_k_log_weights(&lw, 4).is_err());
        assert!(clip_top_k_log_weights(&[0.0, f64::NAN], 0).is_err());
    }
}
