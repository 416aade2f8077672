//! Bond lengths, angles and dihedrals of points, the placement of an atom from internal
//! coordinates (NeRF, Parsons et al. 2005), and the reverse-mode derivative of that placement.
//!
//! Conventions: `angle(a, b, c)` is the angle at `b`; `dihedral(p0, p1, p2, p3)` is the IUPAC
//! torsion (the one mdtraj computes), in (-pi, pi]. An atom placed with [`place`] from references
//! `(bond_ref, angle_ref, dihedral_ref)` and internals `(r, theta, phi)` satisfies
//! `distance(atom, bond_ref) = r`, `angle(atom, bond_ref, angle_ref) = theta` and
//! `dihedral(atom, bond_ref, angle_ref, dihedral_ref) = phi`.

use nalgebra::{Point3, Vector3};

/// Distance between two points.
///
/// ```
/// use nalgebra::Point3;
/// let d = cgflow::coords::geometry::distance(&Point3::origin(), &Point3::new(3.0, 4.0, 0.0));
/// assert!((d - 5.0).abs() < 1e-15);
/// ```
pub fn distance(a: &Point3<f64>, b: &Point3<f64>) -> f64 {
    (a - b).norm()
}

/// The angle at `b` between `a` and `c`, in [0, pi].
///
/// ```
/// use nalgebra::Point3;
/// use cgflow::coords::geometry::angle;
/// let t = angle(&Point3::new(1.0, 0.0, 0.0), &Point3::origin(), &Point3::new(0.0, 2.0, 0.0));
/// assert!((t - std::f64::consts::FRAC_PI_2).abs() < 1e-15);
/// ```
pub fn angle(a: &Point3<f64>, b: &Point3<f64>, c: &Point3<f64>) -> f64 {
    let u = a - b;
    let v = c - b;
    // atan2 of |u x v| and u.v is accurate near 0 and pi, unlike acos.
    u.cross(&v).norm().atan2(u.dot(&v))
}

/// The angle at `b` between `a` and `c` and its sine, from one cross product.
pub fn angle_and_sine(a: &Point3<f64>, b: &Point3<f64>, c: &Point3<f64>) -> (f64, f64) {
    let u = a - b;
    let v = c - b;
    let cross = u.cross(&v).norm();
    let theta = cross.atan2(u.dot(&v));
    (theta, cross / (u.norm() * v.norm()))
}

/// Bond length r = |atom - b|, angle theta = angle(atom, b, a) with its sine, and dihedral
/// phi = dihedral(atom, b, a, d), sharing one cross product and the norms between them.
pub fn internal_of(atom: &Point3<f64>, b: &Point3<f64>, a: &Point3<f64>, d: &Point3<f64>) -> [f64; 4] {
    let u = atom - b;
    let v = a - b;
    let w = d - a;
    let r = u.norm();
    let v_norm = v.norm();
    let uxv = u.cross(&v);
    let cross = uxv.norm();
    let theta = cross.atan2(u.dot(&v));
    // dihedral(atom, b, a, d) with b1 = b - atom = -u, b2 = v, b3 = w: n1 = b1 x b2 = -(u x v).
    let n2 = v.cross(&w);
    let phi = (v_norm * (-u).dot(&n2)).atan2(-uxv.dot(&n2));
    [r, theta, cross / (r * v_norm), phi]
}

/// The IUPAC dihedral angle p0-p1-p2-p3 in (-pi, pi].
///
/// ```
/// use nalgebra::Point3;
/// use cgflow::coords::geometry::dihedral;
/// let p = [Point3::new(1.0, 0.0, 0.0), Point3::origin(), Point3::new(0.0, 0.0, 1.0), Point3::new(0.0, 1.0, 1.0)];
/// assert!((dihedral(&p[0], &p[1], &p[2], &p[3]) - std::f64::consts::FRAC_PI_2).abs() < 1e-15);
/// ```
pub fn dihedral(p0: &Point3<f64>, p1: &Point3<f64>, p2: &Point3<f64>, p3: &Point3<f64>) -> f64 {
    let b1 = p1 - p0;
    let b2 = p2 - p1;
    let b3 = p3 - p2;
    let n1 = b1.cross(&b2);
    let n2 = b2.cross(&b3);
    (b2.norm() * b1.dot(&n2)).atan2(n1.dot(&n2))
}

