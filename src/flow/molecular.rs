//! Conditional flows over molecules: the geometry that ties a flow q(x_perp | s) over the fine
//! internal coordinates to Cartesian structures, and the all-atom target density it is trained on.
//!
//! Flow space is the normalised internal-coordinate vector z of [`InternalCoordinates`] split into
//! the CG coordinates s (circular dihedrals such as phi and psi of alanine dipeptide, unscaled, so
//! z_s = wrap(angle - reference angle)) and the fine coordinates x_perp the flow models. The flow's
//! context is (cos, sin) of every CG angle. The joint density of (s, x_perp) is
//! ln p(z) = -u(x(z)) + ln|det dx/dz|, and [`ConditionalMolecularTarget`] returns its negative,
//! e(z) = u(x(z)) - ln|det dx/dz|, with de/dx_perp pulled back through the Z-matrix.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::coords::aldp;
use crate::coords::cg::CgSplit;
use crate::coords::chirality::{keeps_chirality, signed_volume, ChiralCentre};
use crate::coords::geometry::wrap_angle;
use crate::coords::transform::InternalCoordinates;
use crate::energy::{Batch, EnergyModel};
use crate::error::{Error, Result};
use crate::flow::flow::FlowSpec;
use crate::flow::train::TargetEnergy;

/// A molecule in flow space: its internal coordinates and which of them are the CG angles.
#[derive(Debug, Clone, PartialEq)]
pub struct ConditionalMolecule {
    ic: InternalCoordinates,
    split: CgSplit,
    cg_reference_rad: Vec<f64>,
    chiral_centres: Vec<ChiralCentre>,
}

/// A batch of structures built from flow coordinates.
#[derive(Debug, Clone, PartialEq)]
pub struct Structures {
    /// Cartesian positions (configs x atoms x 3, nm, in the anchor frame).
    pub positions_nm: Vec<f64>,
    /// Full flow-space vectors z (configs x dim).
    pub z: Vec<f64>,
    /// ln|det dx/dz| per configuration.
    pub log_det_dx_dz: Vec<f64>,
}

impl ConditionalMolecule {
    /// A molecule with the CG angles at layout indices `cg_indices` of `ic` (each a circular
    /// dihedral, so that it is unscaled and its flow coordinate is the angle shifted by the
    /// reference value).
    pub fn new(ic: InternalCoordinates, cg_indices: &[usize]) -> Result<Self> {
        if cg_indices.is_empty() {
            return Err(Error::invalid("a conditional molecule needs at least one CG coordinate"));
        }
        let circular = ic.normalization().circular();
        if let Some(&i) = cg_indices.iter().find(|&&i| i >= circular.len() || !circular[i]) {
            return Err(Error::invalid(format!("CG coordinate {i} is not a circular dihedral of the molecule")));
        }
        let split = CgSplit::new(ic.dim(), cg_indices)?;
        let cg_reference_rad = cg_indices.iter().map(|&i| ic.normalization().reference()[i]).collect();
        Ok(Self { ic, split, cg_reference_rad, chiral_centres: Vec::new() })
    }

    /// The same molecule with chiral centres whose handedness every valid structure keeps:
    /// structures of the other handedness at any of them are never evaluated, get zero weight,
    /// and in training by energy a penalty that turns them back. Errors on a centre that names an
    /// atom the molecule does not have, or whose reference volume is not positive and finite.
    pub fn with_chiral_centres(mut self, centres: Vec<ChiralCentre>) -> Result<Self> {
        let n = self.n_atoms();
        for c in &centres {
            if c.atom >= n || c.substituents.iter().any(|&a| a >= n) {
                return Err(Error::invalid(format!(
                    "chiral centre {} names an atom beyond the molecule's {n}",
                    c.atom
                )));
            }
            if !(c.reference_volume_nm3.is_finite() && c.reference_volume_nm3 > 0.0 && c.reference_sign.abs() == 1.0) {
                return Err(Error::invalid(format!(
                    "chiral centre {}: reference sign and volume are not usable",
                    c.atom
                )));
            }
        }
        self.chiral_centres = centres;
        Ok(self)
    }

