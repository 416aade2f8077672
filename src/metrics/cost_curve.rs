//! Cost curves: KL divergence to a reference distribution as a function of the number of energy
//! evaluations, and the speedup of one method over another at equal divergence.
//!
//! For MD the curve comes from a growing histogram of the recorded CV samples of all walkers of a
//! run: after frame f (1-based) a run of W walkers has made f * steps_per_frame * W evaluations.
//! Empty histogram bins are handled by one [`EmptyBinRule`], applied the same way to every method.

use super::divergence::{EmptyBinRule, KlReference};
use super::histogram::{Axis, BinGrid};
use crate::error::{Error, Result};

/// A KLD must be this many times the ruler's floor for a speedup to be read at it: below that, the
/// ruler's own error is a third or more of what it measures.
pub const RESOLUTION_FACTOR: f64 = 3.0;

/// The floor of the ruler under one empty-bin rule: the reference's noise floor at the comparison's
/// resolution (0 when unknown) plus the rule's own bias (see `KlReference::rule_bias`).
pub fn ruler_floor(reference_noise_floor: Option<f64>, rule_bias: f64) -> f64 {
    reference_noise_floor.filter(|f| f.is_finite()).unwrap_or(0.0) + rule_bias.max(0.0)
}

/// Whether a KLD is far enough above the ruler's floor ([`RESOLUTION_FACTOR`] times) to be read.
///
/// ```
/// use cgflow::metrics::cost_curve::{resolves, ruler_floor};
/// let floor = ruler_floor(Some(2e-4), 1e-4);
/// assert!(resolves(1e-3, floor) && !resolves(8e-4, floor));
/// ```
pub fn resolves(kld: f64, floor: f64) -> bool {
    kld >= RESOLUTION_FACTOR * floor
}

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
/// `reference` (on a `bins` x `bins` periodic grid over [-pi, pi)^2, row-major phi-major, see
/// [`BinGrid::dihedral`]), with empty bins handled by `rule`, evaluated after each frame in
/// `at_frames` (ascending, 1-based).
pub fn md_cost_curve(
    reference: &KlReference,
    samples: &WalkerSamples,
    walkers: std::ops::Range<usize>,
    at_frames: &[usize],
    rule: EmptyBinRule,
) -> Result<Vec<CostPoint>> {
    let bins = match *reference.grid() {
        BinGrid::Periodic2d { nx, ny } if nx == ny => nx,
        other => return Err(Error::invalid(format!("the MD cost curve needs a square periodic grid, not {other:?}"))),
    };
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
        points.push(CostPoint { evaluations, kld: reference.kl_to_counts(&counts, rule)? });
    }
    Ok(points)
}

/// Cumulative histograms of one MD run at some of its frame counts (a run that kept histograms,
/// not CV values).
#[derive(Debug, Clone, Copy)]
pub struct HistogramMarks<'a> {
    /// (frames, counts), ascending in frames; the counts begin with the (phi, psi) histogram on
    /// the reference's grid (row-major, phi-major), any further pairs after it.
    pub marks: &'a [(u64, Vec<f64>)],
    /// Walkers of the run.
    pub walkers: usize,
    /// MD steps between frames.
    pub steps_per_frame: u64,
}

