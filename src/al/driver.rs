//! The active-learning driver (BRIEF section 5), for every problem behind [`AlProblem`]: a
//! conditional flow q(x_perp | s) trained at CG training points (by example on start-up data, then
//! by energy), importance-sampled PMF labels, a PMF ensemble, and the uncertainty search for new
//! CG points; and the grid-conditioning control experiment on the same machinery. A molecule
//! ([`super::molecule::MoleculeProblem`]: any OpenMM System and CG dihedrals, alanine dipeptide's
//! presets among them) is one problem.
//!
//! The run is a sequence of resumable steps: [`ActiveLearning::start`] (the problem's start-up,
//! e.g. MD and training by example) gives an [`AlState`], and each [`ActiveLearning::iterate`]
//! advances it by one iteration. Every random draw of an iteration comes from a generator seeded
//! by (seed, iteration), the optimiser and ensemble are part of the state, and the problem's
//! energies are reproducible (OpenMM runs one thread per Context), so a state saved after any step
//! and restored continues exactly as an uninterrupted run would.

use std::time::Instant;

use candle_core::{Device, Tensor};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::config::{AlConfig, EstimateWeights, FitWeights, LabelConfig, SearchStarts};
use super::problem::AlProblem;
use super::record::{AlEvent, AlIteration, CostBreakdown, PhaseTimes};
use super::search::{
    farthest_point_selection, grid_centres, spread_points, uncertainty_search, CgDomain, SearchConfig,
};
use crate::error::{Error, Result};
use crate::flow::optim::{Adam, AdamConfig};
use crate::flow::train::{kl_loss, EnergyLossConfig};
use crate::flow::Flow;
use crate::pmf::ensemble::{EnsembleConfig, PmfEnsemble};
use crate::pmf::labels::{label_or_none, with_mean_ess, WeightedLabel};

/// Which experiment a state belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlMode {
    /// The active-learning loop.
    ActiveLearning,
    /// Grid conditioning.
    Grid,
}

/// Everything a run needs to continue: the flow and its optimiser, the ensemble, the points,
/// the log and the costs.
pub struct AlState {
    /// Experiment.
    pub mode: AlMode,
    /// The marginal PMFs the last iteration's scoring computed (see
    /// [`super::problem::Score::marginal_pmfs`]; not saved in checkpoints).
    pub marginal_pmfs: Vec<((usize, usize), Vec<f64>)>,
    /// The next iteration to run.
    pub next_iteration: usize,
    /// The conditional flow.
    pub flow: Flow,
    /// Its optimiser.
    pub adam: Adam,
    /// The PMF ensemble.
    pub ensemble: PmfEnsemble,
    /// Points (CG angles in radians) and their roles.
    pub points: PointSets,
    /// Per-iteration log.
    pub log: Vec<AlIteration>,
    /// Energy evaluations by purpose.
    pub costs: CostBreakdown,
    /// Wall time of earlier sessions plus this one's up to the last step (s).
    pub wall_s: f64,
    /// e(minimum-energy structure) = u - ln|det dx/dz| there: the origin of the energy cut.
    pub reference_energy: f64,
    /// True once the search found no uncertain point (or the grid run is done).
    pub converged: bool,
}

/// CG points of a run (for a molecule: its CG angles in radians, one vector per point).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PointSets {
    /// All training points, oldest first.
    pub train: Vec<Vec<f64>>,
    /// All test points.
    pub test: Vec<Vec<f64>>,
    /// How many of the last training points are the newest (trained on in full).
    pub newest: usize,
    /// How many of the last test points are the newest.
    pub newest_test: usize,
    /// The latest free-energy label of every training point (kT; None: not labelled yet, or
    /// every sample was invalid).
    pub train_labels: Vec<Option<f64>>,
    /// The latest label of every test point.
    pub test_labels: Vec<Option<f64>>,
    /// Summed effective sample sizes behind each training label (with `accumulate`).
    pub train_label_ess: Vec<f64>,
    /// The centres picked by the last search (chain starts of the next one).
    pub last_centres: Vec<Vec<f64>>,
}

