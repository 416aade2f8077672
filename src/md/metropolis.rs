//! Seeded Metropolis Monte Carlo for the analytic toy potentials ([`crate::energy::toy::Potential`]).
//!
//! Each step proposes `x' = x + step_size * N(0, I)` and accepts it with probability
//! `min(1, exp(-(u(x') - u(x))))`; a proposal with `u = +inf` is always rejected. A chain makes
//! `burn_in + n_samples * thin` proposals and records its state after every `thin`-th proposal
//! past the burn-in. Every proposal costs exactly one energy evaluation, plus one for the start.
//!
//! Chains are reproducible: chain `i` of [`sample_chains`] draws from
//! `ChaCha8Rng::seed_from_u64(seed)` on stream `i` (so [`sample`] is chain 0), independent of how
//! the chains are spread over threads.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use crate::energy::toy::Potential;
use crate::error::{Error, Result};

/// Settings of a Metropolis run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetropolisConfig {
    /// Standard deviation of the Gaussian proposal in every dimension (finite, positive).
    pub step_size: f64,
    /// Proposals between recorded samples (at least 1).
    pub thin: usize,
    /// Proposals made and discarded before the first of them.
    pub burn_in: usize,
    /// Seed of the random streams.
    pub seed: u64,
}

impl Default for MetropolisConfig {
    /// `step_size = 0.1`, `thin = 1`, `burn_in = 0`, `seed = 0`.
    fn default() -> Self {
        Self { step_size: 0.1, thin: 1, burn_in: 0, seed: 0 }
    }
}

impl MetropolisConfig {
    fn validate(&self) -> Result<()> {
        if !(self.step_size.is_finite() && self.step_size > 0.0) {
            return Err(Error::invalid(format!("Metropolis step size {} must be finite and positive", self.step_size)));
        }
        if self.thin == 0 {
            return Err(Error::invalid("Metropolis thin must be at least 1"));
        }
        Ok(())
    }
}

/// The outcome of one Metropolis chain.
#[derive(Debug, Clone, PartialEq)]
pub struct MetropolisResult {
    /// Recorded states, flat `[sample][dim]`.
    pub samples: Vec<f64>,
    /// Dimension of a state.
    pub dim: usize,
    /// Proposals made (burn-in included).
    pub proposals: u64,
    /// Proposals accepted (burn-in included).
    pub accepted: u64,
    /// `accepted / proposals` (0 when no proposal was made).
    pub acceptance_rate: f64,
    /// Energy evaluations: one for the start plus one per proposal.
    pub evaluations: u64,
}

impl MetropolisResult {
    /// Number of recorded samples.
    pub fn len(&self) -> usize {
        self.samples.len() / self.dim.max(1)
    }

    /// Whether no sample was recorded.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Sample `i`, if there is one.
    pub fn sample(&self, i: usize) -> Option<&[f64]> {
        self.samples.get(i * self.dim..(i + 1) * self.dim)
    }
}

/// Checks the start of chain `chain` and returns its energy.
fn start_energy(p: &dyn Potential, start: &[f64], chain: usize) -> Result<f64> {
    let dim = p.dim();
    if dim == 0 {
        return Err(Error::invalid("Metropolis: the potential has dimension 0"));
    }
    if start.len() != dim {
        return Err(Error::invalid(format!(
            "Metropolis chain {chain}: start has {} coordinates, the potential {dim}",
            start.len()
        )));
    }
    if let Some(i) = start.iter().position(|v| !v.is_finite()) {
        return Err(Error::invalid(format!("Metropolis chain {chain}: start coordinate {i} is {}", start[i])));
    }
    let u = p.energy(start);
    if !u.is_finite() {
        return Err(Error::invalid(format!("Metropolis chain {chain}: the start has energy {u}; it must be finite")));
    }
    Ok(u)
}

