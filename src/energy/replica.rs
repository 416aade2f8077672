//! [`ReplicaEnergy`]: the copy trick. Many copies of a small molecule in one OpenMM System, far
//! apart, evaluated in one OpenMM call.
//!
//! The copy system uses `CutoffNonPeriodic` nonbonded methods with cut-off r_c (reaction-field
//! dielectric 1, no switching; the CustomGBForce keeps its expressions). Each configuration is
//! centred on its centroid and placed on a cubic grid with spacing 2 r_c + 0.2 nm. While every atom
//! lies within r_c/2 of its configuration's centroid, all intramolecular pairs are inside the
//! cut-off and all pairs between copies are outside it, so:
//! - forces on each copy equal the NoCutoff forces exactly;
//! - each copy's energy is its NoCutoff energy plus a configuration-independent constant (the
//!   reaction-field term -ONE_4PI_EPS0/r_c * sum of q_i q_j over non-excluded pairs), which is
//!   subtracted.
//!
//! A configuration too large for the cut-off is evaluated exactly by a single-molecule NoCutoff
//! context instead. A batch that does not fill the copies is padded with copies of its first
//! configuration, whose exact energy the same single-molecule context supplies; these extra
//! evaluations are counted in [`ReplicaEnergy::overhead_evaluations`], not in the model's count.

use super::copy_grid::{centroid_and_radius, CopyGrid};
use super::{check_batch, Batch, GradientEvaluation, GradientModel};
use crate::error::{Error, Result};
use crate::openmm::{Context, Integrator, Platform, System};
use crate::units::kt_kj_per_mol;

/// How much farther apart than twice the cut-off the copies' centroids are placed. Any positive
/// margin keeps copies out of each other's cut-off (atoms lie within r_c/2 of their centroid).
const SPACING_MARGIN_NM: f64 = 0.2;

/// Settings of a [`ReplicaEnergy`].
#[derive(Debug, Clone)]
pub struct ReplicaEnergyConfig {
    /// Temperature that defines kT.
    pub temperature_k: f64,
    /// Copies of the molecule in one OpenMM System (configurations per OpenMM call).
    pub copies: usize,
    /// Nonbonded cut-off of the copy system; molecules must fit in a sphere of this diameter.
    pub cutoff_nm: f64,
}

impl Default for ReplicaEnergyConfig {
    fn default() -> Self {
        Self { temperature_k: 300.0, copies: 512, cutoff_nm: 2.0 }
    }
}

/// Gradients (and the batch's total energy) of many configurations per OpenMM call.
pub struct ReplicaEnergy {
    context: Context,
    single: Context,
    copies: usize,
    n_atoms: usize,
    cutoff_nm: f64,
    grid: CopyGrid,
    offset_kj_per_mol: f64,
    kt_kj_per_mol: f64,
    count: u64,
    overhead: u64,
    positions: Vec<f64>,
    forces: Vec<f64>,
}

impl std::fmt::Debug for ReplicaEnergy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicaEnergy")
            .field("copies", &self.copies)
            .field("n_atoms", &self.n_atoms)
            .field("cutoff_nm", &self.cutoff_nm)
            .field("offset_kj_per_mol", &self.offset_kj_per_mol)
            .finish()
    }
}

impl ReplicaEnergy {
    /// Builds the copy system of `system` and its context on `platform`.
    pub fn new(system: &System, platform: &Platform, config: &ReplicaEnergyConfig) -> Result<Self> {
        if !(config.temperature_k.is_finite() && config.temperature_k > 0.0) {
            return Err(Error::invalid(format!("temperature must be positive, got {} K", config.temperature_k)));
        }
        let (copy_system, offset) = system.replicate(config.copies, config.cutoff_nm)?;
        let context = Context::new(&copy_system, platform, Integrator::Verlet)?;
        let single = Context::new(system, platform, Integrator::Verlet)?;
        let n_atoms = system.num_particles();
        Ok(Self {
            context,
            single,
            copies: config.copies,
            n_atoms,
            cutoff_nm: config.cutoff_nm,
            grid: CopyGrid::new(config.copies, 2.0 * config.cutoff_nm + SPACING_MARGIN_NM),
            offset_kj_per_mol: offset,
            kt_kj_per_mol: kt_kj_per_mol(config.temperature_k),
            count: 0,
            overhead: 0,
            positions: vec![0.0; 3 * n_atoms * config.copies],
            forces: vec![0.0; 3 * n_atoms * config.copies],
        })
    }