/// What the PMF ensemble is fitted to in one iteration (see [`PointSets::fit_set`]).
#[derive(Debug, Clone, PartialEq)]
pub struct FitSet {
    /// The labelled training points, flattened (radians).
    pub points: Vec<f64>,
    /// Their labels after the cap, centred on their mean (kT).
    pub labels: Vec<f64>,
    /// Each label's weight in the fit ([`LabelConfig::fit_weights`]).
    pub weights: Vec<f64>,
    /// The cap: the lowest label plus [`LabelConfig::cap_kt`] (kT; infinite without a cap).
    pub cap_kt: f64,
    /// Training points without a label (left out).
    pub unlabelled: usize,
}

impl PointSets {
    /// The ensemble's fit set: the labelled training points, their labels lowered to the cap and
    /// centred (a PMF is defined up to a constant, and the networks should fit its shape), and
    /// their weights. Errors when no training point has a label.
    pub fn fit_set(&self, labels: &LabelConfig) -> Result<FitSet> {
        let labelled: Vec<(usize, f64)> =
            self.train_labels.iter().enumerate().filter_map(|(i, l)| l.map(|f| (i, f))).collect();
        if labelled.is_empty() {
            return Err(Error::invalid("no training point could be labelled: every flow sample was invalid"));
        }
        let lowest = labelled.iter().map(|(_, l)| *l).fold(f64::INFINITY, f64::min);
        let cap_kt = labels.cap_kt.map_or(f64::INFINITY, |c| lowest + c);
        let capped: Vec<f64> = labelled.iter().map(|&(_, l)| l.min(cap_kt)).collect();
        let offset = capped.iter().sum::<f64>() / capped.len() as f64;
        let weights = match labels.fit_weights {
            FitWeights::Uniform => vec![1.0; labelled.len()],
            FitWeights::Ess => labelled.iter().map(|&(i, _)| self.train_label_ess[i]).collect(),
        };
        Ok(FitSet {
            points: labelled.iter().flat_map(|&(i, _)| self.train[i].iter().copied()).collect(),
            labels: capped.iter().map(|l| l - offset).collect(),
            weights,
            cap_kt,
            unlabelled: self.train_labels.len() - labelled.len(),
        })
    }
}

/// The experiment: the settings and the problem.
pub struct ActiveLearning {
    config: AlConfig,
    problem: Box<dyn AlProblem>,
}

/// An importance-sampling estimate of one CG point, or None where no sample had a non-zero weight.
type PointEstimate = Option<WeightedLabel>;

/// ln p and ln q of the samples drawn at one CG point.
type PointSamples = (Vec<f64>, Vec<f64>);

/// The importance-sampling estimate of each point from its samples' ln p and ln q (None where
/// there are none or every weight is zero).
fn estimates_from_samples(samples: &[PointSamples], clip_top_k: usize) -> Result<Vec<PointEstimate>> {
    samples
        .iter()
        .map(|(log_p, log_q)| if log_p.is_empty() { Ok(None) } else { label_or_none(log_p, log_q, clip_top_k) })
        .collect()
}

fn deg(p: &[f64]) -> Vec<f64> {
    p.iter().map(|a| a.to_degrees()).collect()
}

fn flat(points: &[Vec<f64>]) -> Vec<f64> {
    points.iter().flat_map(|p| p.iter().copied()).collect()
}

impl ActiveLearning {
    /// Sets up the experiment `config` on `problem`. Errors on invalid settings and on a search
    /// start of the wrong dimension.
    pub fn new(config: AlConfig, problem: Box<dyn AlProblem>) -> Result<Self> {
        config.validate()?;
        let dims = problem.cg_dims();
        if let Some(start) = config.search.start_deg.as_ref().filter(|s| s.len() != dims) {
            return Err(Error::invalid(format!(
                "search.start_deg has {} angles; the problem has {dims} CG dimensions",
                start.len()
            )));
        }
        Ok(Self { config, problem })
    }

    /// The settings.
    pub fn config(&self) -> &AlConfig {
        &self.config
    }

    /// The problem.
    pub fn problem(&self) -> &dyn AlProblem {
        self.problem.as_ref()
    }

    /// A fresh flow, optimiser and ensemble of this experiment (also the shapes a saved state is
    /// loaded into).
    pub fn fresh_models(&self) -> Result<(Flow, Adam, PmfEnsemble)> {
        let flow = Flow::new(&self.problem.flow_spec(&self.config), &Device::Cpu)?;
        let adam = self.adam_for(&flow);
        let ensemble = PmfEnsemble::new(
            self.problem.features(),
            EnsembleConfig { seed: self.config.seed, ..self.config.ensemble.clone() },
            &Device::Cpu,
        )?;
        Ok((flow, adam, ensemble))
    }

