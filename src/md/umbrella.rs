//! 2D umbrella sampling over two dihedral CVs of any molecule (alanine dipeptide's (phi, psi), or
//! one (phi_i, psi_i) pair of a longer peptide): the window plan and the restraints.
//!
//! Windows sit on an n x n lattice over [-pi, pi)^2 (centres at -pi + (i + 1/2) 2 pi / n), or on
//! the part of it inside given boxes (stiff windows where a coarse lattice leaves bins unsampled),
//! with periodic harmonic restraints of one force constant on both CVs. Their samples are combined
//! by MBAR ([`crate::md::mbar`]).

use crate::error::{Error, Result};
use crate::openmm::TorsionRestraint;

/// Windows and restraint strength of a 2D umbrella run.
#[derive(Debug, Clone, PartialEq)]
pub struct UmbrellaPlan {
    /// The two restrained dihedrals (0-based atom indices), e.g. alanine dipeptide's phi and psi.
    pub cv_dihedrals: [[usize; 4]; 2],
    /// The peptide bonds (omega dihedrals) the trans walls act on.
    pub trans_wall_dihedrals: Vec<[usize; 4]>,
    /// Windows per dimension (n x n windows in all).
    pub windows_per_dim: usize,
    /// Restraint force constant on phi and on psi, kJ/mol/rad^2.
    pub k_kj_per_mol_rad2: f64,
    /// Histogram bins per dimension.
    pub bins: usize,
    /// Force constant of the walls that keep the peptide bonds trans, kJ/mol/rad^2 (0: none):
    /// flat-bottomed restraints on omega, zero within [`TRANS_WALL_HALF_WIDTH_RAD`] of trans.
    /// Without them, windows pulled from the start structure to their centres turn peptide bonds
    /// cis (5 of 40 windows within 25 ps, measured), and a window stuck in cis samples a state
    /// that unbiased MD never reaches.
    pub trans_wall_k_kj_per_mol_rad2: f64,
    /// Only the lattice windows whose centre lies in one of these boxes, `[[cv1_min, cv1_max],
    /// [cv2_min, cv2_max]]` in radians (bounds included); empty: every window.
    pub centre_boxes_rad: Vec<[[f64; 2]; 2]>,
}

/// Half-width of the flat bottom of the trans walls: omega may move 90 degrees from trans freely
/// (its thermal spread is about 10 degrees), so the walls never act on a trans structure.
pub const TRANS_WALL_HALF_WIDTH_RAD: f64 = std::f64::consts::FRAC_PI_2;

impl UmbrellaPlan {
    /// Checks the plan.
    pub fn validate(&self) -> Result<()> {
        if self.windows_per_dim == 0 || self.bins == 0 {
            return Err(Error::invalid("umbrella plan needs at least one window and one bin"));
        }
        if !(self.k_kj_per_mol_rad2.is_finite() && self.k_kj_per_mol_rad2 > 0.0) {
            return Err(Error::invalid("umbrella force constant must be positive"));
        }
        if !(self.trans_wall_k_kj_per_mol_rad2.is_finite() && self.trans_wall_k_kj_per_mol_rad2 >= 0.0) {
            return Err(Error::invalid("trans-wall force constant must be finite and >= 0"));
        }
        let same = |a: &[usize; 4], b: &[usize; 4]| a == b || *a == [b[3], b[2], b[1], b[0]];
        let [a, b] = self.cv_dihedrals;
        if same(&a, &b) {
            return Err(Error::invalid(format!("the two umbrella CVs are the same dihedral {a:?}")));
        }
        if self.trans_wall_k_kj_per_mol_rad2 > 0.0 {
            if let Some(w) = self.trans_wall_dihedrals.iter().find(|w| same(w, &a) || same(w, &b)) {
                return Err(Error::invalid(format!(
                    "dihedral {w:?} is both an umbrella CV and held by a trans wall: leave it out of the walls"
                )));
            }
        }
        let pi = std::f64::consts::PI;
        for b in &self.centre_boxes_rad {
            if b.iter().any(|[lo, hi]| !(lo.is_finite() && hi.is_finite() && -pi <= *lo && lo < hi && *hi <= pi)) {
                return Err(Error::invalid(format!(
                    "window box {b:?} rad: each range needs -pi <= min < max <= pi (a range across +-pi is two boxes)"
                )));
            }
        }
        if self.windows() == 0 {
            return Err(Error::invalid("no window of the lattice has its centre inside the boxes"));
        }
        Ok(())
    }

    /// The lattice indices of the windows run, CV-1-major.
    fn lattice_windows(&self) -> Vec<usize> {
        let all = 0..self.windows_per_dim * self.windows_per_dim;
        if self.centre_boxes_rad.is_empty() {
            return all.collect();
        }
        all.filter(|&i| {
            let c = self.lattice_centre(i);
            // A centre on a box's edge (given in degrees, converted) is inside despite round-off.
            let slack = 1e-9;
            self.centre_boxes_rad.iter().any(|b| (0..2).all(|d| b[d][0] - slack <= c[d] && c[d] <= b[d][1] + slack))
        })
        .collect()
    }

    fn lattice_centre(&self, i: usize) -> [f64; 2] {
        let step = std::f64::consts::TAU / self.windows_per_dim as f64;
        let at = |i: usize| -std::f64::consts::PI + (i as f64 + 0.5) * step;
        [at(i / self.windows_per_dim), at(i % self.windows_per_dim)]
    }

