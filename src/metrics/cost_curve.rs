//! Cost curves: KL divergence to a reference distribution as a function of the number of energy
//! evaluations, and the speedup of one method over another at equal divergence.
//!
//! For MD the curve comes from a growing histogram of the recorded CV samples of all walkers of a
//! run: after frame f (1-based) a run of W walkers has made f * steps_per_frame * W evaluations.
//! Empty histogram bins are handled by one [`EmptyBinRule`], applied the same way to every method.

use super::divergence::{kl_to_histogram, EmptyBinRule};
use super::histogram::Axis;
use crate::error::{Error, Result};

/// One point of a cost curve.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CostPoint {
    /// Energy evaluations spent.
    pub evaluations: f64,
    /// KL divergence D(reference || estimate).
    pub kld: f64,
}

/// Samples of a multi-walker run: `values[frame][walker][cv]` for two periodic CVs.
#[derive(Debug, Clone, Copy)]
pub struct WalkerSamples<'a> {
    /// Flat float32 values in radians.
    pub values: &'a [f32],
    /// Walkers per frame.
    pub walkers: usize,
    /// MD steps between frames.
    pub steps_per_frame: u64,
}

impl WalkerSamples<'_> {
    /// Number of complete frames.
    pub fn frames(&self) -> usize {
        self.values.len() / (2 * self.walkers.max(1))
    }
}

/// KL divergence of the growing 2D histogram of `walkers` (a subset, as a range) against
/// `reference` (bins x bins probabilities over [-pi, pi)^2, row-major phi-major), evaluated after
/// each frame in `at_frames` (ascending, 1-based).
pub fn md_cost_curve(
    reference: &[f64],
    bins: usize,
    samples: &WalkerSamples,
    walkers: std::ops::Range<usize>,
    at_frames: &[usize],
    rule: EmptyBinRule,
) -> Result<Vec<CostPoint>> {
    if reference.len() != bins * bins {
        return Err(Error::invalid(format!("reference has {} values, expected {bins} x {bins}", reference.len())));
    }
    if walkers.end > samples.walkers || walkers.is_empty() {
        return Err(Error::invalid(format!("walker range {walkers:?} is not within 0..{}", samples.walkers)));
    }
    if at_frames.windows(2).any(|w| w[0] >= w[1]) || at_frames.first() == Some(&0) {
        return Err(Error::invalid("frames must be ascending and start at 1 or later"));
    }
    if let Some(&last) = at_frames.last() {
        if last > samples.frames() {
            return Err(Error::invalid(format!("frame {last} requested but the run has {}", samples.frames())));
        }
    }
    let axis = Axis::dihedral(bins)?;
    let mut counts = vec![0.0; bins * bins];
    let mut points = Vec::with_capacity(at_frames.len());
    let mut frame = 0;
    let stride = 2 * samples.walkers;
    for &target in at_frames {
        while frame < target {
            for w in walkers.clone() {
                let phi = samples.values[frame * stride + 2 * w] as f64;
                let psi = samples.values[frame * stride + 2 * w + 1] as f64;
                match (axis.bin_of(phi), axis.bin_of(psi)) {
                    (Some(i), Some(j)) => counts[i * bins + j] += 1.0,
                    _ => return Err(Error::invalid(format!("frame {frame}, walker {w}: non-finite CV"))),
                }
            }
            frame += 1;
        }
        let evaluations = (target as u64 * samples.steps_per_frame * walkers.len() as u64) as f64;
        points.push(CostPoint { evaluations, kld: kl_to_histogram(reference, &counts, rule)? });
    }
    Ok(points)
}

/// Frames spaced evenly in log scale from `first` to `last`, about `per_decade` per decade,
/// ascending and unique.
///
/// ```
/// let f = cgflow::metrics::cost_curve::log_spaced_frames(1, 1000, 3);
/// assert_eq!(f, vec![1, 2, 5, 10, 22, 46, 100, 215, 464, 1000]);
/// ```
pub fn log_spaced_frames(first: usize, last: usize, per_decade: usize) -> Vec<usize> {
    if first == 0 || last < first || per_decade == 0 {
        return Vec::new();
    }
    let decades = (last as f64 / first as f64).log10();
    let count = (decades * per_decade as f64).ceil() as usize;
    let mut frames: Vec<usize> = (0..=count)
        .map(|i| (first as f64 * 10f64.powf(decades * i as f64 / count.max(1) as f64)).round() as usize)
        .map(|f| f.clamp(first, last))
        .collect();
    frames.dedup();
    frames
}

