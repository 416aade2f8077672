//! Alanine dipeptide (ACE-ALA-NME, 22 atoms) as data: the Z-matrix of the reference code, its
//! anchors, circular dihedrals, where phi and psi sit, the chirality test, and (phi, psi) of
//! Cartesian batches.
//!
//! Atom order (0-based, as in the prmtop): 0 HH31, 1 CH3, 2 HH32, 3 HH33, 4 C, 5 O (ACE);
//! 6 N, 7 H, 8 CA, 9 HA, 10 CB, 11 HB1, 12 HB2, 13 HB3, 14 C, 15 O (ALA);
//! 16 N, 17 H, 18 CH3, 19 HH31, 20 HH32, 21 HH33 (NME).

use super::chirality::{signed_volume, ChiralCentre};
use super::geometry::dihedrals_of;
use super::normalize::Scales;
use super::transform::InternalCoordinates;
use super::zmatrix::{ZMatrix, ZRow};
use crate::error::{Error, Result};

/// Number of atoms.
pub const N_ATOMS: usize = 22;

/// Anchor atoms: CA at the origin, N on the x axis, C in the xy plane.
pub const ANCHORS: [usize; 3] = [8, 6, 14];

/// Z-matrix rows `[atom, bond ref, angle ref, dihedral ref]` in placement order.
pub const Z_ROWS: [[usize; 4]; 19] = [
    [0, 1, 4, 6],
    [1, 4, 6, 8],
    [2, 1, 4, 0],
    [3, 1, 4, 0],
    [4, 6, 8, 14],
    [5, 4, 6, 8],
    [7, 6, 8, 4],
    [9, 8, 6, 4],
    [10, 8, 6, 4],
    [11, 10, 8, 6],
    [12, 10, 8, 11],
    [13, 10, 8, 11],
    [15, 14, 8, 16],
    [16, 14, 8, 6],
    [17, 16, 14, 15],
    [18, 16, 14, 8],
    [19, 18, 16, 14],
    [20, 18, 16, 19],
    [21, 18, 16, 19],
];

/// Atoms whose placing dihedral is circular (phi, psi, the peptide bonds and the rotors).
pub const CIRCULAR_ATOMS: [usize; 12] = [0, 1, 4, 5, 7, 9, 10, 11, 16, 17, 18, 19];

/// Layout index of phi (the dihedral placing atom 4).
pub const PHI_INDEX: usize = 17;

/// Layout index of psi (the dihedral placing atom 16).
pub const PSI_INDEX: usize = 44;

/// Atoms of phi = dihedral(C, N, CA, C).
pub const PHI_ATOMS: [usize; 4] = [4, 6, 8, 14];

/// Atoms of psi = dihedral(N, CA, C, N).
pub const PSI_ATOMS: [usize; 4] = [6, 8, 14, 16];

/// Atoms of the two peptide-bond dihedrals omega (CH3-C-N-CA of ACE-ALA, CA-C-N-CH3 of ALA-NME);
/// trans at +-pi.
pub const OMEGA_ATOMS: [[usize; 4]; 2] = [[1, 4, 6, 8], [8, 14, 16, 18]];

/// Alanine's CA as a chiral centre: substituents N, C, CB, HA, so that its signed volume is the
/// hand-written check of [`chirality`] (negative for L), and the rounded |volume| of the
/// minimum-energy structure (8.4e-3 nm^3) as the penalty's unit, the value training has always used.
pub fn ca_chiral_centre() -> ChiralCentre {
    ChiralCentre { atom: 8, substituents: [6, 14, 10, 9], reference_sign: -1.0, reference_volume_nm3: 8.4e-3 }
}

/// The ALDP Z-matrix.
pub fn zmatrix() -> ZMatrix {
    let rows = Z_ROWS.iter().map(|r| ZRow::from_array(*r)).collect();
    ZMatrix::new(N_ATOMS, ANCHORS, rows).expect("the ALDP Z-matrix is valid")
}

/// Layout indices of the circular dihedrals.
pub fn circular_indices() -> Vec<usize> {
    let z = zmatrix();
    CIRCULAR_ATOMS.iter().map(|&a| z.dihedral_index_of(a).expect("placed by a row")).collect()
}

/// The reference code's flow coordinates: the ALDP Z-matrix normalised around `x_ref` (nm; the
/// minimum-energy structure in the reference code) with the default scales.
pub fn internal_coordinates(x_ref: &[f64]) -> Result<InternalCoordinates> {
    InternalCoordinates::around_structure(zmatrix(), x_ref, Scales::default(), &circular_indices())
}

fn configurations(x: &[f64]) -> Result<usize> {
    if x.len() % (3 * N_ATOMS) != 0 {
        return Err(Error::invalid(format!(
            "{} values is not a whole number of ALDP configurations (66 each)",
            x.len()
        )));
    }
    Ok(x.len() / (3 * N_ATOMS))
}

/// (phi, psi) in radians, (-pi, pi], of every configuration of a batch (nm, 66 values each).
pub fn phi_psi(x: &[f64]) -> Result<Vec<[f64; 2]>> {
    configurations(x)?;
    Ok(dihedrals_of(x, N_ATOMS, &[PHI_ATOMS, PSI_ATOMS])?.chunks_exact(2).map(|a| [a[0], a[1]]).collect())
}

/// Handedness at CA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chirality {
    /// L-alanine, the physical molecule.
    L,
    /// D-alanine: a mirror image, to be filtered out.
    D,
}

/// Chirality at CA of every configuration: the sign of ((C - N) x (CB - N)) . (HA - N), negative
/// for L (as in the minimum-energy structure of L-alanine).
pub fn chirality(x: &[f64]) -> Result<Vec<Chirality>> {
    let n = configurations(x)?;
    crate::openmm::check_coordinates(x, N_ATOMS, n, "ALDP configurations")?;
    let substituents = ca_chiral_centre().substituents;
    Ok(x.chunks_exact(3 * N_ATOMS)
        .map(|xc| if signed_volume(xc, &substituents) < 0.0 { Chirality::L } else { Chirality::D })
        .collect())
}
