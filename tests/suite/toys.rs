//! Analytic toy systems: gradients, known minima, the exact latent map of the harmonic box, exact
//! Müller-Brown free energies by quadrature, and Metropolis sampling against them.

use cgflow::energy::toy::{
    evaluate_batch, log_standard_normal_pdf, DoubleWell, EvaluationCounter, HarmonicBox, MullerBrown, Potential,
};
use cgflow::md::metropolis::{sample_chains, MetropolisConfig};
use cgflow::metrics::kl_divergence;
use cgflow::metrics::quadrature::{
    double_well_free_energy, integrate, muller_brown_bin_probabilities, muller_brown_pmf,
};
use cgflow::metrics::{Axis, Histogram1d};

/// Checks du/dx of `p` at `x` against central finite differences (relative 1e-6, with an absolute
/// floor of 1e-6 for small components).
fn check_gradient(p: &dyn Potential, x: &[f64]) {
    let mut grad = vec![0.0; x.len()];
    let u = p.energy_and_gradient(x, &mut grad);
    assert!((u - p.energy(x)).abs() <= 1e-12 * u.abs().max(1.0), "energy_and_gradient and energy differ at {x:?}");
    for i in 0..x.len() {
        let h = 1e-5 * x[i].abs().max(1.0);
        let (mut plus, mut minus) = (x.to_vec(), x.to_vec());
        plus[i] += h;
        minus[i] -= h;
        let fd = (p.energy(&plus) - p.energy(&minus)) / (2.0 * h);
        assert!(
            (fd - grad[i]).abs() <= 1e-6 * grad[i].abs().max(1.0),
            "d u / d x{i} at {x:?}: analytic {} vs finite difference {fd}",
            grad[i]
        );
    }
}

#[test]
fn gradients_match_finite_differences() {
    let points = [[-1.3, 0.2], [-0.558, 1.442], [0.0, 0.5], [0.4, -0.3], [0.9, 1.7], [-0.8, 0.6]];
    for beta in [0.1, 1.0] {
        let mb = MullerBrown::new(beta).unwrap();
        points.iter().for_each(|x| check_gradient(&mb, x));
    }
    let tilted = DoubleWell::new(1.0, -6.0, 0.5, 2.0).unwrap();
    for x in [[-2.5, 0.3], [0.17, -1.0], [2.4, 2.0], [0.0, 0.0], [3.7, -0.4]] {
        check_gradient(&DoubleWell::default(), &x);
        check_gradient(&tilted, &x);
    }
    let boxed = HarmonicBox::new(3.5, 2.5).unwrap();
    for x in [[0.1, 0.3], [1.2, -0.5], [2.4, 2.4], [0.5, 3.0]] {
        check_gradient(&HarmonicBox::default(), &[x[0] / 2.5, x[1]]);
        check_gradient(&boxed, &x);
    }
    // The batched helper agrees with single evaluations.
    let mb = MullerBrown::default();
    let flat: Vec<f64> = points.iter().flatten().copied().collect();
    let (u, g) = evaluate_batch(&mb, &flat).unwrap();
    for (i, x) in points.iter().enumerate() {
        let mut gi = [0.0; 2];
        assert_eq!(u[i], mb.energy_and_gradient(x, &mut gi));
        assert_eq!(&g[2 * i..2 * i + 2], &gi);
    }
    let err = evaluate_batch(&mb, &[0.0, 0.0, 1.0, f64::INFINITY]).unwrap_err().to_string();
    assert!(err.contains("configuration 1"), "{err}");
}

/// Newton's method on dV = 0 with a finite-difference Hessian of the analytic gradient.
fn newton_minimum(mut x: [f64; 2]) -> [f64; 2] {
    for _ in 0..20 {
        let (_, g) = MullerBrown::potential_and_gradient(x[0], x[1]);
        let h = 1e-6;
        let mut hessian = [[0.0; 2]; 2];
        for j in 0..2 {
            let (mut plus, mut minus) = (x, x);
            plus[j] += h;
            minus[j] -= h;
            let gp = MullerBrown::potential_and_gradient(plus[0], plus[1]).1;
            let gm = MullerBrown::potential_and_gradient(minus[0], minus[1]).1;
            for i in 0..2 {
                hessian[i][j] = (gp[i] - gm[i]) / (2.0 * h);
            }
        }
        let det = hessian[0][0] * hessian[1][1] - hessian[0][1] * hessian[1][0];
        assert!(det > 0.0 && hessian[0][0] > 0.0, "not in a basin at {x:?}");
        x[0] -= (hessian[1][1] * g[0] - hessian[0][1] * g[1]) / det;
        x[1] -= (hessian[0][0] * g[1] - hessian[1][0] * g[0]) / det;
    }
    x
}

