//! Active learning in coarse-grained space (alanine dipeptide in [`aldp`], Müller-Brown in
//! [`muller_brown`]): Metropolis search on the PMF ensemble's mean that
//! stops where its uncertainty is high, farthest-point selection, and spreading new points; and
//! the ALDP loop's run checkpoint ([`checkpoint`]).

pub mod aldp;
pub mod checkpoint;
pub mod muller_brown;
pub mod search;

pub use search::{farthest_point_selection, spread_points, uncertainty_search, CgDomain, SearchConfig, SearchOutcome};