/// Runs one chain from a start already checked by [`start_energy`], handing every recorded state
/// to `visit`; the returned result holds no samples.
fn run_chain_visit(
    p: &dyn Potential,
    start: &[f64],
    u_start: f64,
    n_samples: usize,
    config: &MetropolisConfig,
    chain: usize,
    visit: &mut dyn FnMut(&[f64]),
) -> Result<MetropolisResult> {
    let dim = start.len();
    n_samples
        .checked_mul(dim)
        .ok_or_else(|| Error::invalid(format!("Metropolis: {n_samples} samples of dimension {dim} overflow")))?;
    let total = (n_samples as u64)
        .checked_mul(config.thin as u64)
        .and_then(|n| n.checked_add(config.burn_in as u64))
        .ok_or_else(|| Error::invalid("Metropolis: the number of proposals overflows"))?;
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    rng.set_stream(chain as u64);
    let mut x = start.to_vec();
    let mut proposal = vec![0.0; dim];
    let mut u = u_start;
    let mut accepted = 0u64;
    for step in 1..=total {
        for (y, xi) in proposal.iter_mut().zip(&x) {
            let noise: f64 = rng.sample(StandardNormal);
            *y = xi + config.step_size * noise;
        }
        let u_new = p.energy(&proposal);
        if u_new.is_nan() {
            return Err(Error::invalid(format!(
                "Metropolis chain {chain}: the energy is NaN at proposal {step} ({proposal:?})"
            )));
        }
        let threshold: f64 = rng.gen();
        if u_new <= u || threshold < (u - u_new).exp() {
            std::mem::swap(&mut x, &mut proposal);
            u = u_new;
            accepted += 1;
        }
        if step > config.burn_in as u64 && (step - config.burn_in as u64) % config.thin as u64 == 0 {
            visit(&x);
        }
    }
    Ok(MetropolisResult {
        samples: Vec::new(),
        dim,
        proposals: total,
        accepted,
        acceptance_rate: if total == 0 { 0.0 } else { accepted as f64 / total as f64 },
        evaluations: total + 1,
    })
}

/// Runs one chain from a start already checked by [`start_energy`], keeping its samples.
fn run_chain(
    p: &dyn Potential,
    start: &[f64],
    u_start: f64,
    n_samples: usize,
    config: &MetropolisConfig,
    chain: usize,
) -> Result<MetropolisResult> {
    let capacity = n_samples.checked_mul(start.len()).ok_or_else(|| {
        Error::invalid(format!("Metropolis: {n_samples} samples of dimension {} overflow", start.len()))
    })?;
    let mut samples = Vec::with_capacity(capacity);
    let result = run_chain_visit(p, start, u_start, n_samples, config, chain, &mut |x| samples.extend_from_slice(x))?;
    Ok(MetropolisResult { samples, ..result })
}

/// Chain `chain` of [`sample_chains`] (random stream `chain` of `config.seed`) from `start`, with
/// every recorded state handed to `visit` instead of stored: for long chains whose samples are
/// only histogrammed. The returned result has the counts and an empty `samples`. Errors as
/// [`sample`] does.
///
/// ```
/// use cgflow::energy::toy::MullerBrown;
/// use cgflow::md::metropolis::{sample_chains, sample_visit, MetropolisConfig};
/// let mb = MullerBrown::default();
/// let config = MetropolisConfig { step_size: 0.1, thin: 2, burn_in: 5, seed: 3 };
/// let mut seen = Vec::new();
/// let run = sample_visit(&mb, &[0.6, 0.0], 40, &config, 1, &mut |x| seen.extend_from_slice(x)).unwrap();
/// let chains = sample_chains(&mb, &[vec![-0.5, 1.4], vec![0.6, 0.0]], 40, &config).unwrap();
/// assert_eq!(seen, chains[1].samples);
/// assert!(run.samples.is_empty() && run.evaluations == chains[1].evaluations);
/// ```
pub fn sample_visit(
    p: &dyn Potential,
    start: &[f64],
    n_samples: usize,
    config: &MetropolisConfig,
    chain: usize,
    visit: &mut dyn FnMut(&[f64]),
) -> Result<MetropolisResult> {
    config.validate()?;
    let u = start_energy(p, start, chain)?;
    run_chain_visit(p, start, u, n_samples, config, chain, visit)
}

