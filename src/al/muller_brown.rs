//! The first seed's Müller-Brown problem for the active-learning driver (BRIEF section 5, MB
//! settings): the CG coordinate s = x1 - x2 on [`MullerBrown::S_RANGE`], a conditional flow
//! q(s_perp | s) trained by energy, labels against the exact potential, and the KLD against the
//! exact PMF by quadrature. It has no start-up simulation: the first points are drawn uniformly
//! in one basin, and the flow starts untrained (the settings' `startup_md` and
//! `example_training` do not apply to it).

use std::sync::Arc;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::config::{AlConfig, AlSearchConfig, EnergyTrainingConfig, LabelConfig, SearchStarts};
use super::problem::{AlProblem, Score, StartUp};
use super::record::AlEvent;
use super::search::CgDomain;
use crate::energy::toy::MullerBrown;
use crate::error::{Error, Result};
use crate::flow::optim::Adam;
use crate::flow::train::{MullerBrownConditional, TargetEnergy};
use crate::flow::{CouplingKind, Flow, FlowSpec};
use crate::metrics::quadrature::muller_brown_bin_probabilities;
use crate::metrics::{kl_to_free_energy, Axis};
use crate::pmf::ensemble::{CgFeatures, EnsembleConfig, PmfEnsemble};

/// Bins of the exact PMF the KLD is measured against.
pub const REFERENCE_BINS: usize = 100;

/// Müller-Brown as an active-learning problem.
pub struct MullerBrownProblem {
    target: Arc<MullerBrownConditional>,
    start_centre: f64,
    start_radius: f64,
    reference: Vec<f64>,
}

impl MullerBrownProblem {
    /// The problem whose first points lie uniformly within `start_radius` of `start_centre` (one
    /// basin, e.g. -2 +- 0.3). Errors on a start region outside the CG range.
    pub fn new(start_centre: f64, start_radius: f64) -> Result<Self> {
        let (lo, hi) = MullerBrown::S_RANGE;
        if !(start_radius > 0.0 && start_centre - start_radius >= lo && start_centre + start_radius <= hi) {
            return Err(Error::invalid(format!(
                "start region {start_centre} +- {start_radius} is not a positive interval inside [{lo}, {hi}]"
            )));
        }
        Ok(Self {
            target: Arc::new(MullerBrownConditional::new(MullerBrown::default())),
            start_centre,
            start_radius,
            reference: muller_brown_bin_probabilities(&MullerBrown::default(), REFERENCE_BINS),
        })
    }

    /// The seed's settings (100 start points, a threshold of 0.4 kT, one new centre per iteration
    /// spread into 65 points within +-0.5, 30 % of the older points in each iteration's training),
    /// with a small spline flow trained by energy for 16 epochs of 10 samples per point, every
    /// label refreshed from 200 samples, and no test points: about a minute on 2 cores.
    pub fn preset() -> AlConfig {
        let fast = AlConfig::fast();
        AlConfig {
            seed: 1,
            start_points: 100,
            flow: super::config::ConditionalFlowConfig {
                layers: 4,
                hidden: 32,
                blocks: 1,
                bins: 8,
                tail_bound: 4.0,
                shift_every: 0,
                precision: crate::flow::Precision::F64,
            },
            example_training: super::config::ExampleTrainingConfig { steps: 0, ..fast.example_training },
            energy_training: EnergyTrainingConfig {
                samples_per_point: 10,
                epochs: 16,
                batch: 64,
                lr: 3e-3,
                drop_top_k: 2,
                max_grad_norm: 100.0,
                regularize_above_kt: Some(1e3),
            },
            labels: LabelConfig {
                samples: 200,
                clip_top_k: 3,
                refresh_all: true,
                accumulate: false,
                cap_kt: None,
                from_training: false,
                weights: Default::default(),
                fit_weights: Default::default(),
            },
            ensemble: EnsembleConfig { members: 10, hidden: vec![64, 32, 16], epochs: 600, ..EnsembleConfig::fast() },
            search: AlSearchConfig {
                chains: 20,
                starts: SearchStarts::NewestPoints,
                start_deg: None,
                step_rad: 0.1,
                threshold_kt: 0.4,
                candidates: 10,
                new_points: 1,
                max_steps: 20_000,
                spread: 65,
                spread_radius_rad: 0.5,
            },
            test_fraction: 0.0,
            old_fraction: 0.3,
            old_temperature_kt: None,
            max_iterations: 20,
            ..fast
        }
    }
}

