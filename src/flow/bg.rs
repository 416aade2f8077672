//! Boltzmann generators on the toy systems of the second seed (Noé et al. 2019): a flow trained
//! by example on Metropolis samples, then by example and energy; importance weights, effective
//! sample size, and the free energy along a reaction coordinate against its exact curve.

use super::flow::{CouplingKind, Flow, FlowSpec, Precision};
use super::optim::{Adam, AdamConfig};
use super::train::{kl_loss, ml_loss, EnergyLossConfig, PotentialTarget, TargetEnergy};
use crate::energy::toy::{evaluate_batch, DoubleWell, HarmonicBox, MullerBrown, Potential};
use crate::error::{Error, Result};
use crate::md::metropolis::{sample_chains, MetropolisConfig};
use crate::metrics::quadrature::integrate;
use crate::metrics::weights::effective_sample_size;
use candle_core::{DType, Device, Tensor};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Samples per flow call when evaluating a trained generator.
const EVAL_CHUNK: usize = 4096;

/// The toy systems.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BgSystem {
    /// Noé's double well, u = x1^4/4 - 3 x1^2 + x1 + x2^2/2.
    DoubleWell,
    /// Harmonic oscillator in a box, k (x2 - x1)^2 with 0 <= x1 <= 1.
    HarmonicBox,
    /// Müller-Brown at beta = 0.1.
    MullerBrown,
}

impl BgSystem {
    fn potential(self) -> Box<dyn Potential> {
        match self {
            BgSystem::DoubleWell => Box::new(DoubleWell::default()),
            BgSystem::HarmonicBox => Box::new(HarmonicBox::default()),
            BgSystem::MullerBrown => Box::new(MullerBrown::default()),
        }
    }

    /// Metropolis chain starts: one per metastable state.
    fn starts(self) -> Vec<Vec<f64>> {
        match self {
            BgSystem::DoubleWell => match DoubleWell::default().minima() {
                Ok([a, b]) => vec![vec![a, 0.0], vec![b, 0.0]],
                Err(_) => vec![vec![-2.5, 0.0], vec![2.3, 0.0]],
            },
            BgSystem::HarmonicBox => vec![vec![0.5, 0.5]],
            BgSystem::MullerBrown => vec![vec![-0.56, 1.44], vec![0.62, 0.03], vec![-0.05, 0.47]],
        }
    }

    /// Reaction coordinate: x1 (double well, box) or s = x1 - x2 (Müller-Brown), with its range.
    pub fn coordinate(self, x: &[f64]) -> f64 {
        match self {
            BgSystem::MullerBrown => x[0] - x[1],
            _ => x[0],
        }
    }

    /// Range of the reaction coordinate for profiles.
    pub fn coordinate_range(self) -> (f64, f64) {
        match self {
            BgSystem::DoubleWell => (-3.5, 3.5),
            BgSystem::HarmonicBox => (0.0, 1.0),
            BgSystem::MullerBrown => (-2.5, 1.1),
        }
    }

    /// Exact unnormalised marginal density of the reaction coordinate.
    fn marginal(self, q: f64) -> f64 {
        match self {
            BgSystem::DoubleWell => (-DoubleWell::default().x1_energy(q)).exp(),
            BgSystem::HarmonicBox => {
                if (0.0..=1.0).contains(&q) {
                    1.0
                } else {
                    0.0
                }
            }
            BgSystem::MullerBrown => {
                let mb = MullerBrown::default();
                // s = x1 - x2, s_perp = x1 + x2; the Jacobian is a constant.
                integrate(|sp| (-mb.energy_cg(q, sp)).exp(), -6.0, 6.0, 1e-10)
            }
        }
    }
}

