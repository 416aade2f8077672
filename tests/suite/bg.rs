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
        let (loss, _, _) = kl_loss(&flow, target.clone(), n, Some(&ctx), Some(&s), &config, &mut rng).unwrap();
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

/// Both coordinates of the harmonic box mapped by a triangular flow, z1 = f(x1) and
/// z2 = g(x2; x1), each increasing: the only increasing triangular map that sends p(x) to N(0, I)
/// (the Knothe-Rosenblatt map) is eq. 4 itself, so training by example must find eq. 4 with no
/// alignment. f is a 1-dimensional spline flow with a constant context; g an affine flow with x1
/// as its context (the exact g is affine in x2).
#[test]
fn harmonic_box_triangular_flow_learns_the_analytic_map_without_alignment() {
    use cgflow::flow::optim::{Adam, AdamConfig};
    use cgflow::flow::train::ml_loss;
    use cgflow::flow::{CouplingKind, Flow, FlowSpec, Precision};
    use cgflow::md::metropolis::{sample_chains, MetropolisConfig};
    use rand::seq::SliceRandom;
    use rand::SeedableRng;

    let hb = HarmonicBox::default();
    let mc = MetropolisConfig { step_size: 0.3, thin: 10, burn_in: 1000, seed: 3 };
    let starts: Vec<Vec<f64>> = (0..16).map(|i| vec![(i as f64 + 0.5) / 16.0, (i as f64 + 0.5) / 16.0]).collect();
    let chains = sample_chains(&hb, &starts, 10_000, &mc).unwrap();
    let mut data: Vec<[f64; 2]> =
        chains.iter().flat_map(|c| c.samples.chunks_exact(2).map(|p| [p[0], p[1]]).collect::<Vec<_>>()).collect();
    let spec = |coupling, layers, seed| FlowSpec {
        dims: 1,
        circular: vec![],
        context: 1,
        layers,
        coupling,
        hidden: 32,
        blocks: 1,
        shift_every: 0,
        seed,
        precision: Precision::F64,
    };
    let f = Flow::new(&spec(CouplingKind::Spline { bins: 16, tail_bound: 5.0 }, 2, 1), &Device::Cpu).unwrap();
    let g = Flow::new(&spec(CouplingKind::Affine { max_log_scale: 4.0 }, 1, 2), &Device::Cpu).unwrap();
    let column = |rows: &[[f64; 2]], j: usize| {
        let v: Vec<f64> = rows.iter().map(|r| r[j]).collect();
        Tensor::from_vec(v, (rows.len(), 1), &Device::Cpu).unwrap()
    };
    let ones = |n: usize| Tensor::ones((n, 1), DType::F64, &Device::Cpu).unwrap();
    let config = AdamConfig { max_grad_norm: Some(100.0), ..AdamConfig::default() };
    let (mut adam_f, mut adam_g) = (Adam::new(f.params(), config), Adam::new(g.params(), config));
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
    let batch = 512;
    for step in 0..2500 {
        if step % (data.len() / batch) == 0 {
            data.shuffle(&mut rng);
        }
        let start = (step % (data.len() / batch)) * batch;
        let rows = &data[start..start + batch];
        let lr = match step {
            0..=999 => 1e-2,
            1000..=1999 => 2e-3,
            _ => 3e-4,
        };
        let (loss_f, _) = ml_loss(&f, &column(rows, 0), Some(&ones(batch))).unwrap();
        adam_f.step(f.params(), &loss_f.backward().unwrap(), lr).unwrap();
        let (loss_g, _) = ml_loss(&g, &column(rows, 1), Some(&column(rows, 0))).unwrap();
        adam_g.step(g.params(), &loss_g.backward().unwrap(), lr).unwrap();
    }
    // Interior points (0.1 <= x1 <= 0.9, |x2 - x1| <= 1.2, i.e. within 1.7 sigma): the learned
    // z against eq. 4 directly.
    let mut pts: Vec<[f64; 2]> = vec![];
    for i in 1..10 {
        for j in -4..=4 {
            let x1 = i as f64 / 10.0;
            pts.push([x1, x1 + 0.3 * j as f64]);
        }
    }
    let (z1, _) = f.inverse(&column(&pts, 0), Some(&ones(pts.len()))).unwrap();
    let (z2, _) = g.inverse(&column(&pts, 1), Some(&column(&pts, 0))).unwrap();
    let z1: Vec<f64> = z1.flatten_all().unwrap().to_vec1().unwrap();
    let z2: Vec<f64> = z2.flatten_all().unwrap().to_vec1().unwrap();
    let (mut worst, mut sum_sq) = ([0.0f64; 2], 0.0);
    for (k, p) in pts.iter().enumerate() {
        let exact = hb.to_latent(*p).unwrap();
        let d = [z1[k] - exact[0], z2[k] - exact[1]];
        worst = [worst[0].max(d[0].abs()), worst[1].max(d[1].abs())];
        sum_sq += d[0] * d[0] + d[1] * d[1];
    }
    let rms = (sum_sq / (2 * pts.len()) as f64).sqrt();
    eprintln!("triangular map vs eq. 4: worst |dz1| {:.4}, worst |dz2| {:.4}, rms {rms:.4}", worst[0], worst[1]);
    assert!(worst[0] < 0.1 && worst[1] < 0.1 && rms < 0.05, "map off: worst {worst:?}, rms {rms}");
}
