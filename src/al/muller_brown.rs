//! The active-learning loop of the first seed on Müller-Brown (BRIEF section 5, MB settings):
//! a conditional affine flow q(s_perp | s) trained by energy at the CG training points,
//! importance-sampled PMF labels, a PMF ensemble, and the uncertainty search for new points.

use super::search::{farthest_point_selection, spread_points, uncertainty_search, CgDomain, SearchConfig};
use crate::energy::toy::MullerBrown;
use crate::error::{Error, Result};
use crate::flow::optim::{Adam, AdamConfig};
use crate::flow::train::{kl_loss, EnergyLossConfig, MullerBrownConditional, TargetEnergy};
use crate::flow::{Flow, FlowSpec};
use crate::metrics::quadrature::{muller_brown_bin_probabilities, muller_brown_pmf};
use crate::metrics::{kl_to_free_energy, Axis};
use crate::pmf::ensemble::{CgFeatures, EnsembleConfig, PmfEnsemble};
use crate::pmf::labels::labels_for_points;
use candle_core::{Device, Tensor};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The CG coordinate's range.
pub const S_RANGE: (f64, f64) = (-2.5, 1.1);

/// Settings of a Müller-Brown active-learning run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MbAlConfig {
    /// Seed of everything.
    pub seed: u64,
    /// Start points, drawn uniformly within `start_radius` of `start_centre` (one basin).
    pub start_points: usize,
    /// Centre of the start points.
    pub start_centre: f64,
    /// Half-width of the start region.
    pub start_radius: f64,
    /// Flow training steps per iteration (by energy).
    pub flow_steps: usize,
    /// CG points per flow training step.
    pub flow_batch: usize,
    /// Flow learning rate.
    pub flow_lr: f64,
    /// Samples per CG point for the PMF labels.
    pub label_samples: usize,
    /// Largest weights clipped per label.
    pub clip_top_k: usize,
    /// PMF ensemble.
    pub ensemble: EnsembleConfig,
    /// Uncertainty threshold (kT).
    pub threshold_kt: f64,
    /// Metropolis step of the search.
    pub search_step: f64,
    /// Search budget per iteration (steps over all chains); none found within it ends the run.
    pub search_steps: u64,
    /// Candidates collected per search.
    pub candidates: usize,
    /// New centres kept per iteration (farthest-point selection).
    pub new_points: usize,
    /// Points spread around each new centre.
    pub spread: usize,
    /// Half-width of the spread.
    pub spread_radius: f64,
    /// Fraction of the older points mixed into each iteration's flow training.
    pub old_fraction: f64,
    /// Upper bound on iterations.
    pub max_iterations: usize,
}

impl MbAlConfig {
    /// The seed's Müller-Brown settings (100 start points, 1 new point per iteration, threshold
    /// 0.4 kT, spread +-0.5 into 65 points), sized to run in about a minute on 2 cores.
    pub fn fast() -> Self {
        Self {
            seed: 1,
            start_points: 100,
            start_centre: -2.0,
            start_radius: 0.3,
            flow_steps: 300,
            flow_batch: 64,
            flow_lr: 3e-3,
            label_samples: 200,
            clip_top_k: 3,
            ensemble: EnsembleConfig { members: 10, hidden: vec![64, 32, 16], epochs: 600, ..EnsembleConfig::fast() },
            threshold_kt: 0.4,
            search_step: 0.1,
            search_steps: 20_000,
            candidates: 10,
            new_points: 1,
            spread: 65,
            spread_radius: 0.5,
            old_fraction: 0.3,
            max_iterations: 20,
        }
    }
}

/// One iteration of the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MbIteration {
    /// Iteration (0: start data).
    pub iteration: usize,
    /// CG training points so far.
    pub points: usize,
    /// Energy evaluations so far (flow training and labels).
    pub evaluations: u64,
    /// KL divergence of the ensemble-mean PMF to the exact one (100 bins).
    pub kld: f64,
    /// New centres found by the search (empty: the run has converged).
    pub new_centres: Vec<f64>,
    /// Root-mean-square error of the ensemble members on their held-out labels (kT): label noise
    /// plus fitting error.
    pub holdout_rmse_kt: f64,
    /// Root-mean-square error of the labels against the exact PMF (after the best constant shift).
    pub label_rmse_kt: f64,
}

/// Result of a run.
#[derive(Debug)]
pub struct MbAlOutcome {
    /// Per-iteration log.
    pub log: Vec<MbIteration>,
    /// All CG training points.
    pub points: Vec<f64>,
    /// The final PMF ensemble.
    pub ensemble: PmfEnsemble,
    /// The final conditional flow.
    pub flow: Flow,
    /// True when the search found no uncertain point within its budget.
    pub converged: bool,
}

fn feature(s: f64) -> f64 {
    2.0 * (s - S_RANGE.0) / (S_RANGE.1 - S_RANGE.0) - 1.0
}

fn context(s: &[f64]) -> Result<Tensor> {
    Ok(Tensor::from_vec(s.iter().map(|&v| feature(v)).collect::<Vec<_>>(), (s.len(), 1), &Device::Cpu)?)
}