    fn adam_for(&self, flow: &Flow) -> Adam {
        Adam::new(
            flow.params(),
            AdamConfig { max_grad_norm: Some(self.config.energy_training.max_grad_norm), ..AdamConfig::default() },
        )
    }

    fn rng(&self, stage: u64) -> ChaCha8Rng {
        let mut rng = ChaCha8Rng::seed_from_u64(self.config.seed);
        rng.set_stream(stage);
        rng
    }

    fn context(&self, flow: &Flow, cg: &[f64]) -> Result<Tensor> {
        let n = cg.len() / self.problem.cg_dims();
        let width = self.problem.context_width();
        Ok(Tensor::from_vec(self.problem.context(cg), (n, width), &Device::Cpu)?.to_dtype(flow.dtype())?)
    }

    /// The problem's start-up (for a molecule: MD from the reference structure and training by
    /// example on its frames); the first CG points are evenly spaced among the start-up's
    /// candidates (`mode` Grid: the grid instead).
    pub fn start(&self, mode: AlMode, progress: &mut dyn FnMut(AlEvent)) -> Result<AlState> {
        let clock = Instant::now();
        let config = &self.config;
        let (flow, mut adam, ensemble) = self.fresh_models()?;
        let mut costs = CostBreakdown::default();
        let mut rng = self.rng(1);
        let start = self.problem.start(config, &flow, &mut adam, &mut rng, progress)?;
        costs.startup_md = start.startup_evaluations;
        costs.other = start.other_evaluations;
        // A fresh optimiser for training by energy (its moments would otherwise carry the
        // scale of the likelihood gradients).
        let adam = self.adam_for(&flow);

        let mut points = PointSets::default();
        match mode {
            AlMode::ActiveLearning => {
                let candidates = &start.candidates;
                let step = (candidates.len() as f64 / config.start_points as f64).max(1.0);
                let mut start: Vec<Vec<f64>> = (0..config.start_points.min(candidates.len()))
                    .map(|k| candidates[(k as f64 * step) as usize].clone())
                    .collect();
                start.shuffle(&mut rng);
                let n_test = (config.test_fraction * start.len() as f64).round() as usize;
                points.test = start.split_off(start.len() - n_test);
                points.newest = start.len();
                points.newest_test = points.test.len();
                points.train = start;
            }
            AlMode::Grid => {
                points.train = self.problem.grid(config.grid.points_per_angle)?;
                points.newest = points.train.len();
            }
        }
        Ok(AlState {
            mode,
            marginal_pmfs: vec![],
            next_iteration: 0,
            flow,
            adam,
            ensemble,
            points,
            log: vec![],
            costs,
            wall_s: clock.elapsed().as_secs_f64(),
            reference_energy: start.reference_energy,
            converged: false,
        })
    }