/// Settings of a Boltzmann-generator run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BgConfig {
    /// The system.
    pub system: BgSystem,
    /// Seed of everything.
    pub seed: u64,
    /// Coupling layers.
    pub layers: usize,
    /// Conditioner hidden units.
    pub hidden: usize,
    /// Spline bins.
    pub bins: usize,
    /// Metropolis samples per chain (training data).
    pub mc_samples_per_chain: usize,
    /// Metropolis proposal step.
    pub mc_step: f64,
    /// Proposals between recorded Metropolis samples.
    pub mc_thin: usize,
    /// Steps of training by example.
    pub ml_steps: usize,
    /// Steps of training by example + energy.
    pub mixed_steps: usize,
    /// Batch size.
    pub batch: usize,
    /// Learning rate.
    pub lr: f64,
    /// Weight alpha of J_ML in J = J_KL + alpha J_ML.
    pub alpha: f64,
    /// Energy-loss options.
    pub energy: EnergyLossConfig,
    /// Generator samples for reweighting.
    pub eval_samples: usize,
    /// Bins of the free-energy profile.
    pub profile_bins: usize,
}

impl BgConfig {
    /// Defaults that train in seconds on two cores.
    pub fn fast(system: BgSystem) -> Self {
        Self {
            system,
            seed: 1,
            layers: 6,
            hidden: 64,
            bins: 8,
            mc_samples_per_chain: 5000,
            mc_step: if system == BgSystem::HarmonicBox { 0.2 } else { 0.3 },
            mc_thin: 10,
            ml_steps: if system == BgSystem::HarmonicBox { 1200 } else { 400 },
            mixed_steps: if system == BgSystem::HarmonicBox { 0 } else { 400 },
            batch: 256,
            lr: 1e-3,
            alpha: 1.0,
            energy: EnergyLossConfig { drop_top_k: 2, regularize_above: Some(1e3) },
            eval_samples: 100_000,
            profile_bins: 50,
        }
    }
}

/// A free-energy profile along the reaction coordinate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// Bin centres.
    pub centres: Vec<f64>,
    /// -ln p of the reweighted generator samples (p normalised over the range; +inf if empty).
    pub estimate_kt: Vec<f64>,
    /// -ln p exact (bin-integrated, normalised over the range).
    pub exact_kt: Vec<f64>,
}

/// Everything a run produces.
#[derive(Debug)]
pub struct BgOutcome {
    /// The trained flow.
    pub flow: Flow,
    /// Training data x (flat, 2 per row) and their images z.
    pub data_x: Vec<f64>,
    /// Images of the data in z.
    pub data_z: Vec<f64>,
    /// Fresh base samples z and their images x.
    pub fresh_z: Vec<f64>,
    /// Images of the fresh z.
    pub fresh_x: Vec<f64>,
    /// Log importance weights -u(x) - log q(x) of the fresh samples (NaN-free; -inf outside support).
    pub log_weights: Vec<f64>,
    /// Kish effective sample size of the weights.
    pub ess: f64,
    /// Free energy along the reaction coordinate.
    pub profile: Profile,
    /// Double well only: (estimated, exact) population ratio left/right of the barrier.
    pub well_ratio: Option<(f64, f64)>,
    /// (step, loss) of training.
    pub history: Vec<(usize, f64)>,
    /// Energy evaluations: Metropolis data plus training plus reweighting.
    pub evaluations: u64,
}

fn rows_tensor(values: &[f64], dtype: DType) -> Result<Tensor> {
    Ok(Tensor::from_vec(values.to_vec(), (values.len() / 2, 2), &Device::Cpu)?.to_dtype(dtype)?)
}

fn flat(t: &Tensor) -> Result<Vec<f64>> {
    Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?)
}

/// The training schedule of a Boltzmann generator: by example, then by example and energy.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Schedule {
    /// Steps of J_ML alone.
    pub ml_steps: usize,
    /// Steps of J_KL + alpha J_ML after them.
    pub mixed_steps: usize,
    /// Batch size (at most the number of data rows).
    pub batch: usize,
    /// Adam's learning rate.
    pub lr: f64,
    /// Weight of J_ML in the mixed steps.
    pub alpha: f64,
    /// Options of the energy loss.
    pub energy: EnergyLossConfig,
}

