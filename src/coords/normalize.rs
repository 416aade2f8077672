//! Normalisation of internal coordinates for a flow: subtract reference values, divide by a scale
//! per coordinate kind; circular dihedrals are shifted and wrapped to [-pi, pi) but not scaled.
//!
//! `z = wrap(q - q_ref) / scale` for dihedrals, `z = (q - q_ref) / scale` for bonds and angles,
//! `z = wrap(q - q_ref)` for circular dihedrals. The map is affine (up to the wrap, which changes
//! no density), so ln|det dq/dz| = sum of ln(scale) over the scaled coordinates.

use serde::{Deserialize, Serialize};

use super::geometry::wrap_angle;
use super::zmatrix::{CoordinateKind, ZMatrix};
use crate::error::{Error, Result};

/// Scales per coordinate kind.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Scales {
    /// Bond-length scale in nm.
    pub bond_nm: f64,
    /// Bond-angle scale in radians.
    pub angle_rad: f64,
    /// Scale of non-circular dihedrals in radians.
    pub dihedral_rad: f64,
}

impl Default for Scales {
    /// The reference code's values: 0.005 nm, 0.15 rad, 0.2 rad.
    fn default() -> Self {
        Self { bond_nm: 0.005, angle_rad: 0.15, dihedral_rad: 0.2 }
    }
}

/// Reference values, scales and circular flags of every internal coordinate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    reference: Vec<f64>,
    scale: Vec<f64>,
    circular: Vec<bool>,
    log_scale: f64,
}

impl Normalization {
    /// Builds the normalisation for `zmatrix` from reference internal coordinates (usually those of
    /// a minimum-energy structure), scales per kind, and the layout indices of circular dihedrals.
    pub fn new(zmatrix: &ZMatrix, reference: Vec<f64>, scales: Scales, circular: &[usize]) -> Result<Self> {
        let kinds = zmatrix.kinds();
        if reference.len() != kinds.len() {
            return Err(Error::invalid(format!(
                "reference has {} values, the Z-matrix {} internal coordinates",
                reference.len(),
                kinds.len()
            )));
        }
        if [scales.bond_nm, scales.angle_rad, scales.dihedral_rad].iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(Error::invalid(format!("scales must be positive: {scales:?}")));
        }
        let mut flags = vec![false; kinds.len()];
        for &i in circular {
            if i >= kinds.len() || kinds[i] != CoordinateKind::Dihedral {
                return Err(Error::invalid(format!("coordinate {i} is not a dihedral and cannot be circular")));
            }
            flags[i] = true;
        }
        let scale: Vec<f64> = kinds
            .iter()
            .zip(&flags)
            .map(|(kind, &c)| match (kind, c) {
                (_, true) => 1.0,
                (CoordinateKind::Bond, _) => scales.bond_nm,
                (CoordinateKind::Angle, _) => scales.angle_rad,
                (CoordinateKind::Dihedral, _) => scales.dihedral_rad,
            })
            .collect();
        let log_scale = scale.iter().map(|s| s.ln()).sum();
        let kinds_are_periodic: Vec<bool> = kinds.iter().map(|k| *k == CoordinateKind::Dihedral).collect();
        let reference = reference
            .into_iter()
            .zip(kinds_are_periodic)
            .map(|(r, periodic)| if periodic { wrap_angle(r) } else { r })
            .collect();
        Ok(Self { reference, scale, circular: flags, log_scale })
    }

    /// Number of coordinates.
    pub fn len(&self) -> usize {
        self.scale.len()
    }

    /// Whether there are no coordinates.
    pub fn is_empty(&self) -> bool {
        self.scale.is_empty()
    }

    /// Which coordinates are circular.
    pub fn circular(&self) -> &[bool] {
        &self.circular
    }

    /// The scale of every coordinate (1 for circular ones).
    pub fn scales(&self) -> &[f64] {
        &self.scale
    }

    /// The reference values.
    pub fn reference(&self) -> &[f64] {
        &self.reference
    }

    /// ln|det dq/dz| = sum of ln(scale).
    pub fn log_det_dq_dz(&self) -> f64 {
        self.log_scale
    }

    /// q -> z for one configuration. `periodic` marks the dihedrals (differences are wrapped).
    pub fn normalize(&self, q: &[f64], periodic: &[bool], z: &mut [f64]) {
        for i in 0..q.len() {
            let diff = q[i] - self.reference[i];
            z[i] = if periodic[i] { wrap_angle(diff) / self.scale[i] } else { diff / self.scale[i] };
        }
    }

    /// z -> q without wrapping circular coordinates: the same geometry, for code that only needs
    /// sines and cosines of the dihedrals (the pull-back).
    pub fn denormalize_unwrapped(&self, z: &[f64], q: &mut [f64]) {
        for i in 0..z.len() {
            q[i] = self.reference[i] + self.scale[i] * z[i];
        }
    }

    /// z -> q for one configuration; circular coordinates come back wrapped to [-pi, pi).
    pub fn denormalize(&self, z: &[f64], q: &mut [f64]) {
        for i in 0..z.len() {
            let value = self.reference[i] + self.scale[i] * z[i];
            q[i] = if self.circular[i] { wrap_angle(value) } else { value };
        }
    }
}
