//! Molecular dynamics drivers and free-energy estimators.
//!
//! - [`walkers`]: many independent Langevin walkers of one molecule in one OpenMM Context, with
//!   per-walker dihedral restraints for umbrella sampling and exact checkpoint/resume;
//! - [`metropolis`]: seeded Metropolis Monte Carlo for low-dimensional analytic potentials;
//! - [`mc_baseline`]: the Müller-Brown Monte Carlo baseline, KLD to the exact PMF against energy
//!   evaluations;
//! - [`umbrella`]: the 2D (phi, psi) umbrella plan and its restraints;
//! - [`mbar`]: the binless multistate estimator (MBAR) for 2D umbrella windows and unbiased MD,
//!   with block-bootstrap resampling for error bars;
//! - [`wham`]: the weighted histogram analysis method for umbrella sampling on a 1D or 2D grid
//!   (periodic or not), in kT, with the periodic harmonic restraint biases used for the (phi, psi)
//!   reference PMF.

pub mod mbar;
pub mod mc_baseline;
pub mod metropolis;
pub mod umbrella;
pub mod walkers;
pub mod wham;

pub use walkers::{WalkerCheckpoint, WalkerConfig, Walkers};
