//! Active learning of the Müller-Brown PMF end to end through the one driver, against the exact
//! PMF by quadrature.

use cgflow::al::config::AlConfig;
use cgflow::al::driver::{ActiveLearning, AlMode};
use cgflow::al::muller_brown::MullerBrownProblem;

// The KLD falls below 0.01 and the search walks from the start basin to s = 1 within the capped
// iterations (the ensemble keeps some uncertainty on the steep wall near s = 1.1, so the loop does
// not stop by itself).
#[test]
fn muller_brown_active_learning_finds_all_minima_and_the_exact_pmf() {
    let config = AlConfig { max_iterations: 8, ..MullerBrownProblem::preset() };
    let problem = MullerBrownProblem::new(-2.0, 0.3).expect("problem");
    let al = ActiveLearning::new(config.clone(), Box::new(problem)).expect("driver");
    let t0 = std::time::Instant::now();
    let mut quiet = |_| {};
    let mut state = al.start(AlMode::ActiveLearning, &mut quiet).expect("start");
    let start: Vec<f64> = state.points.train.iter().map(|p| p[0]).collect();
    assert_eq!(start.len(), config.start_points);
    while !state.converged {
        let it = al.iterate(&mut state, &mut quiet).expect("iterate");
        eprintln!(
            "iteration {:2}: {:5} points, {:8} evaluations, KLD {:.4}, new {:?}, {:.1} s",
            it.iteration,
            it.train_points,
            it.evaluations,
            it.kld.unwrap_or(f64::NAN),
            it.new_centres_deg,
            t0.elapsed().as_secs_f64()
        );
    }
    let grid: Vec<f64> = (0..19).map(|i| -2.5 + 0.2 * i as f64).collect();
    let (mean, std) = state.ensemble.predict(&grid).unwrap();
    for ((s, m), d) in grid.iter().zip(&mean).zip(&std) {
        eprintln!("s {s:5.2}: mean {m:7.3} std {d:6.3}");
    }
    // The start data covers only the deepest basin (s around -2); the other two minima of the
    // exact PMF lie near s = -0.55 and s = 0.6.
    let points: Vec<f64> = state.points.train.iter().map(|p| p[0]).collect();
    let near = |c: f64| points.iter().any(|&s| (s - c).abs() < 0.15);
    assert!(start.iter().all(|&s| (-2.3..-1.7).contains(&s)));
    assert!(near(-0.55) && near(0.6), "minima not found");
    let last = state.log.last().expect("log");
    assert!(last.kld.expect("kld") < 0.01, "final KLD {:?}", last.kld);
    // Every evaluation is a flow sample of training or labels: no start-up simulation.
    assert_eq!(last.costs.startup_md + last.costs.other, 0);
    assert_eq!(last.evaluations, last.costs.energy_training + last.costs.labels + last.costs.test_labels);
}
