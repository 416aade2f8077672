//! CG definitions: the dihedrals that make a molecule's coarse-grained coordinates, given by atom
//! indices or by residue and atom name.
//!
//! A definition is a list of items separated by spaces or `;`:
//! - `phi:R`: C(R-1) - N(R) - CA(R) - C(R), residue number R as in the PDB;
//! - `psi:R`: N(R) - CA(R) - C(R) - N(R+1);
//! - `backbone`: every phi and psi whose four atoms exist, residue by residue (phi before psi);
//! - `omega:R`: the peptide bond between residues R-1 and R, X(R-1) - C(R-1) - N(R) - Y(R), where X
//!   is CA, or CH3 in an acetyl cap, and Y is CA, or CH3, or the methyl C of an N-methyl cap (a
//!   residue without CA or CH3);
//! - `omegas`: every omega whose four atoms exist;
//! - `I,J,K,L`: four 0-based atom indices.
//!
//! For alanine dipeptide (ACE 1, ALA 2, NME 3), `phi:2 psi:2` and `backbone` both give
//! [4, 6, 8, 14] and [6, 8, 14, 16], and `omegas` gives [1, 4, 6, 8] and [8, 14, 16, 18]. Whether
//! the atoms are bonded in sequence is checked where the bonds are known
//! ([`crate::coords::builder::zmatrix_with_dihedrals`]).

use crate::error::{Error, Result};

/// What a definition needs of each atom: its name and residue number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AtomLabel {
    /// Atom name, e.g. `CA`.
    pub name: String,
    /// Residue number, e.g. 2.
    pub residue: i64,
}

/// A name for each dihedral of `dihedrals` over `atoms`, for axes and tables: `phi R` or `psi R`
/// where the atoms are that residue's (in either order), `omega R` for a peptide bond, and
/// `dihedral I-J-K-L` otherwise.
///
/// ```
/// use cgflow::coords::cg_definition::{names, AtomLabel};
/// let atoms: Vec<AtomLabel> = [("C", 1), ("N", 2), ("CA", 2), ("C", 2), ("N", 3)]
///     .iter()
///     .map(|&(name, residue)| AtomLabel { name: name.into(), residue })
///     .collect();
/// assert_eq!(names(&[[0, 1, 2, 3], [4, 3, 2, 1], [0, 2, 3, 4]], &atoms), ["phi 2", "psi 2", "dihedral 0-2-3-4"]);
/// ```
pub fn names(dihedrals: &[[usize; 4]], atoms: &[AtomLabel]) -> Vec<String> {
    let mut residues: Vec<i64> = atoms.iter().map(|a| a.residue).collect();
    residues.dedup();
    dihedrals
        .iter()
        .map(|d| {
            let reversed = [d[3], d[2], d[1], d[0]];
            let named = residues.iter().find_map(|&r| {
                [("phi", resolve(&format!("phi:{r}"), atoms)), ("psi", resolve(&format!("psi:{r}"), atoms))]
                    .into_iter()
                    .chain([("omega", resolve(&format!("omega:{r}"), atoms))])
                    .find(|(_, found)| found.as_ref().is_ok_and(|f| f[0] == *d || f[0] == reversed))
                    .map(|(kind, _)| format!("{kind} {r}"))
            });
            named.unwrap_or_else(|| format!("dihedral {}-{}-{}-{}", d[0], d[1], d[2], d[3]))
        })
        .collect()
}

