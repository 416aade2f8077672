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
            TorsionRestraint::harmonic(aldp::PHI_ATOMS, k, centres[w].0),
            TorsionRestraint::harmonic(aldp::PSI_ATOMS, k, centres[w].1),
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
        vec![TorsionRestraint::harmonic([0, 1, 2, 40], 1.0, 0.0)]
    });
    let m = bad.expect_err("atom 40").to_string();
    assert!(m.contains("atom 40") && m.contains("22 atoms"), "{m}");
}

/// Both omegas of every walker, radians.
fn omegas(positions: &[f64]) -> Vec<[f64; 2]> {
    positions
        .chunks_exact(66)
        .map(|x| {
            let p = |a: usize| nalgebra::Point3::new(x[3 * a], x[3 * a + 1], x[3 * a + 2]);
            aldp::OMEGA_ATOMS.map(|[a, b, c, d]| cgflow::coords::geometry::dihedral(&p(a), &p(b), &p(c), &p(d)))
        })
        .collect()
}

#[test]
fn trans_walls_keep_peptide_bonds_trans_in_windows_that_otherwise_turn_cis() {
    // Windows pulled across the phi = 0 barrier from the minimum-energy structure: without walls
    // 8 of their 48 peptide bonds turn cis within the first picosecond and stay cis for the 20 ps
    // measured; with the walls none does.
    let system = System::from_xml_file(&aldp_file("aldp_obc1.xml")).expect("system");
    let cpu = Platform::new("CPU").expect("CPU").with_property("Threads", "1");
    let pi = std::f64::consts::PI;
    // The centres of the 24 x 24 lattice at phi = 22 and 37 degrees, every other psi.
    let step = 2.0 * pi / 24.0;
    let centres: Vec<(f64, f64)> =
        (0..24).map(|i| (-pi + (12.5 + (i / 12) as f64) * step, -pi + (0.5 + 2.0 * (i % 12) as f64) * step)).collect();
    let config = WalkerConfig { walkers: centres.len(), seed: 4, ..Default::default() };
    let run = |wall_k: f64| {
        let plan = |w: usize| {
            let mut r = vec![
                TorsionRestraint::harmonic(aldp::PHI_ATOMS, 100.0, centres[w].0),
                TorsionRestraint::harmonic(aldp::PSI_ATOMS, 100.0, centres[w].1),
            ];
            if wall_k > 0.0 {
                r.extend(aldp::OMEGA_ATOMS.map(|atoms| TorsionRestraint {
                    atoms,
                    k_kj_per_mol_rad2: wall_k,
                    centre_rad: pi,
                    flat_half_width_rad: cgflow::md::umbrella::TRANS_WALL_HALF_WIDTH_RAD,
                }));
            }
            r
        };
        let mut walkers = Walkers::new(&system, &cpu, &config, &min_energy_positions(), plan).expect("walkers");
        walkers.step(2000).expect("steps");
        omegas(&walkers.positions().expect("x")).iter().flatten().filter(|w| w.abs() < pi / 2.0).count()
    };
    let without = run(0.0);
    assert!(without > 0, "no cis omega without walls: the control lost its power");
    assert_eq!(run(1000.0), 0, "a peptide bond turned cis despite the walls");
}
