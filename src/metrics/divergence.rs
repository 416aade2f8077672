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
use crate::metrics::histogram::{probabilities_from_free_energy, BinGrid};

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

/// The total probability of the uniform floor that [`EmptyBinRule::Smooth`] mixes in unless told
/// otherwise: it raises a divergence by at most `-ln(1 - 1e-4) = 1.0e-4`.
pub const DEFAULT_SMOOTHING_FLOOR: f64 = 1e-4;

/// How empty bins of a model histogram are handled before the divergence is taken. The same rule
/// must be applied to every method being compared.
///
/// Every rule acts on the normalised histogram only, never on the number of samples, so that a
/// curve does not depend on how often an MD run recorded its frames. (A pseudo-count of `A` per bin
/// does: it weighs `A K` against the number of recorded frames, and one 2.56e6-evaluation run read
/// KLD 0.044 recorded every 10 steps and 0.259 every 100. `pseudo-count:A` is refused, naming the
/// rules to use instead.)
///
/// Written and parsed as `none`, `pseudo-mass:M` and `smooth:SIGMA` or `smooth:SIGMA:FLOOR`:
///
/// ```
/// use cgflow::metrics::EmptyBinRule;
/// let rule: EmptyBinRule = "smooth:2".parse().unwrap();
/// assert_eq!(rule, EmptyBinRule::Smooth { sigma_bins: 2.0, floor: 1e-4 });
/// assert_eq!(rule.to_string(), "smooth:2:0.0001");
/// assert_eq!("pseudo-mass:0.01".parse::<EmptyBinRule>().unwrap(), EmptyBinRule::PseudoMass(0.01));
/// assert!("pseudo-count:1".parse::<EmptyBinRule>().unwrap_err().to_string().contains("record interval"));
/// assert!("smooth:-1".parse::<EmptyBinRule>().is_err());
/// assert!("laplace".parse::<EmptyBinRule>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum EmptyBinRule {
    /// Use the counts as they are: an empty bin where the reference has weight gives `+inf`.
    None,
    /// A uniform probability mass `M` in `[0, 1)` mixed into the normalised histogram:
    /// `q_i = (1 - M) c_i / sum_j c_j + M / K` over `K` bins. It raises a divergence by at most
    /// `-ln(1 - M)`.
    PseudoMass(f64),
    /// A smooth density estimate: Gaussian kernel smoothing of the counts over the grid
    /// ([`BinGrid::smooth`], periodic where the grid is) with `sigma_bins` bins, normalised, then
    /// mixed with a uniform floor of total probability `floor`:
    /// `q_i = (1 - floor) s_i / sum_j s_j + floor / K` over `K` bins. Since `q_i >= (1 - floor) s_i /
    /// sum s`, the floor raises a divergence by at most `-ln(1 - floor)`; it lowers the divergence
    /// where the smoothed histogram misses weight, and makes every divergence finite.
    Smooth {
        /// Kernel width in bins (finite, non-negative).
        sigma_bins: f64,
        /// Total probability of the uniform floor, in `[0, 1)`.
        floor: f64,
    },
}

impl EmptyBinRule {
    /// The rules the project's comparisons use: a pseudo-mass of 1e-4 and kernels of 1 and 2 bins
    /// (floor 1e-4). A headline speedup is the smallest over them.
    pub fn shipped() -> Vec<EmptyBinRule> {
        vec![EmptyBinRule::PseudoMass(1e-4), EmptyBinRule::smooth(1.0), EmptyBinRule::smooth(2.0)]
    }

    /// [`EmptyBinRule::Smooth`] with the [`DEFAULT_SMOOTHING_FLOOR`].
    pub fn smooth(sigma_bins: f64) -> EmptyBinRule {
        EmptyBinRule::Smooth { sigma_bins, floor: DEFAULT_SMOOTHING_FLOOR }
    }

