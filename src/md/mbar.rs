//! Binless combination of biased samples: the multistate Bennett acceptance ratio (MBAR), for
//! states that differ by periodic harmonic restraints on two angles (2D umbrella sampling), with
//! unbiased states (MD) as the special case of zero springs. Everything is in kT.
//!
//! State `k` drew `N_k` samples `x` from `p(x) exp(-b_k(x)) / Z_k`. With `D(x) = sum_k N_k
//! exp(f_k - b_k(x))`, the free energies `f_k = -ln Z_k` (up to one constant, fixed by `f_0 = 0`)
//! are the minimum of the convex function
//!
//! ```text
//! A(f) = sum_n ln D(x_n) - sum_k N_k f_k,
//! ```
//!
//! and every sample then carries the unbiased weight `W_n = 1 / D(x_n)`, normalised over all
//! samples. Unlike binned WHAM, each bias is evaluated at the sample itself, so there is no error
//! from the bias varying across a bin (0.75 kT across one of 100 bins at 0.3 rad from the centre
//! of a 100 kJ/mol/rad^2 restraint at 300 K).
//!
//! The solver is Newton's method with a backtracking line search: the gradient and `A` over every
//! sample, the Hessian `H_ij = sum_n (delta_ij w_in - w_in w_jn)`, `w_in = N_i exp(f_i - b_i(x_n)) /
//! D(x_n)`, over an evenly strided subset of at most [`MbarConfig::hessian_samples`] samples (an
//! approximate Hessian only slows the convergence, never moves its point). A state contributes to
//! `D(x)` only where its bias is below [`MbarConfig::bias_cutoff_kt`]: beyond, its term is smaller
//! than `exp(-cutoff)` times its own weight, and skipping it keeps each sample's cost to the states
//! around it.

use rayon::prelude::*;

use crate::coords::geometry::wrap_angle;
use crate::error::{Error, Result};

/// A periodic harmonic restraint on two angles: `b(x) = 0.5 k_0 d_0^2 + 0.5 k_1 d_1^2` in kT, `d`
/// the differences from the centre wrapped to `[-pi, pi)`. Zero springs: an unbiased state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HarmonicBias2d {
    /// Centre (radians).
    pub centre_rad: [f64; 2],
    /// Spring on each angle, kT/rad^2 (finite, >= 0).
    pub spring_kt_per_rad2: [f64; 2],
}

impl HarmonicBias2d {
    /// No bias at all (plain MD).
    pub const UNBIASED: HarmonicBias2d = HarmonicBias2d { centre_rad: [0.0, 0.0], spring_kt_per_rad2: [0.0, 0.0] };

    /// The bias at `x` (radians), kT.
    ///
    /// ```
    /// use cgflow::md::mbar::HarmonicBias2d;
    /// let b = HarmonicBias2d { centre_rad: [3.0, 0.0], spring_kt_per_rad2: [10.0, 2.0] };
    /// let d = 6.0 - 2.0 * std::f64::consts::PI; // -3 lies 0.283 rad past +3 across the wrap
    /// assert!((b.at([-3.0, 1.0]) - (5.0 * d * d + 1.0)).abs() < 1e-13);
    /// ```
    pub fn at(&self, x: [f64; 2]) -> f64 {
        let d0 = wrap_angle(x[0] - self.centre_rad[0]);
        let d1 = wrap_angle(x[1] - self.centre_rad[1]);
        0.5 * (self.spring_kt_per_rad2[0] * d0 * d0 + self.spring_kt_per_rad2[1] * d1 * d1)
    }

    fn validate(&self) -> Result<()> {
        if self.centre_rad.iter().any(|c| !c.is_finite())
            || self.spring_kt_per_rad2.iter().any(|k| !(k.is_finite() && *k >= 0.0))
        {
            return Err(Error::invalid(format!(
                "restraint centre {:?} must be finite and springs {:?} kT/rad^2 finite and >= 0",
                self.centre_rad, self.spring_kt_per_rad2
            )));
        }
        Ok(())
    }
}