/// The ensemble's and the flow's view of s: mapped linearly onto [-1, 1].
fn feature(s: f64) -> f64 {
    let (lo, hi) = MullerBrown::S_RANGE;
    2.0 * (s - lo) / (hi - lo) - 1.0
}

impl AlProblem for MullerBrownProblem {
    fn cg_dims(&self) -> usize {
        1
    }

    fn domain(&self) -> CgDomain {
        let (lo, hi) = MullerBrown::S_RANGE;
        CgDomain::Interval { lo, hi }
    }

    fn features(&self) -> CgFeatures {
        let (lo, hi) = MullerBrown::S_RANGE;
        CgFeatures::Interval { lo, hi }
    }

    fn flow_spec(&self, config: &AlConfig) -> FlowSpec {
        let flow = &config.flow;
        FlowSpec {
            dims: 1,
            circular: vec![],
            context: 1,
            layers: flow.layers,
            coupling: CouplingKind::Spline { bins: flow.bins, tail_bound: flow.tail_bound },
            hidden: flow.hidden,
            blocks: flow.blocks,
            shift_every: 0,
            seed: config.seed,
            precision: flow.precision,
        }
    }

    fn context_width(&self) -> usize {
        1
    }

    fn context(&self, cg: &[f64]) -> Vec<f64> {
        cg.iter().map(|&s| feature(s)).collect()
    }

    fn target(&self) -> Arc<dyn TargetEnergy> {
        self.target.clone()
    }

    fn log_density(&self, fine: &[f64], cg: &[f64]) -> Result<Vec<f64>> {
        let (u, _) = self.target.energies_and_gradients(fine, Some(cg))?;
        Ok(u.iter().map(|&u| if u.is_finite() { -u } else { f64::NEG_INFINITY }).collect())
    }

    fn log_density_of_energies(&self, _fine: &[f64], _cg: &[f64], energies: &[f64]) -> Result<Vec<f64>> {
        Ok(energies.iter().map(|&u| if u.is_finite() { -u } else { f64::NEG_INFINITY }).collect())
    }

    fn grid(&self, points_per_dim: usize) -> Result<Vec<Vec<f64>>> {
        let (lo, hi) = MullerBrown::S_RANGE;
        Ok(Axis::new(lo, hi, points_per_dim)?.centres().into_iter().map(|s| vec![s]).collect())
    }

    fn search_start(&self) -> Vec<f64> {
        vec![self.start_centre]
    }

    fn start(
        &self,
        config: &AlConfig,
        _flow: &Flow,
        _adam: &mut Adam,
        rng: &mut ChaCha8Rng,
        _progress: &mut dyn FnMut(AlEvent),
    ) -> Result<StartUp> {
        let (lo, hi) = (self.start_centre - self.start_radius, self.start_centre + self.start_radius);
        Ok(StartUp {
            candidates: (0..config.start_points).map(|_| vec![rng.gen_range(lo..hi)]).collect(),
            startup_evaluations: 0,
            other_evaluations: 0,
            reference_energy: 0.0,
        })
    }

    fn score(&self, ensemble: &PmfEnsemble) -> Result<Score> {
        let (lo, hi) = MullerBrown::S_RANGE;
        let centres = Axis::new(lo, hi, REFERENCE_BINS)?.centres();
        let (mean, _) = ensemble.predict(&centres)?;
        Ok(Score { kld: vec![kl_to_free_energy(&self.reference, &mean)?], marginal_pmfs: vec![] })
    }
}
