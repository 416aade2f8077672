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

/// The unit of angles given by a user (CG points of dihedral angles).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AngleUnit {
    /// Radians, accepted in [-pi, pi].
    #[default]
    Radians,
    /// Degrees, accepted in [-180, 180].
    Degrees,
}

/// A dihedral angle given in `unit` as radians in [-pi, pi], or a message saying why it is not
/// accepted: NaN, infinite, or outside [-pi, pi] (radians) / [-180, 180] (degrees). Angles are not
/// wrapped silently, because an angle outside the range usually means the wrong unit.
///
/// ```
/// use cgflow::units::{angle_to_radians, AngleUnit};
/// assert_eq!(angle_to_radians(180.0, AngleUnit::Degrees), Ok(std::f64::consts::PI));
/// assert!(angle_to_radians(-75.0, AngleUnit::Radians).unwrap_err().contains("outside [-pi, pi]"));
/// assert!(angle_to_radians(f64::NAN, AngleUnit::Degrees).is_err());
/// ```
pub fn angle_to_radians(value: f64, unit: AngleUnit) -> std::result::Result<f64, String> {
    use std::f64::consts::PI;
    if !value.is_finite() {
        return Err(format!("the angle is {value}, not a finite number"));
    }
    match unit {
        AngleUnit::Radians if (-PI..=PI).contains(&value) => Ok(value),
        AngleUnit::Radians => Err(format!(
            "the angle {value} is outside [-pi, pi]: angles are read in radians (pass degrees with the degrees \
             option, and wrap angles into the range first)"
        )),
        // Clamped, so that +-180 deg gives exactly +-pi whatever the rounding of the product.
        AngleUnit::Degrees if (-180.0..=180.0).contains(&value) => Ok(value.to_radians().clamp(-PI, PI)),
        AngleUnit::Degrees => {
            Err(format!("the angle {value} deg is outside [-180, 180] (wrap angles into the range first)"))
        }
    }
}