/// The samples one state drew, in time order, or a state's histogram on the dihedral grid
/// ([`BiasedSamples::binned`]).
#[derive(Debug, Clone, PartialEq)]
pub struct BiasedSamples {
    /// The state's bias.
    pub bias: HarmonicBias2d,
    /// Its samples (radians), in the order they were drawn (block bootstrap keeps blocks of them).
    pub samples: Vec<[f64; 2]>,
    /// How many draws each sample stands for; empty: one each.
    pub counts: Vec<f64>,
    /// For binned states: the counts of consecutive stretches of the run, per sample (they add up
    /// to `counts`); the blocks of the bootstrap and of the halves. Empty for sampled states.
    pub count_blocks: Vec<Vec<f64>>,
}

impl BiasedSamples {
    /// A state given by its samples, each drawn once.
    pub fn new(bias: HarmonicBias2d, samples: Vec<[f64; 2]>) -> BiasedSamples {
        BiasedSamples { bias, samples, counts: vec![], count_blocks: vec![] }
    }

    /// A state known only by its histogram on the `bins` x `bins` dihedral grid over `[-pi, pi)^2`
    /// (row-major, first angle first), given as the histograms of consecutive stretches of the run
    /// (`blocks`, each `bins * bins` counts; the whole run is their sum). Each occupied bin becomes
    /// `subdivisions^2` samples on a uniform sub-grid inside it, sharing the bin's count: MBAR then
    /// evaluates every other state's bias across the bin rather than at its centre (a midpoint rule
    /// for a density uniform within the bin; the errors are second order in the bin width). Meant for
    /// unbiased MD histograms, whose own bias is zero everywhere. Errors on no blocks, blocks of
    /// the wrong size, negative or non-finite counts, no count at all, or zero `subdivisions`.
    ///
    /// ```
    /// use cgflow::md::mbar::{BiasedSamples, HarmonicBias2d};
    /// let mut counts = vec![0.0; 4];
    /// counts[3] = 8.0; // the bin [0, pi) x [0, pi) of a 2 x 2 grid
    /// let s = BiasedSamples::binned(HarmonicBias2d::UNBIASED, 2, vec![counts], 2).unwrap();
    /// assert_eq!(s.samples.len(), 4);
    /// assert_eq!(s.total_count(), 8.0);
    /// let q = std::f64::consts::PI / 4.0;
    /// assert!((s.samples[0][0] - q).abs() < 1e-15 && (s.samples[3][1] - 3.0 * q).abs() < 1e-15);
    /// ```
    pub fn binned(
        bias: HarmonicBias2d,
        bins: usize,
        blocks: Vec<Vec<f64>>,
        subdivisions: usize,
    ) -> Result<BiasedSamples> {
        if blocks.is_empty() || subdivisions == 0 || bins == 0 {
            return Err(Error::invalid("a binned state needs bins, at least one block and subdivisions >= 1"));
        }
        if let Some(b) = blocks.iter().find(|b| b.len() != bins * bins) {
            return Err(Error::invalid(format!(
                "a binned state's block has {} counts for {bins} x {bins} bins",
                b.len()
            )));
        }
        if blocks.iter().flatten().any(|c| !(c.is_finite() && *c >= 0.0)) {
            return Err(Error::invalid("a binned state's counts must be finite and non-negative"));
        }
        let width = 2.0 * std::f64::consts::PI / bins as f64;
        let sub = width / subdivisions as f64;
        let share = 1.0 / (subdivisions * subdivisions) as f64;
        let (mut samples, mut counts) = (Vec::new(), Vec::new());
        let mut count_blocks = vec![Vec::new(); blocks.len()];
        for bin in 0..bins * bins {
            let total: f64 = blocks.iter().map(|b| b[bin]).sum();
            if total == 0.0 {
                continue;
            }
            let (i, j) = (bin / bins, bin % bins);
            for a in 0..subdivisions {
                for c in 0..subdivisions {
                    let phi = -std::f64::consts::PI + i as f64 * width + (a as f64 + 0.5) * sub;
                    let psi = -std::f64::consts::PI + j as f64 * width + (c as f64 + 0.5) * sub;
                    samples.push([phi, psi]);
                    counts.push(total * share);
                    for (out, block) in count_blocks.iter_mut().zip(&blocks) {
                        out.push(block[bin] * share);
                    }
                }
            }
        }
        if samples.is_empty() {
            return Err(Error::invalid("a binned state has no counts"));
        }
        Ok(BiasedSamples { bias, samples, counts, count_blocks })
    }

