//! Exact free energies of the toy systems by numerical quadrature: the references that sampled and
//! learned estimates are compared with.
//!
//! - [`integrate`], [`integrate_with_error`], [`integrate_with_breakpoints`]: globally adaptive
//!   Gauss-Kronrod (7-point Gauss, 15-point Kronrod) quadrature of a function of one variable, on
//!   finite or infinite intervals (infinite ends are mapped onto a finite `t` interval, e.g.
//!   `x = t / (1 - t^2)` for the whole line).
//! - [`muller_brown_pmf`] and [`muller_brown_bin_probabilities`]: the potential of mean force
//!   along `s = x1 - x2` of the Müller-Brown potential and the probability of each bin of the
//!   `[-2.5, 1.1]` histogram that Müller-Brown KL divergences use.
//! - [`double_well_free_energy`] and [`double_well_well_ratio`]: the free energy along x1 of Noé's
//!   double well (analytic) and the population ratio of its two wells.
//!
//! All free energies are in kT. Tolerances are relative: a result is accepted when the estimated
//! error is at most `tolerance` times the integral of `|f|`.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::energy::toy::{DoubleWell, MullerBrown};
use crate::error::{Error, Result};

/// Nodes of the 15-point Kronrod rule on [-1, 1] (non-negative half, descending; the odd entries
/// 1, 3, 5, 7 are the nodes of the 7-point Gauss rule).
const KRONROD_NODES: [f64; 8] = [
    0.9914553711208126,
    0.9491079123427585,
    0.8648644233597691,
    0.7415311855993945,
    0.5860872354676911,
    0.4058451513773972,
    0.20778495500789848,
    0.0,
];

/// Weights of the 15-point Kronrod rule, matching [`KRONROD_NODES`].
const KRONROD_WEIGHTS: [f64; 8] = [
    0.022935322010529224,
    0.06309209262997856,
    0.10479001032225019,
    0.14065325971552592,
    0.1690047266392679,
    0.19035057806478542,
    0.20443294007529889,
    0.20948214108472782,
];

/// Weights of the 7-point Gauss rule at `KRONROD_NODES[1], [3], [5], [7]`.
const GAUSS_WEIGHTS: [f64; 4] = [0.1294849661688697, 0.27970539148927664, 0.3818300505051189, 0.4179591836734694];

/// The smallest relative tolerance honoured: below it the error estimate is rounding noise.
const MIN_TOLERANCE: f64 = 1e-14;

/// Distances of the extra breakpoints placed next to an infinite end.
const GRADING: [f64; 9] = [0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0];

/// At most this many subintervals; beyond it the estimate is returned as not converged.
const MAX_INTERVALS: usize = 20_000;

/// The outcome of an adaptive quadrature.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quadrature {
    /// The estimate of the integral (NaN when the integrand returned NaN or the input was invalid).
    pub value: f64,
    /// The estimated absolute error (the sum over subintervals of |Kronrod 15 - Gauss 7|, a
    /// conservative bound for smooth integrands).
    pub error: f64,
    /// Integrand evaluations used.
    pub evaluations: usize,
    /// Whether the requested tolerance was met.
    pub converged: bool,
}

impl Quadrature {
    fn invalid() -> Self {
        Self { value: f64::NAN, error: f64::NAN, evaluations: 0, converged: false }
    }
}

/// One subinterval of the adaptive scheme, ordered by its error estimate.
#[derive(Debug, Clone, Copy)]
struct Piece {
    a: f64,
    b: f64,
    value: f64,
    error: f64,
    abs: f64,
}

