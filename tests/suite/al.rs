//! Active learning of the Müller-Brown PMF end to end, against the exact PMF by quadrature.

use cgflow::al::muller_brown::{run_muller_brown, MbAlConfig};

// Eight iterations (about 25 s): the KLD falls below 0.01 at the seventh and the search has walked from
// the start basin to s = 1 by then. The loop does not stop by itself yet (the ensemble keeps some
// uncertainty on the steep wall near s = 1.1), so the run is capped.
#[test]
fn muller_brown_active_learning_finds_all_minima_and_the_exact_pmf() {
    let config = MbAlConfig { max_iterations: 8, ..MbAlConfig::fast() };
    let t0 = std::time::Instant::now();
    let out = run_muller_brown(&config, &mut |it| {
        eprintln!(
            "iteration {:2}: {:5} points, {:8} evaluations, KLD {:.4}, new {:?}, holdout rmse {:.3}, label rmse {:.3}, {:.1} s",
            it.iteration,
            it.points,
            it.evaluations,
            it.kld,
            it.new_centres,
            it.holdout_rmse_kt,
            it.label_rmse_kt,
            t0.elapsed().as_secs_f64()
        )
    })
    .unwrap();
    let grid: Vec<f64> = (0..19).map(|i| -2.5 + 0.2 * i as f64).collect();
    let (mean, std) = out.ensemble.predict(&grid).unwrap();
    for ((s, m), d) in grid.iter().zip(&mean).zip(&std) {
        eprintln!("s {s:5.2}: mean {m:7.3} std {d:6.3}");
    }
    let last = out.log.last().unwrap();
    eprintln!("converged {} after {:.1} s", out.converged, t0.elapsed().as_secs_f64());
    // The start data covers only the deepest basin (s around -2); the other two minima of the
    // exact PMF lie near s = -0.55 and s = 0.6.
    let near = |c: f64| out.points.iter().any(|&s| (s - c).abs() < 0.15);
    assert!(out.points.iter().take(config.start_points).all(|&s| s < -1.6));
    assert!(near(-0.55) && near(0.6), "minima not found");
    assert!(last.kld < 0.01, "final KLD {}", last.kld);
}
