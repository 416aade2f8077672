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

use super::problem::AlProblem;
use super::search::{farthest_point_selection, spread_points, uncertainty_search, CgDomain, SearchConfig};
use crate::error::{Error, Result};
use crate::flow::optim::{Adam, AdamConfig};
use crate::flow::train::{kl_loss, EnergyLossConfig};
use crate::flow::{Flow, Precision};
use crate::metrics::Axis;
use crate::pmf::ensemble::{EnsembleConfig, PmfEnsemble};
use crate::pmf::labels::{label_or_none, with_mean_ess, WeightedLabel};

/// Start-up MD: one short run from the minimum-energy structure gives the first CG points and
/// the data for training by example.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartupMdConfig {
    /// Independent walkers.
    pub walkers: usize,
    /// MD steps per walker (1 fs each; every step is one energy evaluation per walker).
    pub steps: u64,
    /// Steps between recorded frames.
    pub record_every: u64,
}

/// The conditional flow's architecture (BRIEF section 3 for the reference values).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConditionalFlowConfig {
    /// Coupling layers.
    pub layers: usize,
    /// Hidden units of each conditioner.
    pub hidden: usize,
    /// Residual blocks per conditioner.
    pub blocks: usize,
    /// Bins of every rational-quadratic spline.
    pub bins: usize,
    /// Half-width of the spline interval of real coordinates (linear tails outside).
    pub tail_bound: f64,
    /// A random periodic shift of the circular dimensions after every this many layers.
    pub shift_every: usize,
    /// Precision: `f64` (the reference code's), `f32`, or `mixed` (f32 conditioners, f64
    /// coordinates and densities; the measured best on a CPU).
    pub precision: Precision,
}

/// Training by example on the start-up MD frames.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExampleTrainingConfig {
    /// Adam steps.
    pub steps: usize,
    /// Frames per step.
    pub batch: usize,
    /// Learning rate.
    pub lr: f64,
}

/// Training by energy (conditional reverse KL) at the CG training points.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnergyTrainingConfig {
    /// Flow samples per CG point per epoch (each one energy evaluation).
    pub samples_per_point: usize,
    /// Epochs per iteration.
    pub epochs: usize,
    /// Samples per Adam step.
    pub batch: usize,
    /// Learning rate.
    pub lr: f64,
    /// Largest per-sample losses dropped from each batch.
    pub drop_top_k: usize,
    /// Global gradient-norm clip.
    pub max_grad_norm: f64,
    /// Energies more than this many kT above the minimum-energy structure's enter the loss
    /// logarithmically (None: never), so that the first far-from-physical samples do not dominate.
    pub regularize_above_kt: Option<f64>,
}

/// Importance-sampled PMF labels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelConfig {
    /// Flow samples per CG point (each one energy evaluation).
    pub samples: usize,
    /// Largest weights clipped per point (to the next largest).
    pub clip_top_k: usize,
    /// Relabel every training point in every iteration (true), or only the points of the
    /// iteration's training pool, the others keeping labels from earlier, worse flows (false:
    /// cheaper). Test points are labelled once, when added.
    pub refresh_all: bool,
    /// Combine each new estimate of a point with its earlier ones, weighting the estimates of
    /// Z = exp(-F) by their effective sample sizes (true), or keep only the newest (false).
    /// Estimates from early, poor flows have small ESS and so little weight.
    pub accumulate: bool,
    /// Labels more than this many kT above the lowest label are lowered to it before the fit
    /// (None: never). Points on barriers where every sample clashes give labels of 1e4 kT and
    /// more, which would dominate the squared error of the fit while their true value is
    /// irrelevant to any probability.
    pub cap_kt: Option<f64>,
    /// Count the samples drawn in the iteration's training by energy towards the labels of the
    /// pool's points too (true): pooled per point (top `clip_top_k` weights clipped) into one
    /// more estimate, combined with the label samples' estimate as `weights` says. Each of those
    /// samples was an energy evaluation already, and its weight exp(-u) / q under the flow that
    /// drew it is as unbiased an estimate of exp(-F) as a label sample's, so this adds
    /// information at no cost. Absent in a settings file: false.
    #[serde(default)]
    pub from_training: bool,
    /// How estimates of a point from different steps (iterations, training and labelling) are
    /// weighted when combined. Absent in a settings file: `point_ess`.
    #[serde(default)]
    pub weights: EstimateWeights,
    /// How the labels are weighted in the ensemble fit. Absent in a settings file: `uniform`.
    #[serde(default)]
    pub fit_weights: FitWeights,
}

