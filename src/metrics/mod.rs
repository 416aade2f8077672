//! Metrics every comparison uses: histograms over CG coordinates, KL divergences, effective sample
//! sizes.
//!
//! - [`histogram`]: [`Axis`] (periodic or not), [`Histogram1d`], [`Histogram2d`], conversions
//!   between free energies (kT) and bin probabilities, Gaussian smoothing over a [`BinGrid`].
//! - [`divergence`]: the PMF accuracy metric, the forward KL divergence `D(ref || model)` over
//!   histogram bins, with an explicit [`EmptyBinRule`] for model histograms (pseudo-mass or kernel
//!   smoothing), a [`KlReference`] compared at a chosen kernel resolution, and the noise floor of a
//!   finite reference (from theory, or measured by its two halves).
//! - [`cost_curve`]: KLD against energy evaluations, curves averaged over runs, interpolation, and
//!   the speedup at equal KLD (with bounds, never extrapolated).
//! - [`quadrature`]: adaptive Gauss-Kronrod integration and the exact Müller-Brown and double-well
//!   free energies.
//! - [`marginal`]: 2D marginals of a free energy over a d-torus of CG angles, by a product grid.
//! - [`ramachandran`]: the basins (beta/PII, alpha_R, phi > 0) of a residue's (phi, psi).
//! - [`batch_means`]: the mean of a correlated series from block means of unequal sizes, with
//!   its standard error.
//! - [`weights`]: log-space importance weights: [`log_sum_exp`], [`effective_sample_size`], the
//!   importance-sampling free-energy estimate (optionally with the top weights clipped).
//!
//! Pure math: no I/O, no printing; bad input gives [`crate::Error::InvalidInput`], never a panic.
//! Angles are radians; periodic (phi, psi) live on `[-pi, pi)`.

pub mod batch_means;
pub mod cost_curve;
pub mod divergence;
pub mod histogram;
pub mod marginal;
pub mod quadrature;
pub mod ramachandran;
pub mod weights;

pub use divergence::{
    halves_noise_floor, histogram_noise_floor, kl_divergence, kl_to_free_energy, kl_to_histogram, occupied_bins,
    EmptyBinRule, HalvesNoiseFloor, KlReference, DEFAULT_SMOOTHING_FLOOR,
};
pub use histogram::{
    free_energy_from_probabilities, probabilities_from_free_energy, smooth_1d, smooth_periodic_2d, Axis, BinGrid,
    Histogram1d, Histogram2d,
};
pub use weights::{
    clip_top_k_log_weights, effective_sample_size, free_energy_from_log_weights, free_energy_with_top_k_clipped,
    log_sum_exp, normalized_weights, relative_ess,
};
