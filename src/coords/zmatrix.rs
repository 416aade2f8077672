//! The Z-matrix transform: Cartesian positions <-> internal coordinates (bonds, angles, dihedrals),
//! with the exact log-Jacobian and an analytic vector-Jacobian product.
//!
//! Three anchor atoms fix the frame and remove the six rigid-body degrees of freedom: the first at
//! the origin, the second on the +x axis, the third in the xy plane (y > 0). Their three internal
//! coordinates are |x1 - x0|, |x2 - x0| and the angle x1-x0-x2. Every other atom is placed by a row
//! (atom, bond reference, angle reference, dihedral reference). Rows are stored in layout order;
//! they are placed in a topological order computed once (a row can refer to an atom that a later
//! row places, as in the reference code's ALDP Z-matrix), and a reference that no order can place
//! first (a cycle, or an atom placed by no row) is an error.
//!
//! Layout of the internal coordinates (3 n - 6 values):
//! `[b1, b2, angle, then (bond, angle, dihedral) for each row in order]`.
//!
//! The inverse map's log-determinant (Cartesian in the anchor frame, 3 n - 6 of them, per internal
//! coordinate) is `ln b2 + sum over rows of ln(r^2 |sin theta|)`.

use nalgebra::{Point3, Vector3};
use serde::{Deserialize, Serialize};

use super::geometry::{angle, distance, frame, internal_of, place_backward_spherical, place_spherical, Spherical};
use crate::error::{Error, Result};

/// One Z-matrix row: `atom` is placed from its bond, angle and dihedral references.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZRow {
    /// The atom this row places.
    pub atom: usize,
    /// Atom it is bonded to (distance reference).
    pub bond: usize,
    /// Angle reference: the angle is atom-bond-angle.
    pub angle: usize,
    /// Dihedral reference: the dihedral is atom-bond-angle-dihedral.
    pub dihedral: usize,
}

impl ZRow {
    /// A row from `[atom, bond, angle, dihedral]`.
    pub const fn from_array(a: [usize; 4]) -> Self {
        Self { atom: a[0], bond: a[1], angle: a[2], dihedral: a[3] }
    }
}

/// What kind of quantity an internal coordinate is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CoordinateKind {
    /// A distance in nm.
    Bond,
    /// A bond angle in radians, in [0, pi].
    Angle,
    /// A dihedral angle in radians, periodic.
    Dihedral,
}

/// A validated Z-matrix over `n_atoms` atoms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ZMatrix {
    n_atoms: usize,
    anchors: [usize; 3],
    rows: Vec<ZRow>,
    /// Row indices in an order in which every row's references are placed before it.
    placement: Vec<usize>,
}

fn point(x: &[f64], atom: usize) -> Point3<f64> {
    Point3::new(x[3 * atom], x[3 * atom + 1], x[3 * atom + 2])
}

fn store(x: &mut [f64], atom: usize, p: &Point3<f64>) {
    x[3 * atom..3 * atom + 3].copy_from_slice(p.coords.as_slice());
}

/// |sin theta| below which a bond angle counts as linear (its dihedral is undefined there).
const LINEAR_SIN: f64 = 1e-9;