    /// Checks the rule's parameters.
    fn validate(&self) -> Result<()> {
        match *self {
            EmptyBinRule::None => Ok(()),
            EmptyBinRule::PseudoMass(m) if (0.0..1.0).contains(&m) => Ok(()),
            EmptyBinRule::PseudoMass(m) => Err(Error::invalid(format!("pseudo-mass {m} must be in [0, 1)"))),
            EmptyBinRule::Smooth { sigma_bins, floor } => {
                if !(sigma_bins.is_finite() && sigma_bins >= 0.0) {
                    return Err(Error::invalid(format!(
                        "smoothing width {sigma_bins} bins must be finite and non-negative"
                    )));
                }
                if !(0.0..1.0).contains(&floor) {
                    return Err(Error::invalid(format!("smoothing floor {floor} must be in [0, 1)")));
                }
                Ok(())
            }
        }
    }

    /// The model distribution after applying the rule to raw `counts` on `grid` (unnormalised for
    /// `None`, probabilities for the others). Errors on a rule with bad parameters, negative or
    /// non-finite counts, counts that do not fill the grid, and (for `PseudoMass` and `Smooth`)
    /// counts that are all zero.
    ///
    /// ```
    /// use cgflow::metrics::{BinGrid, EmptyBinRule};
    /// let line = BinGrid::Line { bins: 2, periodic: false };
    /// // 0.8 * (0, 1) + 0.2 / 2, whatever the number of counts.
    /// assert_eq!(EmptyBinRule::PseudoMass(0.2).apply(&[0.0, 2.0], &line).unwrap(), vec![0.1, 0.9]);
    /// assert_eq!(EmptyBinRule::PseudoMass(0.2).apply(&[0.0, 20.0], &line).unwrap(), vec![0.1, 0.9]);
    /// assert_eq!(EmptyBinRule::None.apply(&[0.0, 2.0], &line).unwrap(), vec![0.0, 2.0]);
    /// // No smoothing, floor 0.1: 0.9 * (0, 1) + 0.1 / 2.
    /// let rule = EmptyBinRule::Smooth { sigma_bins: 0.0, floor: 0.1 };
    /// let q = rule.apply(&[0.0, 2.0], &line).unwrap();
    /// assert!((q[0] - 0.05).abs() < 1e-15 && (q[1] - 0.95).abs() < 1e-15);
    /// assert!(EmptyBinRule::PseudoMass(1.0).apply(&[1.0, 1.0], &line).is_err());
    /// assert!(EmptyBinRule::None.apply(&[1.0], &line).is_err());
    /// ```
    pub fn apply(&self, counts: &[f64], grid: &BinGrid) -> Result<Vec<f64>> {
        self.validate()?;
        if counts.len() != grid.size() {
            return Err(Error::invalid(format!(
                "model histogram: {} bins for a grid of {}",
                counts.len(),
                grid.size()
            )));
        }
        if let Some((i, c)) = counts.iter().enumerate().find(|(_, c)| !c.is_finite() || **c < 0.0) {
            return Err(Error::invalid(format!("model histogram: bin {i} has count {c}")));
        }
        match *self {
            EmptyBinRule::None => Ok(counts.to_vec()),
            EmptyBinRule::PseudoMass(mass) => EmptyBinRule::Smooth { sigma_bins: 0.0, floor: mass }.apply(counts, grid),
            EmptyBinRule::Smooth { sigma_bins, floor } => {
                let smoothed = if sigma_bins > 0.0 { grid.smooth(counts, sigma_bins)? } else { counts.to_vec() };
                let total: f64 = smoothed.iter().sum();
                if !(total.is_finite() && total > 0.0) {
                    return Err(Error::invalid("model histogram: no samples to smooth"));
                }
                let uniform = floor / counts.len() as f64;
                Ok(smoothed.iter().map(|s| (1.0 - floor) * s / total + uniform).collect())
            }
        }
    }
}

impl std::fmt::Display for EmptyBinRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EmptyBinRule::None => write!(f, "none"),
            EmptyBinRule::PseudoMass(m) => write!(f, "pseudo-mass:{m}"),
            EmptyBinRule::Smooth { sigma_bins, floor } => write!(f, "smooth:{sigma_bins}:{floor}"),
        }
    }
}

impl std::str::FromStr for EmptyBinRule {
    type Err = Error;