    /// How many draws sample `i` stands for.
    fn count(&self, i: usize) -> f64 {
        self.counts.get(i).copied().unwrap_or(1.0)
    }

    /// The number of draws, `N_k`.
    pub fn total_count(&self) -> f64 {
        if self.counts.is_empty() {
            self.samples.len() as f64
        } else {
            self.counts.iter().sum()
        }
    }

    /// The same state with every count multiplied by `factor` (for instance to weigh binned MD
    /// frames per unit of simulated time like the samples of other states). Errors unless
    /// `factor` is finite and positive.
    pub fn with_counts_scaled(mut self, factor: f64) -> Result<BiasedSamples> {
        if !(factor.is_finite() && factor > 0.0) {
            return Err(Error::invalid(format!("count scale {factor} must be finite and positive")));
        }
        if self.counts.is_empty() {
            self.counts = vec![1.0; self.samples.len()];
        }
        self.counts.iter_mut().chain(self.count_blocks.iter_mut().flatten()).for_each(|c| *c *= factor);
        Ok(self)
    }

    /// The same binned state made of `count_blocks` (its counts their sum).
    fn with_blocks(&self, count_blocks: Vec<Vec<f64>>) -> BiasedSamples {
        let counts = (0..self.samples.len()).map(|i| count_blocks.iter().map(|b| b[i]).sum()).collect();
        BiasedSamples { bias: self.bias, samples: self.samples.clone(), counts, count_blocks }
    }
}

/// Solver settings for [`solve`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MbarConfig {
    /// Converged when every state's relative count mismatch `|sum_n w_kn - N_k| / N_k` (the
    /// gradient of `A` over `N_k`) is below this. Default `1e-9`.
    pub tolerance: f64,
    /// Newton steps at most. Default 200.
    pub max_iterations: usize,
    /// A state takes part in a sample's `D(x)` only where its bias is below this, kT. Default 50.
    pub bias_cutoff_kt: f64,
    /// Samples (evenly strided) over which the Hessian is accumulated. Default 100 000.
    pub hessian_samples: usize,
}

impl Default for MbarConfig {
    fn default() -> Self {
        MbarConfig { tolerance: 1e-9, max_iterations: 200, bias_cutoff_kt: 50.0, hessian_samples: 100_000 }
    }
}

/// The MBAR free energies of the states.
#[derive(Debug, Clone, PartialEq)]
pub struct MbarSolution {
    /// `f_k` in kT, `f_0 = 0`.
    pub free_energies_kt: Vec<f64>,
    /// Newton steps taken.
    pub iterations: usize,
    /// The largest relative count mismatch at the end (see [`MbarConfig::tolerance`]).
    pub max_relative_mismatch: f64,
    /// Whether it fell below the tolerance.
    pub converged: bool,
}

fn check_states(states: &[BiasedSamples]) -> Result<()> {
    if states.is_empty() {
        return Err(Error::invalid("MBAR needs at least one state"));
    }
    for (k, s) in states.iter().enumerate() {
        s.bias.validate()?;
        if s.samples.is_empty() {
            return Err(Error::invalid(format!("MBAR: state {k} has no samples")));
        }
        if let Some(x) = s.samples.iter().find(|x| !(x[0].is_finite() && x[1].is_finite())) {
            return Err(Error::invalid(format!("MBAR: state {k} has a non-finite sample {x:?}")));
        }
        if !s.counts.is_empty()
            && (s.counts.len() != s.samples.len() || s.counts.iter().any(|c| !(c.is_finite() && *c >= 0.0)))
        {
            return Err(Error::invalid(format!(
                "MBAR: state {k} needs one finite, non-negative count per sample ({} counts, {} samples)",
                s.counts.len(),
                s.samples.len()
            )));
        }
        if s.total_count() <= 0.0 {
            return Err(Error::invalid(format!("MBAR: state {k} has no draws")));
        }
        if s.count_blocks.iter().any(|b| b.len() != s.samples.len()) {
            return Err(Error::invalid(format!("MBAR: state {k} has count blocks of another length than its samples")));
        }
    }
    Ok(())
}