/// KL divergence of the pooled histogram of independent `runs` (their counts summed) against
/// `reference`, with empty bins handled by `rule`, after each frame count in `at_frames`
/// (ascending; every run must hold a histogram there). All runs must share walkers and steps per
/// frame: the pooled run made frames x steps_per_frame x walkers x runs evaluations.
pub fn pooled_histogram_cost_curve(
    reference: &KlReference,
    runs: &[HistogramMarks],
    at_frames: &[u64],
    rule: EmptyBinRule,
) -> Result<Vec<CostPoint>> {
    let first = runs.first().ok_or_else(|| Error::invalid("no histogram runs to pool"))?;
    if runs.iter().any(|r| r.walkers != first.walkers || r.steps_per_frame != first.steps_per_frame) {
        return Err(Error::invalid("pooled histogram runs must share their walkers and steps per frame"));
    }
    if at_frames.windows(2).any(|w| w[0] >= w[1]) || at_frames.first() == Some(&0) {
        return Err(Error::invalid("frames must be ascending and start at 1 or later"));
    }
    let cells = reference.grid().size();
    let mut points = Vec::with_capacity(at_frames.len());
    let mut pooled = vec![0.0; cells];
    for &frames in at_frames {
        pooled.iter_mut().for_each(|c| *c = 0.0);
        for (r, run) in runs.iter().enumerate() {
            let counts = run
                .marks
                .binary_search_by_key(&frames, |m| m.0)
                .map(|i| &run.marks[i].1)
                .map_err(|_| Error::invalid(format!("run {r} has no histogram after {frames} frames")))?;
            if counts.len() < cells {
                return Err(Error::invalid(format!(
                    "run {r}: a histogram of {} bins for a reference of {cells}",
                    counts.len()
                )));
            }
            pooled.iter_mut().zip(counts).for_each(|(p, c)| *p += c);
        }
        let evaluations = (frames * first.steps_per_frame * (first.walkers * runs.len()) as u64) as f64;
        points.push(CostPoint { evaluations, kld: reference.kl_to_counts(&pooled, rule)? });
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
        if b.kld == kld || !(a.kld.is_finite() && a.kld > 0.0 && b.kld > 0.0) {
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

/// Checks that a curve is usable for interpolation: evaluations finite, positive and strictly
/// increasing; divergences not NaN and not negative (`+inf` allowed).
fn check_curve(curve: &[CostPoint], what: &str) -> Result<()> {
    if curve.is_empty() {
        return Err(Error::invalid(format!("{what}: no points")));
    }
    for (i, p) in curve.iter().enumerate() {
        if !(p.evaluations.is_finite() && p.evaluations > 0.0) {
            return Err(Error::invalid(format!("{what}: point {i} has {} evaluations", p.evaluations)));
        }
        if p.kld.is_nan() || p.kld < 0.0 {
            return Err(Error::invalid(format!("{what}: point {i} has KLD {}", p.kld)));
        }
    }
    if let Some(i) = curve.windows(2).position(|w| w[1].evaluations <= w[0].evaluations) {
        return Err(Error::invalid(format!("{what}: evaluations must increase (points {i} and {})", i + 1)));
    }
    Ok(())
}

/// The divergence of a curve at `evaluations`, interpolated linearly in (ln evaluations,
/// ln KLD) between the two points around it (linearly in KLD where one of them is 0 or `+inf`).
/// `None` outside the curve's range: no extrapolation. Errors on a curve that is not usable
/// (non-positive or non-increasing evaluations, NaN or negative KLD).
///
/// ```
/// use cgflow::metrics::cost_curve::{kld_at, CostPoint};
/// let curve = [CostPoint { evaluations: 1e3, kld: 1.0 }, CostPoint { evaluations: 1e5, kld: 0.01 }];
/// assert!((kld_at(&curve, 1e4).unwrap().unwrap() - 0.1).abs() < 1e-12);
/// assert_eq!(kld_at(&curve, 1e5).unwrap(), Some(0.01));
/// assert_eq!(kld_at(&curve, 2e5).unwrap(), None);
/// ```
pub fn kld_at(curve: &[CostPoint], evaluations: f64) -> Result<Option<f64>> {
    check_curve(curve, "curve")?;
    if evaluations.is_nan() {
        return Err(Error::invalid("kld_at: evaluations is NaN"));
    }
    if let Some(p) = curve.iter().find(|p| p.evaluations == evaluations) {
        return Ok(Some(p.kld));
    }
    Ok(curve.windows(2).find(|w| w[0].evaluations < evaluations && evaluations < w[1].evaluations).map(|w| {
        let (a, b) = (w[0], w[1]);
        let t = (evaluations.ln() - a.evaluations.ln()) / (b.evaluations.ln() - a.evaluations.ln());
        let logs = a.kld > 0.0 && b.kld > 0.0 && a.kld.is_finite() && b.kld.is_finite();
        if logs {
            (a.kld.ln() + t * (b.kld.ln() - a.kld.ln())).exp()
        } else if a.kld.is_infinite() || b.kld.is_infinite() {
            f64::INFINITY
        } else {
            a.kld + t * (b.kld - a.kld)
        }
    }))
}

/// The speedup of a method over a baseline (MD) at equal divergence, from one point of the
/// method's curve; see [`speedup_at_equal_kld`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SpeedupEstimate {
    /// The baseline's curve reaches the method's KLD within its range: `baseline_evaluations` is
    /// where it first does (log-log interpolation) and `speedup = baseline_evaluations /
    /// method evaluations`.
    Interpolated {
        /// Baseline evaluations needed for the method's KLD.
        baseline_evaluations: f64,
        /// Baseline evaluations divided by the method's.
        speedup: f64,
    },
    /// The baseline never gets as low as the method's KLD within its range: it needs more than
    /// `baseline_last_evaluations`, so the speedup is larger than `speedup_at_least` (not
    /// extrapolated).
    BeyondBaseline {
        /// The baseline's last evaluation count.
        baseline_last_evaluations: f64,
        /// The lowest KLD on the baseline's curve.
        baseline_lowest_kld: f64,
        /// `baseline_last_evaluations / method evaluations`: a lower bound of the speedup.
        speedup_at_least: f64,
    },
    /// The baseline's first point is already as low as the method's KLD: it needs at most
    /// `baseline_first_evaluations`, so the speedup is at most `speedup_at_most`.
    BeforeBaseline {
        /// The baseline's first evaluation count.
        baseline_first_evaluations: f64,
        /// `baseline_first_evaluations / method evaluations`: an upper bound of the speedup.
        speedup_at_most: f64,
    },
}

impl SpeedupEstimate {
    /// The speedup when it was interpolated, `None` when only a bound is known.
    pub fn value(&self) -> Option<f64> {
        match *self {
            SpeedupEstimate::Interpolated { speedup, .. } => Some(speedup),
            _ => None,
        }
    }
}

impl std::fmt::Display for SpeedupEstimate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            SpeedupEstimate::Interpolated { baseline_evaluations, speedup } => {
                write!(f, "{speedup:.3} (the baseline needs {baseline_evaluations:.3e} evaluations)")
            }
            SpeedupEstimate::BeyondBaseline { baseline_last_evaluations, baseline_lowest_kld, speedup_at_least } => {
                write!(
                    f,
                    "> {speedup_at_least:.3} (the baseline never reaches this KLD: lowest {baseline_lowest_kld:.4} \
                     within {baseline_last_evaluations:.3e} evaluations; not extrapolated)"
                )
            }
            SpeedupEstimate::BeforeBaseline { baseline_first_evaluations, speedup_at_most } => {
                write!(
                    f,
                    "< {speedup_at_most:.3} (the baseline is already there at its first point, \
                     {baseline_first_evaluations:.3e} evaluations)"
                )
            }
        }
    }
}