    /// Any molecule from its description (Z-matrix from the bond graph, CG dihedrals, circular
    /// dimensions, chiral centres; [`crate::coords::molecule::Molecule`]), normalised around its
    /// reference structure with the default scales.
    pub fn from_molecule(molecule: &crate::coords::molecule::Molecule) -> Result<Self> {
        let ic = InternalCoordinates::around_structure(
            molecule.zmatrix().clone(),
            molecule.reference_nm(),
            crate::coords::normalize::Scales::default(),
            molecule.circular_indices(),
        )?;
        Self::new(ic, molecule.cg_indices())?.with_chiral_centres(molecule.chiral_centres().to_vec())
    }

    /// Alanine dipeptide conditioned on (phi, psi), normalised around `x_ref` (nm; the
    /// minimum-energy structure in the reference code), with its hand-written Z-matrix. D-alanine
    /// structures (mirror images at CA) are invalid.
    pub fn aldp(x_ref: &[f64]) -> Result<Self> {
        let ic = aldp::internal_coordinates(x_ref)?;
        Self::new(ic, &[aldp::PHI_INDEX, aldp::PSI_INDEX])?.with_chiral_centres(vec![aldp::ca_chiral_centre()])
    }

    /// The chiral centres valid structures keep.
    pub fn chiral_centres(&self) -> &[ChiralCentre] {
        &self.chiral_centres
    }

    /// The internal coordinates.
    pub fn internal_coordinates(&self) -> &InternalCoordinates {
        &self.ic
    }

    /// Number of atoms.
    pub fn n_atoms(&self) -> usize {
        self.ic.n_atoms()
    }

    /// Number of fine coordinates (the flow's dimension).
    pub fn fine_dims(&self) -> usize {
        self.split.fine_indices().len()
    }

    /// Number of CG angles.
    pub fn cg_dims(&self) -> usize {
        self.split.cg_indices().len()
    }

    /// The reference conditional flow architecture (12 spline couplings of 8 bins, 256 hidden
    /// units, a periodic shift every 2 layers) for this molecule: its fine coordinates, their
    /// circular dimensions, and (cos, sin) of every CG angle as the context. For alanine
    /// dipeptide's hand-written molecule this is [`FlowSpec::aldp_conditional`] (tested).
    pub fn reference_flow_spec(&self, precision: crate::flow::Precision, seed: u64) -> FlowSpec {
        FlowSpec {
            dims: self.fine_dims(),
            circular: self.fine_circular_indices(),
            context: self.context_width(),
            ..FlowSpec::aldp_conditional(precision, seed)
        }
    }

    /// Width of the flow's context: (cos, sin) of every CG angle.
    pub fn context_width(&self) -> usize {
        2 * self.cg_dims()
    }

    /// Positions, within the fine vector, of the circular coordinates (the flow's circular dims).
    pub fn fine_circular_indices(&self) -> Vec<usize> {
        let circular = self.split.fine_mask(self.ic.normalization().circular());
        circular.iter().enumerate().filter(|(_, &c)| c).map(|(i, _)| i).collect()
    }

    /// The context rows (cos a, sin a for each CG angle a) of CG points given flat in radians.
    pub fn context(&self, cg_rad: &[f64]) -> Vec<f64> {
        cg_rad.iter().flat_map(|a| [a.cos(), a.sin()]).collect()
    }

    fn check_rows(&self, fine: &[f64], cg_rad: &[f64]) -> Result<usize> {
        let (f, c) = (self.fine_dims(), self.cg_dims());
        if fine.len() % f != 0 || cg_rad.len() % c != 0 || fine.len() / f != cg_rad.len() / c {
            return Err(Error::invalid(format!(
                "{} fine values and {} CG values do not make whole configurations of {f} and {c}",
                fine.len(),
                cg_rad.len()
            )));
        }
        if let Some(i) = cg_rad.iter().position(|a| !a.is_finite()) {
            return Err(Error::invalid(format!("CG point {}: non-finite angle {}", i / c, cg_rad[i])));
        }
        Ok(fine.len() / f)
    }

    /// Full flow vectors z from fine coordinates and CG angles (radians).
    pub fn join(&self, fine: &[f64], cg_rad: &[f64]) -> Result<Vec<f64>> {
        let n = self.check_rows(fine, cg_rad)?;
        let (f, c, d) = (self.fine_dims(), self.cg_dims(), self.ic.dim());
        let mut z = vec![0.0; n * d];
        for i in 0..n {
            let row = &mut z[i * d..(i + 1) * d];
            for (k, &j) in self.split.fine_indices().iter().enumerate() {
                row[j] = fine[i * f + k];
            }
            for (k, &j) in self.split.cg_indices().iter().enumerate() {
                row[j] = wrap_angle(cg_rad[i * c + k] - self.cg_reference_rad[k]);
            }
        }
        Ok(z)
    }