/// The states whose bias at `x` is below the cutoff, with their shares `N_k exp(f_k - b_k(x)) /
/// D(x)`, into `terms`; returns `ln D(x)`, or NaN when no state reaches `x`. Computed with the
/// largest exponent taken out, so that neither the shares nor `ln D` overflow or underflow.
fn terms_at(
    x: [f64; 2],
    states: &[BiasedSamples],
    log_n_plus_f: &[f64],
    cutoff_kt: f64,
    terms: &mut Vec<(usize, f64)>,
) -> f64 {
    terms.clear();
    let mut largest = f64::NEG_INFINITY;
    for (k, s) in states.iter().enumerate() {
        let b = s.bias.at(x);
        if b <= cutoff_kt {
            let exponent = log_n_plus_f[k] - b;
            largest = largest.max(exponent);
            terms.push((k, exponent));
        }
    }
    if terms.is_empty() {
        return f64::NAN;
    }
    let mut sum = 0.0;
    for (_, t) in terms.iter_mut() {
        *t = (*t - largest).exp();
        sum += *t;
    }
    for (_, t) in terms.iter_mut() {
        *t /= sum;
    }
    largest + sum.ln()
}

/// `A(f)`, its gradient, and (when asked) the Hessian over every `stride`-th sample.
struct Pass {
    objective: f64,
    gradient: Vec<f64>,
    hessian: Option<Vec<f64>>,
}

impl Pass {
    fn zero(n_states: usize, with_hessian: bool) -> Pass {
        Pass {
            objective: 0.0,
            gradient: vec![0.0; n_states],
            hessian: with_hessian.then(|| vec![0.0; n_states * n_states]),
        }
    }

    fn add(mut self, other: Pass) -> Pass {
        self.objective += other.objective;
        for (g, v) in self.gradient.iter_mut().zip(&other.gradient) {
            *g += v;
        }
        if let (Some(h), Some(oh)) = (self.hessian.as_mut(), other.hessian.as_ref()) {
            for (a, b) in h.iter_mut().zip(oh) {
                *a += b;
            }
        }
        self
    }
}

fn pass(states: &[BiasedSamples], f: &[f64], config: &MbarConfig, hessian_stride: Option<usize>) -> Result<Pass> {
    let n_states = states.len();
    let log_n_plus_f: Vec<f64> = states.iter().zip(f).map(|(s, fk)| s.total_count().ln() + fk).collect();
    // One accumulator per worker thread (a Hessian per state would allocate K^3 numbers).
    let mut total = states
        .par_iter()
        .enumerate()
        .try_fold(
            || (Pass::zero(n_states, hessian_stride.is_some()), Vec::new()),
            |(mut out, mut terms), (owner, s)| -> Result<(Pass, Vec<(usize, f64)>)> {
                for (i, &x) in s.samples.iter().enumerate() {
                    let count = s.count(i);
                    if count == 0.0 {
                        continue;
                    }
                    let log_d = terms_at(x, states, &log_n_plus_f, config.bias_cutoff_kt, &mut terms);
                    if !log_d.is_finite() {
                        return Err(Error::invalid(format!(
                            "MBAR: sample {x:?} of state {owner} has ln D(x) = {log_d}: no state's bias reaches it \
                             below the cutoff, or the free energies are out of range"
                        )));
                    }
                    out.objective += count * log_d;
                    for &(k, w) in terms.iter() {
                        out.gradient[k] += count * w;
                    }
                    if let (Some(h), Some(stride)) = (out.hessian.as_mut(), hessian_stride) {
                        // Every state is strided alike, each kept sample standing for `stride`.
                        if i % stride == 0 {
                            let scale = stride as f64 * count;
                            for &(k, wk) in terms.iter() {
                                h[k * n_states + k] += scale * wk;
                                for &(l, wl) in terms.iter() {
                                    h[k * n_states + l] -= scale * wk * wl;
                                }
                            }
                        }
                    }
                }
                Ok((out, terms))
            },
        )
        .map(|r| r.map(|(p, _)| p))
        .try_reduce(|| Pass::zero(n_states, hessian_stride.is_some()), |a, b| Ok(a.add(b)))?;
    for (k, s) in states.iter().enumerate() {
        let n = s.total_count();
        total.objective -= n * f[k];
        total.gradient[k] -= n;
    }
    Ok(total)
}