impl ZMatrix {
    /// Validates and builds a Z-matrix. Errors name the offending row: an atom index out of range,
    /// an atom placed twice or never, references that coincide, or a reference that cannot be
    /// placed before the row that uses it.
    pub fn new(n_atoms: usize, anchors: [usize; 3], rows: Vec<ZRow>) -> Result<Self> {
        if n_atoms < 3 {
            return Err(Error::invalid(format!("a Z-matrix needs at least 3 atoms, got {n_atoms}")));
        }
        let mut placed_by = vec![None; n_atoms];
        for &a in &anchors {
            if a >= n_atoms {
                return Err(Error::invalid(format!("anchor atom {a} does not exist ({n_atoms} atoms)")));
            }
            if placed_by.get(a).copied().flatten().is_some() {
                return Err(Error::invalid(format!("anchor atom {a} is given twice")));
            }
            placed_by[a] = Some(usize::MAX);
        }
        for (k, row) in rows.iter().enumerate() {
            let ids = [row.atom, row.bond, row.angle, row.dihedral];
            if let Some(&bad) = ids.iter().find(|&&i| i >= n_atoms) {
                return Err(Error::invalid(format!("Z-matrix row {k}: atom {bad} does not exist ({n_atoms} atoms)")));
            }
            for (i, a) in ids.iter().enumerate() {
                if ids[i + 1..].contains(a) {
                    return Err(Error::invalid(format!("Z-matrix row {k}: atom {a} appears twice in {ids:?}")));
                }
            }
            if placed_by[row.atom].is_some() {
                return Err(Error::invalid(format!("Z-matrix row {k}: atom {} is placed twice", row.atom)));
            }
            placed_by[row.atom] = Some(k);
        }
        if let Some(missing) = placed_by.iter().position(Option::is_none) {
            return Err(Error::invalid(format!("atom {missing} is placed by no Z-matrix row and is not an anchor")));
        }
        // Topological order: repeatedly place the first row (in layout order) whose references
        // are all placed.
        let mut placed = vec![false; n_atoms];
        anchors.iter().for_each(|&a| placed[a] = true);
        let mut done = vec![false; rows.len()];
        let mut placement = Vec::with_capacity(rows.len());
        while placement.len() < rows.len() {
            let next = (0..rows.len()).find(|&k| {
                let r = &rows[k];
                !done[k] && placed[r.bond] && placed[r.angle] && placed[r.dihedral]
            });
            match next {
                Some(k) => {
                    done[k] = true;
                    placed[rows[k].atom] = true;
                    placement.push(k);
                }
                None => {
                    let k = (0..rows.len()).find(|&k| !done[k]).unwrap_or(0);
                    let r = &rows[k];
                    let blocked = [r.bond, r.angle, r.dihedral].into_iter().find(|&a| !placed[a]).unwrap_or(r.atom);
                    return Err(Error::invalid(format!(
                        "Z-matrix row {k} (atom {}): its reference atom {blocked} is not placed before it in any order (the references form a cycle)",
                        r.atom
                    )));
                }
            }
        }
        Ok(Self { n_atoms, anchors, rows, placement })
    }

    /// Number of atoms.
    pub fn n_atoms(&self) -> usize {
        self.n_atoms
    }

    /// Number of internal coordinates, 3 n - 6.
    pub fn n_internal(&self) -> usize {
        3 * self.n_atoms - 6
    }

    /// The anchor atoms: at the origin, on the x axis, in the xy plane.
    pub fn anchors(&self) -> [usize; 3] {
        self.anchors
    }

    /// The rows in layout order.
    pub fn rows(&self) -> &[ZRow] {
        &self.rows
    }

    /// Row indices in the order the rows are placed.
    pub fn placement_order(&self) -> &[usize] {
        &self.placement
    }

    /// The kind of every internal coordinate, in layout order.
    pub fn kinds(&self) -> Vec<CoordinateKind> {
        let mut kinds = vec![CoordinateKind::Bond, CoordinateKind::Bond, CoordinateKind::Angle];
        for _ in &self.rows {
            kinds.extend([CoordinateKind::Bond, CoordinateKind::Angle, CoordinateKind::Dihedral]);
        }
        kinds
    }

    /// Index in the layout of the dihedral that places `atom`, if a row places it.
    pub fn dihedral_index_of(&self, atom: usize) -> Option<usize> {
        self.rows.iter().position(|r| r.atom == atom).map(|k| 3 + 3 * k + 2)
    }

    fn check_positions(&self, x: &[f64]) -> Result<()> {
        if x.len() != 3 * self.n_atoms {
            return Err(Error::invalid(format!(
                "expected {} atoms x 3 = {} coordinates, got {}",
                self.n_atoms,
                3 * self.n_atoms,
                x.len()
            )));
        }
        if let Some(i) = x.iter().position(|v| !v.is_finite()) {
            return Err(Error::invalid(format!("non-finite coordinate {} of atom {}", x[i], i / 3)));
        }
        Ok(())
    }