/// The per-point weights of the squared errors in the PMF ensemble fit (see
/// [`LabelConfig::fit_weights`] and [`crate::pmf::PmfEnsemble::fit_weighted`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FitWeights {
    /// Every label counts the same (the reference's plain mean squared error).
    #[default]
    Uniform,
    /// Each label by the effective sample size behind it (all its combined estimates), the
    /// inverse of its variance (about 1 / ESS kT^2): labels from a handful of effective samples,
    /// where the flow is still poor, pull the fit less than those from dozens. Measured on the
    /// final labels of three fast-preset runs (weighted least squares on a Fourier basis, the
    /// same basis for both): KLD 0.0235 -> 0.0113, 0.0126 -> 0.0088, 0.0145 -> 0.0109.
    Ess,
}

/// The weights of a point's estimates of Z = exp(-F) when they are combined (see
/// [`LabelConfig::weights`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EstimateWeights {
    /// Each estimate's own ESS. Simple, but biased upward in F: an estimate that caught a rare
    /// large weight has a low ESS and a high Z, and is down-weighted for it (measured: +0.14 kT
    /// over four estimates of 128 samples where the flow's ESS is 3 %, +0.07 kT where it is 10 %).
    #[default]
    PointEss,
    /// The mean ESS of all the points estimated in the same step: it follows the flow's
    /// improvement from step to step but not the luck of one point's samples, so the combination
    /// stays unbiased in Z.
    StepEss,
}

/// The uncertainty search and how new points are added.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlSearchConfig {
    /// Metropolis chains on the ensemble-mean PMF.
    pub chains: usize,
    /// Where the chains start.
    pub starts: SearchStarts,
    /// Start of the chains in the first iteration, one value per CG dimension: degrees for angles
    /// (for alanine dipeptide, (phi, psi)), the value itself otherwise; later iterations also
    /// start from the newest centres or training points. Absent: the problem's own start (for a
    /// molecule, the CG point of its minimum-energy structure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_deg: Option<Vec<f64>>,
    /// Gaussian step per CG dimension (radians for angles).
    pub step_rad: f64,
    /// A chain stops where the ensemble std exceeds this (kT).
    pub threshold_kt: f64,
    /// Uncertain points collected per search.
    pub candidates: usize,
    /// New centres kept by farthest-point selection.
    pub new_points: usize,
    /// Metropolis steps (over all chains) without enough uncertain points that end the run.
    pub max_steps: u64,
    /// CG points spread around each new centre.
    pub spread: usize,
    /// Half-width of the spread (per CG dimension; radians for angles).
    pub spread_radius_rad: f64,
}

/// Where the chains of the uncertainty search start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SearchStarts {
    /// The reference: `start_deg`, then also the newest centres (the search follows the last
    /// direction it took).
    StartAndNewest,
    /// Training points drawn at random (with `start_deg`): chains reach every part of the
    /// frontier of the explored region, not only the newest.
    TrainingPoints,
    /// The newest training points, latest first (with `start_deg`): the points spread around the
    /// last centres, so the search continues from the edge it just explored (the first seed's
    /// Müller-Brown rule).
    NewestPoints,
}

/// The grid-conditioning control experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GridConfig {
    /// Grid points per CG dimension (at the bin centres of [-pi, pi) per angle: points_per_angle^d
    /// points for d angles, at most 10^7).
    pub points_per_angle: usize,
    /// Epochs of training by energy over the whole grid.
    pub epochs: usize,
}