/// Evaluations needed to reach `kld` on a curve, by log-log interpolation between the first
/// pair of points that brackets it; `None` if the curve never gets that low.
pub fn evaluations_to_reach(curve: &[CostPoint], kld: f64) -> Option<f64> {
    if let Some(first) = curve.first() {
        if first.kld <= kld {
            return Some(first.evaluations);
        }
    }
    curve.windows(2).find(|w| w[0].kld > kld && w[1].kld <= kld).map(|w| {
        let (a, b) = (w[0], w[1]);
        if !(a.kld.is_finite() && a.kld > 0.0 && b.kld > 0.0) {
            return b.evaluations;
        }
        let t = (kld.ln() - a.kld.ln()) / (b.kld.ln() - a.kld.ln());
        (a.evaluations.ln() + t * (b.evaluations.ln() - a.evaluations.ln())).exp()
    })
}

/// The speedup of `method` over `baseline` at equal divergence `kld`: evaluations the baseline
/// needs divided by those the method needs. `None` when either curve does not reach `kld`.
///
/// ```
/// use cgflow::metrics::cost_curve::{speedup_at, CostPoint};
/// let md = [CostPoint { evaluations: 1e6, kld: 1.0 }, CostPoint { evaluations: 1e8, kld: 0.01 }];
/// let flow = [CostPoint { evaluations: 1e5, kld: 0.5 }, CostPoint { evaluations: 1e6, kld: 0.01 }];
/// assert!((speedup_at(&md, &flow, 0.01).unwrap() - 100.0).abs() < 1e-9);
/// ```
pub fn speedup_at(baseline: &[CostPoint], method: &[CostPoint], kld: f64) -> Option<f64> {
    Some(evaluations_to_reach(baseline, kld)? / evaluations_to_reach(method, kld)?)
}

/// Pointwise mean of several curves sampled at the same evaluation counts (KLD averaged
/// arithmetically; +inf stays +inf).
pub fn mean_curve(curves: &[Vec<CostPoint>]) -> Result<Vec<CostPoint>> {
    let first = curves.first().ok_or_else(|| Error::invalid("no curves to average"))?;
    if curves.iter().any(|c| c.len() != first.len() || c.iter().zip(first).any(|(a, b)| a.evaluations != b.evaluations))
    {
        return Err(Error::invalid("curves to average must share their evaluation counts"));
    }
    Ok((0..first.len())
        .map(|i| CostPoint {
            evaluations: first[i].evaluations,
            kld: curves.iter().map(|c| c[i].kld).sum::<f64>() / curves.len() as f64,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curve_on_a_tiny_hand_computed_run() {
        // 2 x 2 bins; reference uniform. Two walkers, two frames, 10 steps per frame.
        let pi = std::f32::consts::PI;
        let values = [-pi / 2.0, -pi / 2.0, pi / 2.0, pi / 2.0, -pi / 2.0, pi / 2.0, pi / 2.0, -pi / 2.0];
        let samples = WalkerSamples { values: &values, walkers: 2, steps_per_frame: 10 };
        let reference = [0.25; 4];
        let curve =
            md_cost_curve(&reference, 2, &samples, 0..2, &[1, 2], EmptyBinRule::PseudoCount(1.0)).expect("curve");
        // Frame 1: counts (1, 0, 0, 1) + 1 = (2, 1, 1, 2)/6: D = 0.25 ln(0.25/(1/3)) * 2 + 0.25 ln(0.25/(1/6)) * 2.
        let d1 = 0.5 * (0.75f64).ln() + 0.5 * (1.5f64).ln();
        assert!((curve[0].kld - d1).abs() < 1e-12 && curve[0].evaluations == 20.0);
        // Frame 2: every bin once: uniform, D = 0.
        assert!(curve[1].kld.abs() < 1e-12 && curve[1].evaluations == 40.0);
        let single =
            md_cost_curve(&reference, 2, &samples, 1..2, &[2], EmptyBinRule::PseudoCount(1.0)).expect("one walker");
        assert_eq!(single[0].evaluations, 20.0);
        assert!(md_cost_curve(&reference, 2, &samples, 0..3, &[1], EmptyBinRule::None).is_err());
        assert!(md_cost_curve(&reference, 2, &samples, 0..2, &[3], EmptyBinRule::None).is_err());
    }

    #[test]
    fn interpolation_and_means() {
        let curve = [
            CostPoint { evaluations: 1e3, kld: 1.0 },
            CostPoint { evaluations: 1e5, kld: 0.01 },
            CostPoint { evaluations: 1e6, kld: 0.005 },
        ];
        assert!((evaluations_to_reach(&curve, 0.1).expect("reached") - 1e4).abs() < 1e-6);
        assert_eq!(evaluations_to_reach(&curve, 0.001), None);
        assert_eq!(evaluations_to_reach(&curve, 2.0), Some(1e3));
        let mean = mean_curve(&[curve.to_vec(), curve.iter().map(|p| CostPoint { kld: 3.0 * p.kld, ..*p }).collect()])
            .expect("mean");
        assert!((mean[1].kld - 0.02).abs() < 1e-15);
        assert!(mean_curve(&[]).is_err());
    }
}
