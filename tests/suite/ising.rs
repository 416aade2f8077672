//! The Ising model's exact references against brute force, and its Hubbard-Stratonovich
//! relaxation against quadrature and finite differences.

use cgflow::energy::ising::{Ising, IsingField};
use cgflow::energy::toy::Potential;

/// ln Z, <E> and <|M|> by brute force, with neighbours found by lattice arithmetic (each site's
/// right and lower neighbour on the torus), independently of the library's bond list.
fn brute_force(l: usize, j: f64, h: f64, t: f64) -> (f64, f64, f64) {
    let n = l * l;
    let (mut z, mut e_sum, mut m_sum) = (0.0, 0.0, 0.0);
    for state in 0u32..(1 << n) {
        let s = |r: usize, c: usize| if state >> ((r % l) * l + c % l) & 1 == 1 { 1.0 } else { -1.0 };
        let mut e = 0.0;
        let mut m = 0.0;
        for r in 0..l {
            for c in 0..l {
                e -= j * s(r, c) * (s(r, c + 1) + s(r + 1, c)) + h * s(r, c);
                m += s(r, c);
            }
        }
        let w = (-e / t).exp();
        z += w;
        e_sum += w * e;
        m_sum += w * f64::abs(m);
    }
    (z.ln(), e_sum / z, m_sum / z)
}

#[test]
fn enumeration_and_kaufman_agree_with_brute_force() {
    for l in [2, 3, 4] {
        for t in [1.5, 2.0, 2.269_185_314_213_022, 3.0, 5.0] {
            let ising = Ising::new(l, 1.0, 0.0).unwrap();
            let exact = ising.enumerate(t).unwrap();
            let (log_z, mean_e, mean_abs_m) = brute_force(l, 1.0, 0.0, t);
            assert!(
                (exact.log_z - log_z).abs() < 1e-12 * log_z.abs().max(1.0),
                "L {l} T {t}: {} vs {log_z}",
                exact.log_z
            );
            assert!((exact.mean_energy - mean_e).abs() < 1e-10, "L {l} T {t}");
            assert!((exact.mean_abs_magnetisation - mean_abs_m).abs() < 1e-10, "L {l} T {t}");
            assert!((exact.free_energy + t * log_z).abs() < 1e-10);
            let total: f64 = exact.energy_probabilities.iter().map(|p| p.1).sum();
            assert!((total - 1.0).abs() < 1e-12);
            let from_levels: f64 = exact.energy_probabilities.iter().map(|(e, p)| e * p).sum();
            assert!((from_levels - mean_e).abs() < 1e-10);
            // Kaufman's closed form, a different algorithm altogether.
            let kaufman = ising.kaufman_log_z(t).unwrap();
            assert!((kaufman - log_z).abs() < 1e-10 * log_z.abs(), "L {l} T {t}: Kaufman {kaufman} vs {log_z}");
            let e = ising.kaufman_mean_energy(t).unwrap();
            assert!((e - mean_e).abs() < 1e-6 * mean_e.abs().max(1.0), "L {l} T {t}: Kaufman <E> {e} vs {mean_e}");
        }
    }
    // A field and an antiferromagnetic coupling, by enumeration.
    let ising = Ising::new(3, -0.7, 0.3).unwrap();
    let exact = ising.enumerate(1.7).unwrap();
    let (log_z, mean_e, mean_abs_m) = brute_force(3, -0.7, 0.3, 1.7);
    assert!((exact.log_z - log_z).abs() < 1e-12 && (exact.mean_energy - mean_e).abs() < 1e-10);
    assert!((exact.mean_abs_magnetisation - mean_abs_m).abs() < 1e-10);
}

#[test]
fn the_transfer_matrix_gives_the_enumerated_magnetisation_distribution() {
    for (l, j, h, t) in
        [(2, 1.0, 0.0, 2.0), (3, 1.0, 0.0, 2.269), (4, 1.0, 0.0, 1.8), (4, 1.0, 0.25, 3.0), (3, -0.5, 0.1, 1.2)]
    {
        let ising = Ising::new(l, j, h).unwrap();
        let exact = ising.enumerate(t).unwrap().abs_magnetisation_probabilities;
        let transfer = ising.transfer_matrix_abs_magnetisation(t).unwrap();
        assert_eq!(exact.len(), transfer.len(), "L {l}");
        for ((m, p), (m2, p2)) in exact.iter().zip(&transfer) {
            assert_eq!(m, m2);
            assert!((p - p2).abs() < 1e-12, "L {l} T {t} |M| {m}: {p} vs {p2}");
        }
    }
    let too_big = Ising::new(9, 1.0, 0.0).unwrap();
    assert!(too_big.transfer_matrix_abs_magnetisation(2.0).unwrap_err().to_string().contains("at most L = 8"));
}

