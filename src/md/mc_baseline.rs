//! The Monte Carlo baseline of the Müller-Brown tests: the KL divergence of a growing Metropolis
//! histogram over `s = x1 - x2` to the exact PMF (quadrature), against energy evaluations.
//!
//! A run is `chains` independent Metropolis chains from one start (as a user would start them, in
//! one basin), `steps_per_chain` proposals each, no burn-in, every state recorded: after `t`
//! proposals per chain the run has made `chains * (t + 1)` energy evaluations (the start counts)
//! and its histogram holds `chains * t` states. Several runs with different seeds give independent
//! curves, averaged point by point. Chain `c` of run `r` is stream `c` of seed `seed + r`
//! ([`crate::md::metropolis::sample_visit`]), so the result does not depend on the thread count.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::energy::toy::MullerBrown;
use crate::error::{Error, Result};
use crate::md::metropolis::{sample_visit, MetropolisConfig};
use crate::metrics::cost_curve::{log_spaced_frames, mean_curve, CostPoint};
use crate::metrics::quadrature::muller_brown_bin_probabilities;
use crate::metrics::{Axis, BinGrid, EmptyBinRule, KlReference};

/// Settings of the Müller-Brown Metropolis baseline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MbMcConfig {
    /// Independent runs (averaged).
    pub runs: usize,
    /// Chains per run.
    pub chains: usize,
    /// Proposals per chain.
    pub steps_per_chain: usize,
    /// Standard deviation of the Gaussian proposal in x1 and x2.
    pub step_size: f64,
    /// Start of every chain, (x1, x2).
    pub start: [f64; 2],
    /// Seed of run 0; run `r` uses `seed + r`.
    pub seed: u64,
    /// Points of the curve per decade of evaluations.
    pub per_decade: usize,
}

impl Default for MbMcConfig {
    /// 8 runs of 16 chains of 62,500 proposals (1e6 evaluations per run), step 0.1, from the global
    /// minimum (-0.558, 1.442), seed 1, 10 points per decade.
    fn default() -> Self {
        MbMcConfig {
            runs: 8,
            chains: 16,
            steps_per_chain: 62_500,
            step_size: 0.1,
            start: [-0.558, 1.442],
            seed: 1,
            per_decade: 10,
        }
    }
}

/// The curves of a baseline run, one set per empty-bin rule.
#[derive(Debug, Clone, PartialEq)]
pub struct McCostCurves {
    /// The rules, in the order given.
    pub rules: Vec<EmptyBinRule>,
    /// `runs[rule][run]`: each run's curve.
    pub runs: Vec<Vec<Vec<CostPoint>>>,
    /// `mean[rule]`: the pointwise mean over runs.
    pub mean: Vec<Vec<CostPoint>>,
    /// Accepted proposals over all proposals of all chains.
    pub acceptance_rate: f64,
    /// Energy evaluations of one run.
    pub evaluations_per_run: u64,
    /// States that fell outside the histogram range, over all states.
    pub outside_fraction: f64,
}

/// The exact reference of the Müller-Brown tests: bin probabilities over `s` in `[-2.5, 1.1]`
/// ([`muller_brown_bin_probabilities`]) on a non-periodic line of `bins` bins, unsmoothed.
///
/// ```
/// use cgflow::energy::toy::MullerBrown;
/// use cgflow::md::mc_baseline::muller_brown_reference;
/// let r = muller_brown_reference(&MullerBrown::default(), 100).unwrap();
/// assert_eq!(r.probabilities().len(), 100);
/// ```
pub fn muller_brown_reference(mb: &MullerBrown, bins: usize) -> Result<KlReference> {
    if bins == 0 {
        return Err(Error::invalid("the Müller-Brown reference needs at least one bin"));
    }
    KlReference::new(&muller_brown_bin_probabilities(mb, bins), BinGrid::Line { bins, periodic: false }, 0.0)
}

/// What one chain leaves: its histogram after each checkpoint, accepted and outside counts.
struct ChainOutcome {
    snapshots: Vec<Vec<f64>>,
    accepted: u64,
    proposals: u64,
    outside: u64,
}

/// Runs one chain and snapshots its histogram of `s` after each checkpoint (proposals done).
fn run_one(
    mb: &MullerBrown,
    axis: &Axis,
    config: &MbMcConfig,
    run: usize,
    chain: usize,
    checkpoints: &[usize],
) -> Result<ChainOutcome> {
    let metropolis =
        MetropolisConfig { step_size: config.step_size, thin: 1, burn_in: 0, seed: config.seed + run as u64 };
    let mut counts = vec![0.0; axis.bins];
    let mut snapshots = Vec::with_capacity(checkpoints.len());
    let (mut seen, mut outside) = (0usize, 0u64);
    let mut next = 0;
    let result = sample_visit(mb, &config.start, config.steps_per_chain, &metropolis, chain, &mut |x| {
        match axis.bin_of(x[0] - x[1]) {
            Some(i) => counts[i] += 1.0,
            None => outside += 1,
        }
        seen += 1;
        if next < checkpoints.len() && seen == checkpoints[next] {
            snapshots.push(counts.clone());
            next += 1;
        }
    })?;
    Ok(ChainOutcome { snapshots, accepted: result.accepted, proposals: result.proposals, outside })
}

