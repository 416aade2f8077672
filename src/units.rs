//! Physical constants and unit conversions, kept in one place.

/// Molar gas constant R in kJ/(mol K), the value OpenMM and the reference code use.
pub const MOLAR_GAS_CONSTANT_KJ_PER_MOL_K: f64 = 8.314462618e-3;

/// Nanometres per ångström.
pub const NM_PER_ANGSTROM: f64 = 0.1;

/// The thermal energy kT = R T in kJ/mol at `temperature_k` kelvin.
///
/// ```
/// let kt = cgflow::units::kt_kj_per_mol(300.0);
/// assert!((kt - 2.4943387854).abs() < 1e-9);
/// ```
pub fn kt_kj_per_mol(temperature_k: f64) -> f64 {
    MOLAR_GAS_CONSTANT_KJ_PER_MOL_K * temperature_k
}