/// The dihedral angles `dihedrals` (0-based atom quadruples) of every structure of the flat batch
/// `x` (`n_atoms` atoms of xyz each, nm), structure-major, radians in (-pi, pi]. Errors on a batch
/// that is not a whole number of structures, a dihedral naming an atom the structures lack, and a
/// non-finite coordinate (naming the structure and the atom): an exploded walker is an error, not
/// a NaN sample.
///
/// ```
/// use cgflow::coords::geometry::dihedrals_of;
/// let x = [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0];
/// let angles = dihedrals_of(&x, 4, &[[0, 1, 2, 3]]).unwrap();
/// assert!((angles[0].abs() - std::f64::consts::FRAC_PI_2).abs() < 1e-12);
/// assert!(dihedrals_of(&[f64::NAN; 12], 4, &[[0, 1, 2, 3]]).is_err());
/// ```
pub fn dihedrals_of(x: &[f64], n_atoms: usize, dihedrals: &[[usize; 4]]) -> crate::Result<Vec<f64>> {
    use crate::Error;
    if n_atoms == 0 || x.len() % (3 * n_atoms) != 0 {
        return Err(Error::invalid(format!("{} values are not whole structures of {n_atoms} atoms", x.len())));
    }
    if let Some(d) = dihedrals.iter().find(|d| d.iter().any(|&a| a >= n_atoms)) {
        return Err(Error::invalid(format!("dihedral {d:?} names an atom beyond the structures' {n_atoms}")));
    }
    crate::openmm::check_coordinates(x, n_atoms, x.len() / (3 * n_atoms), "positions")?;
    let mut angles = Vec::with_capacity(x.len() / (3 * n_atoms) * dihedrals.len());
    for structure in x.chunks_exact(3 * n_atoms) {
        let p = |a: usize| Point3::new(structure[3 * a], structure[3 * a + 1], structure[3 * a + 2]);
        angles.extend(dihedrals.iter().map(|d| dihedral(&p(d[0]), &p(d[1]), &p(d[2]), &p(d[3]))));
    }
    Ok(angles)
}

/// Wraps an angle into [-pi, pi).
///
/// ```
/// use std::f64::consts::PI;
/// let w = cgflow::coords::geometry::wrap_angle(3.0 * PI / 2.0);
/// assert!((w + PI / 2.0).abs() < 1e-12);
/// assert_eq!(cgflow::coords::geometry::wrap_angle(PI), -PI);
/// ```
pub fn wrap_angle(x: f64) -> f64 {
    use std::f64::consts::{PI, TAU};
    // Fast path: differences of two angles in [-pi, pi] need at most one shift.
    if (-PI..PI).contains(&x) {
        return x;
    }
    if (PI..3.0 * PI).contains(&x) {
        return x - TAU;
    }
    if (-3.0 * PI..-PI).contains(&x) {
        return x + TAU;
    }
    let two_pi = std::f64::consts::TAU;
    let y = (x + std::f64::consts::PI).rem_euclid(two_pi) - std::f64::consts::PI;
    // rem_euclid can return exactly 2 pi for tiny negative inputs through rounding.
    if y >= std::f64::consts::PI {
        y - two_pi
    } else {
        y
    }
}

/// The local frame NeRF builds from the three reference atoms, kept for the reverse pass.
#[derive(Debug, Clone, Copy)]
pub struct Frame {
    /// Unit vector from the angle reference to the bond reference.
    pub bc: Vector3<f64>,
    /// Unit normal of the plane of the three references.
    pub n: Vector3<f64>,
    /// n x bc.
    pub m: Vector3<f64>,
    /// |bond_ref - angle_ref|.
    pub bc_length: f64,
    /// |(angle_ref - dihedral_ref) x bc| before normalisation.
    pub normal_length: f64,
    /// angle_ref - dihedral_ref.
    pub w: Vector3<f64>,
}