/// Trains `flow` on the rows of `data` (reshuffled each epoch) and on `target` by `schedule`,
/// with Adam (gradient norm clipped at 100); `progress(step, total, loss)` after every step.
/// Returns (step, loss) of every step.
pub(crate) fn train_by_example_then_energy<T: AsRef<[f64]>>(
    flow: &Flow,
    data: &mut [T],
    target: Arc<dyn TargetEnergy>,
    schedule: &Schedule,
    rng: &mut ChaCha8Rng,
    progress: &mut dyn FnMut(usize, usize, f64),
) -> Result<Vec<(usize, f64)>> {
    let dims = flow.spec().dims;
    if data.is_empty() || data.iter().any(|row| row.as_ref().len() != dims) {
        return Err(Error::invalid(format!("training data must be non-empty rows of {dims} values")));
    }
    let mut adam = Adam::new(flow.params(), AdamConfig { max_grad_norm: Some(100.0), ..AdamConfig::default() });
    let total = schedule.ml_steps + schedule.mixed_steps;
    let batch = schedule.batch.min(data.len());
    let mut history = Vec::with_capacity(total);
    let mut cursor = data.len();
    for step in 0..total {
        if cursor + batch > data.len() {
            data.shuffle(rng);
            cursor = 0;
        }
        let x: Vec<f64> = data[cursor..cursor + batch].iter().flat_map(|row| row.as_ref().iter().copied()).collect();
        cursor += batch;
        let x = Tensor::from_vec(x, (batch, dims), &Device::Cpu)?.to_dtype(flow.dtype())?;
        let (ml, ml_report) = ml_loss(flow, &x, None)?;
        let (loss, value) = if step < schedule.ml_steps {
            (ml, ml_report.loss)
        } else {
            let (kl, kl_report, _) = kl_loss(flow, target.clone(), batch, None, None, &schedule.energy, rng)?;
            ((kl + (ml * schedule.alpha)?)?, kl_report.loss + schedule.alpha * ml_report.loss)
        };
        adam.step(flow.params(), &loss.backward()?, schedule.lr)?;
        history.push((step, value));
        progress(step + 1, total, value);
    }
    Ok(history)
}