    fn from_str(text: &str) -> Result<EmptyBinRule> {
        let parts: Vec<&str> = text.trim().split(':').collect();
        let number = |s: &str| {
            s.trim()
                .parse::<f64>()
                .map_err(|_| Error::invalid(format!("empty-bin rule '{text}': '{s}' is not a number")))
        };
        let rule = match parts.as_slice() {
            ["none"] => EmptyBinRule::None,
            ["pseudo-mass", m] => EmptyBinRule::PseudoMass(number(m)?),
            ["pseudo-count", ..] => {
                return Err(Error::invalid(format!(
                    "empty-bin rule '{text}': a pseudo-count per bin weighs against the number of recorded frames, so \
                     its curves change with the MD record interval; use pseudo-mass:M (a probability mass M spread \
                     over the bins) or smooth:SIGMA[:FLOOR]"
                )))
            }
            ["smooth", sigma] => EmptyBinRule::smooth(number(sigma)?),
            ["smooth", sigma, floor] => EmptyBinRule::Smooth { sigma_bins: number(sigma)?, floor: number(floor)? },
            _ => {
                return Err(Error::invalid(format!(
                    "empty-bin rule '{text}': expected none, pseudo-mass:M, smooth:SIGMA or smooth:SIGMA:FLOOR"
                )))
            }
        };
        rule.validate()?;
        Ok(rule)
    }
}

/// KL divergence of a model histogram (raw counts on `grid`) from the reference, after applying
/// `rule` to the counts (e.g. a uniform probability mass mixed in). Errors as [`kl_divergence`] and
/// [`EmptyBinRule::apply`] do.
///
/// ```
/// use cgflow::metrics::{kl_to_histogram, BinGrid, EmptyBinRule};
/// let p = [0.5, 0.5];
/// let line = BinGrid::Line { bins: 2, periodic: false };
/// assert_eq!(kl_to_histogram(&p, &[2.0, 0.0], &line, EmptyBinRule::None).unwrap(), f64::INFINITY);
/// // Pseudo-mass 0.5: q = 0.5 (1, 0) + 0.25 = [3/4, 1/4], D = 0.5 ln(2/3) + 0.5 ln 2.
/// let d = kl_to_histogram(&p, &[2.0, 0.0], &line, EmptyBinRule::PseudoMass(0.5)).unwrap();
/// assert!((d - 0.5 * (4.0f64 / 3.0).ln()).abs() < 1e-15);
/// ```
pub fn kl_to_histogram(p_ref: &[f64], counts: &[f64], grid: &BinGrid, rule: EmptyBinRule) -> Result<f64> {
    let model = rule.apply(counts, grid)?;
    kl_divergence(p_ref, &model)
}

/// A reference distribution ready for comparisons at a chosen resolution.
///
/// With `kernel_bins = 0` the divergence is the plain one of the brief. With `kernel_bins > 0`
/// the reference is smoothed with a Gaussian kernel of that width over its grid (what its noise
/// floor is measured with, see [`halves_noise_floor`]), and so is every model distribution before
/// the divergence is taken, so that both sides are compared at the same resolution: smoothing one
/// side only biases the divergence by about `KL(p || S p)` (0.016 at 2 bins for the alanine
/// dipeptide reference, as large as the divergences being measured).
/// [`KlReference::smoothing_reference_only`] turns the model smoothing off.
#[derive(Debug, Clone, PartialEq)]
pub struct KlReference {
    grid: BinGrid,
    kernel_bins: f64,
    smooth_model: bool,
    raw: Vec<f64>,
    probabilities: Vec<f64>,
}