    fn check_internal(&self, q: &[f64]) -> Result<()> {
        if q.len() != self.n_internal() {
            return Err(Error::invalid(format!(
                "expected {} internal coordinates, got {}",
                self.n_internal(),
                q.len()
            )));
        }
        if let Some(i) = q.iter().position(|v| !v.is_finite()) {
            return Err(Error::invalid(format!("non-finite internal coordinate {} at index {i}", q[i])));
        }
        Ok(())
    }

    /// Cartesian positions of one configuration (nm, `3 n` values) to internal coordinates, written
    /// into `q`; returns ln|det dq/dx| (= minus the inverse map's log-determinant at q).
    pub fn to_internal(&self, x: &[f64], q: &mut [f64]) -> Result<f64> {
        self.check_positions(x)?;
        if q.len() != self.n_internal() {
            return Err(Error::invalid("output buffer has the wrong length"));
        }
        let [a0, a1, a2] = self.anchors.map(|a| point(x, a));
        q[0] = distance(&a1, &a0);
        q[1] = distance(&a2, &a0);
        q[2] = angle(&a1, &a0, &a2);
        if !(q[0] > 0.0 && q[1] > 0.0) || q[2].sin().abs() < LINEAR_SIN {
            return Err(Error::invalid(format!(
                "the anchor atoms {:?} are collinear or coincide: their frame is undefined",
                self.anchors
            )));
        }
        // One logarithm per configuration: the product of r^2 |sin theta| over 22-atom molecules
        // stays far from under- and overflow.
        let mut det = q[1];
        for (k, row) in self.rows.iter().enumerate() {
            let p = point(x, row.atom);
            let b = point(x, row.bond);
            let a = point(x, row.angle);
            let d = point(x, row.dihedral);
            let [r, theta, sin_theta, phi] = internal_of(&p, &b, &a, &d);
            if r.is_nan() || r <= 0.0 || sin_theta.is_nan() || sin_theta < LINEAR_SIN {
                return Err(Error::invalid(format!(
                    "atom {} coincides with or is collinear with its references {}-{}",
                    row.atom, row.bond, row.angle
                )));
            }
            q[3 + 3 * k] = r;
            q[3 + 3 * k + 1] = theta;
            q[3 + 3 * k + 2] = phi;
            det *= r * r * sin_theta;
        }
        Ok(-det.ln())
    }

    /// Internal coordinates to Cartesian positions in the anchor frame, written into `x`; returns
    /// ln|det dx/dq|. Bond lengths must be positive; angles outside (0, pi) are accepted (the
    /// placement is still well defined, ln|sin| enters the determinant).
    pub fn to_cartesian(&self, q: &[f64], x: &mut [f64]) -> Result<f64> {
        self.check_internal(q)?;
        if x.len() != 3 * self.n_atoms {
            return Err(Error::invalid("output buffer has the wrong length"));
        }
        let (b1, b2, alpha) = (q[0], q[1], q[2]);
        if !(b1 > 0.0 && b2 > 0.0) {
            return Err(Error::invalid(format!("anchor bond lengths must be positive, got {b1} and {b2} nm")));
        }
        let [i0, i1, i2] = self.anchors;
        store(x, i0, &Point3::origin());
        store(x, i1, &Point3::new(b1, 0.0, 0.0));
        store(x, i2, &Point3::new(b2 * alpha.cos(), b2 * alpha.sin(), 0.0));
        let mut det = b2;
        for &k in &self.placement {
            let row = &self.rows[k];
            let (r, theta, phi) = (q[3 + 3 * k], q[3 + 3 * k + 1], q[3 + 3 * k + 2]);
            if r <= 0.0 {
                return Err(Error::invalid(format!("bond length of atom {} must be positive, got {r} nm", row.atom)));
            }
            let b = point(x, row.bond);
            let f = frame(&b, &point(x, row.angle), &point(x, row.dihedral)).ok_or_else(|| {
                Error::invalid(format!(
                    "the references {}-{}-{} of atom {} are collinear: its dihedral is undefined",
                    row.bond, row.angle, row.dihedral, row.atom
                ))
            })?;
            let spherical = Spherical::new(r, theta, phi);
            store(x, row.atom, &place_spherical(&b, &f, &spherical));
            det *= r * r * spherical.sin_theta.abs();
        }
        Ok(det.ln())
    }

