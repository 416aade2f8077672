//! Coarse-grained (CG) coordinates: splitting a flow-space vector into the CG part s and the fine
//! part, joining them again, and the linear CG maps of the 2D toy systems.

use crate::error::{Error, Result};

/// Splits vectors of `dim` values into the CG coordinates at `cg_indices` and the rest.
#[derive(Debug, Clone, PartialEq)]
pub struct CgSplit {
    dim: usize,
    cg: Vec<usize>,
    fine: Vec<usize>,
}

impl CgSplit {
    /// A split of `dim`-vectors with the CG coordinates at `cg_indices` (in the order given).
    ///
    /// ```
    /// let split = cgflow::coords::cg::CgSplit::new(4, &[2, 0]).unwrap();
    /// let (s, fine) = split.split(&[10.0, 11.0, 12.0, 13.0]).unwrap();
    /// assert_eq!((s, fine.clone()), (vec![12.0, 10.0], vec![11.0, 13.0]));
    /// assert_eq!(split.join(&[12.0, 10.0], &fine).unwrap(), vec![10.0, 11.0, 12.0, 13.0]);
    /// ```
    pub fn new(dim: usize, cg_indices: &[usize]) -> Result<Self> {
        let mut is_cg = vec![false; dim];
        for &i in cg_indices {
            if i >= dim || is_cg[i] {
                return Err(Error::invalid(format!("CG index {i} is out of range or repeated (dim {dim})")));
            }
            is_cg[i] = true;
        }
        let fine = (0..dim).filter(|&i| !is_cg[i]).collect();
        Ok(Self { dim, cg: cg_indices.to_vec(), fine })
    }

    /// Total dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Indices of the CG coordinates.
    pub fn cg_indices(&self) -> &[usize] {
        &self.cg
    }

    /// Indices of the fine coordinates, ascending.
    pub fn fine_indices(&self) -> &[usize] {
        &self.fine
    }

    /// Picks the fine entries of a per-coordinate mask (for example which dimensions are circular).
    pub fn fine_mask(&self, mask: &[bool]) -> Vec<bool> {
        self.fine.iter().map(|&i| mask[i]).collect()
    }

    /// Splits one vector into (s, fine).
    pub fn split(&self, v: &[f64]) -> Result<(Vec<f64>, Vec<f64>)> {
        if v.len() != self.dim {
            return Err(Error::invalid(format!("expected {} values, got {}", self.dim, v.len())));
        }
        Ok((self.cg.iter().map(|&i| v[i]).collect(), self.fine.iter().map(|&i| v[i]).collect()))
    }

    /// Joins (s, fine) into one vector.
    pub fn join(&self, s: &[f64], fine: &[f64]) -> Result<Vec<f64>> {
        if s.len() != self.cg.len() || fine.len() != self.fine.len() {
            return Err(Error::invalid(format!(
                "expected {} CG and {} fine values, got {} and {}",
                self.cg.len(),
                self.fine.len(),
                s.len(),
                fine.len()
            )));
        }
        let mut v = vec![0.0; self.dim];
        self.cg.iter().zip(s).for_each(|(&i, &x)| v[i] = x);
        self.fine.iter().zip(fine).for_each(|(&i, &x)| v[i] = x);
        Ok(v)
    }
}

/// An invertible linear map from 2D positions x to (s, s_perp): `[s, s_perp] = M x`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinearCgMap2d {
    matrix: [[f64; 2]; 2],
    inverse: [[f64; 2]; 2],
    log_det_inverse: f64,
}

impl LinearCgMap2d {
    /// From the matrix M (rows: s, s_perp); errors when M is singular.
    pub fn new(matrix: [[f64; 2]; 2]) -> Result<Self> {
        let det = matrix[0][0] * matrix[1][1] - matrix[0][1] * matrix[1][0];
        if !(det.is_finite() && det.abs() > 1e-300) {
            return Err(Error::invalid("the CG map matrix is singular"));
        }
        let inverse = [[matrix[1][1] / det, -matrix[0][1] / det], [-matrix[1][0] / det, matrix[0][0] / det]];
        Ok(Self { matrix, inverse, log_det_inverse: -det.abs().ln() })
    }

    /// Müller-Brown's map: s = x1 - x2, s_perp = x1 + x2 (so |det dx/d(s, s_perp)| = 1/2).
    ///
    /// ```
    /// let map = cgflow::coords::cg::LinearCgMap2d::muller_brown();
    /// assert_eq!(map.to_cg([1.0, 0.25]), [0.75, 1.25]);
    /// assert_eq!(map.to_cartesian([0.75, 1.25]), [1.0, 0.25]);
    /// assert!((map.log_det_dx_ds() - 0.5f64.ln()).abs() < 1e-15);
    /// ```
    pub fn muller_brown() -> Self {
        Self::new([[1.0, -1.0], [1.0, 1.0]]).expect("non-singular")
    }

    /// x -> (s, s_perp).
    pub fn to_cg(&self, x: [f64; 2]) -> [f64; 2] {
        let m = &self.matrix;
        [m[0][0] * x[0] + m[0][1] * x[1], m[1][0] * x[0] + m[1][1] * x[1]]
    }

    /// (s, s_perp) -> x.
    pub fn to_cartesian(&self, s: [f64; 2]) -> [f64; 2] {
        let m = &self.inverse;
        [m[0][0] * s[0] + m[0][1] * s[1], m[1][0] * s[0] + m[1][1] * s[1]]
    }

    /// ln|det dx/d(s, s_perp)|.
    pub fn log_det_dx_ds(&self) -> f64 {
        self.log_det_inverse
    }

    /// Pulls a gradient du/dx back to du/d(s, s_perp) = M^-T du/dx.
    pub fn pullback(&self, grad_x: [f64; 2]) -> [f64; 2] {
        let m = &self.inverse;
        [m[0][0] * grad_x[0] + m[1][0] * grad_x[1], m[0][1] * grad_x[0] + m[1][1] * grad_x[1]]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn muller_brown_map_pulls_gradients_back_exactly() {
        // u(x) = x1^2 + 3 x1 x2: du/ds by finite differences through x(s, s_perp).
        let map = LinearCgMap2d::muller_brown();
        let u = |x: [f64; 2]| x[0] * x[0] + 3.0 * x[0] * x[1];
        let s = [0.3, -0.7];
        let x = map.to_cartesian(s);
        let pulled = map.pullback([2.0 * x[0] + 3.0 * x[1], 3.0 * x[0]]);
        let h = 1e-6;
        for k in 0..2 {
            let (mut sp, mut sm) = (s, s);
            sp[k] += h;
            sm[k] -= h;
            let fd = (u(map.to_cartesian(sp)) - u(map.to_cartesian(sm))) / (2.0 * h);
            assert!((fd - pulled[k]).abs() < 1e-8, "{k}: {fd} vs {}", pulled[k]);
        }
        assert!(LinearCgMap2d::new([[1.0, 2.0], [2.0, 4.0]]).is_err());
        assert!(CgSplit::new(3, &[1, 1]).is_err());
    }
}