#[test]
fn muller_brown_minima() {
    let expected = [([-0.558, 1.442], -146.7), ([0.623, 0.028], -108.2), ([-0.050, 0.467], -80.8)];
    for (guess, v_expected) in expected {
        let x = newton_minimum(guess);
        let (v, g) = MullerBrown::potential_and_gradient(x[0], x[1]);
        assert!(g[0].hypot(g[1]) < 1e-9, "gradient {g:?} at {x:?}");
        assert!((x[0] - guess[0]).abs() < 1e-3 && (x[1] - guess[1]).abs() < 1e-3, "minimum at {x:?}, not {guess:?}");
        assert!((v - v_expected).abs() < 0.1, "V = {v} at {x:?}, expected {v_expected}");
        // Reduced energy at the default beta = 0.1.
        assert!((MullerBrown::default().energy(&x) - 0.1 * v).abs() < 1e-12);
    }
}

#[test]
fn harmonic_box_latent_map_is_exact() {
    for b in [HarmonicBox::default(), HarmonicBox::new(3.5, 2.5).unwrap()] {
        let (k, l) = (b.k(), b.length());
        let mut worst_x: f64 = 0.0;
        let mut worst_density: f64 = 0.0;
        for i in 0..=40 {
            for j in 0..=20 {
                let x = [l * i as f64 / 40.0, -2.0 + 5.0 * j as f64 / 20.0];
                let z = b.to_latent(x).unwrap();
                let back = b.from_latent(z);
                worst_x = worst_x.max((back[0] - x[0]).abs()).max((back[1] - x[1]).abs());
                if z[0].is_finite() {
                    // ln p(x) = ln N(z) + ln |det dz/dx| = ln N(z) - ln |det dx/dz|.
                    let latent = log_standard_normal_pdf(z[0]) + log_standard_normal_pdf(z[1]);
                    let changed = latent - b.log_det_dx_dz(z);
                    worst_density = worst_density.max((changed - b.log_density(x)).abs());
                }
            }
        }
        assert!(worst_x < 1e-12, "x -> z -> x: {worst_x:e}");
        assert!(worst_density < 1e-10, "change of variables: {worst_density:e}");
        // z -> x -> z on the latent side (|z1| <= 3, where 1 - Phi(z1) keeps enough digits).
        for i in -12..=12 {
            let z = [0.25 * i as f64, -0.4 * i as f64];
            let again = b.to_latent(b.from_latent(z)).unwrap();
            assert!((again[0] - z[0]).abs() < 1e-12 && (again[1] - z[1]).abs() < 1e-12, "{z:?} -> {again:?}");
        }
        // log_det_dx_dz against a finite-difference Jacobian of from_latent.
        let z = [0.7, -1.1];
        let h = 1e-6;
        let column = |j: usize| {
            let (mut plus, mut minus) = (z, z);
            plus[j] += h;
            minus[j] -= h;
            let (a, c) = (b.from_latent(plus), b.from_latent(minus));
            [(a[0] - c[0]) / (2.0 * h), (a[1] - c[1]) / (2.0 * h)]
        };
        let (c0, c1) = (column(0), column(1));
        let det = (c0[0] * c1[1] - c1[0] * c0[1]).abs().ln();
        assert!((det - b.log_det_dx_dz(z)).abs() < 1e-8, "{det} vs {}", b.log_det_dx_dz(z));
        // The density is normalised: int_0^L int exp(ln p) dx2 dx1 = 1.
        let inner = |x1: f64| integrate(|x2| b.log_density([x1, x2]).exp(), f64::NEG_INFINITY, f64::INFINITY, 1e-12);
        let total = integrate(inner, 0.0, l, 1e-12);
        assert!((total - 1.0).abs() < 1e-12, "total probability {total} (k = {k}, L = {l})");
        assert!(b.to_latent([-0.1, 0.0]).is_err() && b.to_latent([f64::NAN, 0.0]).is_err());
    }
}

