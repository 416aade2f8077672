//! A Boltzmann generator for the 2D Ising model: a real NVP on the Hubbard-Stratonovich field x
//! ([`IsingField`]), trained by example (Metropolis spin samples, each turned into a field sample
//! by x ~ p(x | s)) and then by example and energy, with spins drawn from p(s | x). The joint
//! proposal q(x) p(s | x) has importance weight exp(-u(x)) / q(x), so the reweighted estimates
//! of <E>, <|M|> and ln Z are exact in expectation for the spin model.

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::bg::{train_by_example_then_energy, Schedule};
use super::flow::{CouplingKind, Flow, FlowSpec, Precision};
use super::train::{EnergyLossConfig, PotentialTarget, TargetEnergy};
use crate::energy::ising::{Ising, IsingExact, IsingField, MAX_ENUMERATED_SITES, MAX_TRANSFER_SIZE};
use crate::energy::toy::evaluate_batch;
use crate::error::{Error, Result};
use crate::metrics::weights::effective_sample_size;

/// Generator samples per flow call when evaluating.
const EVAL_CHUNK: usize = 4096;

/// Settings of an Ising generator run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IsingBgConfig {
    /// Lattice size L (L x L spins, periodic).
    pub size: usize,
    /// Temperature, J / k_B.
    pub temperature: f64,
    /// Coupling J.
    pub coupling_j: f64,
    /// Field h.
    pub field_h: f64,
    /// Margin of the relaxation's diagonal shift over 4 |J| / T.
    pub margin: f64,
    /// Seed of everything.
    pub seed: u64,
    /// Affine coupling layers.
    pub layers: usize,
    /// Conditioner hidden units.
    pub hidden: usize,
    /// Metropolis samples (training data).
    pub mc_samples: usize,
    /// Sweeps between Metropolis samples.
    pub mc_thin_sweeps: usize,
    /// Steps of training by example.
    pub ml_steps: usize,
    /// Steps of training by example and energy.
    pub mixed_steps: usize,
    /// Batch size.
    pub batch: usize,
    /// Learning rate.
    pub lr: f64,
    /// Weight of the example term in J = J_KL + alpha J_ML.
    pub alpha: f64,
    /// Generator samples for the reweighted estimates.
    pub eval_samples: usize,
}

impl IsingBgConfig {
    /// Defaults that train an L = 4 generator in seconds on two cores.
    pub fn fast(size: usize, temperature: f64) -> Self {
        Self {
            size,
            temperature,
            coupling_j: 1.0,
            field_h: 0.0,
            margin: 0.5,
            seed: 1,
            layers: 8,
            hidden: 64,
            mc_samples: 20_000,
            mc_thin_sweeps: 2,
            ml_steps: 1500,
            mixed_steps: 500,
            batch: 256,
            lr: 1e-3,
            alpha: 1.0,
            eval_samples: 40_000,
        }
    }

    /// Errors on settings that cannot run.
    pub fn validate(&self) -> Result<()> {
        Ising::new(self.size, self.coupling_j, self.field_h)?;
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(Error::invalid(format!(
                "the temperature must be finite and positive, got {}",
                self.temperature
            )));
        }
        if self.layers == 0 || self.hidden == 0 || self.batch == 0 || self.eval_samples < 2 || self.mc_samples == 0 {
            return Err(Error::invalid("layers, hidden, batch, mc_samples and eval_samples (>= 2) must be positive"));
        }
        if self.mc_thin_sweeps == 0 {
            return Err(Error::invalid("mc_thin_sweeps must be positive"));
        }
        if !(self.lr.is_finite() && self.lr > 0.0 && self.alpha.is_finite() && self.alpha >= 0.0) {
            return Err(Error::invalid("the learning rate must be positive and alpha non-negative"));
        }
        Ok(())
    }
}

/// A reweighted estimate with its standard error.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// The estimate.
    pub value: f64,
    /// Its standard error (delta method over the importance weights).
    pub standard_error: f64,
}

