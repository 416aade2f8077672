//! Building a Z-matrix from a bond graph, so that a new small molecule needs no hand-written one.
//!
//! Anchors: the atom with the most bonds (ties: lowest index) at the origin and its two
//! best-connected neighbours. Then atoms are placed breadth-first from the anchors: each new atom
//! is bonded to its bond reference; the angle reference is a placed neighbour of the bond
//! reference; the dihedral reference is, for the first atom placed from a bond and angle
//! reference, a placed neighbour of the angle reference (a proper torsion) or, failing that,
//! another placed neighbour of the bond reference (an improper one), and for its later siblings
//! that first atom (an improper torsion), so that a rotor has one free torsion.
//! Better-connected atoms are preferred as references, so heavy atoms carry the frame.

use std::collections::VecDeque;

use super::zmatrix::{ZMatrix, ZRow};
use crate::error::{Error, Result};

/// Builds a Z-matrix for `n_atoms` atoms joined by `bonds`. The graph must be connected and have
/// an atom with at least two bonds.
pub fn zmatrix_from_bonds(n_atoms: usize, bonds: &[(usize, usize)]) -> Result<ZMatrix> {
    zmatrix_with_dihedrals(n_atoms, bonds, &[])
}

/// [`zmatrix_from_bonds`] in which each of `dihedrals` (four atoms bonded in sequence, e.g. a
/// CG model's backbone dihedrals) is the placing dihedral of a row: of its two end atoms, the one
/// placed later is placed from the other three. Breadth-first placement places the end farther
/// from the anchors last, so in a tree this always succeeds. Errors on a dihedral whose atoms are
/// not bonded in sequence, out of range or repeated, on a dihedral given twice (either way round),
/// and when a dihedral cannot be made a placing dihedral (it can happen in rings).
pub fn zmatrix_with_dihedrals(n_atoms: usize, bonds: &[(usize, usize)], dihedrals: &[[usize; 4]]) -> Result<ZMatrix> {
    if n_atoms < 3 {
        return Err(Error::invalid("a Z-matrix needs at least 3 atoms"));
    }
    let mut neighbours = vec![Vec::new(); n_atoms];
    for &(i, j) in bonds {
        if i >= n_atoms || j >= n_atoms || i == j {
            return Err(Error::invalid(format!("bond ({i}, {j}) is not between two distinct atoms of {n_atoms}")));
        }
        if !neighbours[i].contains(&j) {
            neighbours[i].push(j);
            neighbours[j].push(i);
        }
    }
    let bonded = |a: usize, b: usize| neighbours[a].contains(&b);
    for (k, d) in dihedrals.iter().enumerate() {
        if let Some(bad) = d.iter().find(|&&a| a >= n_atoms) {
            return Err(Error::invalid(format!("dihedral {d:?}: atom {bad} does not exist ({n_atoms} atoms)")));
        }
        if (0..4).any(|i| (i + 1..4).any(|j| d[i] == d[j])) {
            return Err(Error::invalid(format!("dihedral {d:?} repeats an atom")));
        }
        if !(bonded(d[0], d[1]) && bonded(d[1], d[2]) && bonded(d[2], d[3])) {
            return Err(Error::invalid(format!("dihedral {d:?}: its atoms are not bonded in sequence")));
        }
        let reversed = [d[3], d[2], d[1], d[0]];
        if dihedrals[..k].iter().any(|e| *e == *d || *e == reversed) {
            return Err(Error::invalid(format!("dihedral {d:?} is given twice")));
        }
    }
    let degree = |a: usize| neighbours[a].len();
    // Best-connected first, then lowest index: a deterministic preference order.
    let by_preference = |list: &mut Vec<usize>| list.sort_by(|&a, &b| degree(b).cmp(&degree(a)).then(a.cmp(&b)));
    let centre = (0..n_atoms)
        .filter(|&a| degree(a) >= 2)
        .max_by(|&a, &b| degree(a).cmp(&degree(b)).then(b.cmp(&a)))
        .ok_or_else(|| Error::invalid("no atom has two bonds: cannot choose anchors"))?;
    let mut first = neighbours[centre].clone();
    by_preference(&mut first);
    let anchors = [centre, first[0], first[1]];

    let mut placed = vec![false; n_atoms];
    anchors.iter().for_each(|&a| placed[a] = true);
    let mut rows = Vec::with_capacity(n_atoms - 3);
    let mut queue: VecDeque<usize> = anchors.iter().copied().collect();
    while let Some(b) = queue.pop_front() {
        let mut children: Vec<usize> = neighbours[b].iter().copied().filter(|&c| !placed[c]).collect();
        by_preference(&mut children);
        // Ends of requested dihedrals first, so that their siblings are placed relative to them.
        let ends_here = |c: usize| dihedrals.iter().any(|d| (d[3] == c && d[2] == b) || (d[0] == c && d[1] == b));
        children.sort_by_key(|&c| !ends_here(c));
        // The first child placed from b with a given angle reference: later siblings are placed
        // relative to it (an improper dihedral near ±120 degrees), so that a rotor has one free
        // torsion, as in hand-written Z-matrices.
        let mut first_child: Option<(usize, usize)> = None;
        for atom in children {
            // A requested dihedral that ends in atom, through b, with its other two atoms placed.
            let requested = dihedrals.iter().find_map(|d| {
                let (angle, dihedral) = if d[3] == atom && d[2] == b {
                    (d[1], d[0])
                } else if d[0] == atom && d[1] == b {
                    (d[2], d[3])
                } else {
                    return None;
                };
                (placed[angle] && placed[dihedral]).then_some((angle, dihedral))
            });
            if let Some((angle, dihedral)) = requested {
                rows.push(ZRow { atom, bond: b, angle, dihedral });
                placed[atom] = true;
                queue.push_back(atom);
                first_child.get_or_insert((angle, atom));
                continue;
            }
            let mut angle_refs: Vec<usize> = neighbours[b].iter().copied().filter(|&c| placed[c]).collect();
            by_preference(&mut angle_refs);
            let angle =
                *angle_refs.first().ok_or_else(|| Error::invalid(format!("atom {b} has no placed neighbour")))?;
            let mut proper: Vec<usize> = neighbours[angle].iter().copied().filter(|&c| placed[c] && c != b).collect();
            by_preference(&mut proper);
            let sibling = first_child.filter(|&(a, _)| a == angle).map(|(_, s)| s);
            let dihedral = match sibling.or(proper.first().copied()).as_ref() {
                Some(&d) => d,
                None => {
                    let mut improper: Vec<usize> = angle_refs.iter().copied().filter(|&c| c != angle).collect();
                    by_preference(&mut improper);
                    match improper.first() {
                        Some(&d) => d,
                        // A placed atom that is none of the three: valid, if not a bonded torsion.
                        None => (0..n_atoms)
                            .find(|&c| placed[c] && c != b && c != angle && c != atom)
                            .ok_or_else(|| Error::invalid("not enough placed atoms for a dihedral"))?,
                    }
                }
            };
            rows.push(ZRow { atom, bond: b, angle, dihedral });
            placed[atom] = true;
            queue.push_back(atom);
            first_child.get_or_insert((angle, atom));
        }
    }
    if let Some(unreached) = placed.iter().position(|p| !p) {
        return Err(Error::invalid(format!("the bond graph is not connected: atom {unreached} cannot be reached")));
    }
    for d in dihedrals {
        let placing = |r: &ZRow| {
            (r.atom == d[3] && r.bond == d[2] && r.angle == d[1] && r.dihedral == d[0])
                || (r.atom == d[0] && r.bond == d[1] && r.angle == d[2] && r.dihedral == d[3])
        };
        if !rows.iter().any(placing) {
            return Err(Error::invalid(format!(
                "dihedral {d:?} could not be made the placing dihedral of a row (its ends are anchors, or a ring \
                 places them out of order)"
            )));
        }
    }
    ZMatrix::new(n_atoms, anchors, rows)
}