/// Trains and evaluates a Boltzmann generator; `progress(step, total, loss)` is called after every
/// training step.
pub fn run_bg(config: &BgConfig, progress: &mut dyn FnMut(usize, usize, f64)) -> Result<BgOutcome> {
    if config.batch == 0 || config.eval_samples == 0 || config.profile_bins == 0 || config.mc_samples_per_chain == 0 {
        return Err(Error::invalid("batch, eval_samples, profile_bins and mc_samples_per_chain must be positive"));
    }
    let system = config.system;
    let potential = system.potential();
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    // Training data: Metropolis chains from each metastable state.
    let mc = MetropolisConfig { step_size: config.mc_step, thin: config.mc_thin, burn_in: 1000, seed: config.seed };
    let chains = sample_chains(potential.as_ref(), &system.starts(), config.mc_samples_per_chain, &mc)?;
    let mut evaluations: u64 = chains.iter().map(|c| c.evaluations).sum();
    let mut data: Vec<[f64; 2]> =
        chains.iter().flat_map(|c| c.samples.chunks_exact(2).map(|p| [p[0], p[1]]).collect::<Vec<_>>()).collect();
    let spec = FlowSpec {
        dims: 2,
        circular: vec![],
        context: 0,
        layers: config.layers,
        coupling: CouplingKind::Spline { bins: config.bins, tail_bound: 5.0 },
        hidden: config.hidden,
        blocks: 1,
        shift_every: 0,
        seed: config.seed,
        precision: Precision::F64,
    };
    let flow = Flow::new(&spec, &Device::Cpu)?;
    let target: Arc<dyn TargetEnergy> = Arc::new(PotentialTarget::new(system.potential()));
    let schedule = Schedule {
        ml_steps: config.ml_steps,
        mixed_steps: config.mixed_steps,
        batch: config.batch,
        lr: config.lr,
        alpha: config.alpha,
        energy: config.energy,
    };
    let history = train_by_example_then_energy(&flow, &mut data, target.clone(), &schedule, &mut rng, progress)?;
    evaluations += target.evaluations();
    // Images of the data, fresh samples and their importance weights.
    let data_x: Vec<f64> = data.iter().take(2000).flatten().copied().collect();
    let (z, _) = flow.inverse(&rows_tensor(&data_x, DType::F64)?, None)?;
    let data_z = flat(&z)?;
    // In chunks: one giant batch would allocate tensors of tens of MB, each served by fresh
    // zero-filled pages from the kernel (page faults then dominate).
    let (mut fresh_x, mut log_q, mut fresh_z) = (Vec::new(), Vec::new(), Vec::new());
    let mut remaining = config.eval_samples;
    while remaining > 0 {
        let n = remaining.min(EVAL_CHUNK);
        let (x, lq) = flow.sample(n, None, &mut rng)?;
        let (z, _) = flow.inverse(&x, None)?;
        fresh_x.extend(flat(&x)?);
        log_q.extend(flat(&lq)?);
        fresh_z.extend(flat(&z)?);
        remaining -= n;
    }
    let (u, _) = evaluate_batch(potential.as_ref(), &fresh_x)?;
    evaluations += u.len() as u64;
    let log_weights: Vec<f64> =
        u.iter().zip(&log_q).map(|(u, lq)| if u.is_finite() { -u - lq } else { f64::NEG_INFINITY }).collect();
    let ess = effective_sample_size(&log_weights)?;
    let profile = profile(system, &fresh_x, &log_weights, config.profile_bins)?;
    let well_ratio = if system == BgSystem::DoubleWell {
        let dw = DoubleWell::default();
        let barrier = dw.barrier()?;
        let max = log_weights.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let (mut left, mut right) = (0.0, 0.0);
        for (p, lw) in fresh_x.chunks_exact(2).zip(&log_weights) {
            let w = (lw - max).exp();
            if p[0] < barrier {
                left += w;
            } else {
                right += w;
            }
        }
        Some((left / right, crate::metrics::quadrature::double_well_well_ratio(&dw)?))
    } else {
        None
    };
    Ok(BgOutcome {
        flow,
        data_x,
        data_z,
        fresh_z,
        fresh_x,
        log_weights,
        ess,
        profile,
        well_ratio,
        history,
        evaluations,
    })
}

/// Reweighted and exact free-energy profiles along the system's reaction coordinate.
pub fn profile(system: BgSystem, x: &[f64], log_weights: &[f64], bins: usize) -> Result<Profile> {
    let (lo, hi) = system.coordinate_range();
    let width = (hi - lo) / bins as f64;
    let max = log_weights.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        return Err(Error::invalid("no sample has a finite importance weight"));
    }
    let mut mass = vec![0.0; bins];
    for (p, lw) in x.chunks_exact(2).zip(log_weights) {
        let q = system.coordinate(p);
        if q >= lo && q < hi {
            mass[((q - lo) / width) as usize % bins] += (lw - max).exp();
        }
    }
    let total: f64 = mass.iter().sum();
    let exact: Vec<f64> = (0..bins)
        .map(|b| integrate(|q| system.marginal(q), lo + b as f64 * width, lo + (b + 1) as f64 * width, 1e-10))
        .collect();
    let exact_total: f64 = exact.iter().sum();
    Ok(Profile {
        centres: (0..bins).map(|b| lo + (b as f64 + 0.5) * width).collect(),
        estimate_kt: mass.iter().map(|m| -(m / total).ln()).collect(),
        exact_kt: exact.iter().map(|m| -(m / exact_total).ln()).collect(),
    })
}