    /// Number of windows.
    pub fn windows(&self) -> usize {
        if self.centre_boxes_rad.is_empty() {
            self.windows_per_dim * self.windows_per_dim
        } else {
            self.lattice_windows().len()
        }
    }

    /// Centre (CV 1, CV 2) of window `w` (`w < windows()`); windows are ordered CV-1-major.
    pub fn centre(&self, w: usize) -> [f64; 2] {
        if self.centre_boxes_rad.is_empty() {
            self.lattice_centre(w)
        } else {
            self.lattice_centre(self.lattice_windows()[w])
        }
    }

    /// The centres of every window, in order.
    pub fn centres(&self) -> Vec<[f64; 2]> {
        self.lattice_windows().into_iter().map(|i| self.lattice_centre(i)).collect()
    }

    /// The restraints of window `w` on the two CVs, and the trans walls on the peptide bonds.
    pub fn restraints(&self, w: usize) -> Vec<TorsionRestraint> {
        self.restraints_at(self.centre(w))
    }

    /// The restraints of a window centred at `centre`, and the trans walls.
    pub fn restraints_at(&self, centre: [f64; 2]) -> Vec<TorsionRestraint> {
        let [first, second] = centre;
        let mut restraints = vec![
            TorsionRestraint::harmonic(self.cv_dihedrals[0], self.k_kj_per_mol_rad2, first),
            TorsionRestraint::harmonic(self.cv_dihedrals[1], self.k_kj_per_mol_rad2, second),
        ];
        if self.trans_wall_k_kj_per_mol_rad2 > 0.0 {
            restraints.extend(self.trans_wall_dihedrals.iter().map(|&atoms| TorsionRestraint {
                atoms,
                k_kj_per_mol_rad2: self.trans_wall_k_kj_per_mol_rad2,
                centre_rad: std::f64::consts::PI,
                flat_half_width_rad: TRANS_WALL_HALF_WIDTH_RAD,
            }));
        }
        restraints
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn centres_cover_the_torus_and_restraints_name_the_cvs_and_walls() {
        let (phi, psi, omegas) = ([4, 6, 8, 14], [6, 8, 14, 16], vec![[1, 4, 6, 8], [8, 14, 16, 18]]);
        let plan = UmbrellaPlan {
            cv_dihedrals: [phi, psi],
            trans_wall_dihedrals: omegas.clone(),
            windows_per_dim: 4,
            k_kj_per_mol_rad2: 100.0,
            bins: 10,
            trans_wall_k_kj_per_mol_rad2: 1000.0,
            centre_boxes_rad: vec![],
        };
        let pi = std::f64::consts::PI;
        assert_eq!(plan.windows(), 16);
        assert_eq!(plan.centre(0), [-0.75 * pi, -0.75 * pi]);
        assert_eq!(plan.centre(6), [-0.25 * pi, 0.25 * pi]);
        let r = plan.restraints(6);
        assert_eq!((r[0].atoms, r[1].atoms), (phi, psi));
        assert_eq!((r[2].atoms, r[3].atoms), (omegas[0], omegas[1]));
        assert_eq!((r[2].centre_rad, r[3].flat_half_width_rad), (std::f64::consts::PI, TRANS_WALL_HALF_WIDTH_RAD));
        assert_eq!((r[0].centre_rad, r[1].centre_rad), (-0.25 * pi, 0.25 * pi));
        let none = UmbrellaPlan { trans_wall_k_kj_per_mol_rad2: 0.0, ..plan.clone() };
        assert_eq!(none.restraints(6).len(), 2);
        plan.validate().expect("valid");
        let same = UmbrellaPlan { cv_dihedrals: [phi, [14, 8, 6, 4]], ..plan.clone() };
        assert!(same.validate().unwrap_err().to_string().contains("same dihedral"));
        let walled = UmbrellaPlan { cv_dihedrals: [[8, 6, 4, 1], psi], ..plan.clone() };
        assert!(walled.validate().unwrap_err().to_string().contains("both an umbrella CV and held by a trans wall"));

        // Boxes keep the lattice windows whose centres they hold (lattice centres -3/4 pi, -1/4 pi,
        // 1/4 pi, 3/4 pi on each CV), in lattice order.
        let boxed = UmbrellaPlan {
            centre_boxes_rad: vec![[[-0.5 * pi, 0.5 * pi], [0.0, pi]], [[0.7 * pi, pi], [-pi, -0.7 * pi]]],
            ..plan.clone()
        };
        boxed.validate().expect("valid boxes");
        assert_eq!(boxed.windows(), 5);
        assert_eq!(
            boxed.centres(),
            vec![
                [-0.25 * pi, 0.25 * pi],
                [-0.25 * pi, 0.75 * pi],
                [0.25 * pi, 0.25 * pi],
                [0.25 * pi, 0.75 * pi],
                [0.75 * pi, -0.75 * pi]
            ]
        );
        assert_eq!(boxed.centre(4), [0.75 * pi, -0.75 * pi]);
        assert_eq!(boxed.restraints(4)[0].centre_rad, 0.75 * pi);
        assert_eq!(plan.centres().len(), 16);
        let empty = UmbrellaPlan { centre_boxes_rad: vec![[[0.0, 0.1], [0.0, 0.1]]], ..plan.clone() };
        assert!(empty.validate().unwrap_err().to_string().contains("no window"));
        let reversed = UmbrellaPlan { centre_boxes_rad: vec![[[0.5, 0.1], [0.0, 1.0]]], ..plan };
        assert!(reversed.validate().unwrap_err().to_string().contains("min < max"));
    }
}
