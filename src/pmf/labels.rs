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

/// A free-energy estimate of one CG point with the effective sample size behind it: what the
/// active-learning loop keeps per point and combines across steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WeightedLabel {
    /// Free energy, kT.
    pub free_energy_kt: f64,
    /// Effective sample size (summed over the estimates combined into this one).
    pub ess: f64,
}

impl From<LabelEstimate> for WeightedLabel {
    fn from(l: LabelEstimate) -> Self {
        WeightedLabel { free_energy_kt: l.free_energy_kt, ess: l.ess }
    }
}

impl WeightedLabel {
    /// Two estimates of one point combined: the estimates of Z = exp(-F) averaged with their ESS
    /// as weights (an ESS is about the inverse of an estimate's relative variance), the ESS
    /// added. Either may be missing.
    ///
    /// ```
    /// use cgflow::pmf::WeightedLabel;
    /// // Z = 1 (ESS 1) and Z = 1/2 (ESS 3): Z = (1 + 3/2) / 4 = 5/8.
    /// let a = WeightedLabel { free_energy_kt: 0.0, ess: 1.0 };
    /// let b = WeightedLabel { free_energy_kt: 2f64.ln(), ess: 3.0 };
    /// let c = WeightedLabel::combine(Some(a), Some(b)).unwrap();
    /// assert!((c.free_energy_kt + (5.0f64 / 8.0).ln()).abs() < 1e-15 && c.ess == 4.0);
    /// assert_eq!(WeightedLabel::combine(None, Some(b)), Some(b));
    /// ```
    pub fn combine(a: Option<WeightedLabel>, b: Option<WeightedLabel>) -> Option<WeightedLabel> {
        match (a, b) {
            (Some(a), Some(b)) => {
                let total = a.ess + b.ess;
                // -ln((ea e^-fa + eb e^-fb) / total), in log space.
                let m = (-a.free_energy_kt).max(-b.free_energy_kt);
                let z = (a.ess * (-a.free_energy_kt - m).exp() + b.ess * (-b.free_energy_kt - m).exp()) / total;
                Some(WeightedLabel { free_energy_kt: -(m + z.ln()), ess: total })
            }
            (one, None) | (None, one) => one,
        }
    }
}

/// [`importance_free_energy`] where a point that cannot be estimated has no label rather than an
/// error: in active learning a CG point on a barrier can have every flow sample clash, and is then
/// left out of the fit. No label (None) for: every weight zero or clipped away, no more samples
/// than `clip_top_k`, a NaN or `+inf` ln p, a non-finite ln q, or a non-finite result. Errors only
/// when the lengths of `log_p` and `log_q` differ (a caller's mistake, not a property of the
/// samples).
pub fn label_or_none(log_p: &[f64], log_q: &[f64], clip_top_k: usize) -> Result<Option<WeightedLabel>> {
    if log_p.len() != log_q.len() {
        return Err(Error::invalid(format!("{} values of ln p but {} of ln q", log_p.len(), log_q.len())));
    }
    Ok(importance_free_energy(log_p, log_q, clip_top_k).ok().filter(|l| l.free_energy_kt.is_finite()).map(Into::into))
}

/// The estimates with each ESS replaced by the mean ESS of all of them: the weights of a step's
/// estimates that follow the flow's improvement from step to step but not the luck of one point's
/// samples (a point that caught a rare large weight has a low ESS and a high Z, and its own ESS
/// would down-weight it: biased upward in F).
///
/// ```
/// use cgflow::pmf::{with_mean_ess, WeightedLabel};
/// let l = |f, ess| Some(WeightedLabel { free_energy_kt: f, ess });
/// assert_eq!(with_mean_ess(&[l(1.0, 2.0), None, l(3.0, 6.0)]), vec![l(1.0, 4.0), None, l(3.0, 4.0)]);
/// ```
pub fn with_mean_ess(estimates: &[Option<WeightedLabel>]) -> Vec<Option<WeightedLabel>> {
    let ess: Vec<f64> = estimates.iter().flatten().map(|l| l.ess).collect();
    let mean = ess.iter().sum::<f64>() / ess.len().max(1) as f64;
    estimates.iter().map(|e| e.map(|l| WeightedLabel { ess: mean, ..l })).collect()
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
    fn labels_combine_in_log_space_and_missing_ones_are_none() {
        // Far apart in F, still finite (log space).
        let a = WeightedLabel { free_energy_kt: 1000.0, ess: 1.0 };
        let b = WeightedLabel { free_energy_kt: 0.0, ess: 1.0 };
        let c = WeightedLabel::combine(Some(a), Some(b)).unwrap();
        assert!((c.free_energy_kt - 2f64.ln()).abs() < 1e-12);
        assert_eq!(WeightedLabel::combine(Some(a), None), Some(a));
        assert_eq!(WeightedLabel::combine(None, None), None);
        assert!(with_mean_ess(&[None]).iter().all(Option::is_none));
        // No label where every weight is zero or clipped away; errors on malformed input.
        let ninf = f64::NEG_INFINITY;
        assert_eq!(label_or_none(&[ninf; 3], &[0.0; 3], 0).unwrap(), None);
        assert_eq!(label_or_none(&[0.0, ninf, ninf], &[0.0; 3], 1).unwrap(), None);
        let l = label_or_none(&[0.0, 0.0], &[0.0; 2], 0).unwrap().unwrap();
        assert!(l.free_energy_kt.abs() < 1e-15 && (l.ess - 2.0).abs() < 1e-14);
        assert_eq!(label_or_none(&[f64::NAN, 0.0], &[0.0; 2], 0).unwrap(), None);
        assert_eq!(label_or_none(&[0.0], &[ninf], 0).unwrap(), None);
        assert_eq!(label_or_none(&[0.0], &[0.0], 1).unwrap(), None);
        assert!(label_or_none(&[0.0], &[0.0; 2], 0).is_err());
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