    /// Builds structures from fine coordinates and CG angles (radians).
    pub fn to_cartesian(&self, fine: &[f64], cg_rad: &[f64]) -> Result<Structures> {
        let z = self.join(fine, cg_rad)?;
        let (positions_nm, log_det_dx_dz) = self.ic.inverse(&z)?;
        Ok(Structures { positions_nm, z, log_det_dx_dz })
    }

    /// Cartesian structures (nm) -> (fine coordinates, CG angles in radians, ln|det dz/dx|): the
    /// training data of a flow trained by example.
    pub fn from_cartesian(&self, positions_nm: &[f64]) -> Result<(Vec<f64>, Vec<f64>, Vec<f64>)> {
        let (z, log_det) = self.ic.forward(positions_nm)?;
        let d = self.ic.dim();
        let n = z.len() / d;
        let mut fine = Vec::with_capacity(n * self.fine_dims());
        let mut cg = Vec::with_capacity(n * self.cg_dims());
        for row in z.chunks(d) {
            fine.extend(self.split.fine_indices().iter().map(|&j| row[j]));
            cg.extend(self.split.cg_indices().iter().zip(&self.cg_reference_rad).map(|(&j, r)| wrap_angle(row[j] + r)));
        }
        Ok((fine, cg, log_det))
    }

    /// Whether each structure is valid: the reference's handedness at every chiral centre (L
    /// alanine in alanine dipeptide; always true for a molecule without centres).
    pub fn valid(&self, positions_nm: &[f64]) -> Result<Vec<bool>> {
        keeps_chirality(&self.chiral_centres, self.n_atoms(), positions_nm)
    }
}

/// Penalty energy (kT) of a structure of the wrong handedness during training by energy, with
/// its gradient: `PENALTY_BASE_KT` plus, for every centre of the wrong handedness,
/// `PENALTY_SLOPE_KT * (-sign) t / |t_ref|`, where t is the centre's [`signed_volume`], `sign`
/// its reference sign and `|t_ref|` its reference volume (for alanine dipeptide's CA,
/// t = ((C - N) x (CB - N)) . (HA - N), positive for D). The base keeps such samples among the
/// largest losses (dropped first); the slope pushes each wrong centre towards the right side. Never
/// used for importance weights, where invalid structures have zero weight.
fn chirality_penalty(x: &[f64], grad: &mut [f64], centres: &[ChiralCentre]) -> f64 {
    use nalgebra::Vector3;
    let atom = |i: usize| Vector3::new(x[3 * i], x[3 * i + 1], x[3 * i + 2]);
    grad.iter_mut().for_each(|g| *g = 0.0);
    let mut penalty = PENALTY_BASE_KT;
    for centre in centres.iter().filter(|c| signed_volume(x, &c.substituents) * c.reference_sign <= 0.0) {
        let [ia, ib, ic, id] = centre.substituents;
        let (origin, b, c, d) = (atom(ia), atom(ib), atom(ic), atom(id));
        let (a, b, h) = (b - origin, c - origin, d - origin);
        let t = a.cross(&b).dot(&h);
        let scale = PENALTY_SLOPE_KT / centre.reference_volume_nm3 * -centre.reference_sign;
        let (da, db, dh) = (b.cross(&h) * scale, h.cross(&a) * scale, a.cross(&b) * scale);
        for (atom, g) in [(ib, da), (ic, db), (id, dh), (ia, -(da + db + dh))] {
            for k in 0..3 {
                grad[3 * atom + k] += g[k];
            }
        }
        penalty += scale * t;
    }
    penalty
}

/// Base of the chirality penalty (kT).
const PENALTY_BASE_KT: f64 = 100.0;
/// Slope of the chirality penalty (kT per reference volume).
const PENALTY_SLOPE_KT: f64 = 50.0;

/// The all-atom Boltzmann density of a molecule in flow space as a conditional training target:
/// rows are fine coordinates, the CG angles come with each row. Invalid structures (D-alanine)
/// get an infinite energy without an energy evaluation; every evaluated structure is counted.
pub struct ConditionalMolecularTarget {
    molecule: ConditionalMolecule,
    energy: Mutex<Box<dyn EnergyModel>>,
    rejected: AtomicU64,
}