impl KlReference {
    /// The reference `p` (probabilities or counts on `grid`), smoothed with `kernel_bins` bins and
    /// normalised. Errors when `p` does not fill the grid, is not a distribution, or the width is
    /// negative or non-finite.
    ///
    /// ```
    /// use cgflow::metrics::{BinGrid, EmptyBinRule, KlReference};
    /// let line = BinGrid::Line { bins: 2, periodic: false };
    /// let r = KlReference::new(&[1.0, 3.0], line, 0.0).unwrap();
    /// assert_eq!(r.probabilities(), &[0.25, 0.75]);
    /// // Counts (0, 1), pseudo-mass 2/3 -> q = (1/3, 2/3): D = 0.25 ln(3/4) + 0.75 ln(9/8).
    /// let d = r.kl_to_counts(&[0.0, 1.0], EmptyBinRule::PseudoMass(2.0 / 3.0)).unwrap();
    /// assert!((d - (0.25 * 0.75f64.ln() + 0.75 * 1.125f64.ln())).abs() < 1e-15);
    /// ```
    pub fn new(p: &[f64], grid: BinGrid, kernel_bins: f64) -> Result<KlReference> {
        if p.len() != grid.size() {
            return Err(Error::invalid(format!("reference: {} bins for a grid of {}", p.len(), grid.size())));
        }
        let raw = normalised(p, "reference")?;
        let probabilities = normalised(&grid.smooth(&raw, kernel_bins)?, "smoothed reference")?;
        Ok(KlReference { grid, kernel_bins, smooth_model: kernel_bins > 0.0, raw, probabilities })
    }

    /// The same reference, but model distributions are no longer smoothed (only the reference is).
    pub fn smoothing_reference_only(self) -> KlReference {
        KlReference { smooth_model: false, ..self }
    }

    /// The (smoothed, normalised) reference probabilities.
    pub fn probabilities(&self) -> &[f64] {
        &self.probabilities
    }

    /// The grid.
    pub fn grid(&self) -> &BinGrid {
        &self.grid
    }

    /// The kernel width in bins (0: no smoothing).
    pub fn kernel_bins(&self) -> f64 {
        self.kernel_bins
    }

    /// Whether model distributions are smoothed with the reference's kernel.
    pub fn smooths_model(&self) -> bool {
        self.smooth_model && self.kernel_bins > 0.0
    }

    /// `D(reference || model)` for a model given as probabilities (or any non-negative weights) on
    /// the grid, smoothed first when [`KlReference::smooths_model`]. Errors as [`kl_divergence`].
    pub fn kl_to_probabilities(&self, q: &[f64]) -> Result<f64> {
        if self.smooths_model() {
            kl_divergence(&self.probabilities, &self.grid.smooth(q, self.kernel_bins)?)
        } else {
            kl_divergence(&self.probabilities, q)
        }
    }

    /// `D(reference || model)` for a model histogram of raw counts: `rule` first, then as
    /// [`KlReference::kl_to_probabilities`].
    pub fn kl_to_counts(&self, counts: &[f64], rule: EmptyBinRule) -> Result<f64> {
        self.kl_to_probabilities(&rule.apply(counts, &self.grid)?)
    }

    /// What `rule` alone costs at infinite sampling: `D(reference || model)` for a model histogram
    /// that is the (unsmoothed) reference itself: zero for `None`; for `PseudoMass` and `Smooth` the
    /// bias of the mass (at most `-ln(1 - M)`), the kernel and the floor, the level their curves
    /// cannot go below. Errors as [`EmptyBinRule::apply`].
    ///
    /// ```
    /// use cgflow::metrics::{BinGrid, EmptyBinRule, KlReference};
    /// let r = KlReference::new(&[0.5, 0.5], BinGrid::Line { bins: 2, periodic: false }, 0.0).unwrap();
    /// assert_eq!(r.rule_bias(EmptyBinRule::None).unwrap(), 0.0);
    /// assert!(r.rule_bias(EmptyBinRule::PseudoMass(0.1)).unwrap() < 1e-15); // uniform stays uniform
    /// assert!(r.rule_bias(EmptyBinRule::smooth(1.0)).unwrap() < 1e-15); // uniform stays uniform
    /// ```
    pub fn rule_bias(&self, rule: EmptyBinRule) -> Result<f64> {
        match rule {
            EmptyBinRule::None => Ok(0.0),
            EmptyBinRule::PseudoMass(_) | EmptyBinRule::Smooth { .. } => self.kl_to_counts(&self.raw, rule),
        }
    }

    /// `D(reference || model)` for a model given as free energies in kT at the bin centres
    /// (`+inf` allowed), as [`kl_to_free_energy`] but at this reference's resolution.
    pub fn kl_to_free_energy(&self, free_energy_kt: &[f64]) -> Result<f64> {
        self.kl_to_probabilities(&probabilities_from_free_energy(free_energy_kt)?)
    }
}