/// The generator's reweighted estimates.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct IsingEstimates {
    /// <E> (from E[E(s) | x], exact given x).
    pub mean_energy: Estimate,
    /// <|M|> (spins drawn from p(s | x)).
    pub mean_abs_magnetisation: Estimate,
    /// ln Z of the spins.
    pub log_z: Estimate,
    /// Free energy -T ln Z.
    pub free_energy: Estimate,
    /// Kish effective sample size of the weights.
    pub ess: f64,
    /// Generator samples reweighted.
    pub samples: usize,
}

/// Everything a run produces.
#[derive(Debug)]
pub struct IsingBgOutcome {
    /// The trained flow (over the field x).
    pub flow: Flow,
    /// Reweighted estimates.
    pub estimates: IsingEstimates,
    /// Exact values: by enumeration (L² <= 20), else Kaufman's ln Z and <E> (h = 0) with the
    /// transfer matrix's |M| distribution (L <= 8; no energy distribution); `None` otherwise.
    pub exact: Option<IsingExact>,
    /// Metropolis spin samples (training data), flat `[sample][site]`.
    pub mc_spins: Vec<i8>,
    /// Generated spin samples (one per generator sample), flat `[sample][site]`.
    pub generated_spins: Vec<i8>,
    /// Log importance weights of the generated samples.
    pub log_weights: Vec<f64>,
    /// (step, loss) of training.
    pub history: Vec<(usize, f64)>,
    /// Spin-flip proposals of Metropolis plus field energy evaluations of training and reweighting.
    pub evaluations: u64,
}

/// Exact values for the run's model: enumeration where it fits, else Kaufman's closed form.
pub fn exact_values(ising: &Ising, temperature: f64) -> Result<Option<IsingExact>> {
    if ising.sites() <= MAX_ENUMERATED_SITES {
        return ising.enumerate(temperature).map(Some);
    }
    if ising.field_h() != 0.0 || ising.coupling_j() <= 0.0 {
        return Ok(None);
    }
    let log_z = ising.kaufman_log_z(temperature)?;
    let abs_m =
        if ising.size() <= MAX_TRANSFER_SIZE { ising.transfer_matrix_abs_magnetisation(temperature)? } else { vec![] };
    let mean_abs_magnetisation =
        if abs_m.is_empty() { f64::NAN } else { abs_m.iter().map(|&(m, p)| m as f64 * p).sum() };
    Ok(Some(IsingExact {
        temperature,
        log_z,
        free_energy: -temperature * log_z,
        mean_energy: ising.kaufman_mean_energy(temperature)?,
        mean_abs_magnetisation,
        energy_probabilities: vec![],
        abs_magnetisation_probabilities: abs_m,
    }))
}

fn flat(t: &Tensor) -> Result<Vec<f64>> {
    Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?)
}

/// Self-normalised importance estimate of <f> and its delta-method standard error.
fn weighted_mean(weights: &[f64], values: &[f64]) -> Estimate {
    let total: f64 = weights.iter().sum();
    let mean = weights.iter().zip(values).map(|(w, v)| w * v).sum::<f64>() / total;
    let variance = weights.iter().zip(values).map(|(w, v)| (w * (v - mean)).powi(2)).sum::<f64>() / (total * total);
    Estimate { value: mean, standard_error: variance.sqrt() }
}