/// Settings of an active-learning run (and of the grid control); the presets were tuned on
/// alanine dipeptide.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlConfig {
    /// Seed of everything (MD, flow, ensemble, sampling, search).
    pub seed: u64,
    /// Start-up MD.
    pub startup_md: StartupMdConfig,
    /// CG training points taken from the start-up frames (evenly spaced in time).
    pub start_points: usize,
    /// Flow architecture.
    pub flow: ConditionalFlowConfig,
    /// Training by example.
    pub example_training: ExampleTrainingConfig,
    /// Training by energy.
    pub energy_training: EnergyTrainingConfig,
    /// PMF labels.
    pub labels: LabelConfig,
    /// PMF ensemble.
    pub ensemble: EnsembleConfig,
    /// Uncertainty search.
    pub search: AlSearchConfig,
    /// Fraction of each set of new points held out as test points (labelled, never fitted).
    pub test_fraction: f64,
    /// Fraction of the older training points mixed into each iteration's flow training (and,
    /// unless `labels.refresh_all`, relabelled).
    pub old_fraction: f64,
    /// How the older points are drawn. `None` (the default): uniformly. `Some(tau)`: without
    /// replacement with weights exp(-(F - F_min) / tau), F the ensemble mean from the previous
    /// iteration (kT), so that training and label samples go where the probability is. tau = 2
    /// spends them in proportion to the square root of the probability, the split that minimises
    /// the probability-weighted variance of the labels; a large tau is uniform again.
    #[serde(default)]
    pub old_temperature_kt: Option<f64>,
    /// Upper bound on active-learning iterations.
    pub max_iterations: usize,
    /// Grid conditioning (used by `cgflow grid`).
    pub grid: GridConfig,
}

impl AlConfig {
    /// The reference settings (BRIEF sections 3 to 5): 50 ps start-up MD giving 5000 points, the
    /// 3.8 M-parameter flow in f64, 30 samples per point per epoch, 50 epochs per iteration,
    /// batch 64, lr 1e-5, 200 chains, threshold 0.2 kT, 15 new centres spread into 200 points
    /// each; grid control on 100 x 100 points for 100 epochs. Days on a 2-core CPU.
    pub fn reference() -> Self {
        Self {
            seed: 1,
            startup_md: StartupMdConfig { walkers: 1, steps: 50_000, record_every: 10 },
            start_points: 5000,
            flow: ConditionalFlowConfig {
                layers: 12,
                hidden: 256,
                blocks: 1,
                bins: 8,
                tail_bound: 5.0,
                shift_every: 2,
                precision: Precision::F64,
            },
            example_training: ExampleTrainingConfig { steps: 2000, batch: 64, lr: 1e-4 },
            energy_training: EnergyTrainingConfig {
                samples_per_point: 30,
                epochs: 50,
                batch: 64,
                lr: 1e-5,
                drop_top_k: 5,
                max_grad_norm: 1000.0,
                regularize_above_kt: Some(1000.0),
            },
            labels: LabelConfig {
                samples: 100,
                clip_top_k: 3,
                refresh_all: true,
                accumulate: false,
                cap_kt: None,
                from_training: false,
                weights: EstimateWeights::PointEss,
                fit_weights: FitWeights::Uniform,
            },
            ensemble: EnsembleConfig::reference(),
            search: AlSearchConfig {
                chains: 200,
                starts: SearchStarts::StartAndNewest,
                start_deg: Some(vec![-150.0, 155.0]),
                step_rad: 0.1,
                threshold_kt: 0.2,
                candidates: 30,
                new_points: 15,
                max_steps: 500_000,
                spread: 200,
                spread_radius_rad: 0.6,
            },
            test_fraction: 0.2,
            old_fraction: 0.3,
            old_temperature_kt: None,
            max_iterations: 50,
            grid: GridConfig { points_per_angle: 100, epochs: 100 },
        }
    }