/// The noise of a reference measured by two independent halves of it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HalvesNoiseFloor {
    /// `KL(half 1 || half 2)`, both smoothed with the kernel (may be `+inf` without smoothing).
    pub kld_halves: f64,
    /// The noise floor of the whole reference: `kld_halves / 4`. Each half's noise adds about
    /// `(K - 1) / (2 N_half)` and two noisy halves give twice that (see the tests), so
    /// `kld_halves ≈ (K - 1) / N_half = 2 (K - 1) / N`, while the whole reference, with `N` samples,
    /// adds `(K - 1) / (2 N)`: a quarter of `kld_halves`.
    pub floor_whole: f64,
    /// The noise floor of one half, `kld_halves / 2` (the convention of the reference's README:
    /// "two halves measure about twice the noise floor of one").
    pub floor_half: f64,
    /// The kernel width in bins.
    pub kernel_bins: f64,
}

/// The noise floor of a reference from its two independent halves, compared at the resolution of
/// a Gaussian kernel of `kernel_bins` bins on `grid` (see [`HalvesNoiseFloor`]). Errors as
/// [`KlReference::new`] does for either half.
///
/// ```
/// use cgflow::metrics::{halves_noise_floor, BinGrid};
/// let line = BinGrid::Line { bins: 2, periodic: false };
/// let f = halves_noise_floor(&[0.5, 0.5], &[0.25, 0.75], &line, 0.0).unwrap();
/// assert!((f.kld_halves - 0.143841036225890).abs() < 1e-14);
/// assert_eq!(f.floor_half, f.kld_halves / 2.0);
/// assert_eq!(f.floor_whole, f.kld_halves / 4.0);
/// ```
pub fn halves_noise_floor(half1: &[f64], half2: &[f64], grid: &BinGrid, kernel_bins: f64) -> Result<HalvesNoiseFloor> {
    let a = KlReference::new(half1, *grid, kernel_bins)?;
    let b = KlReference::new(half2, *grid, kernel_bins)?;
    let kld_halves = kl_divergence(a.probabilities(), b.probabilities())?;
    Ok(HalvesNoiseFloor { kld_halves, floor_whole: kld_halves / 4.0, floor_half: kld_halves / 2.0, kernel_bins })
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
        assert!(kl_to_histogram(
            &[1.0],
            &[1.0],
            &BinGrid::Line { bins: 1, periodic: false },
            EmptyBinRule::PseudoMass(f64::NAN)
        )
        .is_err());
        assert!(kl_to_free_energy(&[1.0, 1.0], &[0.0, f64::NAN]).is_err());
    }

    #[test]
    fn model_as_histogram_and_as_free_energy() {
        let p = [0.25, 0.25, 0.5];
        let counts = [0.0, 3.0, 5.0];
        let line3 = BinGrid::Line { bins: 3, periodic: false };
        assert_eq!(kl_to_histogram(&p, &counts, &line3, EmptyBinRule::None).unwrap(), f64::INFINITY);
        assert_eq!(kl_to_histogram(&p, &counts, &line3, EmptyBinRule::PseudoMass(0.0)).unwrap(), f64::INFINITY);
        // Pseudo-mass 3/11 -> q = (8/11) (0, 3, 5) / 8 + 1/11 = [1, 4, 6] / 11.
        let d = kl_to_histogram(&p, &counts, &line3, EmptyBinRule::PseudoMass(3.0 / 11.0)).unwrap();
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
        let (mut two_sample, mut one_sample, mut whole_sample, mut halves_floor) = (0.0, 0.0, 0.0, 0.0);
        for seed in 0..seeds {
            let mut rng = ChaCha8Rng::seed_from_u64(1000 + seed);
            let a = sample_counts(&cdf, n, &mut rng);
            let b = sample_counts(&cdf, n, &mut rng);
            two_sample += kl_divergence(&a, &b).unwrap() / seeds as f64;
            one_sample += kl_divergence(&a, &p).unwrap() / seeds as f64;
            let whole: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
            whole_sample += kl_divergence(&whole, &p).unwrap() / seeds as f64;
            let grid = BinGrid::Periodic2d { nx: 20, ny: 20 };
            halves_floor += halves_noise_floor(&a, &b, &grid, 0.0).unwrap().floor_whole / seeds as f64;
        }
        // The whole (both halves, 2N samples) sits a quarter of the halves' divergence above the truth.
        assert!((whole_sample / halves_floor - 1.0).abs() < 0.10, "whole {whole_sample}, halves / 4 {halves_floor}");
        let floor = histogram_noise_floor(k - 1, n as f64); // (K - 1) / (2N) = 9.975e-4
        assert!((floor - 9.975e-4).abs() < 1e-15);
        assert!((one_sample / floor - 1.0).abs() < 0.10, "KL(hist || truth) = {one_sample}, floor {floor}");
        assert!((two_sample / (2.0 * floor) - 1.0).abs() < 0.10, "KL(hist || hist) = {two_sample}, 2 floor {floor}");
    }

    #[test]
    fn smoothing_rule_by_hand() {
        // 3 periodic bins, sigma 1: kernel over circular distances (0, 1, 1) = (1, g, g) / (1 + 2g).
        let g = (-0.5f64).exp();
        let grid = BinGrid::Line { bins: 3, periodic: true };
        let rule = EmptyBinRule::Smooth { sigma_bins: 1.0, floor: 0.03 };
        let q = rule.apply(&[4.0, 0.0, 0.0], &grid).unwrap();
        let z = 1.0 + 2.0 * g;
        assert!((q[0] - (0.97 / z + 0.01)).abs() < 1e-15);
        assert!((q[1] - (0.97 * g / z + 0.01)).abs() < 1e-15 && (q[1] - q[2]).abs() < 1e-15);
        assert!((q.iter().sum::<f64>() - 1.0).abs() < 1e-15);
        // The floor alone (no smoothing) makes an infinite divergence finite, and it raises one by
        // at most -ln(1 - floor) (here from 0: the histogram is exact).
        let line = BinGrid::Line { bins: 3, periodic: false };
        let counts = [5.0, 3.0, 0.0];
        let p = [0.5, 0.3, 0.2];
        assert_eq!(kl_to_histogram(&p, &counts, &line, EmptyBinRule::None).unwrap(), f64::INFINITY);
        let floored = EmptyBinRule::Smooth { sigma_bins: 0.0, floor: 0.01 };
        let d = kl_to_histogram(&p, &counts, &line, floored).unwrap();
        // q = 0.99 (5/8, 3/8, 0) + 0.01/3.
        let q = [0.99 * 0.625 + 0.01 / 3.0, 0.99 * 0.375 + 0.01 / 3.0, 0.01 / 3.0];
        let by_hand: f64 = p.iter().zip(&q).map(|(a, b)| a * (a / b).ln()).sum();
        assert!((d - by_hand).abs() < 1e-14);
        let full = [5.0, 3.0, 2.0];
        let d0 = kl_to_histogram(&p, &full, &line, EmptyBinRule::None).unwrap();
        let d1 = kl_to_histogram(&p, &full, &line, EmptyBinRule::Smooth { sigma_bins: 0.0, floor: 0.01 }).unwrap();
        assert!(d0 == 0.0 && d1 > 0.0 && d1 <= -(0.99f64).ln(), "{d0} -> {d1}");
        assert!(EmptyBinRule::smooth(1.0).apply(&[0.0; 3], &line).is_err());
        assert!(EmptyBinRule::Smooth { sigma_bins: 1.0, floor: 1.0 }.apply(&[1.0; 3], &line).is_err());
        assert!(EmptyBinRule::Smooth { sigma_bins: f64::NAN, floor: 0.0 }.apply(&[1.0; 3], &line).is_err());
    }

    #[test]
    fn rules_parse_and_print() {
        for (text, rule) in [
            ("none", EmptyBinRule::None),
            ("pseudo-mass:0.001", EmptyBinRule::PseudoMass(0.001)),
            (" pseudo-mass:0.25 ", EmptyBinRule::PseudoMass(0.25)),
            ("smooth:1.5", EmptyBinRule::Smooth { sigma_bins: 1.5, floor: DEFAULT_SMOOTHING_FLOOR }),
            ("smooth:2:1e-6", EmptyBinRule::Smooth { sigma_bins: 2.0, floor: 1e-6 }),
        ] {
            let parsed: EmptyBinRule = text.parse().unwrap();
            assert_eq!(parsed, rule, "{text}");
            assert_eq!(parsed.to_string().parse::<EmptyBinRule>().unwrap(), rule);
        }
        for bad in [
            "",
            "pseudo-mass",
            "pseudo-mass:x",
            "pseudo-mass:1",
            "pseudo-count:1",
            "smooth:1:2",
            "smooth:1:0.1:3",
            "gauss:2",
        ] {
            let err = bad.parse::<EmptyBinRule>().unwrap_err().to_string();
            assert!(!err.is_empty(), "{bad}");
        }
    }

    #[test]
    fn reference_at_a_kernel_scale() {
        // 4 periodic bins, sigma 1: kernel over distances (0, 1, 2, 1) = (1, g, g^2 ... ) / Z.
        let g = |d: f64| (-0.5 * d * d).exp();
        let z = 1.0 + 2.0 * g(1.0) + g(2.0);
        let grid = BinGrid::Line { bins: 4, periodic: true };
        let r = KlReference::new(&[2.0, 0.0, 0.0, 0.0], grid, 1.0).unwrap();
        let expected = [1.0 / z, g(1.0) / z, g(2.0) / z, g(1.0) / z];
        for (a, b) in r.probabilities().iter().zip(expected) {
            assert!((a - b).abs() < 1e-15);
        }
        // The same distribution as the model, smoothed the same way: zero divergence.
        assert!(r.kl_to_probabilities(&[1.0, 0.0, 0.0, 0.0]).unwrap() < 1e-15);
        assert!(r.smooths_model() && r.kernel_bins() == 1.0);
        // Smoothing the reference only: the divergence to the raw spike is infinite.
        let one_sided = r.clone().smoothing_reference_only();
        assert_eq!(one_sided.kl_to_probabilities(&[1.0, 0.0, 0.0, 0.0]).unwrap(), f64::INFINITY);
        // Free energies: F = (0, ln 2, inf, ln 2) -> q = (1/2, 1/4, 0, 1/4).
        let f = [0.0, 2f64.ln(), f64::INFINITY, 2f64.ln()];
        let direct = r.kl_to_probabilities(&[0.5, 0.25, 0.0, 0.25]).unwrap();
        assert!((r.kl_to_free_energy(&f).unwrap() - direct).abs() < 1e-15);
        // The rule's own bias acts on the raw reference, then the model is smoothed: smoothing is
        // linear and keeps a uniform field, so q = S(0.9 delta + 0.025) = 0.9 r + 0.025.
        let rule = EmptyBinRule::Smooth { sigma_bins: 0.0, floor: 0.1 };
        let bias: f64 = expected.iter().map(|r| r * (r / (0.9 * r + 0.025)).ln()).sum();
        assert!((r.rule_bias(rule).unwrap() - bias).abs() < 1e-15);
        assert_eq!(r.rule_bias(EmptyBinRule::None).unwrap(), 0.0);
        // Counts through a rule.
        let plain = KlReference::new(&[1.0, 1.0, 1.0, 1.0], grid, 0.0).unwrap();
        assert!(!plain.smooths_model());
        let d = plain.kl_to_counts(&[3.0, 1.0, 0.0, 0.0], EmptyBinRule::PseudoMass(0.5)).unwrap();
        // q = 0.5 (3, 1, 0, 0) / 4 + 0.125 = (4, 2, 1, 1) / 8: D = 0.25 (ln(2/4) + ln(2/2) + 2 ln(2/1)).
        assert!((d - 0.25 * (0.5f64.ln() + 2.0 * 2f64.ln())).abs() < 1e-15);
        assert!(KlReference::new(&[1.0; 3], grid, 0.0).is_err());
        assert!(KlReference::new(&[0.0; 4], grid, 0.0).is_err());
        assert!(KlReference::new(&[1.0; 4], grid, -1.0).is_err());
        assert!(plain.kl_to_counts(&[1.0; 3], EmptyBinRule::None).is_err());
    }
}