fn max_relative_mismatch(states: &[BiasedSamples], gradient: &[f64]) -> f64 {
    states.iter().zip(gradient).map(|(s, g)| g.abs() / s.total_count()).fold(0.0, f64::max)
}

/// Solves for the states' free energies, starting from `start` (e.g. an earlier solution) or zero.
/// Errors on no states, a state without samples, a non-finite sample or bias, or a sample that no
/// state's bias reaches below the cutoff.
pub fn solve(states: &[BiasedSamples], config: &MbarConfig, start: Option<&[f64]>) -> Result<MbarSolution> {
    check_states(states)?;
    let n_states = states.len();
    let mut f = match start {
        Some(s) if s.len() == n_states => s.iter().map(|v| v - s[0]).collect::<Vec<f64>>(),
        Some(s) => {
            return Err(Error::invalid(format!("MBAR start: {} free energies for {n_states} states", s.len())));
        }
        None => vec![0.0; n_states],
    };
    let total_samples: usize = states.iter().map(|s| s.samples.len()).sum();
    let stride = total_samples.div_ceil(config.hessian_samples.max(1)).max(1);
    let mut current = pass(states, &f, config, Some(stride))?;
    let mut iterations = 0;
    let mut mismatch = max_relative_mismatch(states, &current.gradient);
    while mismatch > config.tolerance && iterations < config.max_iterations && n_states > 1 {
        iterations += 1;
        // Newton step on f_1..f_{K-1} (f_0 = 0 fixes the constant).
        let m = n_states - 1;
        let h = current.hessian.as_ref().ok_or_else(|| Error::invalid("MBAR: Hessian missing"))?;
        let reduced = nalgebra::DMatrix::from_fn(m, m, |i, j| h[(i + 1) * n_states + (j + 1)]);
        let g = nalgebra::DVector::from_fn(m, |i, _| current.gradient[i + 1]);
        let step = match reduced.clone().cholesky() {
            Some(c) => c.solve(&(-&g)),
            // A Hessian from too few samples can lose definiteness: fall back to a diagonal step.
            None => nalgebra::DVector::from_fn(m, |i, _| -g[i] / reduced[(i, i)].max(1e-12)),
        };
        let mut scale = 1.0;
        let accepted = loop {
            let trial: Vec<f64> = std::iter::once(0.0).chain((0..m).map(|i| f[i + 1] + scale * step[i])).collect();
            if let Ok(next) = pass(states, &trial, config, Some(stride)) {
                if next.objective.is_finite() && next.objective <= current.objective + 1e-12 * current.objective.abs() {
                    break Some((trial, next));
                }
            }
            scale *= 0.5;
            if scale < 1e-10 {
                break None;
            }
        };
        match accepted {
            Some((trial, next)) => {
                f = trial;
                current = next;
            }
            None => break,
        }
        mismatch = max_relative_mismatch(states, &current.gradient);
    }
    Ok(MbarSolution {
        free_energies_kt: f,
        iterations,
        max_relative_mismatch: mismatch,
        converged: mismatch <= config.tolerance,
    })
}

impl MbarSolution {
    /// The normalised unbiased weight of every sample, `[state][sample]`. Errors when the states do
    /// not match the solution.
    pub fn unbiased_weights(&self, states: &[BiasedSamples], config: &MbarConfig) -> Result<Vec<Vec<f64>>> {
        if states.len() != self.free_energies_kt.len() {
            return Err(Error::invalid(format!(
                "MBAR weights: {} states for a solution of {}",
                states.len(),
                self.free_energies_kt.len()
            )));
        }
        check_states(states)?;
        let log_n_plus_f: Vec<f64> =
            states.iter().zip(&self.free_energies_kt).map(|(s, fk)| s.total_count().ln() + fk).collect();
        // ln W_n = ln c_n - ln D(x_n) (c_n the sample's count), normalised with the largest taken
        // out; a sample with count zero gets weight zero.
        let mut weights: Vec<Vec<f64>> = states
            .par_iter()
            .map(|s| {
                let mut terms = Vec::new();
                s.samples
                    .iter()
                    .enumerate()
                    .map(|(i, &x)| match s.count(i) {
                        0.0 => f64::NEG_INFINITY,
                        c => c.ln() - terms_at(x, states, &log_n_plus_f, config.bias_cutoff_kt, &mut terms),
                    })
                    .collect()
            })
            .collect();
        let largest = weights.iter().flatten().fold(f64::NEG_INFINITY, |m, v| m.max(*v));
        if !largest.is_finite() {
            return Err(Error::invalid(format!("MBAR weights: the largest log-weight is {largest}")));
        }
        weights.iter_mut().flatten().for_each(|w| *w = (*w - largest).exp());
        let total: f64 = weights.iter().flatten().sum();
        if !(total.is_finite() && total > 0.0) {
            return Err(Error::invalid(format!("MBAR weights sum to {total}")));
        }
        weights.iter_mut().flatten().for_each(|w| *w /= total);
        Ok(weights)
    }
}

