//! Chemical elements, as far as cgflow needs them: matching a structure file's element symbols
//! against an OpenMM System's particle masses.

use crate::error::{Error, Result};

/// Standard atomic masses (dalton) of the elements that occur in biomolecular force fields.
const ELEMENT_MASSES: [(&str, f64); 16] = [
    ("H", 1.008),
    ("C", 12.011),
    ("N", 14.007),
    ("O", 15.999),
    ("F", 18.998),
    ("NA", 22.990),
    ("MG", 24.305),
    ("P", 30.974),
    ("S", 32.06),
    ("CL", 35.45),
    ("K", 39.098),
    ("CA", 40.078),
    ("ZN", 65.38),
    ("BR", 79.904),
    ("I", 126.904),
    ("SE", 78.971),
];

/// Tolerance on a particle's mass against its element's standard mass, in dalton.
pub const MASS_TOLERANCE_DA: f64 = 0.6;

/// The standard mass of an element symbol (any case), if cgflow knows it.
///
/// ```
/// assert_eq!(cgflow::chem::element_mass("c"), Some(12.011));
/// assert_eq!(cgflow::chem::element_mass("Xx"), None);
/// ```
pub fn element_mass(symbol: &str) -> Option<f64> {
    let upper = symbol.trim().to_ascii_uppercase();
    ELEMENT_MASSES.iter().find(|(s, _)| *s == upper).map(|&(_, m)| m)
}

/// Checks that structure-file atoms match a System's particles: same count, and each element's
/// standard mass within [`MASS_TOLERANCE_DA`] of the particle's mass. The error names the first
/// atom that does not match. (Systems with repartitioned hydrogen masses need this check skipped.)
pub fn check_elements_match_masses(elements: &[String], masses_da: &[f64]) -> Result<()> {
    if elements.len() != masses_da.len() {
        return Err(Error::invalid(format!(
            "the structure has {} atoms but the System has {} particles",
            elements.len(),
            masses_da.len()
        )));
    }
    for (i, (element, &mass)) in elements.iter().zip(masses_da).enumerate() {
        match element_mass(element) {
            Some(standard) if (standard - mass).abs() <= MASS_TOLERANCE_DA => {}
            Some(standard) => {
                return Err(Error::invalid(format!(
                    "atom {i} is {element} ({standard} Da) in the structure but particle {i} of the System has mass {mass} Da: the atoms do not match the System"
                )))
            }
            None => return Err(Error::invalid(format!("atom {i}: unknown element '{element}'"))),
        }
    }
    Ok(())
}