/// Builds the NeRF frame; `None` when the references are (nearly) collinear or coincide, where
/// the dihedral of the placed atom is undefined.
pub fn frame(bond_ref: &Point3<f64>, angle_ref: &Point3<f64>, dihedral_ref: &Point3<f64>) -> Option<Frame> {
    let u = bond_ref - angle_ref;
    let bc_length = u.norm();
    // Written so that NaN also counts as degenerate.
    if bc_length.is_nan() || bc_length <= 1e-12 {
        return None;
    }
    let bc = u / bc_length;
    let w = angle_ref - dihedral_ref;
    let c = w.cross(&bc);
    let normal_squared = c.norm_squared();
    // Degenerate when w is (nearly) parallel to bc: |w x bc| <= 1e-12 |w|, compared squared.
    if normal_squared.is_nan() || normal_squared <= 1e-24 * w.norm_squared() || normal_squared <= 1e-28 {
        return None;
    }
    let normal_length = normal_squared.sqrt();
    let n = c / normal_length;
    let m = n.cross(&bc);
    Some(Frame { bc, n, m, bc_length, normal_length, w })
}

/// Internal coordinates of one placed atom with the sines and cosines its placement needs.
#[derive(Debug, Clone, Copy)]
pub struct Spherical {
    /// Bond length.
    pub r: f64,
    /// sin and cos of the bond angle.
    pub sin_theta: f64,
    /// cos of the bond angle.
    pub cos_theta: f64,
    /// sin of the dihedral.
    pub sin_phi: f64,
    /// cos of the dihedral.
    pub cos_phi: f64,
}

impl Spherical {
    /// From (r, theta, phi).
    pub fn new(r: f64, theta: f64, phi: f64) -> Self {
        let (sin_theta, cos_theta) = theta.sin_cos();
        let (sin_phi, cos_phi) = phi.sin_cos();
        Self { r, sin_theta, cos_theta, sin_phi, cos_phi }
    }

    /// The displacement along (bc, m, n).
    fn local(&self) -> Vector3<f64> {
        let rs = self.r * self.sin_theta;
        Vector3::new(-self.r * self.cos_theta, rs * self.cos_phi, rs * self.sin_phi)
    }
}

/// Places an atom at distance `r` from `bond_ref`, angle `theta` (atom, bond_ref, angle_ref) and
/// dihedral `phi` (atom, bond_ref, angle_ref, dihedral_ref), given the references' frame.
pub fn place(bond_ref: &Point3<f64>, f: &Frame, r: f64, theta: f64, phi: f64) -> Point3<f64> {
    place_spherical(bond_ref, f, &Spherical::new(r, theta, phi))
}

/// [`place`] with the trigonometric values already computed.
pub fn place_spherical(bond_ref: &Point3<f64>, f: &Frame, s: &Spherical) -> Point3<f64> {
    let d = s.local();
    bond_ref + f.bc * d.x + f.m * d.y + f.n * d.z
}

/// Gradients flowing out of one placement in the reverse pass.
#[derive(Debug, Clone, Copy, Default)]
pub struct PlacementGradient {
    /// dL/d(r, theta, phi).
    pub internal: [f64; 3],
    /// dL/d bond_ref.
    pub bond_ref: Vector3<f64>,
    /// dL/d angle_ref.
    pub angle_ref: Vector3<f64>,
    /// dL/d dihedral_ref.
    pub dihedral_ref: Vector3<f64>,
}

/// Reverse mode of [`place`]: given `g` = dL/d(placed atom), the derivatives with respect to the
/// internals and the three reference positions.
pub fn place_backward(f: &Frame, r: f64, theta: f64, phi: f64, g: &Vector3<f64>) -> PlacementGradient {
    place_backward_spherical(f, &Spherical::new(r, theta, phi), g)
}