    /// One iteration: training by energy, labels, ensemble fit, KLD, and (active learning) the
    /// search for new points. Sets `state.converged` when the search finds none, when
    /// `max_iterations` is reached, or after the one grid iteration.
    pub fn iterate(&self, state: &mut AlState, progress: &mut dyn FnMut(AlEvent)) -> Result<AlIteration> {
        if state.converged {
            return Err(Error::invalid("the run has already finished"));
        }
        let clock = Instant::now();
        let config = &self.config;
        let iteration = state.next_iteration;
        let mut rng = self.rng(1000 + iteration as u64);

        // Training by energy on the newest points plus a fraction of the older ones.
        let pool = self.newest_and_some_older(state, &mut rng)?;
        let pool_points: Vec<Vec<f64>> = pool.iter().map(|&i| state.points.train[i].clone()).collect();
        let epochs = match state.mode {
            AlMode::ActiveLearning => config.energy_training.epochs,
            AlMode::Grid => config.grid.epochs,
        };
        let mut phase_s = PhaseTimes::default();
        let phase_clock = Instant::now();
        let (energy_loss, d_fraction, training_estimates) =
            self.train_by_energy(state, &pool_points, epochs, &mut rng, progress)?;
        phase_s.energy_training = phase_clock.elapsed().as_secs_f64();
        let phase_clock = Instant::now();

        // Labels of every training point (or of the pool only, see `LabelConfig::refresh_all`)
        // with the current flow, and of the newest test points.
        let n_train = state.points.train.len();
        let to_label: Vec<usize> = if config.labels.refresh_all { (0..n_train).collect() } else { pool.clone() };
        let label_points: Vec<Vec<f64>> = to_label.iter().map(|&i| state.points.train[i].clone()).collect();
        let before = self.problem.evaluations();
        let fresh = self.labels(&state.flow, &label_points, &mut rng, "labels (points)", progress)?;
        state.costs.labels += self.problem.evaluations() - before;
        let points = &mut state.points;
        points.train_labels.resize(points.train.len(), None);
        points.train_label_ess.resize(points.train.len(), 0.0);
        points.test_labels.resize(points.test.len(), None);
        let n_test = points.test.len();
        let test_pool: Vec<usize> = (n_test - points.newest_test.min(n_test)..n_test).collect();
        let test_pool_points: Vec<Vec<f64>> = test_pool.iter().map(|&i| points.test[i].clone()).collect();
        let before = self.problem.evaluations();
        let fresh_test = self.labels(&state.flow, &test_pool_points, &mut rng, "test labels (points)", progress)?;
        state.costs.test_labels += self.problem.evaluations() - before;
        points.newest_test = 0;
        // This iteration's estimate of each point: its label samples, and where asked the
        // samples of training by energy at it (the pool's points, in pool order).
        let step_weights = |estimates: &[PointEstimate]| match config.labels.weights {
            EstimateWeights::PointEss => estimates.to_vec(),
            EstimateWeights::StepEss => with_mean_ess(estimates),
        };
        let mut combined = step_weights(&fresh);
        if config.labels.from_training {
            for (&i, training) in pool.iter().zip(&step_weights(&training_estimates)) {
                if let Some(slot) = to_label.iter().position(|&j| j == i) {
                    combined[slot] = WeightedLabel::combine(combined[slot], *training);
                }
            }
        }
        for (&i, label) in to_label.iter().zip(&combined) {
            let old = points.train_labels[i]
                .map(|free_energy_kt| WeightedLabel { free_energy_kt, ess: points.train_label_ess[i] });
            let new = if config.labels.accumulate { WeightedLabel::combine(old, *label) } else { label.or(old) };
            if let Some(l) = new {
                points.train_labels[i] = Some(l.free_energy_kt);
                points.train_label_ess[i] = l.ess;
            }
        }
        for (&i, label) in test_pool.iter().zip(&fresh_test) {
            points.test_labels[i] = label.map(|l| l.free_energy_kt);
        }

        // Ensemble fit on the labelled training points (centred: a PMF is defined up to a
        // constant, and the networks should fit its shape).
        let FitSet { points: fit_points, labels: fit_labels, weights: fit_weights, cap_kt: cap, unlabelled } =
            points.fit_set(&config.labels)?;
        phase_s.labels = phase_clock.elapsed().as_secs_f64();
        let phase_clock = Instant::now();
        progress(AlEvent::Phase { name: "PMF ensemble fit", total: 1 });
        state.ensemble.fit_weighted(&fit_points, &fit_labels, &fit_weights)?;
        phase_s.ensemble_fit = phase_clock.elapsed().as_secs_f64();
        let phase_clock = Instant::now();
        progress(AlEvent::Advance(1));
        let ess: Vec<f64> = fresh.iter().flatten().map(|l| l.ess).collect();
        let label_ess_fraction = ess.iter().sum::<f64>() / ess.len().max(1) as f64 / config.labels.samples as f64;

        let test_labels: Vec<Option<f64>> = state.points.test_labels.iter().map(|l| l.filter(|&f| f <= cap)).collect();
        let test_rmse_kt = self.test_rmse(&state.ensemble, &state.points.test, &test_labels)?;
        // Scoring against references measures the run; it is not part of its cost, so its time
        // is kept out of the run's wall time.
        let scoring_clock = Instant::now();
        let score = self.problem.score(&state.ensemble)?;
        state.marginal_pmfs = score.marginal_pmfs;
        let kld_marginals = score.kld;
        let scoring_s = scoring_clock.elapsed().as_secs_f64();
        let kld = (!kld_marginals.is_empty()).then(|| kld_marginals.iter().sum::<f64>() / kld_marginals.len() as f64);
        let kld_marginals = if kld_marginals.len() > 1 { kld_marginals } else { vec![] };

        // Search for uncertain points (active learning only).
        let mut picked: Vec<Vec<f64>> = vec![];
        let mut search_steps = 0;
        if state.mode == AlMode::ActiveLearning && iteration + 1 < config.max_iterations {
            let s = &config.search;
            let first = match (&s.start_deg, self.problem.domain()) {
                (Some(deg), CgDomain::Torus { .. }) => deg.iter().map(|a| a.to_radians()).collect(),
                (Some(values), CgDomain::Interval { .. }) => values.clone(),
                (None, _) => self.problem.search_start(),
            };
            let mut starts: Vec<Vec<f64>> = vec![first];
            match s.starts {
                SearchStarts::StartAndNewest => starts.extend(state.points.last_centres.iter().cloned()),
                SearchStarts::TrainingPoints => {
                    let train = &state.points.train;
                    starts.extend((1..s.chains).map(|_| train[rng.gen_range(0..train.len())].clone()))
                }
                SearchStarts::NewestPoints => {
                    let train = &state.points.train;
                    let newest = state.points.newest.min(train.len());
                    starts.extend(train[train.len() - newest..].iter().rev().take(s.chains - 1).cloned())
                }
            }
            let starts: Vec<Vec<f64>> = (0..s.chains).map(|i| starts[i % starts.len()].clone()).collect();
            let search = SearchConfig {
                step: s.step_rad,
                threshold_kt: s.threshold_kt,
                wanted: s.candidates,
                max_steps: s.max_steps,
                seed: rng.gen(),
            };
            progress(AlEvent::Phase { name: "uncertainty search", total: 1 });
            let ensemble = &state.ensemble;
            let mut model = |p: &[f64]| ensemble.predict(p);
            let domain = self.problem.domain();
            let found = uncertainty_search(&domain, &starts, &search, &mut model)?;
            search_steps = found.steps;
            picked = farthest_point_selection(&domain, &found.found, &state.points.train, s.new_points);
            progress(AlEvent::Advance(1));
            if !picked.is_empty() {
                let mut new = spread_points(&domain, &picked, s.spread, s.spread_radius_rad, &mut rng)?;
                new.shuffle(&mut rng);
                let n_test = (config.test_fraction * new.len() as f64).round() as usize;
                state.points.test.extend(new.split_off(new.len() - n_test));
                state.points.newest_test = n_test;
                state.points.newest = new.len();
                state.points.train.extend(new);
            }
        }
        state.points.last_centres = picked.clone();
        state.converged = picked.is_empty();
        state.next_iteration += 1;
        state.wall_s += clock.elapsed().as_secs_f64() - scoring_s;
        let entry = AlIteration {
            iteration,
            train_points: state.points.train.len(),
            test_points: state.points.test.len(),
            evaluations: state.costs.total(),
            costs: state.costs,
            kld,
            kld_marginals,
            wall_s: state.wall_s,
            energy_loss,
            d_fraction,
            label_ess_fraction,
            unlabelled,
            test_rmse_kt,
            new_centres_deg: match self.problem.domain() {
                CgDomain::Torus { .. } => picked.iter().map(|p| deg(p)).collect(),
                CgDomain::Interval { .. } => picked.clone(),
            },
            search_steps,
            phase_s: PhaseTimes {
                search: phase_clock.elapsed().as_secs_f64() - scoring_s,
                scoring: scoring_s,
                ..phase_s
            },
        };
        state.log.push(entry.clone());
        progress(AlEvent::Iteration(Box::new(entry.clone())));
        Ok(entry)
    }

