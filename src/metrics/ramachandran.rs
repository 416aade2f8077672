//! Ramachandran basins of one residue's backbone (phi, psi): the regions whose populations the
//! references and the MD checks compare. They are the same for alanine dipeptide's (phi, psi) and
//! for each (phi_i, psi_i) pair of a longer peptide.

/// Names of the basins of [`basin_of`], in its order.
pub const BASIN_NAMES: [&str; 3] = ["beta_PII", "alpha_R", "phi_positive"];

/// The basin of a (phi, psi) point (radians in `[-pi, pi)`): 0 beta/PII (phi < 0 outside
/// alpha_R), 1 alpha_R (phi < 0, -2.5 < psi < 1 rad), 2 phi >= 0 (alpha_L, C7ax and the barriers).
///
/// ```
/// use cgflow::metrics::ramachandran::basin_of;
/// assert_eq!(basin_of([-2.5, 2.8]), 0);
/// assert_eq!(basin_of([-1.2, -0.7]), 1);
/// assert_eq!(basin_of([1.0, 0.8]), 2);
/// ```
pub fn basin_of(phi_psi: [f64; 2]) -> usize {
    let [phi, psi] = phi_psi;
    if phi >= 0.0 {
        2
    } else if psi > -2.5 && psi < 1.0 {
        1
    } else {
        0
    }
}