impl PartialEq for Piece {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Piece {}

impl PartialOrd for Piece {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Piece {
    fn cmp(&self, other: &Self) -> Ordering {
        self.error.total_cmp(&other.error)
    }
}

/// Gauss-Kronrod 7-15 on [a, b]: (Kronrod estimate, |Kronrod - Gauss|, Kronrod estimate of |f|).
fn kronrod_15(g: &dyn Fn(f64) -> f64, a: f64, b: f64) -> Piece {
    let centre = 0.5 * (a + b);
    let half = 0.5 * (b - a);
    let fc = g(centre);
    let mut kronrod = KRONROD_WEIGHTS[7] * fc;
    let mut gauss = GAUSS_WEIGHTS[3] * fc;
    let mut abs = KRONROD_WEIGHTS[7] * fc.abs();
    for j in 0..7 {
        let dx = half * KRONROD_NODES[j];
        let f1 = g(centre - dx);
        let f2 = g(centre + dx);
        kronrod += KRONROD_WEIGHTS[j] * (f1 + f2);
        abs += KRONROD_WEIGHTS[j] * (f1.abs() + f2.abs());
        if j % 2 == 1 {
            gauss += GAUSS_WEIGHTS[j / 2] * (f1 + f2);
        }
    }
    let scale = half.abs();
    Piece { a, b, value: kronrod * half, error: ((kronrod - gauss) * scale).abs(), abs: abs * scale }
}

/// Globally adaptive Gauss-Kronrod quadrature of `g` over the consecutive intervals of `points`
/// (finite, sorted).
fn adaptive(g: &dyn Fn(f64) -> f64, points: &[f64], tolerance: f64) -> Quadrature {
    let tolerance = if tolerance.is_nan() { MIN_TOLERANCE } else { tolerance.clamp(MIN_TOLERANCE, 1.0) };
    let mut heap = BinaryHeap::new();
    let mut finished: Vec<Piece> = Vec::new();
    let mut evaluations = 0;
    for w in points.windows(2) {
        if w[1] > w[0] {
            heap.push(kronrod_15(g, w[0], w[1]));
            evaluations += 15;
        }
    }
    let totals = |heap: &BinaryHeap<Piece>, finished: &[Piece]| {
        heap.iter().chain(finished).fold((0.0, 0.0, 0.0), |(v, e, s), p| (v + p.value, e + p.error, s + p.abs))
    };
    loop {
        let (value, error, abs) = totals(&heap, &finished);
        if value.is_nan() || error.is_nan() {
            return Quadrature { value: f64::NAN, error: f64::NAN, evaluations, converged: false };
        }
        let converged = error <= tolerance * abs;
        if converged || heap.is_empty() || heap.len() + finished.len() >= MAX_INTERVALS {
            return Quadrature { value, error, evaluations, converged };
        }
        // Refine the worst piece; the loop re-sums only every so often, so take a batch here.
        for _ in 0..heap.len().clamp(1, 16) {
            let Some(worst) = heap.pop() else { break };
            let mid = 0.5 * (worst.a + worst.b);
            let at_rounding = worst.error <= 50.0 * f64::EPSILON * worst.abs;
            if at_rounding || mid <= worst.a || mid >= worst.b {
                // Nothing to gain from bisecting: keep the piece as it is.
                finished.push(worst);
                continue;
            }
            heap.push(kronrod_15(g, worst.a, mid));
            heap.push(kronrod_15(g, mid, worst.b));
            evaluations += 30;
        }
    }
}

/// `f(x) dx/dt` for an integrand on a domain mapped to finite `t`, and the map of breakpoints.
enum Map {
    Identity,
    /// (-inf, inf): x = t / (1 - t^2), t in (-1, 1).
    Line,
    /// [a, inf): x = a + t / (1 - t), t in [0, 1).
    Upper(f64),
    /// (-inf, b]: x = b - t / (1 - t), t in [0, 1).
    Lower(f64),
}

impl Map {
    fn x_and_jacobian(&self, t: f64) -> (f64, f64) {
        match *self {
            Map::Identity => (t, 1.0),
            Map::Line => {
                let q = 1.0 - t * t;
                (t / q, (1.0 + t * t) / (q * q))
            }
            Map::Upper(a) => {
                let q = 1.0 - t;
                (a + t / q, 1.0 / (q * q))
            }
            Map::Lower(b) => {
                let q = 1.0 - t;
                (b - t / q, 1.0 / (q * q))
            }
        }
    }