/// Weighted 2D histogram over `[-pi, pi)^2` with `bins` x `bins` bins (row-major, first angle
/// first) of the samples with their weights.
pub fn weighted_dihedral_histogram(states: &[BiasedSamples], weights: &[Vec<f64>], bins: usize) -> Result<Vec<f64>> {
    let mut h = crate::metrics::histogram::Histogram2d::dihedral(bins)?;
    for (s, w) in states.iter().zip(weights) {
        for (x, wi) in s.samples.iter().zip(w) {
            h.add_weighted(x[0], x[1], *wi)?;
        }
    }
    Ok(h.counts().to_vec())
}

/// The unbiased bin probabilities on the `bins` x `bins` dihedral grid from MBAR over `states`:
/// solve, weigh, histogram. Returns the solution too.
pub fn dihedral_probabilities(
    states: &[BiasedSamples],
    bins: usize,
    config: &MbarConfig,
    start: Option<&[f64]>,
) -> Result<(MbarSolution, Vec<f64>)> {
    let solution = solve(states, config, start)?;
    let weights = solution.unbiased_weights(states, config)?;
    let p = weighted_dihedral_histogram(states, &weights, bins)?;
    Ok((solution, p))
}

/// The weighted fraction of the samples in each of `regions` regions, `region_of(x)` naming the
/// region of a sample (indices `>= regions` are counted nowhere).
pub fn region_populations(
    states: &[BiasedSamples],
    weights: &[Vec<f64>],
    regions: usize,
    region_of: impl Fn([f64; 2]) -> usize,
) -> Vec<f64> {
    let mut p = vec![0.0; regions];
    let mut total = 0.0;
    for (s, w) in states.iter().zip(weights) {
        for (x, wi) in s.samples.iter().zip(w) {
            total += wi;
            if let Some(slot) = p.get_mut(region_of(*x)) {
                *slot += wi;
            }
        }
    }
    if total > 0.0 {
        p.iter_mut().for_each(|v| *v /= total);
    }
    p
}

/// Region populations with block-bootstrap standard errors: `replicates` resamples of `blocks`
/// blocks per state ([`block_resample`]), each solved from `solution`. Returns the populations of
/// the full data and their standard errors.
#[allow(clippy::too_many_arguments)]
pub fn region_populations_with_errors<R: rand::Rng>(
    states: &[BiasedSamples],
    solution: &MbarSolution,
    config: &MbarConfig,
    regions: usize,
    region_of: impl Fn([f64; 2]) -> usize + Copy,
    replicates: usize,
    blocks: usize,
    rng: &mut R,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let weights = solution.unbiased_weights(states, config)?;
    let full = region_populations(states, &weights, regions, region_of);
    let mut sum = vec![0.0; regions];
    let mut sum2 = vec![0.0; regions];
    for _ in 0..replicates {
        let resampled = block_resample(states, blocks, rng);
        let s = solve(&resampled, config, Some(&solution.free_energies_kt))?;
        let w = s.unbiased_weights(&resampled, config)?;
        for (i, v) in region_populations(&resampled, &w, regions, region_of).iter().enumerate() {
            sum[i] += v;
            sum2[i] += v * v;
        }
    }
    let r = replicates as f64;
    let errors = if replicates < 2 {
        vec![f64::NAN; regions]
    } else {
        sum.iter().zip(&sum2).map(|(s, s2)| ((s2 / r - (s / r).powi(2)).max(0.0) * r / (r - 1.0)).sqrt()).collect()
    };
    Ok((full, errors))
}

