//! Active learning in coarse-grained space: one driver ([`driver`]) for every problem behind
//! [`problem::AlProblem`] (any molecule in [`molecule`]), its run checkpoint ([`checkpoint`]);
//! Metropolis search on the PMF ensemble's mean that stops where its uncertainty is high,
//! farthest-point selection, and spreading new points ([`search`]); and the seed's Müller-Brown
//! problem ([`muller_brown`]).

pub mod checkpoint;
pub mod config;
pub mod driver;
pub mod molecule;
pub mod muller_brown;
pub mod problem;
pub mod record;
pub mod search;

pub use search::{farthest_point_selection, spread_points, uncertainty_search, CgDomain, SearchConfig, SearchOutcome};