    /// The vector-Jacobian product of the inverse map: given `grad_x` = dL/dx at `x = x(q)` (as
    /// returned by [`ZMatrix::to_cartesian`]), writes dL/dq = (dx/dq)^T grad_x into `grad_q`.
    /// Analytic reverse mode through the atom placements; cost linear in the number of atoms.
    pub fn pullback(&self, q: &[f64], x: &[f64], grad_x: &[f64], grad_q: &mut [f64]) -> Result<()> {
        let mut scratch = Vec::new();
        self.pullback_with(q, x, grad_x, grad_q, None, &mut scratch)
    }

    /// [`ZMatrix::pullback`] with a caller-owned scratch buffer (so that batches allocate once),
    /// and, when `grad_log_det` is given, [`ZMatrix::log_det_gradient`] from the same pass.
    pub fn pullback_with(
        &self,
        q: &[f64],
        x: &[f64],
        grad_x: &[f64],
        grad_q: &mut [f64],
        mut grad_log_det: Option<&mut [f64]>,
        g: &mut Vec<Vector3<f64>>,
    ) -> Result<()> {
        if q.len() != self.n_internal() || grad_q.len() != self.n_internal() {
            return Err(Error::invalid("internal-coordinate buffers have the wrong length"));
        }
        if let Some(out) = grad_log_det.as_deref_mut() {
            if out.len() != self.n_internal() {
                return Err(Error::invalid("log-det gradient buffer has the wrong length"));
            }
            out.fill(0.0);
            out[1] = 1.0 / q[1];
        }
        if x.len() != 3 * self.n_atoms || grad_x.len() != 3 * self.n_atoms {
            return Err(Error::invalid("Cartesian buffers have the wrong length"));
        }
        g.clear();
        g.extend(grad_x.chunks_exact(3).map(|c| Vector3::new(c[0], c[1], c[2])));
        for &k in self.placement.iter().rev() {
            let row = &self.rows[k];
            let b = point(x, row.bond);
            let f = frame(&b, &point(x, row.angle), &point(x, row.dihedral))
                .ok_or_else(|| Error::invalid(format!("degenerate frame for atom {}", row.atom)))?;
            let (r, theta, phi) = (q[3 + 3 * k], q[3 + 3 * k + 1], q[3 + 3 * k + 2]);
            let spherical = Spherical::new(r, theta, phi);
            if let Some(out) = grad_log_det.as_deref_mut() {
                out[3 + 3 * k] = 2.0 / r;
                out[3 + 3 * k + 1] = spherical.cos_theta / spherical.sin_theta;
            }
            let pg = place_backward_spherical(&f, &spherical, &g[row.atom]);
            grad_q[3 + 3 * k..3 + 3 * k + 3].copy_from_slice(&pg.internal);
            g[row.bond] += pg.bond_ref;
            g[row.angle] += pg.angle_ref;
            g[row.dihedral] += pg.dihedral_ref;
        }
        let (b2, alpha) = (q[1], q[2]);
        let (s, c) = alpha.sin_cos();
        let g1 = g[self.anchors[1]];
        let g2 = g[self.anchors[2]];
        grad_q[0] = g1.x;
        grad_q[1] = g2.x * c + g2.y * s;
        grad_q[2] = -g2.x * b2 * s + g2.y * b2 * c;
        Ok(())
    }

    /// d ln|det dx/dq| / dq, written into `out`: 1/b2 for the second anchor bond, 2/r for the bonds
    /// and cot(theta) for the angles of the rows, zero elsewhere.
    pub fn log_det_gradient(&self, q: &[f64], out: &mut [f64]) -> Result<()> {
        if q.len() != self.n_internal() || out.len() != self.n_internal() {
            return Err(Error::invalid("internal-coordinate buffers have the wrong length"));
        }
        out.fill(0.0);
        out[1] = 1.0 / q[1];
        for k in 0..self.rows.len() {
            out[3 + 3 * k] = 2.0 / q[3 + 3 * k];
            out[3 + 3 * k + 1] = 1.0 / q[3 + 3 * k + 1].tan();
        }
        Ok(())
    }
}
