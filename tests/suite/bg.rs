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
    // Away from the walls (0.2 <= x1 <= 0.8): a smooth flow cannot follow the density's jump to 0
    // at x1 = 0 and x1 = L, and smears it over about 0.1.
    let density_worst = log_q
        .iter()
        .zip(&log_p)
        .zip(pts.chunks_exact(2))
        .filter(|(_, p)| (0.2..=0.8).contains(&p[0]))
        .map(|((a, b), _)| (a - b).abs())
        .fold(0.0, f64::max);
    eprintln!("log q vs log p: worst {density_worst:.3}");
    assert!(worst < 0.6 && rms < 0.2, "learned map off by {worst} (rms {rms})");
    assert!(density_worst < 0.4, "log-density off by {density_worst}");
}

#[test]
fn conditional_muller_brown_flow_trained_by_energy_gives_the_exact_pmf_by_reweighting() {
    use cgflow::energy::toy::MullerBrown;
    use cgflow::flow::optim::{Adam, AdamConfig};
    use cgflow::flow::train::{kl_loss, EnergyLossConfig, MullerBrownConditional, TargetEnergy};
    use cgflow::flow::{Flow, FlowSpec};
    use cgflow::metrics::quadrature::muller_brown_pmf;
    use rand::{Rng, SeedableRng};
    use std::sync::Arc;
    // q(s_perp | s): conditional affine flow, the context is s scaled to [-1, 1].
    let spec = FlowSpec::muller_brown_conditional(4);
    let flow = Flow::new(&spec, &Device::Cpu).unwrap();
    let target: Arc<dyn TargetEnergy> = Arc::new(MullerBrownConditional::new(MullerBrown::default()));
    let (lo, hi) = (-2.5, 1.1);
    let feature = |s: f64| 2.0 * (s - lo) / (hi - lo) - 1.0;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(17);
    let mut adam = Adam::new(flow.params(), AdamConfig { max_grad_norm: Some(100.0), ..AdamConfig::default() });
    let config = EnergyLossConfig { drop_top_k: 2, regularize_above: Some(1e3) };
    let n = 128;
    for _ in 0..1500 {
        let s: Vec<f64> = (0..n).map(|_| rng.gen_range(lo..hi)).collect();
        let ctx = Tensor::from_vec(s.iter().map(|&v| feature(v)).collect::<Vec<_>>(), (n, 1), &Device::Cpu).unwrap();
        let (loss, _) = kl_loss(&flow, target.clone(), n, Some(&ctx), Some(&s), &config, &mut rng).unwrap();
        adam.step(flow.params(), &loss.backward().unwrap(), 3e-3).unwrap();
    }
    // Importance-sampled labels A(s) = -ln mean w at 25 CG points.
    let points: Vec<f64> = (0..25).map(|i| -2.3 + 3.2 * i as f64 / 24.0).collect();
    let m = 4000;
    let mut labels = Vec::new();
    for &s in &points {
        let ctx = Tensor::from_vec(vec![feature(s); m], (m, 1), &Device::Cpu).unwrap();
        let (x, log_q) = flow.sample(m, Some(&ctx), &mut rng).unwrap();
        let x: Vec<f64> = x.flatten_all().unwrap().to_vec1().unwrap();
        let log_q: Vec<f64> = log_q.to_vec1().unwrap();
        let (u, _) = target.energies_and_gradients(&x, Some(&vec![s; m])).unwrap();
        let log_w: Vec<f64> = u.iter().zip(&log_q).map(|(u, q)| -u - q).collect();
        let max = log_w.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        labels.push(-(max + (log_w.iter().map(|l| (l - max).exp()).sum::<f64>() / m as f64).ln()));
    }
    let exact = muller_brown_pmf(&MullerBrown::default(), &points);
    // Same zero: the offset that best matches the two over the compared points.
    let offset = labels.iter().zip(&exact).map(|(l, e)| l - e).sum::<f64>() / points.len() as f64;
    let worst = labels.iter().zip(&exact).map(|(l, e)| (l - offset - e).abs()).fold(0.0, f64::max);
    eprintln!("conditional MB: worst label error {worst:.3} kT over {} points", points.len());
    assert!(worst < 0.05, "labels off the exact PMF by {worst} kT");
}
