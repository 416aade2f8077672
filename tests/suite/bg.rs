//! Boltzmann generators on the seed's toy systems, against exact answers.

use candle_core::{DType, Device, Tensor};
use cgflow::energy::toy::HarmonicBox;
use cgflow::flow::bg::{run_bg, BgConfig, BgSystem};

#[test]
fn double_well_generator_reweights_to_the_exact_free_energy() {
    let config = BgConfig::fast(BgSystem::DoubleWell);
    let t0 = std::time::Instant::now();
    let out = run_bg(&config, &mut |_, _, _| {}).unwrap();
    let p = &out.profile;
    let min = p.exact_kt.iter().cloned().fold(f64::INFINITY, f64::min);
    let mut worst = 0.0f64;
    for ((c, e), x) in p.centres.iter().zip(&p.estimate_kt).zip(&p.exact_kt) {
        if x - min <= 5.0 {
            eprintln!("x1 {c:6.2}: exact {x:6.3} estimate {e:6.3} diff {:+.3}", e - x);
            worst = worst.max((e - x).abs());
        }
    }
    let (ratio, exact) = out.well_ratio.unwrap();
    eprintln!(
        "worst {worst:.3} kT; ratio {ratio:.2} vs exact {exact:.2}; ESS {:.0} of {}; {:.1} s; loss {:?}",
        out.ess,
        out.log_weights.len(),
        t0.elapsed().as_secs_f64(),
        out.history.last()
    );
    assert!(worst < 0.2, "profile off by {worst} kT");
    assert!((ratio / exact - 1.0).abs() < 0.05, "well ratio {ratio} vs exact {exact}");
}

#[test]
fn harmonic_box_generator_learns_the_analytic_map() {
    let config = BgConfig::fast(BgSystem::HarmonicBox);
    let out = run_bg(&config, &mut |_, _, _| {}).unwrap();
    let hb = HarmonicBox::default();
    // Interior points of the box: the learned z(x) against z = (Phi^-1(x1/L), sqrt(2k)(x2 - x1)).
    let mut pts = Vec::new();
    for i in 1..10 {
        for j in -2..=2 {
            let x1 = i as f64 / 10.0;
            pts.extend([x1, x1 + 0.3 * j as f64]);
        }
    }
    let x = Tensor::from_vec(pts.clone(), (pts.len() / 2, 2), &Device::Cpu).unwrap().to_dtype(DType::F64).unwrap();
    let (z, _) = out.flow.inverse(&x, None).unwrap();
    let z: Vec<f64> = z.flatten_all().unwrap().to_vec1().unwrap();
    // The base N(0, I) is rotation invariant, so training by example determines the map only up to
    // an orthogonal transform of z: align the learned z to the exact z (Procrustes, nalgebra SVD)
    // and compare what is left.
    let exact: Vec<[f64; 2]> = pts.chunks_exact(2).map(|p| hb.to_latent([p[0], p[1]]).unwrap()).collect();
    let n = exact.len();
    let learned = nalgebra::DMatrix::from_row_slice(n, 2, &z);
    let target = nalgebra::DMatrix::from_fn(n, 2, |i, j| exact[i][j]);
    let svd = (learned.transpose() * &target).svd(true, true);
    let rotation = svd.u.unwrap() * svd.v_t.unwrap();
    let aligned = &learned * &rotation;
    let worst = (&aligned - &target).abs().max();
    let rms = ((&aligned - &target).norm_squared() / (2 * n) as f64).sqrt();
    eprintln!("rotation {rotation}; worst {worst:.3}, rms {rms:.3}");
    // Densities too: log q(x) against the exact log p(x) at the same interior points.
    let log_q: Vec<f64> = out.flow.log_prob(&x, None).unwrap().to_vec1().unwrap();
    let log_p: Vec<f64> =
        pts.chunks_exact(2).map(|p| 0.5 * (1.0 / std::f64::consts::PI).ln() - (p[1] - p[0]).powi(2)).collect();
    let density_worst = log_q.iter().zip(&log_p).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    eprintln!("log q vs log p: worst {density_worst:.3}");
    assert!(worst < 1.0 && rms < 0.25, "learned map off by {worst} (rms {rms})");
    assert!(density_worst < 0.3, "log-density off by {density_worst}");
}