/// The first and the second half of every state's series (states left empty are dropped): two
/// independent estimates whose divergence measures the noise of the whole. A binned state is cut
/// between its blocks, where the running count comes nearest half its total (a state of one block
/// goes to the first half whole).
pub fn split_halves(states: &[BiasedSamples]) -> [Vec<BiasedSamples>; 2] {
    let cut = |first: bool| {
        states
            .iter()
            .filter_map(|s| {
                if s.count_blocks.is_empty() {
                    let mid = s.samples.len() / 2;
                    let part = if first { &s.samples[..mid] } else { &s.samples[mid..] };
                    let half = BiasedSamples {
                        samples: part.to_vec(),
                        counts: if s.counts.is_empty() {
                            vec![]
                        } else if first {
                            s.counts[..mid].to_vec()
                        } else {
                            s.counts[mid..].to_vec()
                        },
                        ..s.clone()
                    };
                    return (!half.samples.is_empty() && half.total_count() > 0.0).then_some(half);
                }
                let sizes: Vec<f64> = s.count_blocks.iter().map(|b| b.iter().sum()).collect();
                let total: f64 = sizes.iter().sum();
                let mut running = 0.0;
                let mut split = 1;
                let mut best = f64::INFINITY;
                for (b, size) in sizes.iter().enumerate() {
                    running += size;
                    if (running - total / 2.0).abs() < best {
                        best = (running - total / 2.0).abs();
                        split = b + 1;
                    }
                }
                let blocks: Vec<Vec<f64>> =
                    if first { s.count_blocks[..split].to_vec() } else { s.count_blocks[split..].to_vec() };
                let half = s.with_blocks(blocks);
                (half.total_count() > 0.0).then_some(half)
            })
            .collect()
    };
    [cut(true), cut(false)]
}

/// Region populations of each unbiased series (MD walker): the fraction of its samples in each
/// of `regions` regions (a sample whose region is out of range counts in none). Independent
/// series are the blocks of a batch-means error (`metrics::batch_means`).
pub fn series_region_fractions(
    states: &[BiasedSamples],
    regions: usize,
    region_of: impl Fn([f64; 2]) -> usize,
) -> Vec<Vec<f64>> {
    states
        .iter()
        .map(|s| {
            let mut p = vec![0.0; regions];
            for x in &s.samples {
                if let Some(slot) = p.get_mut(region_of(*x)) {
                    *slot += 1.0 / s.samples.len() as f64;
                }
            }
            p
        })
        .collect()
}

/// Binned WHAM on the same samples, on the `bins` x `bins` dihedral grid with each bias at the bin
/// centres: the estimator MBAR replaces, for comparison. Errors on unequal springs on the two
/// angles and as [`crate::md::wham::wham`] does.
pub fn binned_wham(states: &[BiasedSamples], bins: usize) -> Result<crate::md::wham::WhamResult> {
    use crate::md::wham::{periodic_harmonic_bias_2d_kt, UmbrellaWindow, WhamConfig};
    let axis = crate::metrics::histogram::Axis::dihedral(bins)?;
    let centres = axis.centres();
    let mut windows = Vec::with_capacity(states.len());
    for s in states {
        let mut counts = vec![0.0; bins * bins];
        for (n, x) in s.samples.iter().enumerate() {
            if let (Some(i), Some(j)) = (axis.bin_of(x[0]), axis.bin_of(x[1])) {
                counts[i * bins + j] += s.count(n);
            }
        }
        let [k0, k1] = s.bias.spring_kt_per_rad2;
        if k0 != k1 {
            return Err(Error::invalid("binned WHAM here takes equal springs on both angles"));
        }
        windows.push(UmbrellaWindow::new(
            periodic_harmonic_bias_2d_kt(s.bias.centre_rad, k0, &centres, &centres)?,
            counts,
        )?);
    }
    WhamConfig::default().solve(&windows)
}