/// One Metropolis chain of `n_samples` recorded states from `start` (the same chain as chain 0 of
/// [`sample_chains`] with this start).
///
/// Errors on a bad config (non-positive or non-finite step size, `thin = 0`), a start of the wrong
/// length, non-finite, or of non-finite energy, and on a NaN energy during the run.
///
/// ```
/// use cgflow::energy::toy::DoubleWell;
/// use cgflow::md::metropolis::{sample, MetropolisConfig};
/// let config = MetropolisConfig { step_size: 0.5, thin: 2, burn_in: 10, seed: 7 };
/// let run = sample(&DoubleWell::default(), &[-2.5, 0.0], 100, &config).unwrap();
/// assert_eq!(run.len(), 100);
/// assert_eq!(run.evaluations, 1 + 10 + 100 * 2);
/// assert!(run.acceptance_rate > 0.0 && run.acceptance_rate < 1.0);
/// ```
pub fn sample(
    p: &dyn Potential,
    start: &[f64],
    n_samples: usize,
    config: &MetropolisConfig,
) -> Result<MetropolisResult> {
    config.validate()?;
    let u = start_energy(p, start, 0)?;
    run_chain(p, start, u, n_samples, config, 0)
}

/// Independent Metropolis chains, one per start, `n_per_chain` recorded states each, run on the
/// available cores (`std::thread::scope`). Chain `i` uses random stream `i` of `config.seed`, so
/// the results do not depend on the thread count or scheduling. All starts are checked before any
/// chain runs; errors as [`sample`] does (naming the chain), and on an empty `starts`.
///
/// ```
/// use cgflow::energy::toy::MullerBrown;
/// use cgflow::md::metropolis::{sample, sample_chains, MetropolisConfig};
/// let mb = MullerBrown::default();
/// let config = MetropolisConfig { step_size: 0.1, thin: 1, burn_in: 0, seed: 3 };
/// let starts = vec![vec![-0.5, 1.4], vec![0.6, 0.0]];
/// let chains = sample_chains(&mb, &starts, 50, &config).unwrap();
/// assert_eq!(chains.len(), 2);
/// assert_eq!(chains[0], sample(&mb, &starts[0], 50, &config).unwrap());
/// ```
pub fn sample_chains(
    p: &dyn Potential,
    starts: &[Vec<f64>],
    n_per_chain: usize,
    config: &MetropolisConfig,
) -> Result<Vec<MetropolisResult>> {
    config.validate()?;
    if starts.is_empty() {
        return Err(Error::invalid("Metropolis: no chain starts given"));
    }
    let energies = starts.iter().enumerate().map(|(i, s)| start_energy(p, s, i)).collect::<Result<Vec<_>>>()?;
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).min(starts.len());
    let next = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<Result<MetropolisResult>>>> = starts.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= starts.len() {
                        break;
                    }
                    let result = run_chain(p, &starts[i], energies[i], n_per_chain, config, i);
                    if let Ok(mut slot) = slots[i].lock() {
                        *slot = Some(result);
                    }
                })
            })
            .collect();
        // Joined by hand so that a panicking potential becomes an error, not a panic here.
        for handle in handles {
            let _ = handle.join();
        }
    });
    slots
        .into_iter()
        .enumerate()
        .map(|(i, slot)| match slot.into_inner() {
            Ok(Some(result)) => result,
            _ => Err(Error::invalid(format!("Metropolis chain {i} did not finish (its thread panicked)"))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::energy::toy::{DoubleWell, EvaluationCounter};
    use crate::metrics::quadrature::double_well_well_ratio;

    /// u = |x|^2 / 2 in `dim` dimensions.
    struct Gaussian(usize);

    impl Potential for Gaussian {
        fn dim(&self) -> usize {
            self.0
        }

        fn energy(&self, x: &[f64]) -> f64 {
            0.5 * x.iter().map(|v| v * v).sum::<f64>()
        }

        fn energy_and_gradient(&self, x: &[f64], grad: &mut [f64]) -> f64 {
            grad.copy_from_slice(x);
            self.energy(x)
        }
    }

    /// Mean and its standard error from batch means (`batches` batches of consecutive samples).
    fn batch_mean(values: &[f64], batches: usize) -> (f64, f64) {
        let size = values.len() / batches;
        let means: Vec<f64> = values.chunks_exact(size).map(|c| c.iter().sum::<f64>() / size as f64).collect();
        let mean = means.iter().sum::<f64>() / batches as f64;
        let var = means.iter().map(|m| (m - mean) * (m - mean)).sum::<f64>() / (batches - 1) as f64;
        (mean, (var / batches as f64).sqrt())
    }

    #[test]
    fn gaussian_moments_match() {
        let p = Gaussian(2);
        let config = MetropolisConfig { step_size: 1.5, thin: 1, burn_in: 1000, seed: 11 };
        let starts = vec![vec![0.0, 0.0]; 4];
        let chains = sample_chains(&p, &starts, 200_000, &config).unwrap();
        for d in 0..2 {
            let xs: Vec<f64> = chains.iter().flat_map(|c| c.samples.iter().skip(d).step_by(2).copied()).collect();
            let squares: Vec<f64> = xs.iter().map(|x| x * x).collect();
            let (mean, mean_err) = batch_mean(&xs, 80);
            let (var, var_err) = batch_mean(&squares, 80);
            assert!(mean.abs() < 5.0 * mean_err, "dim {d}: mean {mean} +- {mean_err}");
            assert!((var - 1.0).abs() < 5.0 * var_err, "dim {d}: <x^2> {var} +- {var_err}");
            assert!(mean_err < 0.01 && var_err < 0.01, "errors {mean_err} {var_err}");
        }
    }

    #[test]
    fn double_well_populations_match_quadrature() {
        let dw = DoubleWell::default();
        let exact = double_well_well_ratio(&dw).unwrap();
        let xb = dw.barrier().unwrap();
        let exact_right = 1.0 / (1.0 + exact);
        // The right well holds 0.83 % of the mass and the barrier is 11.6 kT above the left well,
        // so the sampler mixes by jumping: step 2.5 (acceptance 7.5 %) jumps between the wells
        // (4.9 apart). Measured spread of the right-well fraction: 4.8 % per chain of 2M proposals,
        // so 16 such chains give about 1.2 % and the 5 % tolerance is about 4 standard errors.
        let config = MetropolisConfig { step_size: 2.5, thin: 20, burn_in: 1000, seed: 5 };
        let starts: Vec<Vec<f64>> = (0..16).map(|i| vec![if i % 2 == 0 { -2.5 } else { 2.4 }, 0.0]).collect();
        let chains = sample_chains(&dw, &starts, 100_000, &config).unwrap();
        let (right, total) = chains.iter().fold((0usize, 0usize), |(r, t), c| {
            (r + c.samples.chunks_exact(2).filter(|x| x[0] > xb).count(), t + c.len())
        });
        let fraction = right as f64 / total as f64;
        assert!((fraction / exact_right - 1.0).abs() < 0.05, "right well {fraction} vs exact {exact_right}");
    }

    #[test]
    fn evaluations_are_counted_exactly() {
        let counted = EvaluationCounter::new(DoubleWell::default());
        let config = MetropolisConfig { step_size: 0.7, thin: 3, burn_in: 17, seed: 1 };
        let starts = vec![vec![-2.0, 0.0], vec![2.0, 0.0], vec![0.0, 1.0]];
        let chains = sample_chains(&counted, &starts, 1000, &config).unwrap();
        let reported: u64 = chains.iter().map(|c| c.evaluations).sum();
        assert_eq!(reported, 3 * (1 + 17 + 3000));
        assert_eq!(counted.count(), reported);
        assert!(chains.iter().all(|c| c.len() == 1000 && c.proposals == 3017));
    }

    #[test]
    fn bad_input_is_rejected() {
        let dw = DoubleWell::default();
        let ok = MetropolisConfig::default();
        assert!(sample(&dw, &[0.0], 10, &ok).is_err());
        assert!(sample(&dw, &[0.0, f64::NAN], 10, &ok).is_err());
        assert!(sample(&dw, &[0.0, 0.0], 10, &MetropolisConfig { thin: 0, ..ok }).is_err());
        assert!(sample(&dw, &[0.0, 0.0], 10, &MetropolisConfig { step_size: -1.0, ..ok }).is_err());
        assert!(sample_chains(&dw, &[], 10, &ok).is_err());
        let boxed = crate::energy::toy::HarmonicBox::default();
        let err = sample_chains(&boxed, &[vec![0.5, 0.5], vec![2.0, 0.0]], 10, &ok).unwrap_err();
        assert!(err.to_string().contains("chain 1"), "{err}");
    }
}