/// The KLD-vs-evaluations curves of Metropolis Monte Carlo on Müller-Brown against `reference`
/// (a non-periodic line of bins over `s` in [`MullerBrown::S_RANGE`], e.g.
/// [`muller_brown_reference`]), under each of `rules`. Chains run on the available cores.
///
/// Errors when a setting is zero or invalid (runs, chains, steps, points per decade, step size, a
/// start of non-finite energy), when `rules` is empty or holds an invalid rule, when the reference
/// is not on a non-periodic line, and when a chain fails.
///
/// ```
/// use cgflow::energy::toy::MullerBrown;
/// use cgflow::md::mc_baseline::{muller_brown_mc_curves, muller_brown_reference, MbMcConfig};
/// use cgflow::metrics::EmptyBinRule;
/// let mb = MullerBrown::default();
/// let reference = muller_brown_reference(&mb, 100).unwrap();
/// let config = MbMcConfig { runs: 2, chains: 2, steps_per_chain: 1000, ..MbMcConfig::default() };
/// let curves = muller_brown_mc_curves(&mb, &reference, &config, &[EmptyBinRule::PseudoMass(1e-3)]).unwrap();
/// let mean = &curves.mean[0];
/// assert_eq!(mean.last().unwrap().evaluations, 2.0 * 1001.0);
/// assert_eq!(curves.evaluations_per_run, 2002);
/// ```
pub fn muller_brown_mc_curves(
    mb: &MullerBrown,
    reference: &KlReference,
    config: &MbMcConfig,
    rules: &[EmptyBinRule],
) -> Result<McCostCurves> {
    if config.runs == 0 || config.chains == 0 || config.steps_per_chain == 0 || config.per_decade == 0 {
        return Err(Error::invalid(format!(
            "Müller-Brown baseline: runs ({}), chains ({}), steps per chain ({}) and points per decade ({}) \
             must be positive",
            config.runs, config.chains, config.steps_per_chain, config.per_decade
        )));
    }
    if rules.is_empty() {
        return Err(Error::invalid("Müller-Brown baseline: no empty-bin rule given"));
    }
    let bins = match *reference.grid() {
        BinGrid::Line { bins, periodic: false } => bins,
        other => {
            return Err(Error::invalid(format!(
                "Müller-Brown baseline: the reference must be on a line of bins over s, not {other:?}"
            )))
        }
    };
    let axis = Axis::new(MullerBrown::S_RANGE.0, MullerBrown::S_RANGE.1, bins)?;
    let checkpoints = log_spaced_frames(1, config.steps_per_chain, config.per_decade);
    let tasks = config.runs * config.chains;
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).min(tasks);
    let next = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<Result<ChainOutcome>>>> = (0..tasks).map(|_| Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| loop {
                    let task = next.fetch_add(1, Ordering::Relaxed);
                    if task >= tasks {
                        break;
                    }
                    let outcome = run_one(mb, &axis, config, task / config.chains, task % config.chains, &checkpoints);
                    if let Ok(mut slot) = slots[task].lock() {
                        *slot = Some(outcome);
                    }
                })
            })
            .collect();
        // Joined by hand so that a panic in a chain becomes an error, not a panic here.
        for handle in handles {
            let _ = handle.join();
        }
    });
    let outcomes = slots
        .into_iter()
        .enumerate()
        .map(|(task, slot)| match slot.into_inner() {
            Ok(Some(outcome)) => outcome,
            _ => Err(Error::invalid(format!("Müller-Brown baseline: chain task {task} did not finish"))),
        })
        .collect::<Result<Vec<_>>>()?;
    let (accepted, proposals, outside) =
        outcomes.iter().fold((0, 0, 0), |(a, p, o), c| (a + c.accepted, p + c.proposals, o + c.outside));
    let mut runs = vec![Vec::with_capacity(config.runs); rules.len()];
    for run in outcomes.chunks_exact(config.chains) {
        let mut curves = vec![Vec::with_capacity(checkpoints.len()); rules.len()];
        for (k, &t) in checkpoints.iter().enumerate() {
            let mut counts = vec![0.0; bins];
            for chain in run {
                for (c, s) in counts.iter_mut().zip(&chain.snapshots[k]) {
                    *c += s;
                }
            }
            let evaluations = (config.chains * (t + 1)) as f64;
            for (curve, rule) in curves.iter_mut().zip(rules) {
                curve.push(CostPoint { evaluations, kld: reference.kl_to_counts(&counts, *rule)? });
            }
        }
        for (per_rule, curve) in runs.iter_mut().zip(curves) {
            per_rule.push(curve);
        }
    }
    let mean = runs.iter().map(|r| mean_curve(r)).collect::<Result<Vec<_>>>()?;
    Ok(McCostCurves {
        rules: rules.to_vec(),
        runs,
        mean,
        acceptance_rate: accepted as f64 / proposals.max(1) as f64,
        evaluations_per_run: (config.chains * (config.steps_per_chain + 1)) as u64,
        outside_fraction: outside as f64 / proposals.max(1) as f64,
    })
}
