//! Optimal superposition (Kabsch) and RMSD after alignment.

use nalgebra::{Matrix3, Point3, Vector3};

use crate::error::{Error, Result};

fn points(x: &[f64]) -> Vec<Point3<f64>> {
    x.chunks_exact(3).map(|c| Point3::new(c[0], c[1], c[2])).collect()
}

fn centroid(p: &[Point3<f64>]) -> Vector3<f64> {
    p.iter().fold(Vector3::zeros(), |s, q| s + q.coords) / p.len() as f64
}

/// RMSD (same unit as the input) between two configurations of the same atoms after removing the
/// best rigid motion (translation and proper rotation) of `a` onto `b`.
///
/// ```
/// let a = [0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0];
/// let b = [5.0, 5.0, 5.0, 5.0, 6.0, 5.0, 4.0, 5.0, 5.0]; // a rotated by 90 degrees and shifted
/// assert!(cgflow::coords::align::rmsd_after_alignment(&a, &b).unwrap() < 1e-12);
/// ```
pub fn rmsd_after_alignment(a: &[f64], b: &[f64]) -> Result<f64> {
    if a.len() != b.len() || a.is_empty() || a.len() % 3 != 0 {
        return Err(Error::invalid("configurations must have the same, non-zero number of atoms"));
    }
    let (pa, pb) = (points(a), points(b));
    let (ca, cb) = (centroid(&pa), centroid(&pb));
    let mut h = Matrix3::zeros();
    for (p, q) in pa.iter().zip(&pb) {
        h += (p.coords - ca) * (q.coords - cb).transpose();
    }
    let svd = h.svd(true, true);
    let (u, v_t) =
        (svd.u.ok_or_else(|| Error::invalid("SVD failed"))?, svd.v_t.ok_or_else(|| Error::invalid("SVD failed"))?);
    let mut d = Matrix3::identity();
    if (v_t.transpose() * u.transpose()).determinant() < 0.0 {
        d[(2, 2)] = -1.0;
    }
    let rotation = v_t.transpose() * d * u.transpose();
    let sum: f64 = pa.iter().zip(&pb).map(|(p, q)| (rotation * (p.coords - ca) - (q.coords - cb)).norm_squared()).sum();
    Ok((sum / pa.len() as f64).sqrt())
}