/// Trains and evaluates the generator; `progress(step, total, loss)` after every training step.
pub fn run_ising_bg(config: &IsingBgConfig, progress: &mut dyn FnMut(usize, usize, f64)) -> Result<IsingBgOutcome> {
    config.validate()?;
    let ising = Ising::new(config.size, config.coupling_j, config.field_h)?;
    let field = IsingField::new(ising, config.temperature, config.margin)?;
    let n = ising.sites();
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);

    // Training data: Metropolis spins, each with a field sample drawn given it.
    let (mc_spins, mut evaluations) =
        ising.metropolis(config.temperature, config.mc_samples, config.mc_thin_sweeps, 100, &mut rng)?;
    let mut data: Vec<Vec<f64>> =
        mc_spins.chunks_exact(n).map(|s| field.sample_field_given_spins(s, &mut rng)).collect::<Result<_>>()?;

    let spec = FlowSpec {
        dims: n,
        circular: vec![],
        context: 0,
        layers: config.layers,
        coupling: CouplingKind::Affine { max_log_scale: 3.0 },
        hidden: config.hidden,
        blocks: 1,
        shift_every: 0,
        seed: config.seed,
        precision: Precision::F64,
    };
    let flow = Flow::new(&spec, &Device::Cpu)?;
    let target: Arc<dyn TargetEnergy> = Arc::new(PotentialTarget::new(field.clone()));
    let schedule = Schedule {
        ml_steps: config.ml_steps,
        mixed_steps: config.mixed_steps,
        batch: config.batch,
        lr: config.lr,
        alpha: config.alpha,
        energy: EnergyLossConfig { drop_top_k: 2, regularize_above: Some(1e3) },
    };
    let history = train_by_example_then_energy(&flow, &mut data, target.clone(), &schedule, &mut rng, progress)?;
    evaluations += target.evaluations();

    // Reweighting: fresh x, their weights, spins drawn given each x.
    let (mut fresh_x, mut log_q) = (Vec::new(), Vec::new());
    let mut remaining = config.eval_samples;
    while remaining > 0 {
        let chunk = remaining.min(EVAL_CHUNK);
        let (x, lq) = flow.sample(chunk, None, &mut rng)?;
        fresh_x.extend(flat(&x)?);
        log_q.extend(flat(&lq)?);
        remaining -= chunk;
    }
    let (u, _) = evaluate_batch(&field, &fresh_x)?;
    evaluations += u.len() as u64;
    let log_weights: Vec<f64> =
        u.iter().zip(&log_q).map(|(u, lq)| if u.is_finite() { -u - lq } else { f64::NEG_INFINITY }).collect();
    let ess = effective_sample_size(&log_weights)?;
    let largest = log_weights.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let weights: Vec<f64> = log_weights.iter().map(|lw| (lw - largest).exp()).collect();
    let mut generated_spins = Vec::with_capacity(config.eval_samples * n);
    let (mut energies, mut abs_m) = (Vec::with_capacity(weights.len()), Vec::with_capacity(weights.len()));
    for x in fresh_x.chunks_exact(n) {
        energies.push(field.mean_energy_given(x)?);
        let spins = field.sample_spins_given_field(x, &mut rng)?;
        abs_m.push(spins.iter().map(|&s| f64::from(s)).sum::<f64>().abs());
        generated_spins.extend(spins);
    }
    // ln Z_x = ln mean(w): delta-method error sd(w) / (sqrt(n) mean(w)).
    let count = weights.len() as f64;
    let mean_w = weights.iter().sum::<f64>() / count;
    let var_w = weights.iter().map(|w| (w - mean_w).powi(2)).sum::<f64>() / (count - 1.0);
    let log_z_field = largest + mean_w.ln();
    let log_z_se = (var_w / count).sqrt() / mean_w;
    let log_z = Estimate { value: field.log_z_spins(log_z_field), standard_error: log_z_se };
    let t = config.temperature;
    let estimates = IsingEstimates {
        mean_energy: weighted_mean(&weights, &energies),
        mean_abs_magnetisation: weighted_mean(&weights, &abs_m),
        log_z,
        free_energy: Estimate { value: -t * log_z.value, standard_error: t * log_z.standard_error },
        ess,
        samples: weights.len(),
    };
    Ok(IsingBgOutcome {
        flow,
        estimates,
        exact: exact_values(&ising, t)?,
        mc_spins,
        generated_spins,
        log_weights,
        history,
        evaluations,
    })
}
