//! Free-energy labels at CG points by importance sampling.
//!
//! For samples `x_i ~ q(. | s)` of the fine coordinates at a fixed CG point `s`, with log-weights
//! `ln w_i = ln p(s, x_i) - ln q(x_i | s)` (`ln p` an unnormalised log-density of the full system,
//! `-u` in kT), the free energy of `s` is `A(s) = -ln((1/n) sum_i w_i)`: the mean of the weights,
//! not their sum, so labels from different sample counts are comparable. Before averaging, the `k`
//! largest log-weights are lowered to the `(k+1)`-th largest (the reference clips 3), which trades
//! a small upward bias for much less variance.
//!
//! This is [`crate::metrics::free_energy_with_top_k_clipped`] (same mean, same clipping rule) with
//! the checks a labelling step needs on top: `ln p` and `ln q` are taken separately, `ln p = -inf`
//! (a clash, a sample of the wrong chirality) is a zero weight, and a point whose weights are all
//! zero is an error rather than an infinite label.

use crate::error::{Error, Result};
use crate::metrics::weights::{clip_top_k_log_weights, effective_sample_size, log_sum_exp};

/// The importance-sampling free energy of one CG point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LabelEstimate {
    /// `A = -ln((1/n) sum_i w_i)` in kT, with the top weights clipped.
    pub free_energy_kt: f64,
    /// Kish effective sample size `(sum w)^2 / sum w^2` of the weights before clipping (the
    /// diagnostic of how well `q` covers `p`), between 1 and `n`.
    pub ess: f64,
    /// Samples used (zero weights included).
    pub n: usize,
}

/// Log-weights `ln p - ln q`, checked: equal lengths, no NaN, `ln q` finite, `ln p` not `+inf`;
/// `ln p = -inf` gives `-inf` (weight 0).
fn log_weights(log_p: &[f64], log_q: &[f64]) -> Result<Vec<f64>> {
    if log_p.len() != log_q.len() {
        return Err(Error::invalid(format!("{} values of ln p but {} of ln q", log_p.len(), log_q.len())));
    }
    log_p
        .iter()
        .zip(log_q)
        .enumerate()
        .map(|(i, (&lp, &lq))| {
            if lp.is_nan() || lp == f64::INFINITY {
                return Err(Error::invalid(format!("ln p of sample {i} is {lp}")));
            }
            if !lq.is_finite() {
                return Err(Error::invalid(format!("ln q of sample {i} is {lq}; samples of q have finite density")));
            }
            Ok(if lp == f64::NEG_INFINITY { f64::NEG_INFINITY } else { lp - lq })
        })
        .collect()
}

/// The free energy `A = -ln((1/n) sum_i w_i)` (kT) of one CG point from `n` samples of the
/// proposal, with `ln w_i = log_p[i] - log_q[i]` and the `clip_top_k` largest log-weights set to
/// the `(clip_top_k + 1)`-th largest before averaging (ties with it are untouched).
///
/// `log_p[i] = -inf` is allowed and is a zero weight (it still counts in `n`). Errors when the
/// lengths differ, when `n <= clip_top_k`, on NaN anywhere, on `log_p = +inf`, on a non-finite
/// `log_q`, and when every weight is zero (also after clipping).
///
/// ```
/// use cgflow::pmf::importance_free_energy;
/// // Weights 1, 2, 3, 10 with the largest clipped to 3: mean 9/4.
/// let log_p = [0.0, 2f64.ln(), 3f64.ln(), 10f64.ln()];
/// let est = importance_free_energy(&log_p, &[0.0; 4], 1).unwrap();
/// assert!((est.free_energy_kt + 2.25f64.ln()).abs() < 1e-14);
/// assert_eq!(est.n, 4);
/// assert!(importance_free_energy(&log_p, &[0.0; 4], 4).is_err());
/// ```
pub fn importance_free_energy(log_p: &[f64], log_q: &[f64], clip_top_k: usize) -> Result<LabelEstimate> {
    let lw = log_weights(log_p, log_q)?;
    let n = lw.len();
    if n <= clip_top_k {
        return Err(Error::invalid(format!(
            "clipping the top {clip_top_k} weights needs more than {clip_top_k} samples, got {n}"
        )));
    }
    if lw.iter().all(|&v| v == f64::NEG_INFINITY) {
        return Err(Error::invalid(format!("every one of the {n} importance weights is zero (ln p = -inf)")));
    }
    let ess = effective_sample_size(&lw)?;
    let clipped = clip_top_k_log_weights(&lw, clip_top_k)?;
    let lse = log_sum_exp(&clipped);
    if lse == f64::NEG_INFINITY {
        return Err(Error::invalid(format!(
            "only {} of {n} importance weights are non-zero, all removed by clipping the top {clip_top_k}",
            lw.iter().filter(|v| v.is_finite()).count()
        )));
    }
    Ok(LabelEstimate { free_energy_kt: -(lse - (n as f64).ln()), ess, n })
}