/// Region populations of bin probabilities on the `bins` x `bins` dihedral grid, each bin counted
/// in the region of its centre.
pub fn grid_region_populations(
    p: &[f64],
    bins: usize,
    regions: usize,
    region_of: impl Fn([f64; 2]) -> usize,
) -> Result<Vec<f64>> {
    let centres = crate::metrics::histogram::Axis::dihedral(bins)?.centres();
    if p.len() != bins * bins {
        return Err(Error::invalid(format!("{} probabilities for a {bins} x {bins} grid", p.len())));
    }
    let mut out = vec![0.0; regions];
    for (i, ci) in centres.iter().enumerate() {
        for (j, cj) in centres.iter().enumerate() {
            if let Some(slot) = out.get_mut(region_of([*ci, *cj])) {
                *slot += p[i * bins + j];
            }
        }
    }
    Ok(out)
}

/// One block-bootstrap resample of the states: each state's series cut into `blocks` contiguous
/// blocks (the last takes the remainder), drawn with replacement to the same count. A binned
/// state draws as many of its own blocks ([`BiasedSamples::count_blocks`]) with replacement.
pub fn block_resample<R: rand::Rng>(states: &[BiasedSamples], blocks: usize, rng: &mut R) -> Vec<BiasedSamples> {
    states
        .iter()
        .map(|s| {
            if !s.count_blocks.is_empty() {
                let drawn: Vec<Vec<f64>> = (0..s.count_blocks.len())
                    .map(|_| s.count_blocks[rng.gen_range(0..s.count_blocks.len())].clone())
                    .collect();
                return s.with_blocks(drawn);
            }
            let n = s.samples.len();
            let blocks = blocks.clamp(1, n);
            let size = n / blocks;
            let mut picked = Vec::with_capacity(n);
            while picked.len() < n {
                let b = rng.gen_range(0..blocks);
                let end = if b + 1 == blocks { n } else { (b + 1) * size };
                let take = (end - b * size).min(n - picked.len());
                picked.extend(b * size..b * size + take);
            }
            BiasedSamples {
                samples: picked.iter().map(|&i| s.samples[i]).collect(),
                counts: if s.counts.is_empty() { vec![] } else { picked.iter().map(|&i| s.counts[i]).collect() },
                ..s.clone()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn two_states_on_a_flat_surface_recover_the_ratio_of_their_partition_functions() {
        // A flat p and two restraints, one four times as stiff: Z_k = 2 pi / k (two Gaussian
        // integrals; the tails beyond pi are below 1e-40 for these springs), so f_1 - f_0 = ln 4.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let springs = [20.0, 80.0];
        let states: Vec<BiasedSamples> = springs
            .iter()
            .map(|&k| {
                let normal = rand_distr::Normal::new(0.0, (1.0f64 / k).sqrt()).expect("normal");
                let samples = (0..20_000)
                    .map(|_| {
                        [
                            rand_distr::Distribution::sample(&normal, &mut rng),
                            rand_distr::Distribution::sample(&normal, &mut rng),
                        ]
                    })
                    .collect();
                BiasedSamples::new(HarmonicBias2d { centre_rad: [0.0, 0.0], spring_kt_per_rad2: [k, k] }, samples)
            })
            .collect();
        let s = solve(&states, &MbarConfig::default(), None).expect("solve");
        assert!(s.converged, "{s:?}");
        let exact = (springs[1] / springs[0]).ln();
        assert!((s.free_energies_kt[1] - exact).abs() < 0.03, "{} vs {exact}", s.free_energies_kt[1]);
    }

    #[test]
    fn bad_states_are_refused() {
        let ok = BiasedSamples::new(HarmonicBias2d::UNBIASED, vec![[0.0, 0.0]]);
        assert!(solve(&[], &MbarConfig::default(), None).is_err());
        let empty = BiasedSamples { samples: vec![], ..ok.clone() };
        assert!(solve(&[ok.clone(), empty], &MbarConfig::default(), None).is_err());
        let nan = BiasedSamples { samples: vec![[f64::NAN, 0.0]], ..ok.clone() };
        assert!(solve(&[nan], &MbarConfig::default(), None).is_err());
        let negative = BiasedSamples {
            bias: HarmonicBias2d { centre_rad: [0.0, 0.0], spring_kt_per_rad2: [-1.0, 0.0] },
            ..ok.clone()
        };
        assert!(solve(&[negative], &MbarConfig::default(), None).is_err());
        assert!(solve(std::slice::from_ref(&ok), &MbarConfig::default(), Some(&[0.0, 1.0])).is_err());
    }
}