/// Speedup at equal KLD: the baseline (MD) evaluations needed to reach the method's KLD, found by
/// log-log interpolation of the baseline's curve at its first crossing of that KLD
/// ([`evaluations_to_reach`]), divided by the method's evaluations. When the baseline never
/// reaches that KLD within its range, or is already below it at its first point, the result says
/// so and gives a bound instead of extrapolating. Errors on an unusable curve (see [`kld_at`]) or
/// a method point with non-positive evaluations or a NaN, negative or infinite KLD.
///
/// ```
/// use cgflow::metrics::cost_curve::{speedup_at_equal_kld, CostPoint, SpeedupEstimate};
/// let md = [CostPoint { evaluations: 1e6, kld: 1.0 }, CostPoint { evaluations: 1e8, kld: 0.01 }];
/// // MD reaches 0.1 at 1e7 evaluations; the method needed 1e5: 100x.
/// let s = speedup_at_equal_kld(&md, CostPoint { evaluations: 1e5, kld: 0.1 }).unwrap();
/// assert!((s.value().unwrap() - 100.0).abs() < 1e-9);
/// let beyond = speedup_at_equal_kld(&md, CostPoint { evaluations: 1e6, kld: 0.001 }).unwrap();
/// assert_eq!(beyond.value(), None);
/// assert!(matches!(beyond, SpeedupEstimate::BeyondBaseline { speedup_at_least, .. } if speedup_at_least == 100.0));
/// ```
pub fn speedup_at_equal_kld(baseline: &[CostPoint], method: CostPoint) -> Result<SpeedupEstimate> {
    check_curve(baseline, "baseline curve")?;
    if !(method.evaluations.is_finite() && method.evaluations > 0.0) {
        return Err(Error::invalid(format!("method point: {} evaluations must be positive", method.evaluations)));
    }
    if !(method.kld.is_finite() && method.kld >= 0.0) {
        return Err(Error::invalid(format!("method point: KLD {} must be finite and non-negative", method.kld)));
    }
    let first = baseline[0];
    if first.kld <= method.kld {
        return Ok(SpeedupEstimate::BeforeBaseline {
            baseline_first_evaluations: first.evaluations,
            speedup_at_most: first.evaluations / method.evaluations,
        });
    }
    match evaluations_to_reach(baseline, method.kld) {
        Some(e) => Ok(SpeedupEstimate::Interpolated { baseline_evaluations: e, speedup: e / method.evaluations }),
        None => {
            let last = baseline[baseline.len() - 1];
            Ok(SpeedupEstimate::BeyondBaseline {
                baseline_last_evaluations: last.evaluations,
                baseline_lowest_kld: baseline.iter().map(|p| p.kld).fold(f64::INFINITY, f64::min),
                speedup_at_least: last.evaluations / method.evaluations,
            })
        }
    }
}