    /// Settings for a 2-core CPU (about 25 minutes, 1.9e6 energy evaluations): the reference
    /// 50 ps start-up MD (400 of its frames as start points), the reference flow architecture in
    /// mixed precision (8 layers of 128 units reached KLD 0.047 where this reached 0.033, at
    /// 9.4e5 evaluations and the same wall time) trained by energy for 16 epochs of 8 samples per
    /// point, labels from 64 samples (largest weight clipped) refreshed where the flow was trained
    /// and combined across iterations by ESS, a smaller ensemble (128, 64, 32), and a search with
    /// threshold 0.5 kT (the ensemble's own noise at 48 samples per label was about 0.3 kT) keeping
    /// 10 centres spread into 20 points each from chains started at random training points,
    /// with labels capped 30 kT above the lowest, for up to 16 iterations. Training and labels
    /// share the evaluations 2:1 (128 and 64 per point and iteration): the other way round (64 and
    /// 128) reached KLD 0.0225 at 1.9e6 evaluations, this 0.0110, because a better-trained flow
    /// makes every later label better (label ESS 21 % instead of 13 %). The older points that
    /// join each iteration's training and labels are drawn with weights exp(-F / 2 kT) rather than
    /// uniformly, so that the samples go where the probability is: the final KLD (1.86e6
    /// evaluations) fell from 0.0116, 0.0108 and 0.0168 to 0.0066, 0.0081 and 0.0086 (seeds 1 to
    /// 3), without a single extra evaluation.
    pub fn fast() -> Self {
        let reference = Self::reference();
        Self {
            start_points: 400,
            flow: ConditionalFlowConfig { precision: Precision::Mixed, ..reference.flow },
            example_training: ExampleTrainingConfig { steps: 600, batch: 128, lr: 1e-3 },
            energy_training: EnergyTrainingConfig {
                samples_per_point: 8,
                epochs: 16,
                batch: 256,
                lr: 2e-4,
                drop_top_k: 10,
                max_grad_norm: 100.0,
                regularize_above_kt: Some(300.0),
            },
            labels: LabelConfig {
                samples: 64,
                clip_top_k: 1,
                refresh_all: false,
                accumulate: true,
                cap_kt: Some(30.0),
                from_training: false,
                weights: EstimateWeights::PointEss,
                fit_weights: FitWeights::Ess,
            },
            ensemble: EnsembleConfig {
                epochs: 300,
                hidden: vec![128, 64, 32],
                final_lr: Some(1e-4),
                ..EnsembleConfig::fast()
            },
            search: AlSearchConfig {
                threshold_kt: 0.5,
                starts: SearchStarts::TrainingPoints,
                candidates: 30,
                new_points: 10,
                spread: 20,
                max_steps: 200_000,
                ..reference.search
            },
            old_temperature_kt: Some(2.0),
            max_iterations: 16,
            grid: GridConfig { points_per_angle: 40, epochs: 8 },
            ..reference
        }
    }

    /// A tiny run for tests (seconds per iteration).
    pub fn tiny() -> Self {
        let fast = Self::fast();
        Self {
            startup_md: StartupMdConfig { walkers: 1, steps: 2_000, record_every: 10 },
            start_points: 40,
            flow: ConditionalFlowConfig { layers: 4, hidden: 32, ..fast.flow },
            example_training: ExampleTrainingConfig { steps: 40, batch: 64, lr: 1e-3 },
            energy_training: EnergyTrainingConfig {
                samples_per_point: 4,
                epochs: 2,
                batch: 64,
                ..fast.energy_training
            },
            labels: LabelConfig { samples: 16, clip_top_k: 2, refresh_all: true, accumulate: false, ..fast.labels },
            ensemble: EnsembleConfig { members: 3, hidden: vec![16, 8], epochs: 50, ..EnsembleConfig::fast() },
            search: AlSearchConfig {
                chains: 20,
                candidates: 4,
                new_points: 2,
                spread: 10,
                max_steps: 20_000,
                ..fast.search
            },
            max_iterations: 2,
            grid: GridConfig { points_per_angle: 6, epochs: 1 },
            ..fast
        }
    }

