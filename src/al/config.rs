//! Settings of an active-learning run (and of the grid control), as one JSON file that rejects
//! unknown fields: start-up, flow, training by example and by energy, labels, ensemble, search,
//! and the presets (tuned on alanine dipeptide).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::flow::Precision;
use crate::pmf::ensemble::EnsembleConfig;

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