/// The centres of the 100 bins over [-2.5, 1.1].
fn mb_centres() -> Vec<f64> {
    let axis = Axis::new(MullerBrown::S_RANGE.0, MullerBrown::S_RANGE.1, 100).unwrap();
    axis.centres()
}

#[test]
fn muller_brown_pmf_has_three_basins() {
    let mb = MullerBrown::default();
    let s = mb_centres();
    let a = muller_brown_pmf(&mb, &s);
    let minima: Vec<(f64, f64)> =
        (1..99).filter(|&i| a[i] < a[i - 1] && a[i] < a[i + 1]).map(|i| (s[i], a[i])).collect();
    assert_eq!(minima.len(), 3, "local minima of A(s): {minima:?}");
    // Next to s = x1 - x2 of the three minima of V (-2.000, -0.517, 0.595). The exact values below
    // agree with an independent trapezoid rule (Python, h = 0.001 over s_perp in [-8, 8]) to 1e-14.
    let expected = [(-2.014, 0.0), (-0.502, 6.9875), (0.578, 4.6003)];
    for ((s_min, a_min), (s_exp, a_exp)) in minima.iter().zip(expected) {
        assert!((s_min - s_exp).abs() < 1e-9 && (a_min - a_exp).abs() < 1e-3, "basin at {s_min}: A = {a_min}");
    }
    let exact = muller_brown_pmf(&mb, &[-2.0, -0.5, 0.6]);
    assert!((exact[1] - 7.007_477_193_7).abs() < 1e-8 && (exact[2] - 4.626_564_851_6).abs() < 1e-8, "{exact:?}");
    // The bin probabilities are normalised and agree with exp(-A) at the centres up to the
    // midpoint rule's error (measured KL 8.2e-5: small, but not negligible next to the noise
    // floor of a long MD histogram, which is why the reference integrates over each bin).
    let p = muller_brown_bin_probabilities(&mb, 100);
    assert_eq!(p.len(), 100);
    assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    let midpoint: Vec<f64> = a.iter().map(|v| (-v).exp()).collect();
    let d = kl_divergence(&p, &midpoint).unwrap();
    assert!(d > 5e-5 && d < 1.2e-4, "KL(bins || midpoint rule) = {d:e}");
    // The double well's free energy is the x1 energy up to a constant.
    let dw = DoubleWell::default();
    let f = double_well_free_energy(&dw, &[-2.0, 0.0, 2.0, 3.0]);
    assert_eq!(f, vec![0.0, 10.0, 4.0, 20.25 - 27.0 + 3.0 + 10.0]);
}

#[test]
fn metropolis_histogram_of_muller_brown_matches_quadrature() {
    let mb = MullerBrown::default();
    let p_ref = muller_brown_bin_probabilities(&mb, 100);
    let minima = [[-0.558, 1.442], [0.623, 0.028], [-0.050, 0.467]];
    let starts: Vec<Vec<f64>> = (0..12).map(|i| minima[i % 3].to_vec()).collect();
    let config = MetropolisConfig { step_size: 0.3, thin: 1, burn_in: 5000, seed: 4 };
    let counted = EvaluationCounter::new(mb);
    let chains = sample_chains(&counted, &starts, 300_000, &config).unwrap();
    assert_eq!(counted.count(), 12 * (1 + 5000 + 300_000));
    let mut histogram = Histogram1d::new(Axis::new(-2.5, 1.1, 100).unwrap()).unwrap();
    for chain in &chains {
        let s: Vec<f64> = chain.samples.chunks_exact(2).map(|x| x[0] - x[1]).collect();
        histogram.extend(&s).unwrap();
    }
    let model: Vec<f64> = histogram.counts().iter().map(|c| c + 1.0).collect();
    let d = kl_divergence(&p_ref, &model).unwrap();
    assert!(d < 0.01, "KL(quadrature || Metropolis histogram) = {d}");
}
