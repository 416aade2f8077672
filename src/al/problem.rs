//! What the active-learning driver ([`super::driver::ActiveLearning`]) needs of a problem: its CG
//! space, the conditional target the flow is trained on and labels are weighed against, how a run
//! starts, and how its PMF is scored. A molecule ([`super::molecule::MoleculeProblem`]) is one.

use std::sync::Arc;

use rand_chacha::ChaCha8Rng;

use super::config::AlConfig;
use super::record::AlEvent;
use super::search::CgDomain;
use crate::error::Result;
use crate::flow::optim::Adam;
use crate::flow::train::TargetEnergy;
use crate::flow::{Flow, FlowSpec};
use crate::pmf::ensemble::{CgFeatures, PmfEnsemble};

/// How the ensemble-mean PMF compares with a problem's references.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Score {
    /// KL divergence to each reference (empty without a reference).
    pub kld: Vec<f64>,
    /// The 2D marginal PMFs (kT, minimum 0, on the reference grid) computed on the way, by pair
    /// of CG dimensions, for a caller that also draws them.
    pub marginal_pmfs: Vec<((usize, usize), Vec<f64>)>,
}

/// What a problem's start-up gives the driver.
#[derive(Debug, Clone, PartialEq)]
pub struct StartUp {
    /// Candidate first CG points, in the order they were made (for a molecule: the CG points of
    /// the valid start-up MD frames, in time order); the driver takes evenly spaced ones.
    pub candidates: Vec<Vec<f64>>,
    /// Energy evaluations of the start-up simulation.
    pub startup_evaluations: u64,
    /// Other energy evaluations (e.g. the reference structure's energy).
    pub other_evaluations: u64,
    /// Energy (u - ln|det dx/dz|, kT) of the reference structure: the origin of the training
    /// loss's regulariser ([`super::driver::EnergyTrainingConfig::regularize_above_kt`]).
    pub reference_energy: f64,
}

/// A problem the active-learning driver can run. CG points are flat `[point][cg_dims]` slices;
/// fine coordinates flat `[row][flow dims]`.
pub trait AlProblem {
    /// Dimensions of a CG point.
    fn cg_dims(&self) -> usize;
    /// The CG space, for the search and the spreading of new points.
    fn domain(&self) -> CgDomain;
    /// How the PMF ensemble sees a CG point.
    fn features(&self) -> CgFeatures;
    /// The conditional flow's architecture under `config`.
    fn flow_spec(&self, config: &AlConfig) -> FlowSpec;
    /// Width of the flow's context per CG point.
    fn context_width(&self) -> usize;
    /// The context rows of CG points (`context_width` values per point).
    fn context(&self, cg: &[f64]) -> Vec<f64>;
    /// The training target (energies and gradients of fine coordinates at CG points).
    fn target(&self) -> Arc<dyn TargetEnergy>;
    /// ln p(s, x_perp), unnormalised, of samples (the importance weights' numerator; -inf where a
    /// sample has no density). Each row costs one energy evaluation.
    fn log_density(&self, fine: &[f64], cg: &[f64]) -> Result<Vec<f64>>;
    /// ln p of rows whose energies the target already returned in training (no evaluation).
    fn log_density_of_energies(&self, fine: &[f64], cg: &[f64], energies: &[f64]) -> Result<Vec<f64>>;
    /// Energy evaluations so far.
    fn evaluations(&self) -> u64 {
        self.target().evaluations()
    }
    /// Samples rejected without an evaluation so far (e.g. a chiral centre of the wrong hand).
    fn rejected(&self) -> u64 {
        0
    }
    /// The uniform grid of the grid-conditioning control, `points_per_dim` per CG dimension.
    fn grid(&self, points_per_dim: usize) -> Result<Vec<Vec<f64>>>;
    /// The first chain start of the uncertainty search when the settings name none.
    fn search_start(&self) -> Vec<f64>;
    /// The start-up: whatever makes the first CG points, and any training of `flow` before
    /// training by energy (with `adam` and `rng`, which the driver goes on using).
    fn start(
        &self,
        config: &AlConfig,
        flow: &Flow,
        adam: &mut Adam,
        rng: &mut ChaCha8Rng,
        progress: &mut dyn FnMut(AlEvent),
    ) -> Result<StartUp>;
    /// The ensemble-mean PMF against the problem's references.
    fn score(&self, ensemble: &PmfEnsemble) -> Result<Score>;
}