    /// Indices of the newest training points plus `old_fraction` of the others, drawn uniformly
    /// or, with `old_temperature_kt`, weighted by exp(-F / tau) on the current ensemble mean.
    fn newest_and_some_older(&self, state: &AlState, rng: &mut ChaCha8Rng) -> Result<Vec<usize>> {
        let n = state.points.train.len();
        let first_new = n - state.points.newest.min(n);
        let mut pool: Vec<usize> = (first_new..n).collect();
        let wanted = (self.config.old_fraction * first_new as f64).ceil() as usize;
        match self.config.old_temperature_kt {
            Some(tau) if first_new > 0 => {
                let older = flat(&state.points.train[..first_new]);
                let (mean, _) = state.ensemble.predict(&older)?;
                let min = mean.iter().copied().fold(f64::INFINITY, f64::min);
                let log_weights: Vec<f64> = mean.iter().map(|f| -(f - min) / tau).collect();
                pool.extend(weighted_subset(&log_weights, wanted, rng));
            }
            _ => {
                let mut old: Vec<usize> = (0..first_new).collect();
                old.shuffle(rng);
                pool.extend(old.iter().take(wanted));
            }
        }
        Ok(pool)
    }

    /// Epochs of conditional reverse-KL training at `pool`; returns the last epoch's mean loss,
    /// the fraction of samples rejected as invalid, and (with `labels.from_training`) each pool point's
    /// importance-sampling estimate (free energy, ESS) from all its training samples.
    fn train_by_energy(
        &self,
        state: &mut AlState,
        pool: &[Vec<f64>],
        epochs: usize,
        rng: &mut ChaCha8Rng,
        progress: &mut dyn FnMut(AlEvent),
    ) -> Result<(f64, f64, Vec<PointEstimate>)> {
        let et = &self.config.energy_training;
        let collect = self.config.labels.from_training;
        let steps_per_epoch = (pool.len() * et.samples_per_point).div_ceil(et.batch);
        progress(AlEvent::Phase { name: "training by energy (steps)", total: (epochs * steps_per_epoch) as u64 });
        let (before, rejected_before) = (self.problem.evaluations(), self.problem.rejected());
        let mut last_epoch_loss = 0.0;
        let mut samples: Vec<(Vec<f64>, Vec<f64>)> = vec![(vec![], vec![]); pool.len()];
        for _ in 0..epochs {
            let (loss, epoch_samples) = self.energy_epoch(state, pool, et.samples_per_point, collect, rng, progress)?;
            last_epoch_loss = loss;
            for (all, new) in samples.iter_mut().zip(epoch_samples) {
                all.0.extend(new.0);
                all.1.extend(new.1);
            }
        }
        let evaluated = self.problem.evaluations() - before;
        let rejected = self.problem.rejected() - rejected_before;
        state.costs.energy_training += evaluated;
        let d_fraction = rejected as f64 / (evaluated + rejected).max(1) as f64;
        let estimates = if collect { estimates_from_samples(&samples, self.config.labels.clip_top_k)? } else { vec![] };
        Ok((last_epoch_loss, d_fraction, estimates))
    }

