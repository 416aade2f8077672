//! Cost curves and speedups: `cgflow compare` on a tiny MD run with hand-computed divergences, the
//! Müller-Brown Metropolis baseline against the exact PMF (itself checked against an independent
//! quadrature), and clean errors.

use std::path::Path;
use std::process::{Command, Output};

use cgflow::energy::toy::MullerBrown;
use cgflow::md::mc_baseline::{muller_brown_mc_curves, muller_brown_reference, MbMcConfig};
use cgflow::metrics::quadrature::{muller_brown_bin_probabilities, muller_brown_pmf};
use cgflow::metrics::{kl_divergence, EmptyBinRule};

fn cgflow(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cgflow")).args(args).output().expect("run cgflow")
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Runs cgflow expecting a clean failure (exit 1, "error: ...", no panic); returns stderr.
fn failing(args: &[&str]) -> String {
    let out = cgflow(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "expected exit 1; stderr: {stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

/// D(p || q) with q normalised, written out by hand for the tests.
fn kl(p: &[f64], q: &[f64]) -> f64 {
    let total: f64 = q.iter().sum();
    p.iter().zip(q).filter(|(a, _)| **a > 0.0).map(|(a, b)| a * (a / (b / total)).ln()).sum()
}

/// A rule of the tiny run: KLD of the reference to a histogram of counts.
type Rule = fn(&[f64; 4]) -> f64;

/// pseudo-mass:0.5 by hand: q = 0.5 c / n + 0.5 / 4.
fn pseudo_mass_half(c: &[f64; 4]) -> f64 {
    let n: f64 = c.iter().sum();
    kl(&P, &c.map(|x| 0.5 * x / n + 0.125))
}

/// smooth:0:0.1 by hand: no kernel, q = 0.9 c / n + 0.1 / 4.
fn floor_only(c: &[f64; 4]) -> f64 {
    let n: f64 = c.iter().sum();
    kl(&P, &c.map(|x| 0.9 * x / n + 0.1 / 4.0))
}

/// The reference of the tiny run: 2 x 2 bins over [-pi, pi)^2.
const P: [f64; 4] = [0.4, 0.1, 0.1, 0.4];

/// A `cgflow md` folder with 2 walkers and 4 frames of 10 steps (45 steps run: the last 5 are not
/// recorded). Bins (row-major, phi-major): walker 0 visits 0, 1, 0, 0; walker 1 visits 3, 3, 2, 3.
fn tiny_run(dir: &Path, steps: u64) {
    let (neg, pos) = (-1.0f32, 1.0f32);
    let bin = |b: usize| [if b / 2 == 0 { neg } else { pos }, if b % 2 == 0 { neg } else { pos }];
    let (w0, w1) = ([0, 1, 0, 0], [3, 3, 2, 3]);
    let mut bytes = Vec::new();
    for f in 0..4 {
        for value in bin(w0[f]).iter().chain(&bin(w1[f])) {
            bytes.extend_from_slice(&value.to_le_bytes());
        }
    }
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("cv.f32"), bytes).unwrap();
    let description = serde_json::json!({"walkers": 2, "cvs": [[4, 6, 8, 14], [6, 8, 14, 16]], "steps_per_frame": 10,
        "frames": 4, "steps": steps, "system_fingerprint": "0"});
    std::fs::write(dir.join("cv.json"), description.to_string()).unwrap();
}

#[test]
fn compare_on_a_tiny_run_matches_hand_computed_divergences() {
    let tmp = tempfile::tempdir().unwrap();
    let md = tmp.path().join("md");
    tiny_run(&md, 45);
    let reference = tmp.path().join("reference_probabilities.npy");
    cgflow::io::npy::write_npy(&reference, &[2, 2], &P).unwrap();
    // Halves next to the reference give the noise floor: KL(h1 || h2) by hand.
    cgflow::io::npy::write_npy(&tmp.path().join("half1_probabilities.npy"), &[2, 2], &P).unwrap();
    cgflow::io::npy::write_npy(&tmp.path().join("half2_probabilities.npy"), &[2, 2], &[0.25; 4]).unwrap();
    let method = tmp.path().join("method.csv");
    std::fs::write(&method, "evaluations,kld,wall_s\n# two points\n4, 0.03, 1\n4 2.0 0.5\n").unwrap();
    let out_json = tmp.path().join("curve.json");
    let png = tmp.path().join("curve.png");
    let out = cgflow(&[
        "compare",
        "--reference",
        path(&reference),
        "--md",
        path(&md),
        "--groups",
        "1,2",
        "--smooth-reference",
        "0",
        "--empty-bins",
        "pseudo-mass:0.5,smooth:0:0.1",
        "--milestones",
        "25,70,1000",
        "--method-points",
        path(&method),
        "--md-throughput",
        "10",
        "--kld-levels",
        "0.03",
        "--out",
        path(&out_json),
        "--plot",
        path(&png),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    assert!(std::fs::metadata(&png).unwrap().len() > 1000);
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out_json).unwrap()).unwrap();

    // Cumulative counts of both walkers after frames 1..4, and of each walker alone.
    let both = [[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 0.0, 2.0], [2.0, 1.0, 1.0, 2.0], [3.0, 1.0, 1.0, 3.0]];
    let w0 = [[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0], [2.0, 1.0, 0.0, 0.0], [3.0, 1.0, 0.0, 0.0]];
    let w1 = [[0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 2.0], [0.0, 0.0, 1.0, 2.0], [0.0, 0.0, 1.0, 3.0]];
    let rules: [Rule; 2] = [pseudo_mass_half, floor_only];
    for (r, rule) in rules.iter().enumerate() {
        // Stitched: the mean of 2 groups (1 walker each) at 10, 20, 30, 40 evaluations, then the
        // whole run (2 walkers) beyond: 60, 80.
        let mut expected: Vec<[f64; 2]> =
            (0..4).map(|f| [10.0 * (f + 1) as f64, 0.5 * (rule(&w0[f]) + rule(&w1[f]))]).collect();
        expected.push([60.0, rule(&both[2])]);
        expected.push([80.0, rule(&both[3])]);
        let stitched = v["rules"][r]["stitched"].as_array().unwrap();
        assert_eq!(stitched.len(), expected.len());
        for (got, want) in stitched.iter().zip(&expected) {
            assert_eq!(got[0].as_f64().unwrap(), want[0]);
            assert!((got[1].as_f64().unwrap() - want[1]).abs() < 1e-12, "rule {r}: {got} vs {want:?}");
        }
        // Milestones: 25 between 20 and 30 (log-log) from the 2 groups; 70 from the whole run;
        // 1000 beyond the curve: null, not extrapolated.
        let loglog = |e: f64, a: [f64; 2], b: [f64; 2]| {
            let t = (e / a[0]).ln() / (b[0] / a[0]).ln();
            (a[1].ln() + t * (b[1] / a[1]).ln()).exp()
        };
        let m = &v["rules"][r]["milestones"];
        assert!((m[0]["kld"].as_f64().unwrap() - loglog(25.0, expected[1], expected[2])).abs() < 1e-12);
        assert_eq!(m[0]["from"], "mean of 2 groups of 1 walkers");
        assert!((m[1]["kld"].as_f64().unwrap() - loglog(70.0, expected[4], expected[5])).abs() < 1e-12);
        assert_eq!(m[1]["from"], "the whole run (2 walkers)");
        assert!(m[2]["kld"].is_null());
        assert_eq!(v["rules"][r]["end_of_run"]["evaluations_histogrammed"], 80.0);
        // The method's second point (KLD 2) is above the baseline's first: an upper bound 10 / 4.
        let s = &v["rules"][r]["speedups"][1];
        assert_eq!(s["speedup_at_most"], 2.5);
    }
    assert_eq!(v["end_of_run_evaluations_made"], 90.0);
    // KLD 0.03 with 4 evaluations: pseudo-mass MD never gets that low (lowest 0.0718 at 80): a
    // lower bound 80 / 4; smooth MD crosses it between 60 (0.054) and 80 (0.015).
    assert!(rules[0](&both[3]) > 0.03 && rules[1](&both[2]) > 0.03 && rules[1](&both[3]) < 0.03);
    assert_eq!(v["rules"][0]["speedups"][0]["speedup_at_least"], 20.0);
    assert!(stdout.contains("never reaches"), "{stdout}");
    let (a, b) = (rules[1](&both[2]), rules[1](&both[3]));
    let e = (60f64.ln() + (0.03 / a).ln() / (b / a).ln() * (80.0f64 / 60.0).ln()).exp();
    let speedup = v["rules"][1]["speedups"][0]["speedup"].as_f64().unwrap();
    assert!((speedup / (e / 4.0) - 1.0).abs() < 1e-12, "{speedup} vs {}", e / 4.0);
    // The same crossing as the evaluations MD needs for KLD 0.03 (none under the pseudo-mass).
    let reach = v["rules"][1]["evaluations_to_reach"][0]["evaluations"].as_f64().unwrap();
    assert!((reach / e - 1.0).abs() < 1e-12);
    assert!(v["rules"][0]["evaluations_to_reach"][0]["evaluations"].is_null());
    // The noise floor: KL(h1 || h2) = 0.8 ln 1.6 + 0.2 ln 0.4; the whole reference a quarter of it.
    let halves = 0.8 * 1.6f64.ln() + 0.2 * 0.4f64.ln();
    assert!((v["noise_floor"]["kld_halves"].as_f64().unwrap() - halves).abs() < 1e-14);
    assert!((v["noise_floor"]["floor_whole_reference"].as_f64().unwrap() - halves / 4.0).abs() < 1e-14);
    // The smoothing rule's own bias: the reference itself through the floor, 0.9 p + 0.025.
    let bias = kl(&P, &P.map(|x| 0.9 * x + 0.025));
    assert!((v["rules"][1]["rule_bias"].as_f64().unwrap() - bias).abs() < 1e-14);
    let bias = kl(&P, &P.map(|x| 0.5 * x + 0.125));
    assert!((v["rules"][0]["rule_bias"].as_f64().unwrap() - bias).abs() < 1e-14);

    // The summary per method point. Floors: the reference's 0.1927 / 4 plus each rule's bias
    // (0.0542 and 0.0026), so KLD 0.03 is within 3x of both (not resolved); at KLD 2 both rules give
    // < 2.5, the smallest is < 2.5, and in wall-clock time MD's at most 2.5 x 4 / 10 = 1 s against
    // the method's 0.5 s: < 2.
    let summary = &v["summary"];
    assert_eq!(summary[0]["smallest"], serde_json::Value::Null);
    assert_eq!(summary[0]["rules"][0]["resolved"], false);
    assert_eq!(summary[0]["rules"][1]["resolved"], false);
    assert!(
        (summary[0]["rules"][0]["floor"].as_f64().unwrap() - (halves / 4.0 + kl(&P, &P.map(|x| 0.5 * x + 0.125))))
            .abs()
            < 1e-12
    );
    assert_eq!(summary[1]["smallest"]["speedup"], 2.5);
    assert_eq!(summary[1]["smallest"]["qualifier"], "<");
    assert!((summary[1]["wall_clock"]["speedup"].as_f64().unwrap() - 2.0).abs() < 1e-12);
    assert_eq!(summary[1]["wall_clock"]["qualifier"], "<");
    assert!(stdout.contains("not resolved"), "{stdout}");

    // The saved curves as the baseline: the same speedups, milestones, levels, floor and biases
    // without the MD run, for all its rules or the one asked for.
    let again_json = tmp.path().join("again.json");
    let out = cgflow(&[
        "compare",
        "--baseline-curves",
        path(&out_json),
        "--milestones",
        "25,70,1000",
        "--method-points",
        path(&method),
        "--kld-levels",
        "0.03",
        "--out",
        path(&again_json),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let w: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&again_json).unwrap()).unwrap();
    for key in ["noise_floor", "end_of_run_evaluations_made", "baseline"] {
        assert_eq!(w[key], v[key], "{key}");
    }
    for key in
        ["rule", "rule_bias", "stitched", "parts", "milestones", "end_of_run", "evaluations_to_reach", "speedups"]
    {
        for r in 0..2 {
            assert_eq!(w["rules"][r][key], v["rules"][r][key], "rule {r}: {key}");
        }
    }
    let one = cgflow(&["compare", "--baseline-curves", path(&out_json), "--empty-bins", "smooth:0:0.1"]);
    let stdout = String::from_utf8_lossy(&one.stdout);
    assert!(
        one.status.success()
            && stdout.contains("## empty bins: smooth:0:0.1")
            && !stdout.contains("## empty bins: pseudo-mass:0.5"),
        "{stdout}"
    );
    let missing = failing(&["compare", "--baseline-curves", path(&out_json), "--empty-bins", "pseudo-mass:0.2"]);
    assert!(missing.contains("no curve under the rule pseudo-mass:0.2"), "{missing}");
    std::fs::write(tmp.path().join("other.json"), "{\"rules\": 3}").unwrap();
    let other = failing(&["compare", "--baseline-curves", path(&tmp.path().join("other.json"))]);
    assert!(other.contains("not the output of `cgflow compare --out`"), "{other}");
    // It replaces the MD run: giving both is clap's usage error (exit 2).
    let both_given = cgflow(&["compare", "--baseline-curves", path(&out_json), "--md", path(&md)]);
    assert_eq!(both_given.status.code(), Some(2));
}

#[test]
fn compare_refuses_bad_input_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let md = tmp.path().join("md");
    tiny_run(&md, 40);
    let reference = tmp.path().join("p.npy");
    cgflow::io::npy::write_npy(&reference, &[2, 2], &P).unwrap();
    let base = ["compare", "--reference", path(&reference), "--md", path(&md)];
    let with = |extra: &[&str]| -> Vec<String> { base.iter().chain(extra).map(|s| s.to_string()).collect() };
    let run = |extra: &[&str]| {
        let args = with(extra);
        failing(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    assert!(run(&["--empty-bins", "smooth:-1"]).contains("smoothing width"));
    assert!(run(&["--empty-bins", "laplace"]).contains("empty-bin rule 'laplace'"));
    assert!(run(&["--groups", "3"]).contains("--groups"));
    assert!(run(&["--kld-levels", "0.1,0"]).contains("--kld-levels"));
    let bad = tmp.path().join("bad.csv");
    std::fs::write(&bad, "1e6,0.1\n1e7\n").unwrap();
    assert!(run(&["--method-points", path(&bad)]).contains("line 2"));
    std::fs::write(&bad, "[{\"kld\": 0.1, \"wall_s\": 3}]").unwrap();
    assert!(run(&["--method-points", path(&bad)]).contains("point 0"));
    std::fs::write(&bad, "1e6,0.1,-3\n").unwrap();
    assert!(run(&["--method-points", path(&bad)]).contains("wall time"));
    assert!(run(&["--md-throughput", "0"]).contains("--md-throughput"));
    // Halves that do not match the reference's grid, and an MD run of another System.
    let small = tmp.path().join("small.npy");
    cgflow::io::npy::write_npy(&small, &[1, 1], &[1.0]).unwrap();
    let halves = format!("{},{}", path(&small), path(&small));
    assert!(!run(&["--halves", &halves]).is_empty());
    let system = crate::util::aldp("aldp_vacuum.xml");
    assert!(run(&["--system", path(&system)]).contains("another system"));
    std::fs::write(&bad, "[[1e6, -0.1]]").unwrap();
    assert!(run(&["--method-points", path(&bad)]).contains("point 0"));
    std::fs::write(&bad, "{\"other\": []}").unwrap();
    assert!(run(&["--method-points", path(&bad)]).contains("no array"));
    // A square reference of the wrong size for nothing else: a 3-bin vector is refused.
    let flat = tmp.path().join("flat.npy");
    cgflow::io::npy::write_npy(&flat, &[3], &[0.2, 0.3, 0.5]).unwrap();
    let args = ["compare", "--reference", path(&flat), "--md", path(&md)];
    assert!(failing(&args).contains("square"));
    // A CV file shorter than cv.json announces.
    let bytes = std::fs::read(md.join("cv.f32")).unwrap();
    std::fs::write(md.join("cv.f32"), &bytes[..bytes.len() - 4]).unwrap();
    assert!(run(&[]).contains("truncated"));
    // Without --muller-brown the reference and the run are required (clap's own error, exit 2).
    let out = cgflow(&["compare"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn muller_brown_pmf_matches_an_independent_simpson_quadrature() {
    // A(s) = -ln int exp(-u(s, s_perp)) ds_perp by composite Simpson over s_perp in [-6, 8]
    // (the density is below e^-100 of its peak outside), h = 0.002.
    let mb = MullerBrown::default();
    let marginal = |s: f64| {
        let (a, b, n) = (-6.0, 8.0, 7000);
        let h = (b - a) / n as f64;
        let f = |i: usize| (-mb.energy_cg(s, a + i as f64 * h)).exp();
        let inner: f64 = (1..n).map(|i| f(i) * if i % 2 == 1 { 4.0 } else { 2.0 }).sum();
        (f(0) + f(n) + inner) * h / 3.0
    };
    let points = [-2.0, -1.2, -0.5, 0.6, 1.0];
    let exact = muller_brown_pmf(&mb, &points);
    let simpson: Vec<f64> = points.iter().map(|&s| -marginal(s).ln() + marginal(-2.0).ln()).collect();
    for ((s, a), b) in points.iter().zip(&exact).zip(&simpson) {
        assert!((a - b).abs() < 1e-9, "A({s}): adaptive {a} vs Simpson {b}");
    }
    // Bin probabilities: Simpson in s too (64 panels per bin of 0.036) over 20 of the 100 bins,
    // normalised by the same sum; compare with the adaptive values scaled by the same bins' total.
    let p = muller_brown_bin_probabilities(&mb, 100);
    let width = 0.036;
    let bins: Vec<usize> = (0..100).step_by(5).collect();
    let mass: Vec<f64> = bins
        .iter()
        .map(|&i| {
            let lo = -2.5 + i as f64 * width;
            let h = width / 64.0;
            let f = |k: usize| marginal(lo + k as f64 * h);
            (f(0) + f(64) + (1..64).map(|k| f(k) * if k % 2 == 1 { 4.0 } else { 2.0 }).sum::<f64>()) * h / 3.0
        })
        .collect();
    let total_simpson: f64 = mass.iter().sum();
    let total_adaptive: f64 = bins.iter().map(|&i| p[i]).sum();
    for (&i, m) in bins.iter().zip(&mass) {
        let (a, b) = (p[i] / total_adaptive, m / total_simpson);
        assert!((a - b).abs() < 2e-9 * a, "bin {i}: adaptive {a} vs Simpson {b}");
    }
}

#[test]
fn muller_brown_metropolis_baseline_converges_towards_the_exact_pmf() {
    let mb = MullerBrown::default();
    let reference = muller_brown_reference(&mb, 100).unwrap();
    // Pseudo-mass 2.5e-5: what a pseudo-count of 1 in each of the 100 bins weighed at 4e6 samples.
    let rules = [EmptyBinRule::PseudoMass(2.5e-5), EmptyBinRule::smooth(0.5)];
    // Small budget: 4 runs of 8 chains x 20,000 proposals from the global minimum.
    let small = MbMcConfig { runs: 4, chains: 8, steps_per_chain: 20_000, per_decade: 4, ..MbMcConfig::default() };
    let curves = muller_brown_mc_curves(&mb, &reference, &small, &rules).unwrap();
    assert_eq!(curves.evaluations_per_run, 8 * 20_001);
    for (rule, mean) in rules.iter().zip(&curves.mean) {
        let first = mean.first().unwrap();
        let last = mean.last().unwrap();
        assert_eq!(first.evaluations, 16.0);
        assert_eq!(last.evaluations, 160_008.0);
        assert!(last.kld < first.kld / 3.0, "{rule}: {first:?} -> {last:?}");
        // Every run's curve is its own: the mean is their average.
        let runs = &curves.runs[rules.iter().position(|r| r == rule).unwrap()];
        let avg = runs.iter().map(|c| c.last().unwrap().kld).sum::<f64>() / runs.len() as f64;
        assert!((avg - last.kld).abs() < 1e-15);
    }
    assert!(curves.acceptance_rate > 0.3 && curves.acceptance_rate < 0.7, "{}", curves.acceptance_rate);

    // Long budget: 4 runs of 8 chains x 500,000 proposals (4e6 evaluations per run). Bounds from
    // the exact bin probabilities p, for N = 4e6 recorded states with pseudo-mass m = 2.5e-5:
    // - above: a sampler stuck in the start basin (s < s_b, the PMF maximum between the two lower
    //   basins) gives q = (1 - m) p / P_start [in the basin] + m / K; the baseline must have left it
    //   and weighted the other basins well enough to be 20 times below that;
    // - below: independent samples would still leave (K_occupied - 1) / (2 N).
    let long = MbMcConfig { runs: 4, chains: 8, steps_per_chain: 500_000, per_decade: 1, ..MbMcConfig::default() };
    let curves = muller_brown_mc_curves(&mb, &reference, &long, &rules[..1]).unwrap();
    let kld = curves.mean[0].last().unwrap().kld;
    let p = muller_brown_bin_probabilities(&mb, 100);
    let centres: Vec<f64> = (0..100).map(|i| -2.5 + (i as f64 + 0.5) * 0.036).collect();
    let a = muller_brown_pmf(&mb, &centres);
    let barrier = (1..99).filter(|&i| centres[i] < -1.0 && a[i] > a[i - 1] && a[i] > a[i + 1]).max().unwrap();
    let n = 4.0e6;
    let start_basin: f64 = p[..barrier].iter().sum();
    let m = 2.5e-5;
    let stuck: Vec<f64> =
        (0..100).map(|i| if i < barrier { (1.0 - m) * p[i] / start_basin + m / 100.0 } else { m / 100.0 }).collect();
    let stuck_kld = kl_divergence(&p, &stuck).unwrap();
    let floor = (p.iter().filter(|x| **x > 0.0).count() - 1) as f64 / (2.0 * n);
    // Measured (seeded): KLD 0.0044, stuck 0.18, floor 1.2e-5.
    assert!(stuck_kld > 0.1, "stuck in the start basin: {stuck_kld}");
    assert!(kld < stuck_kld / 20.0 && kld > floor, "KLD {kld}: bounds ({floor}, {})", stuck_kld / 20.0);
}

#[test]
fn compare_muller_brown_writes_a_curve_and_a_plot() {
    let tmp = tempfile::tempdir().unwrap();
    let json = tmp.path().join("mb.json");
    let png = tmp.path().join("mb.png");
    let out = cgflow(&[
        "compare",
        "--muller-brown",
        "--mb-runs",
        "2",
        "--mb-chains",
        "2",
        "--mb-steps",
        "2000",
        "--empty-bins",
        "pseudo-mass:0.001",
        "--out",
        path(&json),
        "--plot",
        path(&png),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["baseline"]["evaluations_per_run"], 4002);
    let stitched = v["rules"][0]["stitched"].as_array().unwrap();
    assert_eq!(stitched.last().unwrap()[0], 4002.0);
    assert!(std::fs::metadata(&png).unwrap().len() > 1000);
    assert!(failing(&["compare", "--muller-brown", "--mb-start", "1"]).contains("--mb-start"));
    assert!(failing(&["compare", "--muller-brown", "--mb-runs", "0"]).contains("must be positive"));
}

/// A correlated multi-walker trajectory on the torus: Metropolis steps of 0.005 rad on a periodic
/// test PMF, walkers started from its exact distribution (rejection sampling), so that only the
/// record interval differs between two histograms of it.
fn correlated_walkers(walkers: usize, steps: usize, seed: u64) -> (Vec<f32>, Vec<f64>) {
    use rand::{Rng, SeedableRng};
    use std::f64::consts::PI;
    let f = |x: [f64; 2]| 2.0 * x[0].cos() + 1.0 * (2.0 * x[1] - 0.7).cos() - 0.8 * (x[0] - x[1] + 0.3).cos();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let normal = rand_distr::Normal::new(0.0, 0.005).unwrap();
    let wrap = cgflow::coords::geometry::wrap_angle;
    let mut x: Vec<[f64; 2]> = (0..walkers)
        .map(|_| loop {
            let c = [rng.gen_range(-PI..PI), rng.gen_range(-PI..PI)];
            if rng.gen::<f64>() < (-(f(c) + 3.8)).exp() {
                break c;
            }
        })
        .collect();
    let mut values = Vec::with_capacity(steps * walkers * 2);
    for _ in 0..steps {
        for xw in x.iter_mut() {
            let trial = [
                wrap(xw[0] + rand_distr::Distribution::sample(&normal, &mut rng)),
                wrap(xw[1] + rand_distr::Distribution::sample(&normal, &mut rng)),
            ];
            if rng.gen::<f64>() < (f(*xw) - f(trial)).exp() {
                *xw = trial;
            }
            values.extend_from_slice(&[xw[0] as f32, xw[1] as f32]);
        }
    }
    // Exact bin probabilities on 100 x 100 bins (midpoint rule, 5 x 5 points per bin).
    let bins = 100;
    let h = 2.0 * PI / bins as f64;
    let mut p = vec![0.0; bins * bins];
    for i in 0..bins {
        for j in 0..bins {
            for a in 0..5 {
                for b in 0..5 {
                    let c =
                        [-PI + h * (i as f64 + (a as f64 + 0.5) / 5.0), -PI + h * (j as f64 + (b as f64 + 0.5) / 5.0)];
                    p[i * bins + j] += (-f(c)).exp();
                }
            }
        }
    }
    (values, p)
}

#[test]
fn every_shipped_rule_reads_the_same_curve_whatever_the_record_interval() {
    use cgflow::metrics::cost_curve::{md_cost_curve, WalkerSamples};
    use cgflow::metrics::{BinGrid, KlReference};
    let (walkers, steps) = (64, 40_000);
    let (every_step, p) = correlated_walkers(walkers, steps, 9);
    // The same trajectory recorded every 10th step.
    let frame = 2 * walkers;
    let every_tenth: Vec<f32> =
        every_step.chunks_exact(frame).skip(9).step_by(10).flat_map(|f| f.iter().copied()).collect();
    let fine = WalkerSamples { values: &every_step, walkers, steps_per_frame: 1 };
    let coarse = WalkerSamples { values: &every_tenth, walkers, steps_per_frame: 10 };
    // Frames at which both have made the same evaluations: 2,000 to 40,000 steps per walker.
    let coarse_frames = [200, 500, 1000, 2000, 4000];
    let fine_frames: Vec<usize> = coarse_frames.iter().map(|f| f * 10).collect();
    // At the comparison resolutions (kernels of 1 and 2 bins) every shipped rule moves by less than
    // 2 % (measured: at most 0.3 %). On the raw grid the kernel rules do too, but the pseudo-mass
    // moves by 3-4.5 % while KLD > 1: there it counts empty bins, and a brief visit to a bin between
    // two records leaves it empty.
    for kernel in [0.0, 1.0, 2.0] {
        let reference = KlReference::new(&p, BinGrid::dihedral(100), kernel).unwrap();
        for rule in EmptyBinRule::shipped() {
            if kernel == 0.0 && matches!(rule, EmptyBinRule::PseudoMass(_)) {
                continue;
            }
            let a = md_cost_curve(&reference, &fine, 0..walkers, &fine_frames, rule).unwrap();
            let b = md_cost_curve(&reference, &coarse, 0..walkers, &coarse_frames, rule).unwrap();
            for (x, y) in a.iter().zip(&b) {
                assert_eq!(x.evaluations, y.evaluations);
                let change = (x.kld / y.kld - 1.0).abs();
                assert!(
                    change < 0.02,
                    "{rule} at kernel {kernel}, {} evaluations: {} vs {}",
                    x.evaluations,
                    x.kld,
                    y.kld
                );
            }
        }
    }
    // Control: a pseudo-count of 1 per bin (what the project shipped before) reads curves that
    // differ by more than half (measured 0.90 vs 0.53), because it weighs 10^4 counts against 10x
    // fewer frames.
    let reference = KlReference::new(&p, BinGrid::dihedral(100), 0.0).unwrap();
    let count_rule = |values: &[f32], frames: usize| {
        let mut counts = vec![1.0; 100 * 100];
        let axis = cgflow::metrics::histogram::Axis::dihedral(100).unwrap();
        for pair in values[..frames * frame].chunks_exact(2) {
            counts[axis.bin_of(pair[0] as f64).unwrap() * 100 + axis.bin_of(pair[1] as f64).unwrap()] += 1.0;
        }
        reference.kl_to_probabilities(&counts).unwrap()
    };
    let (a, b) = (count_rule(&every_step, 20_000), count_rule(&every_tenth, 2000));
    assert!(a > 1.5 * b, "pseudo-count:1 every step {a} vs every 10th step {b}");
}

/// A one-walker `cgflow md` folder visiting the tiny grid's bins `visits` (one per 10-step frame).
fn one_walker_run(dir: &Path, visits: &[usize], seed: u64, steps_per_frame: u64) {
    let value = |b: usize| [if b / 2 == 0 { -1.0f32 } else { 1.0 }, if b % 2 == 0 { -1.0f32 } else { 1.0 }];
    let bytes: Vec<u8> = visits.iter().flat_map(|&b| value(b)).flat_map(f32::to_le_bytes).collect();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("cv.f32"), bytes).unwrap();
    let description = serde_json::json!({"walkers": 1, "cvs": [[4, 6, 8, 14], [6, 8, 14, 16]],
        "steps_per_frame": steps_per_frame, "frames": visits.len(), "steps": 45, "system_fingerprint": "0",
        "seed": seed});
    std::fs::write(dir.join("cv.json"), description.to_string()).unwrap();
}

#[test]
fn realisations_pool_into_the_run_of_all_their_walkers_and_their_spread_is_the_band() {
    let tmp = tempfile::tempdir().unwrap();
    let reference = tmp.path().join("p.npy");
    cgflow::io::npy::write_npy(&reference, &[2, 2], &P).unwrap();
    // The tiny run's two walkers as one run, and as two realisations of one walker each.
    let both = tmp.path().join("both");
    tiny_run(&both, 45);
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    one_walker_run(&a, &[0, 1, 0, 0], 1, 10);
    // The second realisation ran one frame longer: pooling cuts it to the frames both have.
    one_walker_run(&b, &[3, 3, 2, 3, 0], 2, 10);
    let curves = |md: &[&Path], name: &str| -> serde_json::Value {
        let out = tmp.path().join(name);
        let mut args = vec!["compare", "--reference", path(&reference), "--groups", "2,1", "--smooth-reference", "0"];
        for m in md {
            args.extend(["--md", path(m)]);
        }
        args.extend(["--empty-bins", "pseudo-mass:0.5", "--out", path(&out)]);
        let run = cgflow(&args);
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap()
    };
    let one = curves(&[&both], "one.json");
    let pooled = curves(&[&a, &b], "pooled.json");
    assert_eq!(one["rules"][0]["stitched"], pooled["rules"][0]["stitched"]);
    assert_eq!(pooled["baseline"]["walkers"], 2);
    assert_eq!(pooled["baseline"]["frames"], 4);
    // The band: the lowest and highest of the two one-walker curves, frame by frame.
    let w0 = [[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0], [2.0, 1.0, 0.0, 0.0], [3.0, 1.0, 0.0, 0.0]];
    let w1 = [[0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 2.0], [0.0, 0.0, 1.0, 2.0], [0.0, 0.0, 1.0, 3.0]];
    let band = &pooled["rules"][0]["band"];
    for f in 0..4 {
        let (k0, k1) = (pseudo_mass_half(&w0[f]), pseudo_mass_half(&w1[f]));
        assert_eq!(band["evaluations"][f].as_f64().unwrap(), 10.0 * (f + 1) as f64);
        assert!((band["lowest"][f].as_f64().unwrap() - k0.min(k1)).abs() < 1e-12);
        assert!((band["highest"][f].as_f64().unwrap() - k0.max(k1)).abs() < 1e-12);
    }
    // The same seed twice is one trajectory, not two realisations; another record interval or
    // CV set cannot be pooled.
    let args = |second: &Path| {
        ["compare", "--reference", path(&reference), "--md", path(&a), "--md", path(second)]
            .map(str::to_string)
            .to_vec()
    };
    let fails = |second: &Path| failing(&args(second).iter().map(String::as_str).collect::<Vec<_>>());
    let twin = tmp.path().join("twin");
    one_walker_run(&twin, &[3, 3, 2, 3], 1, 10);
    assert!(fails(&twin).contains("seed 1 like an earlier run"), "{}", fails(&twin));
    let slower = tmp.path().join("slower");
    one_walker_run(&slower, &[3, 3, 2, 3], 3, 100);
    assert!(fails(&slower).contains("every 100 steps"), "{}", fails(&slower));
}

#[test]
fn method_pmfs_are_read_at_the_comparison_s_resolution() {
    let tmp = tempfile::tempdir().unwrap();
    let md = tmp.path().join("md");
    tiny_run(&md, 40);
    let reference = tmp.path().join("p.npy");
    cgflow::io::npy::write_npy(&reference, &[2, 2], &P).unwrap();
    // A PMF of q = (0.25, 0.25, 0.125, 0.375), up to a constant.
    let q = [0.25, 0.25, 0.125, 0.375];
    let pmf: Vec<f64> = q.iter().map(|x: &f64| -x.ln() + 3.0).collect();
    let pmf_path = tmp.path().join("pmf_kt.npy");
    cgflow::io::npy::write_npy(&pmf_path, &[2, 2], &pmf).unwrap();
    let out_json = tmp.path().join("c.json");
    let spec = format!("{}:30:2.5", path(&pmf_path));
    let args =
        ["compare", "--reference", path(&reference), "--md", path(&md), "--smooth-reference", "0", "--groups", "1"];
    let out = cgflow(&[&args[..], &["--method-pmf", &spec, "--out", path(&out_json)]].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out_json).unwrap()).unwrap();
    let point = &v["method"]["points"][0];
    assert_eq!(point[0].as_f64().unwrap(), 30.0);
    assert_eq!(point[2].as_f64().unwrap(), 2.5);
    assert!((point[1].as_f64().unwrap() - kl(&P, &q)).abs() < 1e-12, "{point}");
    // A PMF of another grid, and a spec without evaluations, are clear errors.
    let small = tmp.path().join("small.npy");
    cgflow::io::npy::write_npy(&small, &[1, 1], &[0.0]).unwrap();
    let wrong = format!("{}:30", path(&small));
    assert!(failing(&[&args[..], &["--method-pmf", &wrong]].concat()).contains("shape"));
    assert!(failing(&[&args[..], &["--method-pmf", path(&pmf_path)]].concat()).contains("--method-pmf"));
}

/// One walker of the tiny run as a run folder that keeps histograms (2 x 2 bins, a mark after
/// every frame), written by hand: `visits` are its bins, frame by frame.
fn tiny_histogram_run(dir: &Path, visits: [usize; 4], seed: u64) {
    std::fs::create_dir_all(dir.join("histograms")).unwrap();
    let mut counts = [0.0; 4];
    for (f, &b) in visits.iter().enumerate() {
        counts[b] += 1.0;
        let mark = dir.join("histograms").join(format!("frames_{:09}.npy", f + 1));
        cgflow::io::npy::write_npy(&mark, &[1, 2, 2], &counts).unwrap();
    }
    let description = serde_json::json!({"walkers": 1, "cvs": [[4, 6, 8, 14], [6, 8, 14, 16]], "steps_per_frame": 10,
        "frames": 4, "steps": 45, "system_fingerprint": "0", "seed": seed,
        "histogram": {"bins": 2, "pairs": [[0, 1]], "marks_per_decade": 10}});
    std::fs::write(dir.join("cv.json"), description.to_string()).unwrap();
}

#[test]
fn compare_pools_runs_that_keep_histograms_into_the_curve_of_their_values() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    tiny_histogram_run(&a, [0, 1, 0, 0], 1);
    tiny_histogram_run(&b, [3, 3, 2, 3], 2);
    let reference = tmp.path().join("reference_probabilities.npy");
    cgflow::io::npy::write_npy(&reference, &[2, 2], &P).unwrap();
    let out_json = tmp.path().join("curve.json");
    let args = |md: &[&Path], groups: &str| -> Vec<String> {
        let mut v: Vec<String> = vec!["compare".into(), "--reference".into(), path(&reference).into()];
        for d in md {
            v.extend(["--md".into(), path(d).into()]);
        }
        v.extend(
            [
                "--groups",
                groups,
                "--smooth-reference",
                "0",
                "--empty-bins",
                "pseudo-mass:0.5",
                "--out",
                path(&out_json),
            ]
            .map(String::from),
        );
        v
    };
    let strs = |v: &[String]| v.iter().map(String::to_string).collect::<Vec<_>>();
    let run = |v: Vec<String>| {
        let v = strs(&v);
        cgflow(&v.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let out = run(args(&[&a, &b], "1,2"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out_json).unwrap()).unwrap();
    // As the 2-walker run of CV values: the mean of the two runs at 10..40 evaluations, then
    // their pooled histogram at 60 and 80.
    let both = [[2.0, 1.0, 1.0, 2.0], [3.0, 1.0, 1.0, 3.0]];
    let w0 = [[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0], [2.0, 1.0, 0.0, 0.0], [3.0, 1.0, 0.0, 0.0]];
    let w1 = [[0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 2.0], [0.0, 0.0, 1.0, 2.0], [0.0, 0.0, 1.0, 3.0]];
    let mut expected: Vec<[f64; 2]> =
        (0..4).map(|f| [10.0 * (f + 1) as f64, 0.5 * (pseudo_mass_half(&w0[f]) + pseudo_mass_half(&w1[f]))]).collect();
    expected.push([60.0, pseudo_mass_half(&both[0])]);
    expected.push([80.0, pseudo_mass_half(&both[1])]);
    let stitched = v["rules"][0]["stitched"].as_array().unwrap();
    assert_eq!(stitched.len(), expected.len(), "{stitched:?}");
    for (got, want) in stitched.iter().zip(&expected) {
        assert_eq!(got[0].as_f64().unwrap(), want[0]);
        assert!((got[1].as_f64().unwrap() - want[1]).abs() < 1e-12, "{got} vs {want:?}");
    }
    assert_eq!(v["end_of_run_evaluations_made"], 90.0);
    assert_eq!(v["baseline"]["record"], "histograms");

    // Groups are whole runs; one seed twice is not independent; one kind at a time.
    let e = String::from_utf8_lossy(&run(args(&[&a, &b], "3")).stderr).into_owned();
    assert!(e.contains("divisors of 2"), "{e}");
    let twin = tmp.path().join("twin");
    tiny_histogram_run(&twin, [0, 1, 0, 0], 1);
    let e = String::from_utf8_lossy(&run(args(&[&a, &twin], "1")).stderr).into_owned();
    assert!(e.contains("not independent"), "{e}");
    let values = tmp.path().join("values");
    tiny_run(&values, 45);
    let e = String::from_utf8_lossy(&run(args(&[&a, &values], "1")).stderr).into_owned();
    assert!(e.contains("pool one kind"), "{e}");
    // A histogram run whose announced frames have no histogram is refused by name.
    std::fs::remove_file(b.join("histograms/frames_000000004.npy")).unwrap();
    let e = failing(&strs(&args(&[&b], "1")).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(e.contains("no histogram at the 4 frames"), "{e}");
}