/// Runs the loop; `progress` receives each iteration's log entry.
pub fn run_muller_brown(config: &MbAlConfig, progress: &mut dyn FnMut(&MbIteration)) -> Result<MbAlOutcome> {
    if config.start_points == 0 || config.flow_batch == 0 || config.label_samples <= config.clip_top_k {
        return Err(Error::invalid("start points and flow batch must be positive, label samples above clip_top_k"));
    }
    let domain = CgDomain::Interval { lo: S_RANGE.0, hi: S_RANGE.1 };
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let target = Arc::new(MullerBrownConditional::new(MullerBrown::default()));
    let dyn_target: Arc<dyn TargetEnergy> = target.clone();
    let spec = FlowSpec::muller_brown_conditional(config.seed);
    let flow = Flow::new(&spec, &Device::Cpu)?;
    let mut adam = Adam::new(flow.params(), AdamConfig { max_grad_norm: Some(100.0), ..AdamConfig::default() });
    let energy_config = EnergyLossConfig { drop_top_k: 2, regularize_above: Some(1e3) };
    let mut ensemble = PmfEnsemble::new(
        CgFeatures::Interval { lo: S_RANGE.0, hi: S_RANGE.1 },
        EnsembleConfig { seed: config.seed, ..config.ensemble.clone() },
        &Device::Cpu,
    )?;
    let reference = muller_brown_bin_probabilities(&MullerBrown::default(), 100);
    let centres = Axis::new(S_RANGE.0, S_RANGE.1, 100)?.centres();

    let (lo, hi) = (config.start_centre - config.start_radius, config.start_centre + config.start_radius);
    let mut newest: Vec<f64> = (0..config.start_points).map(|_| rng.gen_range(lo..hi)).collect();
    let mut older: Vec<f64> = Vec::new();
    let mut log = Vec::new();
    let mut converged = false;
    for iteration in 0..=config.max_iterations {
        // Flow training by energy on the newest points plus a fraction of the older ones.
        let mut pool = newest.clone();
        let mut old = older.clone();
        old.shuffle(&mut rng);
        pool.extend(old.iter().take((config.old_fraction * old.len() as f64).ceil() as usize));
        for _ in 0..config.flow_steps {
            let s: Vec<f64> = (0..config.flow_batch).map(|_| pool[rng.gen_range(0..pool.len())]).collect();
            let (loss, _, _) =
                kl_loss(&flow, dyn_target.clone(), s.len(), Some(&context(&s)?), Some(&s), &energy_config, &mut rng)?;
            adam.step(flow.params(), &loss.backward()?, config.flow_lr)?;
        }
        // Labels for the newest points (older ones keep theirs), then the ensemble.
        older.extend(newest.iter().copied());
        let all_points = older.clone();
        let mut labels = label_points(&flow, &dyn_target, &all_points, config, &mut rng)?;
        // A free energy is defined up to a constant: centre the labels so the networks fit the
        // shape, not a large offset.
        let offset = labels.iter().sum::<f64>() / labels.len() as f64;
        labels.iter_mut().for_each(|l| *l -= offset);
        let exact = muller_brown_pmf(&MullerBrown::default(), &all_points);
        let exact_offset = exact.iter().sum::<f64>() / exact.len() as f64;
        let label_rmse = (labels.iter().zip(&exact).map(|(l, e)| (l - e + exact_offset).powi(2)).sum::<f64>()
            / labels.len() as f64)
            .sqrt();
        let fit = ensemble.fit(&all_points, &labels)?;
        let holdout: Vec<f64> = fit.holdout_mse.iter().flatten().copied().collect();
        let holdout_rmse = (holdout.iter().sum::<f64>() / holdout.len().max(1) as f64).sqrt();
        let (mean, _) = ensemble.predict(&centres)?;
        let kld = kl_to_free_energy(&reference, &mean)?;
        // Search from the newest points for uncertain CG points.
        let starts: Vec<Vec<f64>> = newest.iter().rev().take(20).map(|&s| vec![s]).collect();
        let search = SearchConfig {
            step: config.search_step,
            threshold_kt: config.threshold_kt,
            wanted: config.candidates,
            max_steps: config.search_steps,
            seed: config.seed.wrapping_add(iteration as u64),
        };
        let mut model = |p: &[f64]| ensemble.predict(p);
        let found = uncertainty_search(&domain, &starts, &search, &mut model)?;
        let existing: Vec<Vec<f64>> = all_points.iter().map(|&s| vec![s]).collect();
        let picked = farthest_point_selection(&domain, &found.found, &existing, config.new_points);
        let entry = MbIteration {
            iteration,
            points: all_points.len(),
            evaluations: target.evaluations(),
            kld,
            new_centres: picked.iter().map(|p| p[0]).collect(),
            holdout_rmse_kt: holdout_rmse,
            label_rmse_kt: label_rmse,
        };
        progress(&entry);
        log.push(entry);
        if picked.is_empty() {
            converged = true;
            break;
        }
        newest = spread_points(&domain, &picked, config.spread, config.spread_radius, &mut rng)?
            .into_iter()
            .map(|p| p[0])
            .collect();
    }
    Ok(MbAlOutcome { log, points: older, ensemble, flow, converged })
}

/// Importance-sampled free energies of the CG points (labels recomputed with the current flow).
fn label_points<R: Rng>(
    flow: &Flow,
    target: &Arc<dyn TargetEnergy>,
    points: &[f64],
    config: &MbAlConfig,
    rng: &mut R,
) -> Result<Vec<f64>> {
    let m = config.label_samples;
    let mut labels = Vec::with_capacity(points.len());
    for chunk in points.chunks(64) {
        let s: Vec<f64> = chunk.iter().flat_map(|&v| std::iter::repeat(v).take(m)).collect();
        let (x, log_q) = flow.sample(s.len(), Some(&context(&s)?), rng)?;
        let x: Vec<f64> = x.flatten_all()?.to_vec1()?;
        let log_q: Vec<f64> = log_q.to_vec1()?;
        let (u, _) = target.energies_and_gradients(&x, Some(&s))?;
        let log_p: Vec<f64> = u.iter().map(|u| -u).collect();
        labels.extend(labels_for_points(&log_p, &log_q, m, config.clip_top_k)?.iter().map(|l| l.free_energy_kt));
    }
    Ok(labels)
}