    /// One epoch of training by energy: `samples_per_point` flow samples at each of `points`, in
    /// shuffled batches of `energy_training.batch`, one Adam step per batch. Returns the epoch's
    /// mean loss and, when `collect`, ln p and ln q of every sample, per point.
    fn energy_epoch(
        &self,
        state: &mut AlState,
        points: &[Vec<f64>],
        samples_per_point: usize,
        collect: bool,
        rng: &mut ChaCha8Rng,
        progress: &mut dyn FnMut(AlEvent),
    ) -> Result<(f64, Vec<PointSamples>)> {
        let et = &self.config.energy_training;
        let loss_config = EnergyLossConfig {
            drop_top_k: et.drop_top_k,
            regularize_above: et.regularize_above_kt.map(|c| state.reference_energy + c),
        };
        let target = self.problem.target();
        let n_rows = points.len() * samples_per_point;
        let mut rows: Vec<usize> = (0..n_rows).map(|r| r % points.len()).collect();
        rows.shuffle(rng);
        let mut per_point: Vec<(Vec<f64>, Vec<f64>)> = vec![(vec![], vec![]); if collect { points.len() } else { 0 }];
        let mut sum = 0.0;
        for batch in rows.chunks(et.batch) {
            let cg: Vec<f64> = batch.iter().flat_map(|&i| points[i].iter().copied()).collect();
            let context = self.context(&state.flow, &cg)?;
            let (loss, report, samples) =
                kl_loss(&state.flow, target.clone(), batch.len(), Some(&context), Some(&cg), &loss_config, rng)?;
            state.adam.step(state.flow.params(), &loss.backward()?, et.lr)?;
            if collect {
                let log_p = self.problem.log_density_of_energies(&samples.x, &cg, &samples.energy)?;
                for (row, &i) in batch.iter().enumerate() {
                    per_point[i].0.push(log_p[row]);
                    per_point[i].1.push(samples.log_q[row]);
                }
            }
            sum += report.loss * batch.len() as f64;
            progress(AlEvent::Advance(1));
        }
        Ok((sum / n_rows.max(1) as f64, per_point))
    }

