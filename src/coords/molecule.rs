//! A molecule as data: what a conditional flow over its internal coordinates needs, built from
//! its bond graph, masses, a reference structure and its CG dihedrals, with no molecule-specific
//! code.
//!
//! - The Z-matrix comes from the bond graph ([`zmatrix_with_dihedrals`]), with every CG dihedral
//!   the placing dihedral of a row, so the CG coordinates are internal coordinates themselves.
//! - Circular dimensions, by one rule: a row's dihedral is circular when it is a proper torsion
//!   (its dihedral reference is bonded to its angle reference), so that the placed atom turns
//!   freely about the bond between its bond and angle references; an improper one (the dihedral
//!   reference bonded to the bond reference: a later substituent placed relative to the first)
//!   stays near ±120 degrees and is scaled like the other coordinates. The builder places one atom
//!   per rotatable bond by a proper torsion, the ends of CG dihedrals first, so each rotatable bond
//!   has exactly one circular dihedral. On alanine dipeptide that is 7: the two methyl rotors of
//!   the caps and the alanine methyl, both peptide bonds, phi and psi (the seed's hand-written
//!   list has 12, adding the atoms placed relative to those: the carbonyl O, amide H, HA, CB and
//!   the cap's N-H).
//! - Chiral centres from the reference structure ([`chiral_centres`]).

use super::builder::zmatrix_with_dihedrals;
use super::chirality::{chiral_centres, ChiralCentre};
use super::zmatrix::ZMatrix;
use crate::error::{Error, Result};

/// A molecule's internal-coordinate description.
#[derive(Debug, Clone)]
pub struct Molecule {
    zmatrix: ZMatrix,
    cg_dihedrals: Vec<[usize; 4]>,
    cg_indices: Vec<usize>,
    circular: Vec<usize>,
    chiral: Vec<ChiralCentre>,
    reference_nm: Vec<f64>,
}

impl Molecule {
    /// Builds the description. Errors where the Z-matrix cannot be built (a disconnected graph,
    /// a bad CG dihedral), on a reference of the wrong size or non-finite, on a flat chiral centre,
    /// and on no CG dihedral.
    pub fn new(
        masses: &[f64],
        bonds: &[(usize, usize)],
        reference_nm: &[f64],
        cg_dihedrals: &[[usize; 4]],
    ) -> Result<Molecule> {
        if cg_dihedrals.is_empty() {
            return Err(Error::invalid("a molecule needs at least one CG dihedral"));
        }
        let n = masses.len();
        let zmatrix = zmatrix_with_dihedrals(n, bonds, cg_dihedrals)?;
        let chiral = chiral_centres(masses, bonds, reference_nm)?;
        let bonded = |a: usize, b: usize| bonds.iter().any(|&(i, j)| (i, j) == (a, b) || (i, j) == (b, a));
        let index_of = |atom: usize| {
            zmatrix.dihedral_index_of(atom).ok_or_else(|| Error::invalid(format!("atom {atom} places no dihedral")))
        };
        let mut circular = Vec::new();
        for row in zmatrix.rows() {
            if bonded(row.dihedral, row.angle) {
                circular.push(index_of(row.atom)?);
            }
        }
        circular.sort_unstable();
        let cg_indices = cg_dihedrals
            .iter()
            .map(|d| {
                let row = zmatrix
                    .rows()
                    .iter()
                    .find(|r| {
                        [r.dihedral, r.angle, r.bond, r.atom] == *d || [r.atom, r.bond, r.angle, r.dihedral] == *d
                    })
                    .ok_or_else(|| Error::invalid(format!("CG dihedral {d:?} places no row")))?;
                index_of(row.atom)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Molecule {
            zmatrix,
            cg_dihedrals: cg_dihedrals.to_vec(),
            cg_indices,
            circular,
            chiral,
            reference_nm: reference_nm.to_vec(),
        })
    }

    /// The Z-matrix.
    pub fn zmatrix(&self) -> &ZMatrix {
        &self.zmatrix
    }

    /// The CG dihedrals, as given.
    pub fn cg_dihedrals(&self) -> &[[usize; 4]] {
        &self.cg_dihedrals
    }

    /// Layout index (in the Z-matrix's internal coordinates) of each CG dihedral.
    pub fn cg_indices(&self) -> &[usize] {
        &self.cg_indices
    }

    /// Layout indices of the circular dihedrals, ascending.
    pub fn circular_indices(&self) -> &[usize] {
        &self.circular
    }

    /// The chiral centres with their reference handedness.
    pub fn chiral_centres(&self) -> &[ChiralCentre] {
        &self.chiral
    }

    /// The reference structure (flat xyz, nm).
    pub fn reference_nm(&self) -> &[f64] {
        &self.reference_nm
    }
}