#[test]
fn kaufman_reaches_large_lattices_and_the_thermodynamic_limit() {
    // Onsager's free energy per site at T_c: -T_c (ln 2 / 2 + 2G / pi), G Catalan's constant.
    let t_c = 2.0 / (1.0 + std::f64::consts::SQRT_2).ln();
    let catalan = 0.915_965_594_177_219;
    let onsager = -t_c * (std::f64::consts::LN_2 / 2.0 + 2.0 * catalan / std::f64::consts::PI);
    // The finite-size correction at T_c is about -0.64 T_c / L² (the torus's universal ratio):
    // 1.4e-6 at L = 1024.
    let ising = Ising::new(1024, 1.0, 0.0).unwrap();
    let per_site = -t_c * ising.kaufman_log_z(t_c).unwrap() / ising.sites() as f64;
    assert!((per_site - onsager).abs() < 3e-6, "{per_site} vs Onsager {onsager}");
    // <E> per site at T_c tends to -sqrt(2).
    let e = ising.kaufman_mean_energy(t_c).unwrap() / ising.sites() as f64;
    assert!((e + std::f64::consts::SQRT_2).abs() < 0.01, "{e}");
}

#[test]
fn the_relaxation_holds_the_spin_partition_function_and_its_gradient() {
    let t = 4.0;
    let ising = Ising::new(2, 1.0, 0.2).unwrap();
    let field = IsingField::new(ising, t, 1.0).unwrap();
    // ln ∫ exp(-u) over R^4 by the trapezoid rule (spectrally accurate for this smooth, fast
    // decaying integrand), against ln Z of the spins by enumeration.
    // K's eigenvalues lie in [1, 3]: the grid reaches 7 standard deviations past the farthest
    // mean (|K s| <= 3) at a step of 0.6 of the narrowest.
    let (points, half_width) = (54usize, 16.0);
    let step = 2.0 * half_width / (points - 1) as f64;
    let axis: Vec<f64> = (0..points).map(|i| -half_width + step * i as f64).collect();
    let mut sum = 0.0;
    for &a in &axis {
        for &b in &axis {
            for &c in &axis {
                for &d in &axis {
                    sum += (-field.energy(&[a, b, c, d])).exp();
                }
            }
        }
    }
    let log_z_field = sum.ln() + 4.0 * step.ln();
    let exact = ising.enumerate(t).unwrap().log_z;
    let got = field.log_z_spins(log_z_field);
    assert!((got - exact).abs() < 1e-7, "{got} vs {exact}");

    // du/dx against central differences.
    let x = [0.3, -1.2, 2.0, 0.7];
    let mut grad = [0.0; 4];
    let u = field.energy_and_gradient(&x, &mut grad);
    assert!((u - field.energy(&x)).abs() < 1e-14);
    for i in 0..4 {
        let (mut up, mut down) = (x, x);
        up[i] += 1e-6;
        down[i] -= 1e-6;
        let fd = (field.energy(&up) - field.energy(&down)) / 2e-6;
        assert!((fd - grad[i]).abs() < 1e-7, "{i}: {fd} vs {}", grad[i]);
    }
    // E[E | x] against the explicit sum over the 16 spin states weighted by p(s | x).
    let up = field.spin_up_probabilities(&x).unwrap();
    let mut mean = 0.0;
    for state in 0u32..16 {
        let spins: Vec<i8> = (0..4).map(|i| if state >> i & 1 == 1 { 1 } else { -1 }).collect();
        let p: f64 = (0..4).map(|i| if spins[i] == 1 { up[i] } else { 1.0 - up[i] }).product();
        mean += p * ising.energy(&spins).unwrap();
    }
    assert!((field.mean_energy_given(&x).unwrap() - mean).abs() < 1e-12);
}

#[test]
fn bad_ising_input_gets_clear_errors() {
    let text = |r: cgflow::Result<Ising>| r.unwrap_err().to_string();
    assert!(text(Ising::new(1, 1.0, 0.0)).contains("L >= 2"));
    assert!(text(Ising::new(3, f64::NAN, 0.0)).contains("finite"));
    let ising = Ising::new(5, 1.0, 0.0).unwrap();
    for t in [0.0, -1.0, f64::INFINITY, f64::NAN] {
        assert!(ising.kaufman_log_z(t).unwrap_err().to_string().contains("temperature"), "{t}");
    }
    assert!(ising.enumerate(2.0).unwrap_err().to_string().contains("at most 20 sites"));
    let field_on = Ising::new(3, 1.0, 0.1).unwrap();
    assert!(field_on.kaufman_log_z(2.0).unwrap_err().to_string().contains("h = 0"));
    assert!(ising.energy(&[1; 24]).unwrap_err().to_string().contains("24 spins"));
    assert!(ising.energy(&[0; 25]).unwrap_err().to_string().contains("not +1 or -1"));
    assert!(IsingField::new(ising, 2.0, 0.0).unwrap_err().to_string().contains("margin"));
    let huge = Ising::new(65, 1.0, 0.0).unwrap();
    assert!(IsingField::new(huge, 2.0, 0.5).unwrap_err().to_string().contains("at most 4096 sites"));
    // A wrong length is NaN from the trait (which never panics), and an error from the methods.
    let field = IsingField::new(ising, 2.0, 0.5).unwrap();
    assert!(field.energy(&[0.0; 3]).is_nan());
    assert!(field.spin_up_probabilities(&[0.0; 3]).is_err());
}