    /// Errors naming the first setting that cannot work.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("startup_md.walkers", self.startup_md.walkers as f64),
            ("startup_md.steps", self.startup_md.steps as f64),
            ("startup_md.record_every", self.startup_md.record_every as f64),
            ("start_points", self.start_points as f64),
            ("flow.layers", self.flow.layers as f64),
            ("flow.hidden", self.flow.hidden as f64),
            ("flow.bins", self.flow.bins as f64),
            ("flow.tail_bound", self.flow.tail_bound),
            ("example_training.batch", self.example_training.batch as f64),
            ("example_training.lr", self.example_training.lr),
            ("energy_training.samples_per_point", self.energy_training.samples_per_point as f64),
            ("energy_training.batch", self.energy_training.batch as f64),
            ("energy_training.lr", self.energy_training.lr),
            ("energy_training.max_grad_norm", self.energy_training.max_grad_norm),
            ("search.chains", self.search.chains as f64),
            ("search.step_rad", self.search.step_rad),
            ("search.threshold_kt", self.search.threshold_kt),
            ("search.spread_radius_rad", self.search.spread_radius_rad),
            ("grid.points_per_angle", self.grid.points_per_angle as f64),
        ];
        if let Some((name, value)) = positive.iter().find(|(_, v)| !(v.is_finite() && *v > 0.0)) {
            return Err(Error::invalid(format!("{name} must be positive, got {value}")));
        }
        if self.labels.samples <= self.labels.clip_top_k {
            return Err(Error::invalid("labels.samples must exceed labels.clip_top_k"));
        }
        if self.energy_training.drop_top_k >= self.energy_training.batch {
            return Err(Error::invalid("energy_training.drop_top_k must be below energy_training.batch"));
        }
        if !(0.0..1.0).contains(&self.test_fraction) {
            return Err(Error::invalid(format!("test_fraction must be in [0, 1), got {}", self.test_fraction)));
        }
        if !(0.0..=1.0).contains(&self.old_fraction) {
            return Err(Error::invalid(format!("old_fraction must be in [0, 1], got {}", self.old_fraction)));
        }
        if let Some(tau) = self.old_temperature_kt.filter(|t| !(t.is_finite() && *t > 0.0)) {
            return Err(Error::invalid(format!("old_temperature_kt must be positive, got {tau}")));
        }
        self.ensemble.validate()
    }
}

/// Energy evaluations by purpose (BRIEF section 6: every one counts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct CostBreakdown {
    /// MD steps of the start-up run (one per walker per step).
    pub startup_md: u64,
    /// Flow samples evaluated while training by energy.
    pub energy_training: u64,
    /// Samples evaluated for the labels of training points.
    pub labels: u64,
    /// Samples evaluated for the labels of test points.
    pub test_labels: u64,
    /// Other evaluations (the minimum-energy structure's reference energy).
    pub other: u64,
}

impl CostBreakdown {
    /// All evaluations.
    pub fn total(&self) -> u64 {
        self.startup_md + self.energy_training + self.labels + self.test_labels + self.other
    }
}

