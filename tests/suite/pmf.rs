//! The PMF model: importance-sampling free-energy labels and the MLP ensemble fitted to them
//! (exact Müller-Brown PMF, a periodic 2D function, reproducibility, warm starts, checkpoints,
//! bad input).

use candle_core::Device;
use cgflow::energy::toy::MullerBrown;
use cgflow::metrics::free_energy_with_top_k_clipped;
use cgflow::metrics::quadrature::muller_brown_pmf;
use cgflow::pmf::{importance_free_energy, labels_for_points, CgFeatures, EnsembleConfig, PmfEnsemble, PmfPrecision};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use std::collections::HashMap;
use std::f64::consts::PI;
use std::time::Instant;

fn mb_features() -> CgFeatures {
    let (lo, hi) = MullerBrown::S_RANGE;
    CgFeatures::Interval { lo, hi }
}

fn config(hidden: &[usize], epochs: usize, batch: usize, lr: f64, seed: u64) -> EnsembleConfig {
    EnsembleConfig {
        members: 10,
        hidden: hidden.to_vec(),
        train_fraction: 0.8,
        epochs,
        batch,
        lr,
        final_lr: None,
        seed,
        precision: PmfPrecision::F32,
    }
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

// ---------------------------------------------------------------------------------------------
// Labels

#[test]
fn pmf_labels_equal_weights_give_minus_the_log_weight() {
    // ln w = ln p - ln q = 3.7 for every sample, whatever ln q is.
    let log_q = [-1.0, 0.5, 2.25, -7.0, 0.0];
    let log_p: Vec<f64> = log_q.iter().map(|q| q + 3.7).collect();
    for k in 0..3 {
        let est = importance_free_energy(&log_p, &log_q, k).unwrap();
        assert!((est.free_energy_kt + 3.7).abs() < 1e-14, "k = {k}: {}", est.free_energy_kt);
        assert!((est.ess - 5.0).abs() < 1e-12);
        assert_eq!(est.n, 5);
    }
}

#[test]
fn pmf_labels_hand_computed_four_samples_with_one_clipped() {
    // Weights 1, 2, 2, 8: clipping the largest to the second largest gives 1, 2, 2, 2 (mean 7/4);
    // unclipped, the mean is 13/4. The ESS is of the raw weights: 13^2 / (1 + 4 + 4 + 64).
    let log_p = [0.0, 4f64.ln(), 2f64.ln(), 8f64.ln()];
    let log_q = [0.0, 2f64.ln(), 0.0, 0.0];
    let est = importance_free_energy(&log_p, &log_q, 1).unwrap();
    assert!((est.free_energy_kt + (7.0f64 / 4.0).ln()).abs() < 1e-14, "{}", est.free_energy_kt);
    assert!((est.ess - 169.0 / 73.0).abs() < 1e-13);
    let unclipped = importance_free_energy(&log_p, &log_q, 0).unwrap();
    assert!((unclipped.free_energy_kt + (13.0f64 / 4.0).ln()).abs() < 1e-14);
    // The same numbers as the metrics module's estimator on the log-weights.
    let lw: Vec<f64> = log_p.iter().zip(&log_q).map(|(p, q)| p - q).collect();
    assert!((free_energy_with_top_k_clipped(&lw, 1).unwrap() - est.free_energy_kt).abs() < 1e-15);
}

#[test]
fn pmf_labels_recover_a_known_free_energy() {
    // q = N(0, 2^2), p(x) = exp(-x^2 / 2 - c) unnormalised: A = -ln int p = c - ln sqrt(2 pi).
    // (The wider proposal keeps the weights' variance finite.)
    let n = 20_000;
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let q = Normal::new(0.0, 2.0).unwrap();
    let offsets = [0.0, 1.5, -2.0];
    let mut log_p = Vec::new();
    let mut log_q = Vec::new();
    for &c in &offsets {
        for _ in 0..n {
            let x: f64 = q.sample(&mut rng);
            log_p.push(-0.5 * x * x - c);
            log_q.push(-0.5 * (x / 2.0).powi(2) - (2.0 * (2.0 * PI).sqrt()).ln());
        }
    }
    let labels = labels_for_points(&log_p, &log_q, n, 0).unwrap();
    let clipped = labels_for_points(&log_p, &log_q, n, 3).unwrap();
    for (j, &c) in offsets.iter().enumerate() {
        let exact = c - (2.0 * PI).sqrt().ln();
        // Delta method: se(A) = sd(w) / (sqrt(n) mean(w)).
        let w: Vec<f64> = (0..n).map(|i| (log_p[j * n + i] - log_q[j * n + i]).exp()).collect();
        let mean = w.iter().sum::<f64>() / n as f64;
        let sd = (w.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt();
        let se = sd / ((n as f64).sqrt() * mean);
        let err = labels[j].free_energy_kt - exact;
        let err_clipped = clipped[j].free_energy_kt - exact;
        eprintln!(
            "IS label {j}: exact {exact:.5}, estimate {:.5} (clip 3: {:.5}), se {se:.5}, ESS {:.0} of {n}",
            labels[j].free_energy_kt, clipped[j].free_energy_kt, labels[j].ess
        );
        assert!(err.abs() < 3.0 * se, "point {j}: error {err} vs se {se}");
        assert!(err_clipped.abs() < 3.0 * se, "point {j} clipped: error {err_clipped} vs se {se}");
        // Clipping lowers the largest weights, so it can only raise A.
        assert!(err_clipped >= err);
        assert!(labels[j].ess > 0.5 * n as f64 && labels[j].ess < n as f64);
    }
}

#[test]
fn pmf_label_errors() {
    let ninf = f64::NEG_INFINITY;
    assert!(importance_free_energy(&[0.0, 1.0], &[0.0], 0).is_err(), "lengths differ");
    assert!(importance_free_energy(&[0.0, 1.0], &[0.0, 0.0], 2).is_err(), "n <= k");
    assert!(importance_free_energy(&[], &[], 0).is_err(), "no samples");
    assert!(importance_free_energy(&[0.0, f64::NAN], &[0.0, 0.0], 0).is_err(), "NaN in ln p");
    assert!(importance_free_energy(&[0.0, 0.0], &[f64::NAN, 0.0], 0).is_err(), "NaN in ln q");
    assert!(importance_free_energy(&[f64::INFINITY, 0.0], &[0.0, 0.0], 0).is_err(), "+inf ln p");
    assert!(importance_free_energy(&[0.0, 0.0], &[ninf, 0.0], 0).is_err(), "-inf ln q");
    assert!(importance_free_energy(&[ninf, ninf], &[0.0, 0.0], 0).is_err(), "all weights zero");
    // -inf ln p is a zero weight: weights 3, 0, 0 -> mean 1 -> A = 0.
    let est = importance_free_energy(&[3f64.ln(), ninf, ninf], &[0.0; 3], 0).unwrap();
    assert!(est.free_energy_kt.abs() < 1e-15 && (est.ess - 1.0).abs() < 1e-15 && est.n == 3);
    assert!(labels_for_points(&[0.0; 5], &[0.0; 5], 2, 0).is_err(), "not a whole number of points");
    assert!(labels_for_points(&[0.0; 4], &[0.0; 4], 0, 0).is_err(), "zero samples per point");
    let err = labels_for_points(&[0.0, 0.0, ninf, ninf], &[0.0; 4], 2, 0).unwrap_err();
    assert!(err.to_string().contains("CG point 1"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// The ensemble

/// Müller-Brown: `n_train` labels (exact PMF + N(0, noise)) and `n_test` held-out points, all
/// uniform on the s range, with the exact PMF of both on one scale.
fn mb_data(n_train: usize, n_test: usize, noise: f64, seed: u64) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
    let (lo, hi) = MullerBrown::S_RANGE;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let s: Vec<f64> = (0..n_train + n_test).map(|_| rng.gen_range(lo..hi)).collect();
    let exact = muller_brown_pmf(&MullerBrown::default(), &s);
    let normal = Normal::new(0.0, noise).unwrap();
    let labels = exact[..n_train].iter().map(|a| a + normal.sample(&mut rng)).collect();
    (s[..n_train].to_vec(), labels, s[n_train..].to_vec(), exact[n_train..].to_vec())
}

#[test]
fn pmf_ensemble_fits_the_exact_muller_brown_pmf() {
    let (train, labels, test, exact) = mb_data(200, 50, 0.05, 21);
    let mut ens = PmfEnsemble::new(mb_features(), config(&[64, 32, 32], 5000, 256, 2e-2, 1), &Device::Cpu).unwrap();
    let start = Instant::now();
    let report = ens.fit(&train, &labels).unwrap();
    let seconds = start.elapsed().as_secs_f64();
    assert_eq!(report.train_points, 160);
    assert_eq!(report.steps, 5000);
    let (mean, std) = ens.predict(&test).unwrap();
    let low: Vec<usize> = (0..test.len()).filter(|&k| exact[k] < 10.0).collect();
    let worst = low.iter().map(|&k| (mean[k] - exact[k]).abs()).fold(0.0, f64::max);
    let inside_std = low.iter().map(|&k| std[k]).fold(0.0, f64::max);
    let (_, outside) = ens.predict(&[1.6, -3.0]).unwrap();
    let holdout: Vec<f64> = report.holdout_mse.iter().map(|v| v.unwrap()).collect();
    eprintln!(
        "MB fit: {seconds:.1} s, {} of 50 test points below 10 kT, max |mean - exact| {worst:.3} kT, \
         max std inside {inside_std:.3} kT, std at s = 1.6: {:.3}, at -3.0: {:.3}; train MSE {:?}, held-out MSE {:?}",
        low.len(),
        outside[0],
        outside[1],
        report.train_mse.iter().map(|v| format!("{v:.4}")).collect::<Vec<_>>(),
        holdout.iter().map(|v| format!("{v:.4}")).collect::<Vec<_>>()
    );
    assert!(low.len() >= 35);
    assert!(worst < 0.2, "max error {worst} kT");
    assert!(outside[0] > 3.0 * inside_std && outside[1] > 3.0 * inside_std);
    assert!(holdout.iter().all(|&m| m < 0.05), "held-out MSE {holdout:?}");
    // pmf_on_grid: the mean shifted to minimum 0.
    let grid: Vec<f64> = (0..=36).map(|i| -2.5 + 0.1 * i as f64).collect();
    let pmf = ens.pmf_on_grid(&grid).unwrap();
    let (grid_mean, _) = ens.predict(&grid).unwrap();
    let min = grid_mean.iter().copied().fold(f64::INFINITY, f64::min);
    assert_eq!(pmf.iter().copied().fold(f64::INFINITY, f64::min), 0.0);
    assert!(pmf.iter().zip(&grid_mean).all(|(a, m)| (a - (m - min)).abs() < 1e-12));
    // The minimum is the deepest basin, s = -2.
    let argmin = pmf.iter().position(|&v| v == 0.0).unwrap();
    assert!((grid[argmin] + 2.0).abs() < 0.15, "minimum at {}", grid[argmin]);
}

fn periodic_f(phi: f64, psi: f64) -> f64 {
    phi.cos() + 0.5 * (2.0 * psi).sin()
}

fn random_angles(n: usize, rng: &mut ChaCha8Rng) -> Vec<f64> {
    (0..2 * n).map(|_| rng.gen_range(-PI..PI)).collect()
}

#[test]
fn pmf_ensemble_fits_a_periodic_function_of_two_angles() {
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let points = random_angles(400, &mut rng);
    let labels: Vec<f64> = points.chunks_exact(2).map(|p| periodic_f(p[0], p[1])).collect();
    let features = CgFeatures::Angles { count: 2 };
    let mut ens = PmfEnsemble::new(features, config(&[32, 32], 1500, 512, 1e-2, 2), &Device::Cpu).unwrap();
    let start = Instant::now();
    let report = ens.fit(&points, &labels).unwrap();
    let seconds = start.elapsed().as_secs_f64();
    let test = random_angles(200, &mut rng);
    let exact: Vec<f64> = test.chunks_exact(2).map(|p| periodic_f(p[0], p[1])).collect();
    let (mean, std) = ens.predict(&test).unwrap();
    let worst = max_abs_diff(&mean, &exact);
    // Periodicity through the features: phi + 2 pi, psi - 2 pi, and angles far outside [-pi, pi).
    let shifted: Vec<f64> = test.chunks_exact(2).flat_map(|p| [p[0] + 2.0 * PI, p[1] - 2.0 * PI]).collect();
    let far: Vec<f64> = test.chunks_exact(2).flat_map(|p| [p[0] - 6.0 * PI, p[1] + 4.0 * PI]).collect();
    let (mean_shifted, std_shifted) = ens.predict(&shifted).unwrap();
    let (mean_far, _) = ens.predict(&far).unwrap();
    let periodic_gap = max_abs_diff(&mean, &mean_shifted).max(max_abs_diff(&mean, &mean_far));
    eprintln!(
        "periodic 2D fit: {seconds:.1} s, {} steps, max |mean - exact| {worst:.4} kT over 200 test points, \
         max std {:.4}, max gap under 2 pi shifts {periodic_gap:.2e}, train MSE max {:.2e}",
        report.steps,
        std.iter().copied().fold(0.0, f64::max),
        report.train_mse.iter().copied().fold(0.0, f64::max)
    );
    assert!(worst < 0.1, "max error {worst}");
    assert!(periodic_gap < 1e-5, "periodicity gap {periodic_gap}");
    assert!(max_abs_diff(&std, &std_shifted) < 1e-5);
}

#[test]
fn pmf_fits_with_the_same_seed_are_bit_identical() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let points = random_angles(100, &mut rng);
    let labels: Vec<f64> = points.chunks_exact(2).map(|p| periodic_f(p[0], p[1])).collect();
    let test = random_angles(50, &mut rng);
    let run = |seed: u64, precision: PmfPrecision| {
        let cfg = EnsembleConfig { precision, ..config(&[16, 8], 20, 16, 1e-2, seed) };
        let mut ens = PmfEnsemble::new(CgFeatures::Angles { count: 2 }, cfg, &Device::Cpu).unwrap();
        let first = ens.fit(&points, &labels).unwrap();
        let second = ens.fit(&points, &labels).unwrap();
        let (mean, std) = ens.predict(&test).unwrap();
        (first, second, mean, std)
    };
    for precision in [PmfPrecision::F32, PmfPrecision::F64] {
        let a = run(3, precision);
        let b = run(3, precision);
        assert_eq!(a.0, b.0);
        assert_eq!(a.1, b.1);
        assert_eq!(a.2, b.2, "means differ");
        assert_eq!(a.3, b.3, "stds differ");
        // Every call draws new subsets.
        assert_ne!(a.0.holdout_mse, a.1.holdout_mse);
        let c = run(4, precision);
        assert_ne!(a.2, c.2, "another seed gives another ensemble");
    }
}

#[test]
fn pmf_warm_start_lowers_the_error_near_new_points() {
    // A smooth profile on [-1, 1]; the first fit sees only s < 0, the second all of it.
    let f = |s: f64| 2.0 * (2.5 * s).sin() + 1.5 * s * s + 3.0;
    let features = CgFeatures::Interval { lo: -1.0, hi: 1.0 };
    let mut ens = PmfEnsemble::new(features, config(&[32, 32], 600, 256, 1e-2, 9), &Device::Cpu).unwrap();
    let old: Vec<f64> = (0..60).map(|i| -1.0 + i as f64 / 60.0).collect();
    let new: Vec<f64> = (0..60).map(|i| (i as f64 + 0.5) / 60.0).collect();
    let near_new: Vec<f64> = (0..20).map(|i| 0.1 + 0.04 * i as f64).collect();
    let near_old: Vec<f64> = (0..20).map(|i| -0.9 + 0.04 * i as f64).collect();
    let exact = |s: &[f64]| s.iter().map(|&x| f(x)).collect::<Vec<_>>();
    let labels_old = exact(&old);
    ens.fit(&old, &labels_old).unwrap();
    let before_new = max_abs_diff(&ens.predict(&near_new).unwrap().0, &exact(&near_new));
    let before_old = max_abs_diff(&ens.predict(&near_old).unwrap().0, &exact(&near_old));
    let std_before = ens.predict(&near_new).unwrap().1.iter().copied().fold(0.0, f64::max);
    let all: Vec<f64> = old.iter().chain(&new).copied().collect();
    let report = ens.fit(&all, &exact(&all)).unwrap();
    assert_eq!(ens.fits(), 2);
    let after_new = max_abs_diff(&ens.predict(&near_new).unwrap().0, &exact(&near_new));
    let after_old = max_abs_diff(&ens.predict(&near_old).unwrap().0, &exact(&near_old));
    let std_after = ens.predict(&near_new).unwrap().1.iter().copied().fold(0.0, f64::max);
    eprintln!(
        "warm start: max error near new points {before_new:.3} -> {after_new:.3} kT (std {std_before:.3} -> \
         {std_after:.3}), near old points {before_old:.3} -> {after_old:.3}; second fit on {} points",
        report.train_points
    );
    assert!(after_new < 0.1 && after_new < 0.1 * before_new);
    assert!(std_after < std_before);
    assert!(after_old < 0.1);
}

#[test]
fn pmf_weights_round_trip_through_safetensors() {
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let points = random_angles(64, &mut rng);
    let labels: Vec<f64> = points.chunks_exact(2).map(|p| periodic_f(p[0], p[1])).collect();
    let features = CgFeatures::Angles { count: 2 };
    let mut ens = PmfEnsemble::new(features, config(&[16, 8], 10, 32, 1e-2, 1), &Device::Cpu).unwrap();
    ens.fit(&points, &labels).unwrap();
    let tensors = ens.named_tensors().unwrap();
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    assert_eq!(names, ["layer0.bias", "layer0.weight", "layer1.bias", "layer1.weight", "layer2.bias", "layer2.weight"]);
    assert_eq!(tensors["layer0.weight"].dims(), &[10, 4, 16]);
    assert_eq!(tensors["layer2.bias"].dims(), &[10, 1]);
    assert_eq!(ens.params().count(), 10 * ens.parameters_per_member());
    assert_eq!(ens.parameters_per_member(), 4 * 16 + 16 + 16 * 8 + 8 + 8 + 1);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pmf.safetensors");
    candle_core::safetensors::save(&tensors, &path).unwrap();
    let loaded = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    let mut restored = PmfEnsemble::new(features, config(&[16, 8], 10, 32, 1e-2, 99), &Device::Cpu).unwrap();
    let test = random_angles(30, &mut rng);
    assert_ne!(restored.predict(&test).unwrap(), ens.predict(&test).unwrap());
    restored.load_tensors(&loaded).unwrap();
    assert_eq!(restored.predict(&test).unwrap(), ens.predict(&test).unwrap());

    // Wrong shapes, missing or unknown names: errors, weights unchanged.
    let before = restored.predict(&test).unwrap();
    let mut missing = loaded.clone();
    missing.remove("layer1.bias");
    assert!(restored.load_tensors(&missing).is_err());
    let mut extra = loaded.clone();
    extra.insert("layer9.weight".into(), loaded["layer1.bias"].clone());
    assert!(restored.load_tensors(&extra).is_err());
    let mut other = PmfEnsemble::new(features, config(&[8, 8], 10, 32, 1e-2, 1), &Device::Cpu).unwrap();
    assert!(other.load_tensors(&loaded).is_err());
    let empty: HashMap<String, candle_core::Tensor> = HashMap::new();
    assert!(restored.load_tensors(&empty).is_err());
    assert_eq!(restored.predict(&test).unwrap(), before);
}

#[test]
fn pmf_bad_input_is_an_error() {
    let features = CgFeatures::Angles { count: 2 };
    let mut ens = PmfEnsemble::new(features, config(&[8], 2, 8, 1e-2, 0), &Device::Cpu).unwrap();
    let points = [0.1, 0.2, -1.0, 3.0, 2.0, -2.5];
    let labels = [1.0, 2.0, 3.0];
    let err = ens.fit(&points, &[1.0, f64::NAN, 3.0]).unwrap_err();
    assert!(err.to_string().contains("label 1"), "{err}");
    let err = ens.fit(&points, &[1.0, 2.0, f64::INFINITY]).unwrap_err();
    assert!(err.to_string().contains("label 2"), "{err}");
    let err = ens.fit(&[0.1, 0.2, -1.0, f64::NAN, 2.0, -2.5], &labels).unwrap_err();
    assert!(err.to_string().contains("point 1"), "{err}");
    assert!(ens.fit(&points[..5], &labels).is_err(), "width does not match the features");
    assert!(ens.fit(&points, &labels[..2]).is_err(), "labels and points differ");
    assert!(ens.fit(&[], &[]).is_err(), "empty set");
    let err = ens.fit_weighted(&points, &labels, &[1.0, 2.0]).unwrap_err();
    assert!(err.to_string().contains("weights"), "{err}");
    for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let err = ens.fit_weighted(&points, &labels, &[1.0, 1.0, bad]).unwrap_err();
        assert!(err.to_string().contains("weight 2"), "{bad}: {err}");
    }
    assert!(ens.predict(&[]).is_err(), "empty set");
    assert!(ens.predict(&[0.0, 1.0, 2.0]).is_err(), "wrong width");
    assert!(ens.predict(&[0.0, f64::INFINITY]).is_err());
    assert_eq!(ens.fits(), 0, "failed fits do not count");
    // Angles outside [-pi, pi) are fine: they are periodic.
    let report = ens.fit(&[7.0, -9.0, 100.0, 0.0], &[1.0, 2.0]).unwrap();
    assert_eq!(report.train_points, 2);
    assert_eq!(report.holdout_mse, vec![None; 10], "2 points, 80 % -> both train");

    // Interval: outside [lo, hi] extrapolates, but must be finite.
    let mut mb = PmfEnsemble::new(mb_features(), config(&[8], 2, 8, 1e-2, 0), &Device::Cpu).unwrap();
    mb.fit(&[-3.0, 0.0, 2.0, 5.0, -1.0], &[1.0, 0.0, 2.0, 3.0, 0.5]).unwrap();
    assert!(mb.predict(&[-10.0, 10.0]).is_ok());
    assert!(mb.predict(&[f64::NEG_INFINITY]).is_err());
    assert_eq!(mb_features().features(&[-2.5, 1.1, -0.7]).unwrap(), vec![-1.0, 1.0, 0.0]);

    // Invalid features and configurations.
    let dev = Device::Cpu;
    assert!(PmfEnsemble::new(CgFeatures::Angles { count: 0 }, config(&[8], 2, 8, 1e-2, 0), &dev).is_err());
    assert!(PmfEnsemble::new(CgFeatures::Interval { lo: 1.0, hi: 1.0 }, config(&[8], 2, 8, 1e-2, 0), &dev).is_err());
    assert!(
        PmfEnsemble::new(CgFeatures::Interval { lo: 0.0, hi: f64::NAN }, config(&[8], 2, 8, 1e-2, 0), &dev).is_err()
    );
    for bad in [
        EnsembleConfig { members: 0, ..config(&[8], 2, 8, 1e-2, 0) },
        config(&[8, 0], 2, 8, 1e-2, 0),
        config(&[8], 2, 0, 1e-2, 0),
        config(&[8], 2, 8, 0.0, 0),
        config(&[8], 2, 8, f64::NAN, 0),
        EnsembleConfig { train_fraction: 0.0, ..config(&[8], 2, 8, 1e-2, 0) },
        EnsembleConfig { train_fraction: 1.5, ..config(&[8], 2, 8, 1e-2, 0) },
    ] {
        assert!(PmfEnsemble::new(features, bad.clone(), &dev).is_err(), "{bad:?}");
    }
}

#[test]
fn pmf_reference_and_fast_configurations() {
    let reference = EnsembleConfig::reference();
    assert_eq!((reference.members, reference.hidden.clone(), reference.train_fraction), (10, vec![256, 128, 32], 0.8));
    let fast = EnsembleConfig::fast();
    assert_eq!((fast.members, &fast.hidden, fast.train_fraction), (10, &reference.hidden, 0.8));
    assert!(fast.epochs < reference.epochs);
    let ens = PmfEnsemble::new(CgFeatures::Angles { count: 2 }, reference.clone(), &Device::Cpu).unwrap();
    assert_eq!(ens.members(), 10);
    assert_eq!(ens.parameters_per_member(), 4 * 256 + 256 + 256 * 128 + 128 + 128 * 32 + 32 + 32 + 1);
    // A fresh ensemble predicts (finite values, some spread across members).
    let (mean, std) = ens.predict(&[0.0, 0.0, -2.0, 1.0]).unwrap();
    assert!(mean.iter().chain(&std).all(|v| v.is_finite()) && std.iter().all(|&s| s > 0.0));

    // serde: round trip; unknown fields are rejected.
    let json = serde_json::to_string(&reference).unwrap();
    assert_eq!(serde_json::from_str::<EnsembleConfig>(&json).unwrap(), reference);
    let extra = json.replacen('{', "{\"dropout\":0.1,", 1);
    assert!(serde_json::from_str::<EnsembleConfig>(&extra).is_err());
    // Settings written before `final_lr` existed read as a constant rate.
    let mut old = serde_json::to_value(&reference).unwrap();
    old.as_object_mut().unwrap().remove("final_lr");
    assert_eq!(serde_json::from_value::<EnsembleConfig>(old).unwrap(), reference);
    for bad in [0.0, -1e-4, 1.0, f64::NAN] {
        assert!(EnsembleConfig { final_lr: Some(bad), ..reference.clone() }.validate().is_err(), "{bad}");
    }
    assert!(EnsembleConfig { final_lr: Some(1e-4), ..reference.clone() }.validate().is_ok());
    let features = serde_json::to_string(&CgFeatures::Interval { lo: -2.5, hi: 1.1 }).unwrap();
    assert_eq!(serde_json::from_str::<CgFeatures>(&features).unwrap(), mb_features());
    assert_eq!(serde_json::to_string(&CgFeatures::Angles { count: 2 }).unwrap(), r#"{"angles":{"count":2}}"#);
}

#[test]
fn pmf_weighted_fit_reaches_the_weighted_mean_of_conflicting_labels() {
    // Two points, each labelled twice with different values: the weighted least-squares optimum
    // at a point is the weighted mean of its labels, (3 * 1 + 5) / 4 = 2 and (0 + 3 * 4) / 4 = 3,
    // where the plain fit goes to the plain means, 3 and 2.
    let features = CgFeatures::Interval { lo: 0.0, hi: 1.0 };
    let points = [0.2, 0.2, 0.8, 0.8];
    let labels = [1.0, 5.0, 0.0, 4.0];
    let weights = [3.0, 1.0, 1.0, 3.0];
    let cfg = EnsembleConfig {
        members: 3,
        train_fraction: 1.0,
        precision: PmfPrecision::F64,
        ..config(&[8], 800, 4, 1e-2, 5)
    };
    let mut weighted = PmfEnsemble::new(features, cfg.clone(), &Device::Cpu).unwrap();
    weighted.fit_weighted(&points, &labels, &weights).unwrap();
    let (mean, _) = weighted.predict(&[0.2, 0.8]).unwrap();
    assert!(max_abs_diff(&mean, &[2.0, 3.0]) < 0.02, "weighted fit: {mean:?}");
    let mut plain = PmfEnsemble::new(features, cfg.clone(), &Device::Cpu).unwrap();
    plain.fit(&points, &labels).unwrap();
    let (mean, _) = plain.predict(&[0.2, 0.8]).unwrap();
    assert!(max_abs_diff(&mean, &[3.0, 2.0]) < 0.02, "plain fit: {mean:?}");
    // Equal weights of any scale are the plain fit, bit for bit.
    let mut scaled = PmfEnsemble::new(features, cfg, &Device::Cpu).unwrap();
    scaled.fit_weighted(&points, &labels, &[0.5; 4]).unwrap();
    assert_eq!(scaled.predict(&[0.2, 0.8]).unwrap().0, mean);
}