/// One curve from several that cover different ranges of evaluations, in order of preference
/// (e.g. the mean over 8 independent groups of walkers first, then the whole run as one group,
/// which reaches 8 times further): all points of the first curve, then the points of each next
/// curve beyond the last evaluation count taken so far. Errors on no curves or an unusable one
/// (see [`kld_at`]).
///
/// ```
/// use cgflow::metrics::cost_curve::{stitch_curves, CostPoint};
/// let p = |evaluations: f64, kld: f64| CostPoint { evaluations, kld };
/// let groups = [p(1e3, 1.0), p(1e4, 0.5)];
/// let whole = [p(8e3, 0.6), p(8e4, 0.2)];
/// assert_eq!(stitch_curves(&[&groups, &whole]).unwrap(), vec![p(1e3, 1.0), p(1e4, 0.5), p(8e4, 0.2)]);
/// ```
pub fn stitch_curves(curves: &[&[CostPoint]]) -> Result<Vec<CostPoint>> {
    if curves.is_empty() {
        return Err(Error::invalid("no curves to stitch"));
    }
    let mut out: Vec<CostPoint> = Vec::new();
    for curve in curves {
        check_curve(curve, "curve to stitch")?;
        let last = out.last().map_or(0.0, |p| p.evaluations);
        out.extend(curve.iter().filter(|p| p.evaluations > last));
    }
    Ok(out)
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

/// Pointwise standard error of the mean of several independent curves sampled at the same
/// evaluation counts: `sqrt(sum (k - mean)^2 / (n (n - 1)))` in the `kld` field (`+inf` where a
/// curve is infinite). Errors on fewer than two curves or curves that do not share their
/// evaluation counts.
///
/// ```
/// use cgflow::metrics::cost_curve::{standard_error_curve, CostPoint};
/// let a = vec![CostPoint { evaluations: 10.0, kld: 1.0 }];
/// let b = vec![CostPoint { evaluations: 10.0, kld: 3.0 }];
/// // Sample std sqrt(2), over sqrt(2) curves: 1.
/// assert!((standard_error_curve(&[a, b]).unwrap()[0].kld - 1.0).abs() < 1e-15);
/// ```
pub fn standard_error_curve(curves: &[Vec<CostPoint>]) -> Result<Vec<CostPoint>> {
    if curves.len() < 2 {
        return Err(Error::invalid("a standard error needs at least two curves"));
    }
    let mean = mean_curve(curves)?;
    let n = curves.len() as f64;
    Ok(mean
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let kld = if m.kld.is_finite() {
                (curves.iter().map(|c| (c[i].kld - m.kld).powi(2)).sum::<f64>() / (n * (n - 1.0))).sqrt()
            } else {
                f64::INFINITY
            };
            CostPoint { evaluations: m.evaluations, kld }
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
        let reference = KlReference::new(&[0.25; 4], BinGrid::dihedral(2), 0.0).expect("reference");
        let curve =
            md_cost_curve(&reference, &samples, 0..2, &[1, 2], EmptyBinRule::PseudoMass(2.0 / 3.0)).expect("curve");
        // Frame 1: counts (1, 0, 0, 1), pseudo-mass 2/3: q = (1/3) (1/2, 0, 0, 1/2) + 1/6 = (2, 1, 1, 2)/6:
        // D = 0.25 ln(0.25/(1/3)) * 2 + 0.25 ln(0.25/(1/6)) * 2.
        let d1 = 0.5 * (0.75f64).ln() + 0.5 * (1.5f64).ln();
        assert!((curve[0].kld - d1).abs() < 1e-12 && curve[0].evaluations == 20.0);
        // Frame 2: every bin once: uniform, D = 0.
        assert!(curve[1].kld.abs() < 1e-12 && curve[1].evaluations == 40.0);
        let single =
            md_cost_curve(&reference, &samples, 1..2, &[2], EmptyBinRule::PseudoMass(0.1)).expect("one walker");
        assert_eq!(single[0].evaluations, 20.0);
        assert!(md_cost_curve(&reference, &samples, 0..3, &[1], EmptyBinRule::None).is_err());
        assert!(md_cost_curve(&reference, &samples, 0..2, &[3], EmptyBinRule::None).is_err());
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
        // Three curves 1, 2, 6 (x the first curve): mean 3, deviations -2, -1, 3: sum of squares 14,
        // standard error sqrt(14 / 6).
        let scaled = |f: f64| curve.iter().map(|p| CostPoint { kld: f * p.kld, ..*p }).collect::<Vec<_>>();
        let sem = standard_error_curve(&[scaled(1.0), scaled(2.0), scaled(6.0)]).expect("sem");
        assert!((sem[0].kld - (14.0f64 / 6.0).sqrt()).abs() < 1e-14);
        assert!((sem[1].kld - 0.01 * (14.0f64 / 6.0).sqrt()).abs() < 1e-15);
        assert!(standard_error_curve(&[curve.to_vec()]).is_err());
    }

    #[test]
    fn interpolation_at_evaluations() {
        let curve = [
            CostPoint { evaluations: 1e2, kld: f64::INFINITY },
            CostPoint { evaluations: 1e3, kld: 0.8 },
            CostPoint { evaluations: 1e5, kld: 0.008 },
            CostPoint { evaluations: 1e6, kld: 0.0 },
        ];
        // Log-log between (1e3, 0.8) and (1e5, 0.008): a power law of slope -1, so 1e4 -> 0.08 and
        // 10^3.5 -> 0.8 / 10^0.5.
        assert!((kld_at(&curve, 1e4).unwrap().unwrap() - 0.08).abs() < 1e-14);
        assert!((kld_at(&curve, 10f64.powf(3.5)).unwrap().unwrap() - 0.8 / 10f64.sqrt()).abs() < 1e-14);
        // Next to +inf the value is +inf; next to 0 the interpolation is linear in KLD:
        // t = (ln 3e5 - ln 1e5) / ln 10 = log10(3), KLD = 0.008 (1 - t).
        assert_eq!(kld_at(&curve, 5e2).unwrap(), Some(f64::INFINITY));
        let t = 3f64.log10();
        assert!((kld_at(&curve, 3e5).unwrap().unwrap() - 0.008 * (1.0 - t)).abs() < 1e-15);
        assert_eq!(kld_at(&curve, 1e2).unwrap(), Some(f64::INFINITY));
        assert_eq!(kld_at(&curve, 50.0).unwrap(), None);
        assert_eq!(kld_at(&curve, 2e6).unwrap(), None);
        assert!(kld_at(&curve, f64::NAN).is_err());
        assert!(kld_at(&[], 1.0).is_err());
        let backwards = [CostPoint { evaluations: 2.0, kld: 1.0 }, CostPoint { evaluations: 1.0, kld: 0.5 }];
        assert!(kld_at(&backwards, 1.5).is_err());
        assert!(kld_at(&[CostPoint { evaluations: 1.0, kld: f64::NAN }], 1.0).is_err());
        assert!(kld_at(&[CostPoint { evaluations: 0.0, kld: 1.0 }], 1.0).is_err());
    }

    #[test]
    fn speedup_at_equal_kld_by_hand() {
        // MD: KLD = 100 / sqrt(evaluations) from 1e4 (1.0) to 1e8 (0.01), one point per decade,
        // with a bump at 1e7 (noise) above the value at 1e6.
        let md = [
            CostPoint { evaluations: 1e4, kld: 1.0 },
            CostPoint { evaluations: 1e5, kld: 0.316 },
            CostPoint { evaluations: 1e6, kld: 0.1 },
            CostPoint { evaluations: 1e7, kld: 0.12 },
            CostPoint { evaluations: 1e8, kld: 0.01 },
        ];
        // KLD 0.2 is first reached between 1e5 and 1e6: ln e = ln 1e5 + ln(0.2/0.316)/ln(0.1/0.316) ln 10.
        let s = speedup_at_equal_kld(&md, CostPoint { evaluations: 2e3, kld: 0.2 }).unwrap();
        let t = (0.2f64 / 0.316).ln() / (0.1f64 / 0.316).ln();
        let e = 1e5 * 10f64.powf(t);
        match s {
            SpeedupEstimate::Interpolated { baseline_evaluations, speedup } => {
                assert!((baseline_evaluations / e - 1.0).abs() < 1e-12);
                assert!((speedup - e / 2e3).abs() < 1e-9 * speedup);
            }
            other => panic!("expected an interpolated speedup, got {other:?}"),
        }
        // KLD 0.1 exactly at a point: the first crossing, 1e6 (the bump at 1e7 does not matter).
        let s = speedup_at_equal_kld(&md, CostPoint { evaluations: 1e4, kld: 0.1 }).unwrap();
        assert_eq!(s.value(), Some(100.0));
        // KLD 0.11 lies between 1e7 and 1e8 too, but MD first gets there between 1e5 and 1e6.
        let s = speedup_at_equal_kld(&md, CostPoint { evaluations: 1.0, kld: 0.11 }).unwrap();
        assert!(s.value().unwrap() < 1e6);
        // Lower than MD ever gets: a lower bound 1e8 / 1e6, said as such.
        let s = speedup_at_equal_kld(&md, CostPoint { evaluations: 1e6, kld: 0.005 }).unwrap();
        assert_eq!(
            s,
            SpeedupEstimate::BeyondBaseline {
                baseline_last_evaluations: 1e8,
                baseline_lowest_kld: 0.01,
                speedup_at_least: 100.0
            }
        );
        assert!(s.to_string().contains("never reaches"), "{s}");
        // Higher than MD's first point: an upper bound 1e4 / 1e5.
        let s = speedup_at_equal_kld(&md, CostPoint { evaluations: 1e5, kld: 2.0 }).unwrap();
        assert_eq!(s, SpeedupEstimate::BeforeBaseline { baseline_first_evaluations: 1e4, speedup_at_most: 0.1 });
        assert_eq!(s.value(), None);
        for bad in [
            CostPoint { evaluations: 0.0, kld: 0.1 },
            CostPoint { evaluations: 1e3, kld: f64::NAN },
            CostPoint { evaluations: 1e3, kld: f64::INFINITY },
            CostPoint { evaluations: 1e3, kld: -0.1 },
        ] {
            assert!(speedup_at_equal_kld(&md, bad).is_err(), "{bad:?}");
        }
        assert!(speedup_at_equal_kld(&[], CostPoint { evaluations: 1.0, kld: 0.1 }).is_err());
    }
}
