//! The PMF model of coarse-grained active learning: free-energy labels at CG points by importance
//! sampling ([`labels`]) and an ensemble of MLPs fitted to them ([`ensemble`]), whose mean is the
//! potential of mean force and whose spread across members is the uncertainty that stops the
//! active-learning search (e.g. where the standard deviation exceeds 0.2 kT).
//!
//! Pure math: no I/O, no printing; bad input gives [`crate::Error::InvalidInput`], never a panic.
//! Free energies are in kT; angles in radians (any range: they enter through cos and sin).

pub mod ensemble;
pub mod labels;

pub use ensemble::{CgFeatures, EnsembleConfig, FitReport, PmfEnsemble, PmfPrecision};
pub use labels::{
    importance_free_energy, label_or_none, labels_for_points, with_mean_ess, LabelEstimate, WeightedLabel,
};