    /// Importance-sampled free energy and ESS of each point (None where every sample was invalid).
    fn labels(
        &self,
        flow: &Flow,
        points: &[Vec<f64>],
        rng: &mut ChaCha8Rng,
        phase: &'static str,
        progress: &mut dyn FnMut(AlEvent),
    ) -> Result<Vec<PointEstimate>> {
        let m = self.config.labels.samples;
        let per_chunk = (2048 / m).max(1);
        progress(AlEvent::Phase { name: phase, total: points.len() as u64 });
        let mut out = Vec::with_capacity(points.len());
        for chunk in points.chunks(per_chunk) {
            let cg: Vec<f64> =
                chunk.iter().flat_map(|p| std::iter::repeat(p.iter().copied()).take(m).flatten()).collect();
            let (x, log_q) = flow.sample(chunk.len() * m, Some(&self.context(flow, &cg)?), rng)?;
            let x: Vec<f64> = x.to_dtype(candle_core::DType::F64)?.flatten_all()?.to_vec1()?;
            let log_q: Vec<f64> = log_q.to_dtype(candle_core::DType::F64)?.to_vec1()?;
            let log_p = self.problem.log_density(&x, &cg)?;
            for j in 0..chunk.len() {
                let range = j * m..(j + 1) * m;
                out.push(label_or_none(&log_p[range.clone()], &log_q[range], self.config.labels.clip_top_k)?);
            }
            progress(AlEvent::Advance(chunk.len() as u64));
        }
        Ok(out)
    }

    fn test_rmse(&self, ensemble: &PmfEnsemble, test: &[Vec<f64>], labels: &[Option<f64>]) -> Result<Option<f64>> {
        let pairs: Vec<(&Vec<f64>, f64)> = test.iter().zip(labels).filter_map(|(p, l)| l.map(|f| (p, f))).collect();
        if pairs.is_empty() {
            return Ok(None);
        }
        let points: Vec<f64> = pairs.iter().flat_map(|(p, _)| p.iter().copied()).collect();
        let (mean, _) = ensemble.predict(&points)?;
        let diff: Vec<f64> = mean.iter().zip(&pairs).map(|(m, (_, l))| m - l).collect();
        let shift = diff.iter().sum::<f64>() / diff.len() as f64;
        Ok(Some((diff.iter().map(|d| (d - shift).powi(2)).sum::<f64>() / diff.len() as f64).sqrt()))
    }

    /// The ensemble-mean PMF (kT, minimum 0) and std on the `bins` x `bins` grid, for a problem
    /// with two CG dimensions (errors otherwise: see [`Self::marginal_pmf`]).
    pub fn pmf_grid(&self, ensemble: &PmfEnsemble, bins: usize) -> Result<(Vec<f64>, Vec<f64>)> {
        if self.problem.cg_dims() != 2 {
            return Err(Error::invalid(format!(
                "a 2D PMF grid needs two CG dimensions, the problem has {}",
                self.problem.cg_dims()
            )));
        }
        let grid: Vec<f64> = grid_centres(bins)?.iter().flatten().copied().collect();
        let (mut mean, std) = ensemble.predict(&grid)?;
        let min = mean.iter().copied().fold(f64::INFINITY, f64::min);
        mean.iter_mut().for_each(|v| *v -= min);
        Ok((mean, std))
    }

    /// The ensemble mean's 2D marginal PMF (kT, minimum 0; `bins` x `bins`, `[bin of i][bin of
    /// j]`) of the CG dimensions `pair` over the torus, the other dimensions integrated out on
    /// `other_bins` midpoints each ([`crate::metrics::marginal`]).
    pub fn marginal_pmf(
        &self,
        ensemble: &PmfEnsemble,
        pair: (usize, usize),
        bins: usize,
        other_bins: usize,
    ) -> Result<Vec<f64>> {
        ensemble.marginal_pmf(self.problem.cg_dims(), pair, bins, other_bins)
    }
}