/// [`place_backward`] with the trigonometric values already computed.
pub fn place_backward_spherical(f: &Frame, s: &Spherical, g: &Vector3<f64>) -> PlacementGradient {
    let (r, st, ct, sp, cp) = (s.r, s.sin_theta, s.cos_theta, s.sin_phi, s.cos_phi);
    let d = s.local();
    // Through the local displacement d.
    let gd = Vector3::new(g.dot(&f.bc), g.dot(&f.m), g.dot(&f.n));
    let internal = [
        gd.x * (-ct) + gd.y * st * cp + gd.z * st * sp,
        gd.x * (r * st) + gd.y * r * ct * cp + gd.z * r * ct * sp,
        gd.y * (-r * st * sp) + gd.z * r * st * cp,
    ];
    // Through the frame vectors: x = bond_ref + d.x bc + d.y m + d.z n.
    let g_m = g * d.y;
    let mut g_n = g * d.z;
    let mut g_bc = g * d.x;
    // m = n x bc.
    g_n += f.bc.cross(&g_m);
    g_bc += g_m.cross(&f.n);
    // n = c / |c|.
    let g_c = (g_n - f.n * f.n.dot(&g_n)) / f.normal_length;
    // c = w x bc.
    let g_w = f.bc.cross(&g_c);
    g_bc += g_c.cross(&f.w);
    // bc = u / |u|, u = bond_ref - angle_ref; w = angle_ref - dihedral_ref.
    let g_u = (g_bc - f.bc * f.bc.dot(&g_bc)) / f.bc_length;
    PlacementGradient { internal, bond_ref: g + g_u, angle_ref: -g_u + g_w, dihedral_ref: -g_w }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn points() -> [Point3<f64>; 4] {
        [
            Point3::new(0.31, -0.12, 0.05),
            Point3::new(0.02, 0.11, -0.07),
            Point3::new(-0.13, -0.02, 0.14),
            Point3::new(0.05, 0.21, 0.33),
        ]
    }

    #[test]
    fn place_inverts_the_internal_coordinates() {
        let [atom, b, a, d] = points();
        let f = frame(&b, &a, &d).expect("frame");
        let (r, theta, phi) = (distance(&atom, &b), angle(&atom, &b, &a), dihedral(&atom, &b, &a, &d));
        let placed = place(&b, &f, r, theta, phi);
        assert!((placed - atom).norm() < 1e-14, "{placed} vs {atom}");
    }

    #[test]
    fn dihedral_matches_an_independent_formula() {
        // Projection formula: angle between the components of b0 and b2 normal to b1.
        let [p0, p1, p2, p3] = points();
        let b0 = p0 - p1;
        let b1 = (p2 - p1).normalize();
        let b2 = p3 - p2;
        let v = b0 - b1 * b0.dot(&b1);
        let w = b2 - b1 * b2.dot(&b1);
        let expected = b1.cross(&v).dot(&w).atan2(v.dot(&w));
        assert!((dihedral(&p0, &p1, &p2, &p3) - expected).abs() < 1e-14);
    }

    #[test]
    fn backward_matches_finite_differences() {
        let [_, b, a, d] = points();
        let (r, theta, phi) = (0.15, 1.9, -2.3);
        let g = Vector3::new(0.7, -1.3, 0.4);
        let loss = |b: &Point3<f64>, a: &Point3<f64>, d: &Point3<f64>, q: [f64; 3]| -> f64 {
            let f = frame(b, a, d).expect("frame");
            place(b, &f, q[0], q[1], q[2]).coords.dot(&g)
        };
        let f = frame(&b, &a, &d).expect("frame");
        let grad = place_backward(&f, r, theta, phi, &g);
        let h = 1e-6;
        for k in 0..3 {
            let mut qp = [r, theta, phi];
            let mut qm = qp;
            qp[k] += h;
            qm[k] -= h;
            let fd = (loss(&b, &a, &d, qp) - loss(&b, &a, &d, qm)) / (2.0 * h);
            assert!((fd - grad.internal[k]).abs() < 1e-8, "internal {k}: {fd} vs {}", grad.internal[k]);
        }
        for (which, analytic) in [(0, grad.bond_ref), (1, grad.angle_ref), (2, grad.dihedral_ref)] {
            for k in 0..3 {
                let mut pts = [b, a, d];
                pts[which][k] += h;
                let plus = loss(&pts[0], &pts[1], &pts[2], [r, theta, phi]);
                pts[which][k] -= 2.0 * h;
                let minus = loss(&pts[0], &pts[1], &pts[2], [r, theta, phi]);
                let fd = (plus - minus) / (2.0 * h);
                assert!((fd - analytic[k]).abs() < 1e-8, "reference {which}, component {k}: {fd} vs {}", analytic[k]);
            }
        }
    }

    #[test]
    fn collinear_references_have_no_frame() {
        let b = Point3::new(0.0, 0.0, 0.0);
        let a = Point3::new(1.0, 0.0, 0.0);
        let d = Point3::new(2.0, 0.0, 0.0);
        assert!(frame(&b, &a, &d).is_none());
        assert!(frame(&b, &b, &d).is_none());
    }
}
