//! 2D umbrella sampling over ALDP's (phi, psi): the window plan, the restraints, per-window
//! histograms kept for two independent halves of the run, and their combination by WHAM.
//!
//! Windows sit on an n x n lattice over [-pi, pi)^2 (centres at -pi + (i + 1/2) 2 pi / n) with
//! periodic harmonic restraints of one force constant on phi and on psi. Each window's samples go
//! to the first or the second half of its histogram by time, so that the two halves give two
//! independent PMF estimates, whose divergence measures the reference's own noise.

use crate::coords::aldp;
use crate::error::{Error, Result};
use crate::md::wham::{periodic_harmonic_bias_2d_kt, UmbrellaWindow, WhamConfig, WhamResult};
use crate::metrics::histogram::Axis;
use crate::openmm::TorsionRestraint;
use crate::units::kt_kj_per_mol;

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

/// Per-window (phi, psi) histograms for the two halves of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct UmbrellaHistograms {
    windows: usize,
    axis: Axis,
    /// counts[half][window * bins^2 + phi_bin * bins + psi_bin]
    counts: [Vec<f64>; 2],
}

impl UmbrellaHistograms {
    /// Empty histograms for `plan`.
    pub fn new(plan: &UmbrellaPlan) -> Result<Self> {
        plan.validate()?;
        let size = plan.windows() * plan.bins * plan.bins;
        Ok(Self {
            windows: plan.windows(),
            axis: Axis::dihedral(plan.bins)?,
            counts: [vec![0.0; size], vec![0.0; size]],
        })
    }

    /// Histograms from stored counts (two halves, windows x bins^2 each).
    pub fn from_counts(plan: &UmbrellaPlan, first: Vec<f64>, second: Vec<f64>) -> Result<Self> {
        let mut h = Self::new(plan)?;
        if first.len() != h.counts[0].len() || second.len() != h.counts[1].len() {
            return Err(Error::invalid("stored umbrella histograms do not match the plan"));
        }
        h.counts = [first, second];
        Ok(h)
    }

    /// Counts of one half.
    pub fn counts(&self, half: usize) -> &[f64] {
        &self.counts[half.min(1)]
    }

    /// Adds one sample of window `window` to half `half` (0 or 1).
    pub fn add(&mut self, window: usize, half: usize, phi: f64, psi: f64) -> Result<()> {
        if window >= self.windows || half > 1 {
            return Err(Error::invalid(format!("window {window} or half {half} out of range")));
        }
        let (i, j) = match (self.axis.bin_of(phi), self.axis.bin_of(psi)) {
            (Some(i), Some(j)) => (i, j),
            _ => return Err(Error::invalid(format!("sample ({phi}, {psi}) is not a finite angle"))),
        };
        let b = self.axis.bins;
        self.counts[half][window * b * b + i * b + j] += 1.0;
        Ok(())
    }

    /// Samples per half.
    pub fn samples(&self) -> [f64; 2] {
        [self.counts[0].iter().sum(), self.counts[1].iter().sum()]
    }

    /// The PMF on the bins x bins grid from the given halves (`&[0]`, `&[1]` or `&[0, 1]`), by
    /// WHAM, at `temperature_k`.
    pub fn pmf(
        &self,
        plan: &UmbrellaPlan,
        halves: &[usize],
        temperature_k: f64,
        config: &WhamConfig,
    ) -> Result<WhamResult> {
        let b = self.axis.bins;
        let centres = self.axis.centres();
        let k_kt = plan.k_kj_per_mol_rad2 / kt_kj_per_mol(temperature_k);
        let mut windows = Vec::with_capacity(self.windows);
        for w in 0..self.windows {
            let mut counts = vec![0.0; b * b];
            for &h in halves {
                for (c, v) in counts.iter_mut().zip(&self.counts[h.min(1)][w * b * b..(w + 1) * b * b]) {
                    *c += v;
                }
            }
            if counts.iter().sum::<f64>() == 0.0 {
                continue;
            }
            let bias = periodic_harmonic_bias_2d_kt(plan.centre(w), k_kt, &centres, &centres)?;
            windows.push(UmbrellaWindow::new(bias, counts)?);
        }
        if windows.is_empty() {
            return Err(Error::invalid("no umbrella window has samples yet"));
        }
        config.solve(&windows)
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
        let mut h = UmbrellaHistograms::new(&plan).expect("h");
        h.add(3, 1, 0.1, -3.1).expect("add");
        assert_eq!(h.samples(), [0.0, 1.0]);
        assert_eq!(h.counts(1)[3 * 100 + 5 * 10], 1.0);
        assert!(h.add(16, 0, 0.0, 0.0).is_err());
        assert!(h.add(0, 0, f64::NAN, 0.0).is_err());
    }
}