impl std::fmt::Debug for ConditionalMolecularTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConditionalMolecularTarget")
            .field("fine_dims", &self.molecule.fine_dims())
            .field("cg_dims", &self.molecule.cg_dims())
            .field("evaluations", &self.evaluations())
            .finish()
    }
}

/// Per-row results of [`ConditionalMolecularTarget::evaluate`].
#[derive(Debug, Clone, PartialEq)]
pub struct MolecularEvaluation {
    /// The structures.
    pub structures: Structures,
    /// u = U/kT per row (+inf for invalid structures).
    pub reduced_energies: Vec<f64>,
    /// Whether each structure is valid (L chirality).
    pub valid: Vec<bool>,
}

impl ConditionalMolecularTarget {
    /// Wraps a molecule and an energy model of the same atoms.
    pub fn new(molecule: ConditionalMolecule, energy: Box<dyn EnergyModel>) -> Result<Self> {
        if energy.n_atoms() != molecule.n_atoms() {
            return Err(Error::invalid(format!(
                "the energy model has {} atoms, the molecule {}",
                energy.n_atoms(),
                molecule.n_atoms()
            )));
        }
        Ok(Self { molecule, energy: Mutex::new(energy), rejected: AtomicU64::new(0) })
    }

    /// The molecule.
    pub fn molecule(&self) -> &ConditionalMolecule {
        &self.molecule
    }

    /// Structures rejected as invalid (D chirality) without an energy evaluation.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    fn evaluate_inner(&self, fine: &[f64], cg_rad: &[f64], gradients: bool) -> Result<(MolecularEvaluation, Vec<f64>)> {
        let structures = self.molecule.to_cartesian(fine, cg_rad)?;
        let n = structures.log_det_dx_dz.len();
        let stride = 3 * self.molecule.n_atoms();
        let valid = self.molecule.valid(&structures.positions_nm)?;
        let keep: Vec<usize> = (0..n).filter(|&i| valid[i]).collect();
        self.rejected.fetch_add((n - keep.len()) as u64, Ordering::Relaxed);
        let mut u = vec![f64::INFINITY; n];
        let mut grad_x = vec![0.0; n * stride];
        if !keep.is_empty() {
            let x: Vec<f64> = keep
                .iter()
                .flat_map(|&i| structures.positions_nm[i * stride..(i + 1) * stride].iter().copied())
                .collect();
            let evaluation = {
                let mut energy = self.energy.lock().unwrap_or_else(|e| e.into_inner());
                energy.evaluate(&Batch::new(&x, self.molecule.n_atoms())?)?
            };
            for (k, &i) in keep.iter().enumerate() {
                u[i] = evaluation.reduced_energies[k];
                grad_x[i * stride..(i + 1) * stride]
                    .copy_from_slice(&evaluation.gradients[k * stride..(k + 1) * stride]);
            }
        }
        let mut grad_fine = vec![0.0; n * self.molecule.fine_dims()];
        if gradients {
            // Invalid structures get the chirality penalty (training only): a finite energy whose
            // gradient turns each wrong centre's substituents back (CB and HA towards L-alanine).
            for i in (0..n).filter(|&i| !valid[i]) {
                let x = &structures.positions_nm[i * stride..(i + 1) * stride];
                u[i] = chirality_penalty(x, &mut grad_x[i * stride..(i + 1) * stride], &self.molecule.chiral_centres);
            }
            let d = self.molecule.ic.dim();
            let pullback = self.molecule.ic.pullback(&structures.z, &structures.positions_nm, &grad_x)?;
            let f = self.molecule.fine_dims();
            for i in (0..n).filter(|&i| u[i].is_finite()) {
                for (m, &j) in self.molecule.split.fine_indices().iter().enumerate() {
                    grad_fine[i * f + m] = pullback.grad_z[i * d + j] - pullback.grad_log_det[i * d + j];
                }
            }
        }
        Ok((MolecularEvaluation { structures, reduced_energies: u, valid }, grad_fine))
    }

    /// Builds and evaluates structures (no gradients): energies for importance weights and
    /// backmapping.
    pub fn evaluate(&self, fine: &[f64], cg_rad: &[f64]) -> Result<MolecularEvaluation> {
        Ok(self.evaluate_inner(fine, cg_rad, false)?.0)
    }

    /// ln p(s, x_perp) of rows whose energies [`TargetEnergy::energies_and_gradients`] already
    /// returned (`energies`, u - ln|det dx/dz| per row): minus the energy for valid structures,
    /// -inf for the wrong chirality (whose training energy is a penalty, not a density) and for
    /// non-finite energies. Makes no energy evaluation.
    pub fn log_density_of_energies(&self, fine: &[f64], cg_rad: &[f64], energies: &[f64]) -> Result<Vec<f64>> {
        let structures = self.molecule.to_cartesian(fine, cg_rad)?;
        let valid = self.molecule.valid(&structures.positions_nm)?;
        if valid.len() != energies.len() {
            return Err(Error::invalid(format!("{} energies for {} structures", energies.len(), valid.len())));
        }
        Ok(valid
            .iter()
            .zip(energies)
            .map(|(&ok, &e)| if ok && e.is_finite() { -e } else { f64::NEG_INFINITY })
            .collect())
    }

    /// ln p(s, x_perp) = -u(x) + ln|det dx/dz| per row (-inf for invalid structures and for
    /// non-finite energies, as [`Self::log_density_of_energies`]), unnormalised.
    pub fn log_density(&self, fine: &[f64], cg_rad: &[f64]) -> Result<Vec<f64>> {
        let e = self.evaluate(fine, cg_rad)?;
        Ok(e.reduced_energies
            .iter()
            .zip(&e.structures.log_det_dx_dz)
            .map(|(u, ld)| if u.is_finite() { -u + ld } else { f64::NEG_INFINITY })
            .collect())
    }
}