/// One line of the per-iteration log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlIteration {
    /// Iteration (0: the start-up points).
    pub iteration: usize,
    /// CG training points so far.
    pub train_points: usize,
    /// CG test points so far.
    pub test_points: usize,
    /// Energy evaluations so far.
    pub evaluations: u64,
    /// Their breakdown.
    pub costs: CostBreakdown,
    /// KL divergence of the ensemble-mean PMF to the problem's reference, or the mean over its
    /// references when it has several (for a molecule: 2D marginal references).
    pub kld: Option<f64>,
    /// The KLD of each 2D marginal reference, where the problem has more than one (in the order
    /// the references were given).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kld_marginals: Vec<f64>,
    /// Wall time so far (s), over all sessions of the run.
    pub wall_s: f64,
    /// Mean training loss by energy in this iteration's last epoch.
    pub energy_loss: f64,
    /// Fraction of this iteration's training samples rejected as invalid (a chiral centre of the
    /// wrong handedness, e.g. D-alanine).
    pub d_fraction: f64,
    /// Mean ESS fraction of the labels (ESS / samples).
    pub label_ess_fraction: f64,
    /// Points whose label could not be estimated (every sample invalid); left out of the fit.
    pub unlabelled: usize,
    /// Root-mean-square error of the ensemble mean on the test labels below the cap (kT, after
    /// the best constant shift).
    pub test_rmse_kt: Option<f64>,
    /// New centres found by the search, one value per CG dimension: in degrees for angles (a
    /// torus), as they are otherwise (Müller-Brown's s); empty when the run has converged.
    pub new_centres_deg: Vec<Vec<f64>>,
    /// Metropolis steps the search took.
    pub search_steps: u64,
    /// Wall time of this iteration by phase (s).
    #[serde(default)]
    pub phase_s: PhaseTimes,
}

/// Wall time of one iteration by phase (s).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PhaseTimes {
    /// Training by energy (flow and OpenMM).
    pub energy_training: f64,
    /// Labels of training and test points (flow sampling and OpenMM).
    pub labels: f64,
    /// PMF ensemble fit.
    pub ensemble_fit: f64,
    /// Uncertainty search, selection and spreading.
    pub search: f64,
    /// Scoring against the references (KLD; not in the run's wall time).
    #[serde(default)]
    pub scoring: f64,
}

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

/// Progress of a long step, for progress bars.
#[derive(Debug, Clone, PartialEq)]
pub enum AlEvent {
    /// A phase starts with `total` units of work.
    Phase {
        /// What runs.
        name: &'static str,
        /// Units of work.
        total: u64,
    },
    /// `units` of the current phase are done.
    Advance(u64),
    /// An iteration ended.
    Iteration(Box<AlIteration>),
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

/// Centres of the `bins` x `bins` grid over [-pi, pi)^2, [phi bin][psi bin] order.
pub fn grid_centres(bins: usize) -> Result<Vec<[f64; 2]>> {
    let c = Axis::dihedral(bins)?.centres();
    Ok(c.iter().flat_map(|&phi| c.iter().map(move |&psi| [phi, psi])).collect())
}

/// Centres of the grid of `bins` per dimension over [-pi, pi)^dims, the last dimension fastest
/// (for two dimensions, [`grid_centres`]). Errors on zero bins or dimensions, or a grid of more
/// than 10^7 points.
pub fn torus_grid_centres(dims: usize, bins: usize) -> Result<Vec<Vec<f64>>> {
    let total = (bins as u64).checked_pow(dims as u32).filter(|&t| t <= 10_000_000 && dims > 0);
    let total = total.ok_or_else(|| Error::invalid(format!("a grid of {bins}^{dims} points is too large or empty")))?;
    let c = Axis::dihedral(bins)?.centres();
    Ok((0..total as usize)
        .map(|mut index| {
            let mut p = vec![0.0; dims];
            for k in (0..dims).rev() {
                p[k] = c[index % bins];
                index /= bins;
            }
            p
        })
        .collect())
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
        let p = crate::metrics::marginal::marginal_probabilities(
            self.problem.cg_dims(),
            pair,
            bins,
            other_bins,
            65_536,
            |points| Ok(ensemble.predict(points)?.0),
        )?;
        let mut pmf: Vec<f64> = p.iter().map(|&q| -q.ln()).collect();
        let min = pmf.iter().copied().fold(f64::INFINITY, f64::min);
        pmf.iter_mut().for_each(|v| *v -= min);
        Ok(pmf)
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
