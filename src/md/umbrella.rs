//! 2D umbrella sampling over ALDP's (phi, psi): the window plan and the restraints.
//!
//! Windows sit on an n x n lattice over [-pi, pi)^2 (centres at -pi + (i + 1/2) 2 pi / n) with
//! periodic harmonic restraints of one force constant on phi and on psi. Their samples are combined
//! by MBAR ([`crate::md::mbar`]).

use crate::coords::aldp;
use crate::error::{Error, Result};
use crate::openmm::TorsionRestraint;

/// Windows and restraint strength of a 2D umbrella run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UmbrellaPlan {
    /// Windows per dimension (n x n windows in all).
    pub windows_per_dim: usize,
    /// Restraint force constant on phi and on psi, kJ/mol/rad^2.
    pub k_kj_per_mol_rad2: f64,
    /// Histogram bins per dimension.
    pub bins: usize,
}

impl UmbrellaPlan {
    /// Checks the plan.
    pub fn validate(&self) -> Result<()> {
        if self.windows_per_dim == 0 || self.bins == 0 {
            return Err(Error::invalid("umbrella plan needs at least one window and one bin"));
        }
        if !(self.k_kj_per_mol_rad2.is_finite() && self.k_kj_per_mol_rad2 > 0.0) {
            return Err(Error::invalid("umbrella force constant must be positive"));
        }
        Ok(())
    }

    /// Number of windows.
    pub fn windows(&self) -> usize {
        self.windows_per_dim * self.windows_per_dim
    }

    /// Centre (phi, psi) of window `w`; windows are ordered phi-major.
    pub fn centre(&self, w: usize) -> [f64; 2] {
        let step = std::f64::consts::TAU / self.windows_per_dim as f64;
        let at = |i: usize| -std::f64::consts::PI + (i as f64 + 0.5) * step;
        [at(w / self.windows_per_dim), at(w % self.windows_per_dim)]
    }

    /// The restraints of window `w` on ALDP's phi and psi.
    pub fn restraints(&self, w: usize) -> Vec<TorsionRestraint> {
        let [phi, psi] = self.centre(w);
        vec![
            TorsionRestraint { atoms: aldp::PHI_ATOMS, k_kj_per_mol_rad2: self.k_kj_per_mol_rad2, centre_rad: phi },
            TorsionRestraint { atoms: aldp::PSI_ATOMS, k_kj_per_mol_rad2: self.k_kj_per_mol_rad2, centre_rad: psi },
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn centres_cover_the_torus_and_restraints_name_phi_and_psi() {
        let plan = UmbrellaPlan { windows_per_dim: 4, k_kj_per_mol_rad2: 100.0, bins: 10 };
        let pi = std::f64::consts::PI;
        assert_eq!(plan.windows(), 16);
        assert_eq!(plan.centre(0), [-0.75 * pi, -0.75 * pi]);
        assert_eq!(plan.centre(6), [-0.25 * pi, 0.25 * pi]);
        let r = plan.restraints(6);
        assert_eq!((r[0].atoms, r[1].atoms), (aldp::PHI_ATOMS, aldp::PSI_ATOMS));
        assert_eq!((r[0].centre_rad, r[1].centre_rad), (-0.25 * pi, 0.25 * pi));
    }
}
