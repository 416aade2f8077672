//! Multi-walker Langevin MD: correct equilibrium statistics, exact resume, umbrella restraints.

use cgflow::coords::aldp;
use cgflow::md::{WalkerConfig, Walkers};
use cgflow::openmm::{Platform, System, TorsionRestraint};

use crate::util::{aldp as aldp_file, min_energy_positions, spring_separation_variance, spring_system};

#[test]
fn harmonic_spring_samples_the_right_variance() {
    let k = 500.0; // kJ/mol/nm^2: sigma = sqrt(kT/k) = 0.0706 nm
    let config = WalkerConfig { walkers: 64, step_fs: 2.0, friction_per_ps: 5.0, seed: 17, ..Default::default() };
    let cpu = Platform::new("CPU").expect("CPU");
    let mut walkers =
        Walkers::new(&spring_system(k), &cpu, &config, &[0.0, 0.0, 0.0, 0.05, 0.0, 0.0], |_| vec![]).expect("walkers");
    walkers.step(2000).expect("equilibrate");
    let variance = spring_separation_variance(&mut walkers, 200, 50);
    let expected = 8.314462618e-3 * 300.0 / k;
    // 64 walkers x 200 frames x 3 components, frames 0.1 ps apart (correlation time about
    // 1/friction = 0.2 ps): roughly 10^4 independent samples, 1.5 % statistical error.
    assert!((variance / expected - 1.0).abs() < 0.06, "variance {variance} vs kT/k = {expected}");
    assert_eq!(walkers.evaluations(), 64 * 12000);
}

#[test]
fn resume_from_a_checkpoint_continues_exactly() {
    let system = System::from_xml_file(&aldp_file("aldp_obc1.xml")).expect("system");
    // Bit-identical only single-threaded: with two threads OpenMM's CPU platform differs from itself
    // by about 1e-6 nm after 1000 steps even without a checkpoint (DeterministicForces or not).
    let cpu = Platform::new("CPU").expect("CPU").with_property("Threads", "1");
    let config = WalkerConfig { walkers: 8, seed: 5, recentre_every_steps: 300, ..Default::default() };
    let make = || Walkers::new(&system, &cpu, &config, &min_energy_positions(), |_| vec![]).expect("walkers");
    let mut straight = make();
    straight.step(500).expect("steps");
    let checkpoint = straight.checkpoint().expect("checkpoint");
    straight.step(500).expect("steps");
    let expected = straight.positions().expect("positions");

    // A fresh process would rebuild the walkers and restore the checkpoint.
    let mut resumed = make();
    resumed.restore(&checkpoint).expect("restore");
    assert_eq!(resumed.steps_done(), 500);
    resumed.step(500).expect("steps");
    assert_eq!(resumed.positions().expect("positions"), expected, "bit-identical continuation");
    assert_eq!(resumed.evaluations(), 8 * 1000);
}

#[test]
fn umbrella_restraints_hold_each_walker_near_its_centre() {
    let system = System::from_xml_file(&aldp_file("aldp_obc1.xml")).expect("system");
    let cpu = Platform::new("CPU").expect("CPU");
    let centres = [(-1.5f64, 2.5f64), (-1.2, -0.6), (1.0, -0.8), (-2.6, -2.9)];
    let config = WalkerConfig { walkers: 4, seed: 9, ..Default::default() };
    let k = 500.0; // kJ/mol/rad^2: about 0.07 rad of thermal spread
    let mut walkers = Walkers::new(&system, &cpu, &config, &min_energy_positions(), |w| {
        vec![
            TorsionRestraint { atoms: aldp::PHI_ATOMS, k_kj_per_mol_rad2: k, centre_rad: centres[w].0 },
            TorsionRestraint { atoms: aldp::PSI_ATOMS, k_kj_per_mol_rad2: k, centre_rad: centres[w].1 },
        ]
    })
    .expect("walkers");
    walkers.step(3000).expect("steps");
    let angles = aldp::phi_psi(&walkers.positions().expect("positions")).expect("angles");
    for (w, [phi, psi]) in angles.iter().enumerate() {
        let d = |a: f64, b: f64| cgflow::coords::geometry::wrap_angle(a - b).abs();
        assert!(
            d(*phi, centres[w].0) < 0.5 && d(*psi, centres[w].1) < 0.5,
            "walker {w}: ({phi}, {psi}) vs {:?}",
            centres[w]
        );
    }
    let bad = Walkers::new(&system, &cpu, &config, &min_energy_positions(), |_| {
        vec![TorsionRestraint { atoms: [0, 1, 2, 40], k_kj_per_mol_rad2: 1.0, centre_rad: 0.0 }]
    });
    let m = bad.expect_err("atom 40").to_string();
    assert!(m.contains("atom 40") && m.contains("22 atoms"), "{m}");
}
