//! `cgflow grid`: the grid-conditioning control experiment (BRIEF section 5): the conditional flow
//! trained by energy on a uniform grid of the CG angles (points_per_angle^d points), labels and the PMF ensemble, no search. Same
//! settings file, outputs and resume as `cgflow al`.

use crate::al::driver::AlMode;
use anyhow::Result;

pub use super::al::AlArgs as GridArgs;

/// Runs `cgflow grid`.
pub fn run(args: GridArgs) -> Result<()> {
    super::al::run(args, AlMode::Grid)
}