/// Resolves `definition` to dihedrals of atom indices over `atoms`. Errors on an unknown item, a
/// residue without the atoms a phi or psi needs, an index out of range, an empty definition, and
/// a dihedral given twice.
///
/// ```
/// use cgflow::coords::cg_definition::{resolve, AtomLabel};
/// let atoms: Vec<AtomLabel> = [("C", 1), ("N", 2), ("CA", 2), ("C", 2), ("N", 3)]
///     .iter()
///     .map(|&(name, residue)| AtomLabel { name: name.into(), residue })
///     .collect();
/// assert_eq!(resolve("phi:2; psi:2", &atoms).unwrap(), vec![[0, 1, 2, 3], [1, 2, 3, 4]]);
/// assert_eq!(resolve("backbone", &atoms).unwrap(), vec![[0, 1, 2, 3], [1, 2, 3, 4]]);
/// assert!(resolve("phi:3", &atoms).is_err());
/// ```
pub fn resolve(definition: &str, atoms: &[AtomLabel]) -> Result<Vec<[usize; 4]>> {
    let find = |name: &str, residue: i64| atoms.iter().position(|a| a.name == name && a.residue == residue);
    let phi = |r: i64| Some([find("C", r - 1)?, find("N", r)?, find("CA", r)?, find("C", r)?]);
    let psi = |r: i64| Some([find("N", r)?, find("CA", r)?, find("C", r)?, find("N", r + 1)?]);
    let carbonyl_side = |r: i64| find("CA", r).or_else(|| find("CH3", r));
    let amide_side = |r: i64| find("CA", r).or_else(|| find("CH3", r)).or_else(|| find("C", r));
    let omega = |r: i64| Some([carbonyl_side(r - 1)?, find("C", r - 1)?, find("N", r)?, amide_side(r)?]);
    let mut residues: Vec<i64> = atoms.iter().map(|a| a.residue).collect();
    residues.dedup();
    let mut dihedrals: Vec<[usize; 4]> = Vec::new();
    for item in definition.split(|c: char| c.is_whitespace() || c == ';').filter(|s| !s.is_empty()) {
        let found: Vec<[usize; 4]> = if item == "backbone" {
            residues.iter().flat_map(|&r| [phi(r), psi(r)]).flatten().collect()
        } else if item == "omegas" {
            residues.iter().filter_map(|&r| omega(r)).collect()
        } else if let Some((kind, residue)) = item.split_once(':') {
            let r: i64 = residue
                .parse()
                .map_err(|_| Error::invalid(format!("CG item '{item}': '{residue}' is not a residue number")))?;
            let dihedral = match kind {
                "phi" => phi(r),
                "psi" => psi(r),
                "omega" => omega(r),
                other => {
                    return Err(Error::invalid(format!(
                        "CG item '{item}': unknown dihedral '{other}' (phi, psi or omega)"
                    )))
                }
            };
            vec![dihedral.ok_or_else(|| {
                Error::invalid(format!("CG item '{item}': residue {r} and its neighbours lack the atoms of {kind}"))
            })?]
        } else {
            let parts: Vec<&str> = item.split(',').collect();
            let indices: Vec<usize> = parts
                .iter()
                .map(|p| {
                    p.trim().parse::<usize>().map_err(|_| {
                        Error::invalid(format!(
                            "CG item '{item}': expected phi:R, psi:R, omega:R, backbone, omegas or four atom \
                             indices I,J,K,L"
                        ))
                    })
                })
                .collect::<Result<_>>()?;
            let d: [usize; 4] = indices
                .try_into()
                .map_err(|_| Error::invalid(format!("CG item '{item}': a dihedral needs four atom indices")))?;
            if let Some(bad) = d.iter().find(|&&a| a >= atoms.len()) {
                return Err(Error::invalid(format!(
                    "CG item '{item}': atom {bad} does not exist ({} atoms)",
                    atoms.len()
                )));
            }
            vec![d]
        };
        for d in found {
            let reversed = [d[3], d[2], d[1], d[0]];
            if dihedrals.iter().any(|e| *e == d || *e == reversed) {
                return Err(Error::invalid(format!("CG definition '{definition}': dihedral {d:?} is given twice")));
            }
            dihedrals.push(d);
        }
    }
    if dihedrals.is_empty() {
        return Err(Error::invalid(format!("CG definition '{definition}' names no dihedral")));
    }
    Ok(dihedrals)
}