/// `k` distinct indices drawn without replacement, each draw with probability proportional to
/// exp(log_weights[i]) among those left: the k largest of log_weights[i] + Gumbel noise
/// (Efraimidis and Spirakis), which stays finite for weights far below the float range.
fn weighted_subset(log_weights: &[f64], k: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
    let mut keys: Vec<(f64, usize)> = log_weights
        .iter()
        .enumerate()
        .map(|(i, &w)| {
            // u in (0, 1), never 0 or 1, so the Gumbel draw is finite.
            let u = ((rng.gen::<u64>() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
            (w - (-u.ln()).ln(), i)
        })
        .collect();
    keys.sort_by(|a, b| b.0.total_cmp(&a.0));
    keys.into_iter().take(k).map(|(_, i)| i).collect()
}

#[cfg(test)]
mod tests {
    use super::{weighted_subset, AlConfig, FitWeights, LabelConfig, PointSets};

    #[test]
    fn fit_set_keeps_labelled_points_caps_centres_and_weights() {
        let points = PointSets {
            train: vec![vec![0.1, 0.2], vec![0.3, 0.4], vec![0.5, 0.6], vec![0.7, 0.8]],
            train_labels: vec![Some(1.0), None, Some(50.0), Some(3.0)],
            train_label_ess: vec![2.0, 0.0, 4.0, 8.0],
            ..PointSets::default()
        };
        let labels = LabelConfig { cap_kt: Some(30.0), ..AlConfig::fast().labels };
        let uniform = points.fit_set(&LabelConfig { fit_weights: FitWeights::Uniform, ..labels.clone() }).unwrap();
        // Capped at 1 + 30 = 31; the mean of (1, 31, 3) is 35/3.
        assert_eq!(uniform.cap_kt, 31.0);
        assert_eq!(uniform.unlabelled, 1);
        assert_eq!(uniform.points, vec![0.1, 0.2, 0.5, 0.6, 0.7, 0.8]);
        let expected = [1.0 - 35.0 / 3.0, 31.0 - 35.0 / 3.0, 3.0 - 35.0 / 3.0];
        for (got, want) in uniform.labels.iter().zip(expected) {
            assert!((got - want).abs() < 1e-14, "{got} vs {want}");
        }
        assert_eq!(uniform.weights, vec![1.0; 3]);
        let ess = points.fit_set(&LabelConfig { fit_weights: FitWeights::Ess, ..labels.clone() }).unwrap();
        assert_eq!(ess.weights, vec![2.0, 4.0, 8.0]);
        assert_eq!(ess.labels, uniform.labels);
        let uncapped = points.fit_set(&LabelConfig { cap_kt: None, ..labels.clone() }).unwrap();
        assert_eq!(uncapped.cap_kt, f64::INFINITY);
        assert!((uncapped.labels[1] - (50.0 - 54.0 / 3.0)).abs() < 1e-14);
        let none = PointSets { train_labels: vec![None; 4], ..points };
        assert!(none.fit_set(&labels).unwrap_err().to_string().contains("no training point"));
    }

    #[test]
    fn weighted_subsets_follow_the_weights() {
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        // One draw: probabilities w / sum(w) = (1, 2, 4, 8, 0) / 15; 60 000 draws, within 5 sigma.
        let log_w = [0.0, 2f64.ln(), 4f64.ln(), 8f64.ln(), f64::NEG_INFINITY];
        let draws = 60_000;
        let mut counts = [0usize; 5];
        for _ in 0..draws {
            let picked = weighted_subset(&log_w, 1, &mut rng);
            counts[picked[0]] += 1;
        }
        for (i, w) in [1.0, 2.0, 4.0, 8.0, 0.0].into_iter().enumerate() {
            let p = w / 15.0;
            let sigma = (p * (1.0 - p) / draws as f64).sqrt();
            let got = counts[i] as f64 / draws as f64;
            assert!((got - p).abs() <= 5.0 * sigma + 1e-12, "index {i}: {got} vs {p}");
        }
        // Two draws: P(first two are {0, 1}) = (1/15)(2/14) + (2/15)(1/13), the sequential rule.
        let mut both = 0;
        for _ in 0..draws {
            let mut picked = weighted_subset(&log_w, 2, &mut rng);
            picked.sort();
            both += (picked == [0, 1]) as usize;
        }
        let p = 1.0 / 15.0 * 2.0 / 14.0 + 2.0 / 15.0 * 1.0 / 13.0;
        let sigma = (p * (1.0 - p) / draws as f64).sqrt();
        assert!((both as f64 / draws as f64 - p).abs() <= 5.0 * sigma, "{both} vs {p}");
        // Distinct indices, and no more than there are.
        let all = weighted_subset(&[-1e300, 0.0, -1e300], 5, &mut rng);
        assert_eq!(all.len(), 3);
        assert_eq!(all[0], 1);
    }
}
