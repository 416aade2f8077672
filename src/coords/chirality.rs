//! Chiral centres of any molecule, found from its bond graph, its masses and a reference
//! structure, and the check that a structure keeps the reference's handedness at each of them.
//!
//! A centre is an atom with exactly four bonded neighbours whose substituents are pairwise
//! distinct. Substituents are compared by a rooted signature of the branch each neighbour starts
//! (the masses met walking away from the centre, to a depth of [`SIGNATURE_DEPTH`] bonds, each
//! level's signatures sorted so that the order of the bond list does not matter): two methyl
//! hydrogens, or the three hydrogens of a methyl group, are alike; the N, C, CB and HA around
//! alanine's CA are not. The handedness of a centre is the sign of the signed volume of its four
//! substituents a, b, c, d (ordered by signature), ((b - a) x (c - a)) . (d - a); a structure
//! keeps the reference's chirality when every centre's sign equals the reference's. The volume
//! leaves out the centre atom itself, so it stays defined for the distorted structures an
//! untrained flow draws, in which the centre can lie outside its substituents' tetrahedron (and it
//! is alanine dipeptide's hand-written check of CA (its N, C, CB, HA) in the ALDP data module).

use crate::error::{Error, Result};

/// Bonds followed from each neighbour of a candidate centre when comparing substituents.
pub const SIGNATURE_DEPTH: usize = 6;

/// One chiral centre: the atom, its substituents, and their signed volume in the reference.
#[derive(Debug, Clone, PartialEq)]
pub struct ChiralCentre {
    /// The centre atom.
    pub atom: usize,
    /// Its four neighbours a, b, c, d (found from the bond graph: ordered by the signature of the
    /// branch each starts).
    pub substituents: [usize; 4],
    /// The sign (+1 or -1) of [`signed_volume`] in the reference structure.
    pub reference_sign: f64,
    /// |[`signed_volume`]| in the reference structure, nm^3: the unit of a penalty that pushes a
    /// structure of the wrong handedness back.
    pub reference_volume_nm3: f64,
}

/// ((b - a) x (c - a)) . (d - a) for the substituents [a, b, c, d] in the structure `x` (flat xyz,
/// nm): positive or negative by handedness, zero when the four are coplanar.
pub fn signed_volume(x: &[f64], substituents: &[usize; 4]) -> f64 {
    let at = |i: usize| nalgebra::Point3::new(x[3 * i], x[3 * i + 1], x[3 * i + 2]);
    let [a, b, c, d] = substituents.map(at);
    (b - a).cross(&(c - a)).dot(&(d - a))
}

/// The chiral centres of a molecule of `masses.len()` atoms with `bonds`, and their handedness in
/// `reference_nm` (flat xyz of one structure). Errors on a bond to a missing atom, a reference
/// of the wrong length or with non-finite coordinates, and a centre that is flat in the
/// reference (a zero triple product: its handedness is undefined).
pub fn chiral_centres(masses: &[f64], bonds: &[(usize, usize)], reference_nm: &[f64]) -> Result<Vec<ChiralCentre>> {
    let n = masses.len();
    if reference_nm.len() != 3 * n {
        return Err(Error::invalid(format!("a reference of {} values for {n} atoms", reference_nm.len())));
    }
    if reference_nm.iter().any(|v| !v.is_finite()) {
        return Err(Error::invalid("the reference structure has a non-finite coordinate"));
    }
    let mut neighbours = vec![Vec::new(); n];
    for &(i, j) in bonds {
        if i >= n || j >= n || i == j {
            return Err(Error::invalid(format!("bond ({i}, {j}) is not between two distinct atoms of {n}")));
        }
        if !neighbours[i].contains(&j) {
            neighbours[i].push(j);
            neighbours[j].push(i);
        }
    }
    let mut centres = Vec::new();
    for (atom, around) in neighbours.iter().enumerate() {
        if around.len() != 4 {
            continue;
        }
        let mut branches: Vec<(String, usize)> =
            around.iter().map(|&first| (signature(&neighbours, masses, atom, first, SIGNATURE_DEPTH), first)).collect();
        branches.sort();
        if branches.windows(2).any(|w| w[0].0 == w[1].0) {
            continue;
        }
        let substituents = [branches[0].1, branches[1].1, branches[2].1, branches[3].1];
        let volume = signed_volume(reference_nm, &substituents);
        if volume == 0.0 {
            return Err(Error::invalid(format!("chiral centre {atom} is flat in the reference structure")));
        }
        centres.push(ChiralCentre {
            atom,
            substituents,
            reference_sign: volume.signum(),
            reference_volume_nm3: volume.abs(),
        });
    }
    Ok(centres)
}

/// Whether each structure of the flat batch `x` (3 N values each) has the reference's
/// handedness at every centre. Errors on a batch that is not a whole number of structures and on
/// a non-finite coordinate (whose handedness is undefined).
pub fn keeps_chirality(centres: &[ChiralCentre], n_atoms: usize, x: &[f64]) -> Result<Vec<bool>> {
    if n_atoms == 0 || x.len() % (3 * n_atoms) != 0 {
        return Err(Error::invalid(format!("{} values are not whole structures of {n_atoms} atoms", x.len())));
    }
    if let Some(c) = centres.iter().find(|c| c.atom >= n_atoms || c.substituents.iter().any(|&s| s >= n_atoms)) {
        return Err(Error::invalid(format!("chiral centre {} names an atom beyond {n_atoms}", c.atom)));
    }
    crate::openmm::check_coordinates(x, n_atoms, x.len() / (3 * n_atoms), "positions")?;
    Ok(x.chunks_exact(3 * n_atoms)
        .map(|structure| centres.iter().all(|c| signed_volume(structure, &c.substituents) * c.reference_sign > 0.0))
        .collect())
}

/// The signature of the branch that starts at `atom`, entered from `from`: its mass (to 0.01 u)
/// and, to `depth` more bonds, the sorted signatures of its other neighbours. A ring closes back
/// on itself within the depth and is simply walked again; the depth bounds the work.
fn signature(neighbours: &[Vec<usize>], masses: &[f64], from: usize, atom: usize, depth: usize) -> String {
    let mass = format!("{:.2}", masses[atom]);
    if depth == 0 {
        return mass;
    }
    let mut children: Vec<String> = neighbours[atom]
        .iter()
        .filter(|&&next| next != from)
        .map(|&next| signature(neighbours, masses, atom, next, depth - 1))
        .collect();
    children.sort();
    format!("{mass}({})", children.join(","))
}
