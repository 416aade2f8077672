//! 2D marginals of a free energy over a d-dimensional torus of CG angles: how a PMF over d > 2
//! dihedrals (phi_1, psi_1, phi_2, psi_2, ... of a longer peptide) is compared with a reference of
//! one (phi_i, psi_i) pair.
//!
//! The marginal probability of bin (a, b) of the pair (i, j) is the integral of exp(-F) over the
//! bin and over all the other dimensions, normalised. It is computed on a product grid: the pair's
//! `bins` x `bins` bin centres, and `other_bins` midpoints per other dimension (the midpoint rule,
//! exponentially accurate for smooth periodic integrands). F is evaluated in batches of points by
//! a caller's function (an ensemble of networks, say); a constant offset in F cancels.

use crate::error::{Error, Result};

/// Points of `[-pi, pi)^d`: bin centres `-pi + (k + 1/2) 2 pi / n`.
fn centre(k: usize, n: usize) -> f64 {
    -std::f64::consts::PI + (k as f64 + 0.5) * std::f64::consts::TAU / n as f64
}

/// The marginal bin probabilities (row-major `[bin of i][bin of j]`, `bins * bins` values, sum 1)
/// of the pair of dimensions `pair` of a free energy in kT over `[-pi, pi)^dims`. `free_energy`
/// maps a batch of points (flat, `dims` values each) to F at each; it is called with at most
/// `batch` points at a time. Errors on `dims < 2`, a pair that is not two distinct dimensions
/// below `dims`, zero bins, a grid of more than 2^32 points, a wrong number of values returned,
/// a NaN F, and an F that is +inf everywhere.
///
/// ```
/// use cgflow::metrics::marginal::marginal_probabilities;
/// // Independent dimensions: the (0, 2) marginal of F = cos(x0) + 3 cos(x1) + 0.5 cos(x2) does
/// // not depend on x1's term.
/// let f = |x: &[f64]| Ok(x.chunks(3).map(|p| p[0].cos() + 3.0 * p[1].cos() + 0.5 * p[2].cos()).collect());
/// let p = marginal_probabilities(3, (0, 2), 4, 8, 1000, f).unwrap();
/// assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
/// ```
pub fn marginal_probabilities(
    dims: usize,
    pair: (usize, usize),
    bins: usize,
    other_bins: usize,
    batch: usize,
    mut free_energy: impl FnMut(&[f64]) -> Result<Vec<f64>>,
) -> Result<Vec<f64>> {
    let (i, j) = pair;
    if dims < 2 || i >= dims || j >= dims || i == j {
        return Err(Error::invalid(format!("pair ({i}, {j}) is not two distinct dimensions of {dims}")));
    }
    if bins == 0 || (dims > 2 && other_bins == 0) || batch == 0 {
        return Err(Error::invalid("marginal: bins, other_bins and batch must be positive"));
    }
    let others: Vec<usize> = (0..dims).filter(|&k| k != i && k != j).collect();
    let per_cell = (other_bins as u64).checked_pow(others.len() as u32).unwrap_or(u64::MAX);
    let total = (bins as u64 * bins as u64).saturating_mul(per_cell);
    if total > 1 << 32 {
        return Err(Error::invalid(format!("marginal: a grid of {total} points is too large")));
    }
    let total = total as usize;
    let per_cell = per_cell as usize;
    // F at every grid point, in order (cell of the pair, then the others' grid), batch by batch.
    let mut values = Vec::with_capacity(total);
    let mut points = Vec::with_capacity(batch.min(total) * dims);
    let mut point = vec![0.0; dims];
    for index in 0..total {
        let (cell, mut rest) = (index / per_cell, index % per_cell);
        point[i] = centre(cell / bins, bins);
        point[j] = centre(cell % bins, bins);
        for &k in others.iter().rev() {
            point[k] = centre(rest % other_bins, other_bins);
            rest /= other_bins;
        }
        points.extend_from_slice(&point);
        if points.len() == batch * dims || index + 1 == total {
            let f = free_energy(&points)?;
            if f.len() != points.len() / dims {
                return Err(Error::invalid(format!(
                    "marginal: {} free energies for {} points",
                    f.len(),
                    points.len() / dims
                )));
            }
            if f.iter().any(|v| v.is_nan()) {
                return Err(Error::invalid("marginal: the free energy is NaN at a grid point"));
            }
            values.extend(f);
            points.clear();
        }
    }
    // log-sum-exp per cell, then normalised over the cells (a constant in F cancels).
    let f_min = values.iter().copied().fold(f64::INFINITY, f64::min);
    if !f_min.is_finite() {
        return Err(Error::invalid("marginal: the free energy is +inf (or -inf) at the grid points"));
    }
    let weights: Vec<f64> = values.chunks(per_cell).map(|cell| cell.iter().map(|f| (f_min - f).exp()).sum()).collect();
    let sum: f64 = weights.iter().sum();
    Ok(weights.into_iter().map(|w| w / sum).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The modified Bessel function I0 by its series (exact enough for the arguments used).
    fn bessel_i0(x: f64) -> f64 {
        let (mut term, mut sum) = (1.0, 1.0);
        for k in 1..60 {
            term *= (x / 2.0) * (x / 2.0) / (k as f64 * k as f64);
            sum += term;
        }
        sum
    }

    #[test]
    fn a_correlated_torus_density_has_its_exact_marginals() {
        // F = -a cos(x0) - b cos(x1 - x2) - c cos(x3): over x2, exp(b cos(x1 - x2)) integrates to
        // 2 pi I0(b) whatever x1, so the (0, 1) marginal is exp(a cos x0) (normalised) times
        // uniform in x1; the (1, 2) marginal is exp(b cos(x1 - x2)), correlated.
        let (a, b, c) = (1.5, 2.0, 0.7);
        let f = |x: &[f64]| -> Result<Vec<f64>> {
            Ok(x.chunks(4).map(|p| -a * p[0].cos() - b * (p[1] - p[2]).cos() - c * p[3].cos()).collect())
        };
        let bins = 12;
        let p01 = marginal_probabilities(4, (0, 1), bins, 16, 777, f).expect("marginal");
        // The exact bin probabilities of exp(a cos x0) by fine quadrature over each bin.
        let h = std::f64::consts::TAU / bins as f64;
        let bin_integral = |k: usize, g: &dyn Fn(f64) -> f64| {
            let lo = -std::f64::consts::PI + k as f64 * h;
            (0..2000).map(|m| g(lo + (m as f64 + 0.5) * h / 2000.0)).sum::<f64>() * h / 2000.0
        };
        let z = std::f64::consts::TAU * bessel_i0(a);
        for k in 0..bins {
            let exact = bin_integral(k, &|x| (a * x.cos()).exp()) / z / bins as f64;
            for l in 0..bins {
                // The grid takes F at the bin centre, not its bin average: compare with the
                // centre value's share, then check the two agree to the bin-averaging error.
                let centre_share = (a * centre(k, bins).cos()).exp();
                let total: f64 = (0..bins).map(|m| (a * centre(m, bins).cos()).exp()).sum();
                let expected = centre_share / total / bins as f64;
                assert!((p01[k * bins + l] - expected).abs() < 1e-12, "({k}, {l})");
                assert!((p01[k * bins + l] - exact).abs() < 0.06 * exact, "({k}, {l}) vs bin average");
            }
        }
        // The (1, 2) marginal depends on x1 - x2 only, as exp(b cos(x1 - x2)).
        let p12 = marginal_probabilities(4, (1, 2), bins, 16, 50, f).expect("marginal");
        let total: f64 =
            (0..bins * bins).map(|m| (b * (centre(m / bins, bins) - centre(m % bins, bins)).cos()).exp()).sum();
        for (m, p) in p12.iter().enumerate() {
            let expected = (b * (centre(m / bins, bins) - centre(m % bins, bins)).cos()).exp() / total;
            assert!((p - expected).abs() < 1e-12, "{m}");
        }
        // A constant offset and the batch size change nothing.
        let shifted =
            marginal_probabilities(4, (1, 2), bins, 16, 1 << 20, |x| Ok(f(x)?.iter().map(|v| v + 900.0).collect()))
                .expect("shifted");
        assert!(p12.iter().zip(&shifted).all(|(u, v)| (u - v).abs() < 1e-15));
    }

    #[test]
    fn bad_arguments_and_bad_free_energies_are_errors() {
        let flat = |x: &[f64]| Ok(vec![0.0; x.len() / 3]);
        assert!(marginal_probabilities(3, (0, 0), 4, 4, 8, flat).is_err());
        assert!(marginal_probabilities(3, (0, 3), 4, 4, 8, flat).is_err());
        assert!(marginal_probabilities(1, (0, 1), 4, 4, 8, |x: &[f64]| Ok(vec![0.0; x.len()])).is_err());
        assert!(marginal_probabilities(3, (0, 1), 0, 4, 8, flat).is_err());
        assert!(marginal_probabilities(12, (0, 1), 100, 100, 8, |x: &[f64]| Ok(vec![0.0; x.len() / 12]))
            .unwrap_err()
            .to_string()
            .contains("too large"));
        assert!(marginal_probabilities(3, (0, 1), 4, 4, 8, |x: &[f64]| Ok(vec![0.0; x.len() / 3 + 1])).is_err());
        assert!(marginal_probabilities(3, (0, 1), 4, 4, 8, |x: &[f64]| Ok(vec![f64::NAN; x.len() / 3])).is_err());
        assert!(marginal_probabilities(3, (0, 1), 4, 4, 8, |x: &[f64]| Ok(vec![f64::INFINITY; x.len() / 3])).is_err());
        let p = marginal_probabilities(2, (1, 0), 3, 0, 8, |x: &[f64]| Ok(x.chunks(2).map(|p| p[0]).collect()))
            .expect("d = 2 needs no other bins");
        // Pair (1, 0): rows follow dimension 1, columns dimension 0 (where F varies).
        assert!((p[0] - p[3]).abs() < 1e-15 && p[0] > p[1]);
    }
}