/// [`importance_free_energy`] for many CG points at once: `log_p` and `log_q` hold
/// `samples_per_point` consecutive samples of point 0, then of point 1, and so on. Errors when the
/// lengths differ or are not a multiple of `samples_per_point` (which must be positive), and as
/// [`importance_free_energy`] for any point (the message names the point).
///
/// ```
/// use cgflow::pmf::labels_for_points;
/// // Two points, two samples each: weights (1, 1) and (e, e).
/// let est = labels_for_points(&[0.0, 0.0, 1.0, 1.0], &[0.0; 4], 2, 0).unwrap();
/// assert!(est[0].free_energy_kt.abs() < 1e-15 && (est[1].free_energy_kt + 1.0).abs() < 1e-15);
/// ```
pub fn labels_for_points(
    log_p: &[f64],
    log_q: &[f64],
    samples_per_point: usize,
    clip_top_k: usize,
) -> Result<Vec<LabelEstimate>> {
    if samples_per_point == 0 {
        return Err(Error::invalid("samples per point must be positive"));
    }
    if log_p.len() != log_q.len() {
        return Err(Error::invalid(format!("{} values of ln p but {} of ln q", log_p.len(), log_q.len())));
    }
    if log_p.len() % samples_per_point != 0 {
        return Err(Error::invalid(format!(
            "{} samples are not a whole number of points of {samples_per_point} samples",
            log_p.len()
        )));
    }
    log_p
        .chunks_exact(samples_per_point)
        .zip(log_q.chunks_exact(samples_per_point))
        .enumerate()
        .map(|(j, (lp, lq))| {
            importance_free_energy(lp, lq, clip_top_k).map_err(|e| match e {
                Error::InvalidInput(m) => Error::invalid(format!("CG point {j}: {m}")),
                other => other,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pmf_labels_zero_weights_and_clipping() {
        let ninf = f64::NEG_INFINITY;
        // Weights 2, 0, 0, 2 (n = 4): mean 1 -> A = 0; ESS 2.
        let est = importance_free_energy(&[2f64.ln(), ninf, ninf, 2f64.ln()], &[0.0; 4], 0).unwrap();
        assert!(est.free_energy_kt.abs() < 1e-15);
        assert!((est.ess - 2.0).abs() < 1e-14);
        // One non-zero weight clipped away: error, not +inf.
        assert!(importance_free_energy(&[0.0, ninf, ninf], &[0.0; 3], 1).is_err());
        assert!(importance_free_energy(&[ninf; 3], &[0.0; 3], 0).is_err());
        // ln q shifts the weights: ln p = ln q gives A = 0 whatever ln q is.
        let lq = [-3.0, 7.5, 0.25];
        assert!(importance_free_energy(&lq, &lq, 0).unwrap().free_energy_kt.abs() < 1e-15);
        assert!(importance_free_energy(&[0.0], &[f64::NEG_INFINITY], 0).is_err());
        assert!(importance_free_energy(&[f64::INFINITY], &[0.0], 0).is_err());
    }

    #[test]
    fn pmf_labels_batch_errors_name_the_point() {
        let err = labels_for_points(&[0.0, 0.0, 0.0, f64::NAN], &[0.0; 4], 2, 0).unwrap_err();
        assert!(err.to_string().contains("CG point 1"), "{err}");
        assert!(labels_for_points(&[0.0; 3], &[0.0; 3], 2, 0).is_err());
        assert!(labels_for_points(&[0.0; 4], &[0.0; 4], 0, 0).is_err());
        assert!(labels_for_points(&[0.0; 4], &[0.0; 3], 1, 0).is_err());
        assert!(labels_for_points(&[], &[], 3, 0).unwrap().is_empty());
    }
}