    fn t_of(&self, x: f64) -> f64 {
        match *self {
            Map::Identity => x,
            Map::Line if x.is_infinite() => x.signum(),
            Map::Line => 2.0 * x / (1.0 + (1.0 + 4.0 * x * x).sqrt()),
            Map::Upper(_) if x == f64::INFINITY => 1.0,
            Map::Upper(a) => (x - a) / (1.0 + x - a),
            Map::Lower(_) if x == f64::NEG_INFINITY => 1.0,
            Map::Lower(b) => (b - x) / (1.0 + b - x),
        }
    }
}

/// Adaptive quadrature of `f` over `[points[0], points[last]]`, with the inner `points` as
/// breakpoints where the integrand has kinks, peaks or other features the rule should not straddle.
///
/// `points` must be sorted, contain no NaN, and be finite except possibly the two ends (`-inf`,
/// `+inf`); otherwise the result is NaN with `converged = false`. Infinite ends are mapped onto a
/// finite interval (`x = t / (1 - t^2)` for the whole line, `x = a + t / (1 - t)` for a half-line),
/// after extra breakpoints at distances 1/8, 1/4, ..., 32 from the outermost finite point (0 when
/// there is none); nodes that map to `|x| = inf` contribute 0 (the integrand must vanish there).
/// `tolerance` is relative to the integral of `|f|` and is clamped to `[1e-14, 1]`.
///
/// Like every quadrature rule, this one only sees the integrand at its nodes: a feature much
/// narrower than the initial interval it lies in, away from that interval's ends, can be missed
/// with a small error estimate. Put breakpoints at or next to peaks whose location is known.
///
/// ```
/// use cgflow::metrics::quadrature::integrate_with_breakpoints;
/// // A kink at 0.
/// let q = integrate_with_breakpoints(|x: f64| x.abs(), &[-1.0, 0.0, 2.0], 1e-12);
/// assert!(q.converged && (q.value - 2.5).abs() < 1e-14);
/// // The whole line.
/// let q = integrate_with_breakpoints(|x: f64| (-x * x).exp(), &[f64::NEG_INFINITY, f64::INFINITY], 1e-12);
/// assert!((q.value - std::f64::consts::PI.sqrt()).abs() < 1e-13);
/// assert!(integrate_with_breakpoints(|x| x, &[1.0, 0.0], 1e-10).value.is_nan());
/// ```
pub fn integrate_with_breakpoints(f: impl Fn(f64) -> f64, points: &[f64], tolerance: f64) -> Quadrature {
    let n = points.len();
    if n < 2 || points.iter().any(|p| p.is_nan()) || points.windows(2).any(|w| w[1] < w[0]) {
        return Quadrature::invalid();
    }
    if points[1..n - 1].iter().any(|p| p.is_infinite()) {
        return Quadrature::invalid();
    }
    let (lo, hi) = (points[0], points[n - 1]);
    if lo == hi {
        return Quadrature { value: 0.0, error: 0.0, evaluations: 0, converged: true };
    }
    let map = match (lo.is_infinite(), hi.is_infinite()) {
        (false, false) => Map::Identity,
        (true, true) => Map::Line,
        (false, true) => Map::Upper(lo),
        (true, false) => Map::Lower(hi),
    };
    // Graded extra breakpoints next to an infinite end (at distances 1/8, 1/4, ..., 32 from the
    // last finite point), so that a feature near that point is not lost in one long mapped piece.
    let mut all: Vec<f64> = points.to_vec();
    let finite = || points.iter().copied().filter(|p| p.is_finite());
    if lo.is_infinite() {
        let c = finite().next().unwrap_or(0.0);
        all.extend(GRADING.iter().map(|d| c - d));
        all.push(c);
    }
    if hi.is_infinite() {
        let c = finite().next_back().unwrap_or(0.0);
        all.extend(GRADING.iter().map(|d| c + d));
        all.push(c);
    }
    let mut t: Vec<f64> = all.iter().map(|&x| map.t_of(x)).collect();
    t.sort_by(f64::total_cmp);
    t.dedup();
    let g = |t: f64| {
        let (x, jacobian) = map.x_and_jacobian(t);
        if !x.is_finite() {
            return 0.0;
        }
        let fx = f(x);
        if fx == 0.0 {
            0.0
        } else {
            fx * jacobian
        }
    };
    adaptive(&g, &t, tolerance)
}

/// Adaptive quadrature of `f` from `a` to `b` (either may be infinite; `b < a` gives minus the
/// integral from `b` to `a`) with the error estimate. See [`integrate_with_breakpoints`] for the
/// meaning of `tolerance`.
///
/// ```
/// use cgflow::metrics::quadrature::integrate_with_error;
/// let q = integrate_with_error(|x: f64| x.sin(), 0.0, std::f64::consts::PI, 1e-12);
/// assert!(q.converged && (q.value - 2.0).abs() < 1e-14 && q.error < 1e-11);
/// assert!((integrate_with_error(|x: f64| x.sin(), std::f64::consts::PI, 0.0, 1e-12).value + 2.0).abs() < 1e-14);
/// ```
pub fn integrate_with_error(f: impl Fn(f64) -> f64, a: f64, b: f64, tolerance: f64) -> Quadrature {
    if b < a {
        let q = integrate_with_breakpoints(f, &[b, a], tolerance);
        return Quadrature { value: -q.value, ..q };
    }
    integrate_with_breakpoints(f, &[a, b], tolerance)
}

/// Adaptive quadrature of `f` from `a` to `b` (either may be infinite), relative tolerance
/// `tolerance` (clamped to `[1e-14, 1]`). NaN when the integrand returns NaN or a limit is NaN;
/// [`integrate_with_error`] also reports the error estimate and whether the tolerance was met.
///
/// ```
/// use cgflow::metrics::quadrature::integrate;
/// let e = integrate(|x: f64| x.exp(), 0.0, 1.0, 1e-13);
/// assert!((e - (std::f64::consts::E - 1.0)).abs() < 1e-15);
/// let gauss = integrate(|x: f64| (-0.5 * x * x).exp(), f64::NEG_INFINITY, f64::INFINITY, 1e-13);
/// assert!((gauss - (2.0 * std::f64::consts::PI).sqrt()).abs() < 1e-13);
/// ```
pub fn integrate(f: impl Fn(f64) -> f64, a: f64, b: f64, tolerance: f64) -> f64 {
    integrate_with_error(f, a, b, tolerance).value
}

/// How the `s_perp` integral of the Müller-Brown density is done (the defaults are what the public
/// functions use; the tests vary them to show convergence).
#[derive(Debug, Clone, Copy)]
struct MarginalRule {
    /// Panels of width `panel` cover `[-half_width, half_width]`; the rest of the line is two
    /// infinite tails.
    half_width: f64,
    /// Panel width (initial subdivision of the adaptive rule).
    panel: f64,
    /// Relative tolerance of the `s_perp` integral.
    tolerance: f64,
    /// Whether the infinite tails are integrated (otherwise the range is cut at `half_width`).
    tails: bool,
}

const MARGINAL_RULE: MarginalRule = MarginalRule { half_width: 6.0, panel: 0.5, tolerance: 1e-13, tails: true };

/// Step of the scan that finds the minimum of u along `s_perp` (used to shift the exponent and as
/// a breakpoint).
const SCAN_STEP: f64 = 0.05;

/// `ln int exp(-u(s, s_perp)) ds_perp` (no Jacobian). `-inf` where u is infinite on the whole
/// scanned line.
fn mb_log_marginal(mb: &MullerBrown, s: f64, rule: &MarginalRule) -> f64 {
    if !s.is_finite() {
        return f64::NAN;
    }
    let steps = (2.0 * rule.half_width / SCAN_STEP).round() as usize;
    let (mut u_min, mut at) = (f64::INFINITY, 0.0);
    for i in 0..=steps {
        let sp = -rule.half_width + i as f64 * SCAN_STEP;
        let u = mb.energy_cg(s, sp);
        if u < u_min {
            (u_min, at) = (u, sp);
        }
    }
    if !u_min.is_finite() {
        return f64::NEG_INFINITY;
    }
    let panels = (2.0 * rule.half_width / rule.panel).round() as usize;
    let mut points: Vec<f64> = (0..=panels).map(|i| -rule.half_width + i as f64 * rule.panel).collect();
    points.push(at);
    if rule.tails {
        points.push(f64::NEG_INFINITY);
        points.push(f64::INFINITY);
    }
    points.sort_by(f64::total_cmp);
    points.dedup();
    let q = integrate_with_breakpoints(|sp| (-(mb.energy_cg(s, sp) - u_min)).exp(), &points, rule.tolerance);
    q.value.ln() - u_min
}

/// Shifts finite values so that their minimum is 0 (NaN and infinities stay as they are).
fn shift_to_zero(mut values: Vec<f64>) -> Vec<f64> {
    let min = values.iter().copied().filter(|v| v.is_finite()).fold(f64::INFINITY, f64::min);
    if min.is_finite() {
        values.iter_mut().for_each(|v| *v -= min);
    }
    values
}

fn mb_pmf_with(mb: &MullerBrown, s: &[f64], rule: &MarginalRule) -> Vec<f64> {
    shift_to_zero(s.iter().map(|&si| -mb_log_marginal(mb, si, rule)).collect())
}

/// The exact Müller-Brown potential of mean force along `s = x1 - x2`, in kT, at the given `s`
/// values: `A(s) = -ln int exp(-beta V(x(s, s_perp))) ds_perp`, shifted so that its minimum over
/// the given points is 0.
///
/// The constant Jacobian `|det dx/d(s, s_perp)| = 1/2` is left out: it only shifts A by `ln 2`,
/// which the shift removes. The `s_perp` integral runs over the whole line (24 panels of 0.5 over
/// `[-6, 6]`, two mapped infinite tails, relative tolerance 1e-13); the tests show that doubling
/// the panel range or count, or tightening the tolerance, changes A by less than 1e-9.
/// Non-finite `s` gives NaN.
///
/// ```
/// use cgflow::energy::toy::MullerBrown;
/// use cgflow::metrics::quadrature::muller_brown_pmf;
/// let a = muller_brown_pmf(&MullerBrown::default(), &[-2.0, -0.5, 0.6]);
/// // The deepest basin (s = -2) is the minimum; the other two lie several kT higher.
/// assert_eq!(a[0], 0.0);
/// assert!(a[1] > 4.0 && a[2] > 2.0);
/// ```
pub fn muller_brown_pmf(mb: &MullerBrown, s_axis_centres: &[f64]) -> Vec<f64> {
    mb_pmf_with(mb, s_axis_centres, &MARGINAL_RULE)
}

/// The exact probability of each of `bins` equal bins over `s = x1 - x2` in `[-2.5, 1.1]`
/// ([`MullerBrown::S_RANGE`]; bin `i` covers `[-2.5 + i w, -2.5 + (i + 1) w)`), normalised over
/// the bins: `P_i ∝ int_bin int exp(-beta V) ds_perp ds`. The `s` integral over each bin is
/// adaptive (relative tolerance 1e-12), not a centre-point rule. Empty for `bins = 0`.
///
/// ```
/// use cgflow::energy::toy::MullerBrown;
/// use cgflow::metrics::quadrature::muller_brown_bin_probabilities;
/// let p = muller_brown_bin_probabilities(&MullerBrown::default(), 10);
/// assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-14);
/// assert!(p[1] > 0.5); // s in [-2.14, -1.78]: the deepest basin
/// ```
pub fn muller_brown_bin_probabilities(mb: &MullerBrown, bins: usize) -> Vec<f64> {
    mb_bin_probabilities_with(mb, bins, 1e-12, &MARGINAL_RULE)
}

fn mb_bin_probabilities_with(mb: &MullerBrown, bins: usize, tolerance: f64, rule: &MarginalRule) -> Vec<f64> {
    if bins == 0 {
        return Vec::new();
    }
    let (lo, hi) = MullerBrown::S_RANGE;
    let width = (hi - lo) / bins as f64;
    let edge = |i: usize| if i == bins { hi } else { lo + i as f64 * width };
    // A common shift keeps exp() in range whatever beta is.
    let reference =
        (0..bins).map(|i| mb_log_marginal(mb, lo + (i as f64 + 0.5) * width, rule)).fold(f64::NEG_INFINITY, f64::max);
    let mass: Vec<f64> = (0..bins)
        .map(|i| integrate(|s| (mb_log_marginal(mb, s, rule) - reference).exp(), edge(i), edge(i + 1), tolerance))
        .collect();
    let total: f64 = mass.iter().sum();
    mass.iter().map(|m| m / total).collect()
}

/// The exact free energy of Noé's double well along x1, in kT, at the given points:
/// `F(x1) = -ln int exp(-u) dx2 = a x1^4 + b x1^2 + c x1 + ln sqrt(d / pi)` (the x2 factor is
/// Gaussian), shifted so that its minimum over the given points is 0. NaN in, NaN out.
///
/// ```
/// use cgflow::energy::toy::DoubleWell;
/// use cgflow::metrics::quadrature::double_well_free_energy;
/// let f = double_well_free_energy(&DoubleWell::default(), &[-2.0, 0.0, 2.0]);
/// assert_eq!(f, vec![0.0, 10.0, 4.0]);
/// ```
pub fn double_well_free_energy(dw: &DoubleWell, x1: &[f64]) -> Vec<f64> {
    shift_to_zero(x1.iter().map(|&x| dw.x1_energy(x)).collect())
}

/// The population ratio of the two wells of a double well, `P(x1 < x_b) / P(x1 > x_b)`, where
/// `x_b` is the barrier (the local maximum of the x1 energy between the wells, from
/// [`DoubleWell::barrier`]). Both populations are adaptive quadratures over half-lines at relative
/// tolerance 1e-14 (the ratio is accurate to about 1e-13 relative). Errors when the parameters give
/// a single well or the quadrature does not converge.
///
/// ```
/// use cgflow::energy::toy::DoubleWell;
/// use cgflow::metrics::quadrature::double_well_well_ratio;
/// // Untilted (c = 0): symmetric, ratio 1.
/// let symmetric = DoubleWell::new(0.25, -3.0, 0.0, 0.5).unwrap();
/// assert!((double_well_well_ratio(&symmetric).unwrap() - 1.0).abs() < 1e-13);
/// // Noé's tilt c = 1 favours the left well.
/// assert!(double_well_well_ratio(&DoubleWell::default()).unwrap() > 100.0);
/// ```
pub fn double_well_well_ratio(dw: &DoubleWell) -> Result<f64> {
    let barrier = dw.barrier()?;
    let [left, right] = dw.minima()?;
    let floor = dw.x1_energy(left).min(dw.x1_energy(right));
    let density = |x: f64| (-(dw.x1_energy(x) - floor)).exp();
    let p_left = integrate_with_breakpoints(density, &[f64::NEG_INFINITY, left, barrier], 1e-14);
    let p_right = integrate_with_breakpoints(density, &[barrier, right, f64::INFINITY], 1e-14);
    if !(p_left.converged && p_right.converged) {
        return Err(Error::invalid(format!(
            "double well populations did not converge (left {} +- {}, right {} +- {})",
            p_left.value, p_left.error, p_right.value, p_right.error
        )));
    }
    Ok(p_left.value / p_right.value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kronrod_rule_is_exact_for_polynomials_and_gauss_for_degree_13() {
        // K15 integrates x^k exactly up to k = 22, G7 up to 13: check the tabulated constants.
        for k in 0..=22 {
            let g = |x: f64| x.powi(k);
            let p = kronrod_15(&g, -1.0, 1.0);
            let exact = if k % 2 == 0 { 2.0 / (k as f64 + 1.0) } else { 0.0 };
            assert!((p.value - exact).abs() < 2e-15, "x^{k}: {} vs {exact}", p.value);
            if k <= 13 {
                assert!(p.error < 2e-15, "x^{k}: Gauss differs by {}", p.error);
            }
        }
        assert!(kronrod_15(&|x: f64| x.powi(14), -1.0, 1.0).error > 1e-4);
    }

    #[test]
    fn known_integrals() {
        let cases: [(f64, f64); 4] = [
            (integrate(|x: f64| x.exp(), 0.0, 1.0, 1e-12), std::f64::consts::E - 1.0),
            (integrate(|x: f64| 1.0 / (1.0 + x * x), f64::NEG_INFINITY, f64::INFINITY, 1e-12), std::f64::consts::PI),
            (integrate(|x: f64| (-x).exp(), 2.0, f64::INFINITY, 1e-12), (-2.0f64).exp()),
            (integrate(|x: f64| x.sqrt(), 0.0, 1.0, 1e-12), 2.0 / 3.0),
        ];
        for (got, expected) in cases {
            assert!((got - expected).abs() < 1e-12 * expected, "{got} vs {expected}");
        }
        // A narrow peak (width 0.01) far off centre, found because of the breakpoints, with its
        // tails (erfc(5) / 2 = 8e-13 of the mass on each side of [2.95, 3.05]).
        let peak = |x: f64| (-1e4 * (x - 3.0) * (x - 3.0)).exp();
        let exact = (std::f64::consts::PI / 1e4).sqrt();
        for points in [vec![f64::NEG_INFINITY, 3.0, f64::INFINITY], vec![f64::NEG_INFINITY, 2.95, 3.05, f64::INFINITY]]
        {
            let q = integrate_with_breakpoints(peak, &points, 1e-12);
            assert!(q.converged && (q.value / exact - 1.0).abs() < 1e-14, "{points:?}: {} vs {exact}", q.value);
        }
        assert!(integrate(|_| f64::NAN, 0.0, 1.0, 1e-10).is_nan());
        assert_eq!(integrate(|x| x, 1.0, 1.0, 1e-10), 0.0);
    }

    #[test]
    fn muller_brown_pmf_is_converged() {
        let mb = MullerBrown::default();
        let (lo, hi) = MullerBrown::S_RANGE;
        let centres: Vec<f64> = (0..100).map(|i| lo + (i as f64 + 0.5) * (hi - lo) / 100.0).collect();
        let base = mb_pmf_with(&mb, &centres, &MARGINAL_RULE);
        let variants = [
            MarginalRule { half_width: 12.0, ..MARGINAL_RULE },
            MarginalRule { panel: 0.25, ..MARGINAL_RULE },
            MarginalRule { tolerance: 1e-14, ..MARGINAL_RULE },
            MarginalRule { tails: false, ..MARGINAL_RULE },
        ];
        for rule in variants {
            let other = mb_pmf_with(&mb, &centres, &rule);
            let delta = base.iter().zip(&other).fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
            assert!(delta < 1e-9, "{rule:?}: max |dA| = {delta:e}");
        }
    }

    #[test]
    fn double_well_ratio_matches_simpson() {
        let dw = DoubleWell::default();
        let ratio = double_well_well_ratio(&dw).unwrap();
        let xb = dw.barrier().unwrap();
        let floor = dw.x1_energy(dw.minima().unwrap()[0]);
        let simpson = |a: f64, b: f64, n: usize| {
            let h = (b - a) / n as f64;
            let f = |x: f64| (-(dw.x1_energy(x) - floor)).exp();
            let inner: f64 = (1..n).map(|i| f(a + i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 }).sum();
            (f(a) + f(b) + inner) * h / 3.0
        };
        let check = simpson(-8.0, xb, 400_000) / simpson(xb, 8.0, 400_000);
        assert!((ratio / check - 1.0).abs() < 1e-12, "{ratio} vs Simpson {check}");
        // mpmath (30 digits): 118.81294350769433.
        assert!((ratio / 118.812_943_507_694_33 - 1.0).abs() < 1e-13, "{ratio}");
    }
}