    /// Energy of each copy minus the NoCutoff energy of the same configuration, in kJ/mol.
    pub fn energy_offset_kj_per_mol(&self) -> f64 {
        self.offset_kj_per_mol
    }

    /// Copies per OpenMM call.
    pub fn copies(&self) -> usize {
        self.copies
    }

    /// Extra single-molecule evaluations made for padding (not counted as model evaluations).
    pub fn overhead_evaluations(&self) -> u64 {
        self.overhead
    }

    /// Whether a configuration fits the cut-off (all atoms strictly within r_c/2 of the centroid).
    pub fn fits(&self, config: &[f64]) -> bool {
        2.0 * centroid_and_radius(config).1 < self.cutoff_nm
    }

    fn place(&mut self, slot: usize, config: &[f64]) {
        let stride = 3 * self.n_atoms;
        self.grid.place(slot, config, &mut self.positions[slot * stride..(slot + 1) * stride]);
    }

    /// Evaluates in OpenMM's units: the sum of NoCutoff energies over the batch (kJ/mol) and every
    /// configuration's forces (kJ/mol/nm). Counts the batch.
    pub fn evaluate_kj(&mut self, batch: &Batch) -> Result<(f64, Vec<f64>)> {
        check_batch(batch, self.n_atoms)?;
        let stride = 3 * self.n_atoms;
        let mut forces = vec![0.0; batch.len() * stride];
        let mut total_kj = 0.0;
        let (fitting, outsized): (Vec<usize>, Vec<usize>) = (0..batch.len()).partition(|&i| self.fits(batch.config(i)));
        for chunk in fitting.chunks(self.copies) {
            let padding = self.copies - chunk.len();
            for (slot, &i) in chunk.iter().enumerate() {
                self.place(slot, batch.config(i));
            }
            let filler = batch.config(chunk[0]);
            for slot in chunk.len()..self.copies {
                self.place(slot, filler);
            }
            let mut energy = [0.0];
            let mut copy_forces = std::mem::take(&mut self.forces);
            let result = self.context.evaluate_batch(&self.positions, &mut energy, Some(&mut copy_forces));
            self.forces = copy_forces;
            result?;
            total_kj += energy[0] - self.copies as f64 * self.offset_kj_per_mol;
            if padding > 0 {
                let mut filler_energy = [0.0];
                self.single.evaluate_batch(filler, &mut filler_energy, None)?;
                self.overhead += 1;
                total_kj -= padding as f64 * filler_energy[0];
            }
            for (slot, &i) in chunk.iter().enumerate() {
                forces[i * stride..(i + 1) * stride].copy_from_slice(&self.forces[slot * stride..(slot + 1) * stride]);
            }
        }
        for i in outsized {
            let mut energy = [0.0];
            self.single.evaluate_batch(
                batch.config(i),
                &mut energy,
                Some(&mut forces[i * stride..(i + 1) * stride]),
            )?;
            total_kj += energy[0];
        }
        self.count += batch.len() as u64;
        Ok((total_kj, forces))
    }
}

impl GradientModel for ReplicaEnergy {
    fn n_atoms(&self) -> usize {
        self.n_atoms
    }

    fn evaluate_gradients(&mut self, batch: &Batch) -> Result<GradientEvaluation> {
        let (total_kj, mut forces) = self.evaluate_kj(batch)?;
        let inverse = 1.0 / self.kt_kj_per_mol;
        forces.iter_mut().for_each(|f| *f *= -inverse);
        Ok(GradientEvaluation { total_reduced_energy: total_kj * inverse, gradients: forces })
    }

    fn evaluation_count(&self) -> u64 {
        self.count
    }
}