#[test]
fn the_generator_reweights_to_the_exact_values_at_l4() {
    use cgflow::flow::ising_bg::{run_ising_bg, IsingBgConfig};
    for t in [2.0, 2.27, 3.0] {
        // A smaller, shorter run than `fast`, with the example term weighted 10x (about 11 s per
        // temperature on two cores). Seeds 1-6 of this configuration: 5 keep all nine estimates
        // within 3 standard errors (largest |z| 2.44); seed 4 has |z| 3.1-3.3 at T 3 in this and
        // two other configurations alike (hidden 32 at alpha 1, with and without this ordering of
        // the row sums), which points to its evaluation draws. At alpha 1 seeds 1, 3 and 4 failed
        // (ESS 206 of 20,000 at T 2 for seed 1; z +4.2 in <|M|> for seed 3): a generator that
        // drops part of the disordered tail, which this test is there to catch.
        let config = IsingBgConfig {
            hidden: 32,
            ml_steps: 1000,
            mixed_steps: 400,
            alpha: 10.0,
            eval_samples: 20_000,
            ..IsingBgConfig::fast(4, t)
        };
        let outcome = run_ising_bg(&config, &mut |_, _, _| {}).unwrap();
        let exact = outcome.exact.as_ref().unwrap();
        let e = outcome.estimates;
        eprintln!(
            "T {t}: ESS {:.0} of {}; E {:.4} +- {:.4} (exact {:.4}); |M| {:.4} +- {:.4} (exact {:.4}); F {:.4} +- {:.4} (exact {:.4})",
            e.ess, e.samples, e.mean_energy.value, e.mean_energy.standard_error, exact.mean_energy,
            e.mean_abs_magnetisation.value, e.mean_abs_magnetisation.standard_error, exact.mean_abs_magnetisation,
            e.free_energy.value, e.free_energy.standard_error, exact.free_energy
        );
        for (name, got, want) in [
            ("<E>", e.mean_energy, exact.mean_energy),
            ("<|M|>", e.mean_abs_magnetisation, exact.mean_abs_magnetisation),
            ("F", e.free_energy, exact.free_energy),
        ] {
            assert!(
                got.standard_error > 0.0 && got.standard_error < 0.05 * want.abs().max(1.0),
                "T {t} {name}: {got:?}"
            );
            let z = (got.value - want) / got.standard_error;
            assert!(
                z.abs() < 3.0,
                "T {t} {name}: {} +- {} vs exact {want} (z = {z:.2})",
                got.value,
                got.standard_error
            );
        }
    }
}

#[test]
fn cgflow_bg_ising_writes_its_figure_and_report_and_refuses_bad_settings() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("ising");
    let run = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_cgflow"))
            .args(["bg", "--system", "ising", "--out", out.to_str().unwrap()])
            .args(extra)
            .output()
            .unwrap()
    };
    let done = run(&[
        "--size",
        "3",
        "--temperature",
        "3.0",
        "--ml-steps",
        "60",
        "--mixed-steps",
        "20",
        "--eval-samples",
        "2000",
    ]);
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    assert!(std::fs::metadata(out.join("generator.png")).unwrap().len() > 10_000);
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let exact = Ising::new(3, 1.0, 0.0).unwrap().enumerate(3.0).unwrap();
    assert_eq!(report["mean_energy"]["exact"].as_f64().unwrap(), exact.mean_energy);
    assert_eq!(report["free_energy"]["exact"].as_f64().unwrap(), exact.free_energy);
    assert!(
        report["ess"].as_f64().unwrap() > 1.0
            && report["mean_abs_magnetisation"]["standard_error"].as_f64().unwrap() > 0.0
    );
    for (args, why) in [
        (&["--size", "1"][..], "L >= 2"),
        (&["--temperature=-2"][..], "temperature must be finite and positive"),
        (&["--temperature", "nan"][..], "temperature must be finite and positive"),
        (&["--size", "65"][..], "at most 4096 sites"),
    ] {
        let failed = run(args);
        let stderr = String::from_utf8_lossy(&failed.stderr);
        assert!(failed.status.code() == Some(1) && stderr.contains(why), "{args:?}: {stderr}");
    }
}