impl TargetEnergy for ConditionalMolecularTarget {
    fn dims(&self) -> usize {
        self.molecule.fine_dims()
    }

    fn cg_dims(&self) -> usize {
        self.molecule.cg_dims()
    }

    fn energies_and_gradients(&self, x: &[f64], cg: Option<&[f64]>) -> Result<(Vec<f64>, Vec<f64>)> {
        let cg = cg.ok_or_else(|| Error::invalid("a conditional molecular target needs the CG angles of each row"))?;
        let (e, grad) = self.evaluate_inner(x, cg, true)?;
        let energies = e.reduced_energies.iter().zip(&e.structures.log_det_dx_dz).map(|(u, ld)| u - ld).collect();
        Ok((energies, grad))
    }

    fn evaluations(&self) -> u64 {
        self.energy.lock().unwrap_or_else(|e| e.into_inner()).evaluation_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// The penalty as it was written for alanine dipeptide before chiral centres became data
    /// (atoms 6, 14, 10, 9; the rounded reference volume), kept verbatim to pin the new one to it.
    fn aldp_penalty_as_it_was(x: &[f64], grad: &mut [f64]) -> f64 {
        use nalgebra::Vector3;
        let atom = |i: usize| Vector3::new(x[3 * i], x[3 * i + 1], x[3 * i + 2]);
        let (n, c, cb, ha) = (atom(6), atom(14), atom(10), atom(9));
        let (a, b, h) = (c - n, cb - n, ha - n);
        let t = a.cross(&b).dot(&h);
        let scale = 50.0 / 8.4e-3;
        let (da, db, dh) = (b.cross(&h) * scale, h.cross(&a) * scale, a.cross(&b) * scale);
        grad.iter_mut().for_each(|g| *g = 0.0);
        for (atom, g) in [(14, da), (10, db), (9, dh), (6, -(da + db + dh))] {
            for k in 0..3 {
                grad[3 * atom + k] += g[k];
            }
        }
        100.0 + scale * t
    }

    #[test]
    fn the_alanine_dipeptide_penalty_is_the_old_one_bit_for_bit() {
        let centres = [aldp::ca_chiral_centre()];
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut checked = 0;
        while checked < 200 {
            let x: Vec<f64> = (0..66).map(|_| rng.gen_range(-0.3..0.3)).collect();
            // Only D structures get the penalty (positive volume of N, C, CB, HA).
            if signed_volume(&x, &centres[0].substituents) <= 0.0 {
                continue;
            }
            let (mut old, mut new) = (vec![1.0; 66], vec![2.0; 66]);
            let (p_old, p_new) = (aldp_penalty_as_it_was(&x, &mut old), chirality_penalty(&x, &mut new, &centres));
            assert_eq!(p_old.to_bits(), p_new.to_bits());
            assert!(old.iter().zip(&new).all(|(a, b)| a.to_bits() == b.to_bits()));
            checked += 1;
        }
    }
}
