//! What an active-learning run reports: its per-iteration log (energy evaluations by purpose,
//! KLD, wall time by phase) and its progress events.

use serde::{Deserialize, Serialize};

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
