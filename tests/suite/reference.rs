//! The binless reference estimator (MBAR) against an analytic 2D periodic PMF: synthetic umbrella
//! windows and an unbiased state, drawn exactly by rejection sampling.

use cgflow::md::mbar::{
    block_resample, dihedral_probabilities, BiasedSamples, HarmonicBias2d, MbarConfig, MbarSolution,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::f64::consts::PI;

/// A periodic test PMF in kT with two basins along phi and a tilted coupling term.
fn pmf_kt(x: [f64; 2]) -> f64 {
    1.5 * x[0].cos() + 0.8 * (2.0 * x[1] - 0.7).cos() - 0.8 * (x[0] - x[1] + 0.3).cos()
}
const PMF_MIN_BOUND_KT: f64 = -3.1;

/// One exact sample of `exp(-F(x) - b(x))`: each angle from the restraint's normal truncated to
/// `|d| < pi` (exactly `exp(-0.5 k d^2)` on the torus), accepted with `exp(-(F - min F))`. An
/// unbiased state proposes uniformly.
fn draw(bias: &HarmonicBias2d, rng: &mut ChaCha8Rng) -> [f64; 2] {
    loop {
        let mut x = [0.0; 2];
        for (d, value) in x.iter_mut().enumerate() {
            let k = bias.spring_kt_per_rad2[d];
            *value = if k == 0.0 {
                rng.gen_range(-PI..PI)
            } else {
                let normal = rand_distr::Normal::new(0.0, 1.0 / k.sqrt()).expect("normal");
                loop {
                    let step: f64 = rand_distr::Distribution::sample(&normal, rng);
                    if step.abs() < PI {
                        break cgflow::coords::geometry::wrap_angle(bias.centre_rad[d] + step);
                    }
                }
            };
        }
        if rng.gen::<f64>() < (-(pmf_kt(x) - PMF_MIN_BOUND_KT)).exp() {
            return x;
        }
    }
}

/// Exact bin probabilities of `exp(-F)` on `bins` x `bins` over `[-pi, pi)^2` (midpoint rule,
/// 40 x 40 points per bin).
fn exact_probabilities(bins: usize) -> Vec<f64> {
    let h = 2.0 * PI / bins as f64;
    let sub = 40;
    let mut p = vec![0.0; bins * bins];
    for i in 0..bins {
        for j in 0..bins {
            let mut s = 0.0;
            for a in 0..sub {
                for b in 0..sub {
                    let x = [
                        -PI + h * (i as f64 + (a as f64 + 0.5) / sub as f64),
                        -PI + h * (j as f64 + (b as f64 + 0.5) / sub as f64),
                    ];
                    s += (-pmf_kt(x)).exp();
                }
            }
            p[i * bins + j] = s;
        }
    }
    let total: f64 = p.iter().sum();
    p.iter().map(|v| v / total).collect()
}

/// Restraints of `spring` kT/rad^2 on both angles at the centres of an n x n lattice over the torus.
fn lattice(n: usize, spring: f64) -> Vec<HarmonicBias2d> {
    let spacing = 2.0 * PI / n as f64;
    let at = |i: usize| -PI + (i as f64 + 0.5) * spacing;
    (0..n * n)
        .map(|w| HarmonicBias2d { centre_rad: [at(w / n), at(w % n)], spring_kt_per_rad2: [spring, spring] })
        .collect()
}

/// The mean z^2 and the largest |z| of the estimate `p` against `exact`, each bin's error from 40
/// block-bootstrap replicates (`blocks` per sampled state; binned states draw their own blocks).
#[allow(clippy::too_many_arguments)]
fn bootstrap_z(
    states: &[BiasedSamples],
    p: &[f64],
    exact: &[f64],
    solution: &MbarSolution,
    config: &MbarConfig,
    bins: usize,
    blocks: usize,
    rng: &mut ChaCha8Rng,
) -> (f64, f64) {
    let replicates = 40;
    let mut sum = vec![0.0; p.len()];
    let mut sum2 = vec![0.0; p.len()];
    for _ in 0..replicates {
        let resampled = block_resample(states, blocks, rng);
        let (_, q) = dihedral_probabilities(&resampled, bins, config, Some(&solution.free_energies_kt)).expect("boot");
        for (i, v) in q.iter().enumerate() {
            sum[i] += v;
            sum2[i] += v * v;
        }
    }
    let mut z2 = Vec::new();
    for i in 0..p.len() {
        let mean = sum[i] / replicates as f64;
        let se = (sum2[i] / replicates as f64 - mean * mean).max(0.0).sqrt()
            * (replicates as f64 / (replicates as f64 - 1.0)).sqrt();
        assert!(se > 0.0, "bin {i} has no spread");
        z2.push(((p[i] - exact[i]) / se).powi(2));
    }
    (z2.iter().sum::<f64>() / z2.len() as f64, z2.iter().fold(0.0f64, |m, v| m.max(v.sqrt())))
}

#[test]
fn mbar_recovers_an_analytic_periodic_pmf_within_its_bootstrap_error_bars() {
    let mut rng = ChaCha8Rng::seed_from_u64(17);
    let mut biases = lattice(6, 6.0);
    // An unbiased state (plain MD) takes part in the same estimate.
    biases.push(HarmonicBias2d::UNBIASED);
    let states: Vec<BiasedSamples> =
        biases.iter().map(|b| BiasedSamples::new(*b, (0..2000).map(|_| draw(b, &mut rng)).collect())).collect();
    let config = MbarConfig { hessian_samples: 20_000, ..MbarConfig::default() };
    let bins = 12;
    let (solution, p) = dihedral_probabilities(&states, bins, &config, None).expect("mbar");
    assert!(solution.converged, "{solution:?}");
    let exact = exact_probabilities(bins);

    // Error bars: bootstrap over blocks of 20 samples (the samples are independent).
    let (mean_z2, max_z) = bootstrap_z(&states, &p, &exact, &solution, &config, bins, 100, &mut rng);
    // Consistent error bars give mean z^2 near 1 (144 bins: 0.6-1.6 covers the chi^2 spread and the
    // bootstrap's own noise); a biased estimator or error bars too small fails it.
    assert!((0.6..1.6).contains(&mean_z2), "mean z^2 {mean_z2}, max |z| {max_z}");
    assert!(max_z < 4.5, "max |z| {max_z}");
    // And the free energy itself: the basin at phi = pi (F minimum) against the barrier region.
    let kld = cgflow::metrics::kl_divergence(&exact, &p).expect("kl");
    assert!(kld < 2e-3, "KL(exact || MBAR) = {kld}");
}

#[test]
fn mbar_with_the_bias_at_bin_centres_is_what_binned_wham_gets_wrong() {
    // Stiff restraints on a coarse grid: binned WHAM evaluates each bias at the bin centre, where it
    // differs from the bias at the samples by several kT, and gets the PMF wrong; MBAR, with the
    // bias at each sample, recovers it from the same samples.
    let mut rng = ChaCha8Rng::seed_from_u64(23);
    let biases = lattice(12, 40.0);
    let states: Vec<BiasedSamples> =
        biases.iter().map(|b| BiasedSamples::new(*b, (0..1000).map(|_| draw(b, &mut rng)).collect())).collect();
    let bins = 8;
    let (solution, p) = dihedral_probabilities(&states, bins, &MbarConfig::default(), None).expect("mbar");
    assert!(solution.converged, "{solution:?}");
    let exact = exact_probabilities(bins);
    let left = |q: &[f64]| (0..bins / 2).flat_map(|i| (0..bins).map(move |j| i * bins + j)).map(|b| q[b]).sum::<f64>();
    let (mbar_left, exact_left) = (left(&p), left(&exact));

    // Binned WHAM on the same samples.
    let wham = cgflow::md::mbar::binned_wham(&states, bins).expect("wham");
    let wham_left = left(&wham.probabilities);
    let kld_mbar = cgflow::metrics::kl_divergence(&exact, &p).expect("kl");
    let kld_wham = cgflow::metrics::kl_divergence(&exact, &wham.probabilities).expect("kl");
    // Seeds 1-4 and 23 gave MBAR P(phi < 0) 0.480-0.512 (exact 0.499) and KL 0.0012-0.0021, binned
    // WHAM P(phi < 0) 0.07-0.89 and KL 1.9-2.1: its bias-at-the-centre error across 0.79 rad bins.
    let text =
        format!("P(phi < 0): MBAR {mbar_left}, WHAM {wham_left}, exact {exact_left}; KL {kld_mbar} vs {kld_wham}");
    assert!((mbar_left - exact_left).abs() < 0.05, "{text}");
    assert!(kld_mbar < 0.01 && kld_wham > 0.3, "{text}");
}

/// The unbiased draws `blocks` x `per_block` as histograms on `bins` x `bins` over `[-pi, pi)^2`,
/// one per block, and the same draws as samples.
fn binned_unbiased_draws(
    blocks: usize,
    per_block: usize,
    bins: usize,
    rng: &mut ChaCha8Rng,
) -> (Vec<Vec<f64>>, Vec<[f64; 2]>) {
    let h = 2.0 * PI / bins as f64;
    let mut histograms = vec![vec![0.0; bins * bins]; blocks];
    let mut samples = Vec::with_capacity(blocks * per_block);
    for histogram in histograms.iter_mut() {
        for _ in 0..per_block {
            let x = draw(&HarmonicBias2d::UNBIASED, rng);
            let i = (((x[0] + PI) / h) as usize).min(bins - 1);
            let j = (((x[1] + PI) / h) as usize).min(bins - 1);
            histogram[i * bins + j] += 1.0;
            samples.push(x);
        }
    }
    (histograms, samples)
}

#[test]
fn mbar_with_binned_unbiased_md_recovers_the_analytic_pmf_within_its_bootstrap_error_bars() {
    // Umbrella windows drawn as samples, plus unbiased MD known only by histograms (as `cgflow md
    // --histogram-bins` keeps it) on a finer grid than the estimate's, its counts weighed by half
    // (as MD frames are weighed per unit of simulated time): the estimate stays consistent, and the
    // bootstrap, which draws the MD's blocks with replacement, gives error bars that cover it.
    let mut rng = ChaCha8Rng::seed_from_u64(31);
    let mut states: Vec<BiasedSamples> = lattice(6, 6.0)
        .iter()
        .map(|b| BiasedSamples::new(*b, (0..1000).map(|_| draw(b, &mut rng)).collect()))
        .collect();
    let (histograms, _) = binned_unbiased_draws(40, 1000, 36, &mut rng);
    let md = BiasedSamples::binned(HarmonicBias2d::UNBIASED, 36, histograms, 3).expect("binned");
    states.push(md.with_counts_scaled(0.5).expect("scale"));
    let config = MbarConfig { hessian_samples: 20_000, ..MbarConfig::default() };
    let bins = 12;
    let (solution, p) = dihedral_probabilities(&states, bins, &config, None).expect("mbar");
    assert!(solution.converged, "{solution:?}");
    let exact = exact_probabilities(bins);
    let (mean_z2, max_z) = bootstrap_z(&states, &p, &exact, &solution, &config, bins, 50, &mut rng);
    assert!((0.6..1.6).contains(&mean_z2), "mean z^2 {mean_z2}, max |z| {max_z}");
    assert!(max_z < 4.5, "max |z| {max_z}");
}

#[test]
fn binned_unbiased_md_gives_what_its_samples_give() {
    // The same unbiased draws as samples and as 60 x 60 histograms, each beside the same umbrella
    // windows: the two estimates on a 12 x 12 grid differ by the within-bin bias variation only,
    // far less than either's statistical error.
    let mut rng = ChaCha8Rng::seed_from_u64(37);
    let windows: Vec<BiasedSamples> = lattice(6, 6.0)
        .iter()
        .map(|b| BiasedSamples::new(*b, (0..1000).map(|_| draw(b, &mut rng)).collect()))
        .collect();
    let (histograms, samples) = binned_unbiased_draws(10, 4000, 60, &mut rng);
    let config = MbarConfig { hessian_samples: 20_000, ..MbarConfig::default() };
    let estimate = |md: BiasedSamples| {
        let mut states = windows.clone();
        states.push(md);
        let (solution, p) = dihedral_probabilities(&states, 12, &config, None).expect("mbar");
        assert!(solution.converged, "{solution:?}");
        p
    };
    let binless = estimate(BiasedSamples::new(HarmonicBias2d::UNBIASED, samples));
    let binned = estimate(BiasedSamples::binned(HarmonicBias2d::UNBIASED, 60, histograms, 3).expect("binned"));
    let largest_relative = binless.iter().zip(&binned).map(|(a, b)| (a - b).abs() / a).fold(0.0f64, f64::max);
    let kld = cgflow::metrics::kl_divergence(&binless, &binned).expect("kl");
    // Against the exact PMF both read KL about 1e-3 (their statistical error).
    assert!(largest_relative < 0.01 && kld < 1e-5, "largest relative difference {largest_relative}, KL {kld}");
}

#[test]
fn binned_states_split_into_halves_between_their_blocks_and_refuse_bad_counts() {
    let bins = 4;
    let block = |bin: usize, count: f64| {
        let mut b = vec![0.0; bins * bins];
        b[bin] = count;
        b
    };
    let s = BiasedSamples::binned(HarmonicBias2d::UNBIASED, bins, vec![block(0, 3.0), block(5, 3.0), block(5, 4.0)], 1)
        .expect("binned");
    assert_eq!(s.samples.len(), 2);
    assert_eq!(s.total_count(), 10.0);
    let [first, second] = cgflow::md::mbar::split_halves(std::slice::from_ref(&s));
    // Running counts 3, 6, 10: the cut after the second block is nearest half (5).
    assert_eq!(first[0].total_count(), 6.0);
    assert_eq!(second[0].total_count(), 4.0);
    assert_eq!(second[0].counts, vec![0.0, 4.0]);
    assert!(BiasedSamples::binned(HarmonicBias2d::UNBIASED, bins, vec![], 1).is_err());
    assert!(BiasedSamples::binned(HarmonicBias2d::UNBIASED, bins, vec![vec![1.0; 15]], 1).is_err());
    assert!(BiasedSamples::binned(HarmonicBias2d::UNBIASED, bins, vec![block(0, -1.0)], 1).is_err());
    assert!(BiasedSamples::binned(HarmonicBias2d::UNBIASED, bins, vec![block(0, f64::NAN)], 1).is_err());
    assert!(BiasedSamples::binned(HarmonicBias2d::UNBIASED, bins, vec![vec![0.0; 16]], 1).is_err());
    assert!(BiasedSamples::binned(HarmonicBias2d::UNBIASED, bins, vec![block(0, 1.0)], 0).is_err());
    assert!(s.clone().with_counts_scaled(0.0).is_err());
    let mut bad = s.clone();
    bad.counts.pop();
    assert!(cgflow::md::mbar::solve(&[bad], &MbarConfig::default(), None).is_err());
}
