//! The copy trick (ReplicaEnergy) against the one-configuration-per-call evaluator.

use cgflow::energy::{
    Batch, EnergyModel, GradientModel, OpenMmEnergy, OpenMmEnergyConfig, ReplicaEnergy, ReplicaEnergyConfig,
};
use cgflow::openmm::{Context, Integrator, Platform, System};

use crate::util::{aldp, min_energy_positions, perturbed, relative_max_difference};

const N_ATOMS: usize = 22;

fn aldp_system() -> System {
    System::from_xml_file(&aldp("aldp_obc1.xml")).expect("system")
}

fn pool(platform: &str) -> OpenMmEnergy {
    let config = OpenMmEnergyConfig { workers: Some(2), ..Default::default() };
    OpenMmEnergy::new(&aldp_system(), &Platform::new(platform).expect("platform"), &config).expect("pool")
}

fn replica(platform: &str, copies: usize) -> ReplicaEnergy {
    let config = ReplicaEnergyConfig { copies, ..Default::default() };
    ReplicaEnergy::new(&aldp_system(), &Platform::new(platform).expect("platform"), &config).expect("replica")
}

#[test]
fn offset_is_the_reaction_field_constant_and_exact() {
    // One copy with the 2 nm cut-off against the NoCutoff system, double precision: the energy
    // difference is the analytic offset, and it does not depend on the configuration.
    let system = aldp_system();
    let (copy, offset) = system.replicate(1, 2.0).expect("replicate");
    let reference = Platform::new("Reference").expect("platform");
    let mut nocutoff = Context::new(&system, &reference, Integrator::Verlet).expect("context");
    let mut cutoff = Context::new(&copy, &reference, Integrator::Verlet).expect("context");
    let x = perturbed(&min_energy_positions(), 5, 0.01, 3);
    for c in x.chunks_exact(3 * N_ATOMS) {
        let (e0, f0) = nocutoff.energy_and_forces(c).expect("nocutoff");
        let (e1, f1) = cutoff.energy_and_forces(c).expect("cutoff");
        assert!((e1 - e0 - offset).abs() < 1e-9, "E_cut - E_nocut = {} vs offset {offset}", e1 - e0);
        assert!(relative_max_difference(&f1, &f0) < 1e-12);
    }
    // Independently of the C++ code: -ONE_4PI_EPS0/r_c * sum q_i q_j over the non-excluded pairs,
    // with the charges and exceptions read straight from the XML and the constant from SI values.
    let xml = std::fs::read_to_string(aldp("aldp_obc1.xml")).expect("xml");
    let nonbonded = &xml[xml.find("name=\"NonbondedForce\"").expect("nonbonded")..];
    let attribute = |line: &str, name: &str| -> f64 {
        let start = line.find(&format!(" {name}=\"")).expect("attribute") + name.len() + 3;
        line[start..start + line[start..].find('"').expect("quote")].parse().expect("number")
    };
    let particles = &nonbonded[..nonbonded.find("</Particles>").expect("particles")];
    let charges: Vec<f64> = particles.lines().filter(|l| l.contains("<Particle ")).map(|l| attribute(l, "q")).collect();
    assert_eq!(charges.len(), N_ATOMS);
    let exceptions = &nonbonded[..nonbonded.find("</Exceptions>").expect("exceptions")];
    let excluded: std::collections::BTreeSet<(usize, usize)> = exceptions
        .lines()
        .filter(|l| l.contains("<Exception "))
        .map(|l| {
            let (a, b) = (attribute(l, "p1") as usize, attribute(l, "p2") as usize);
            (a.min(b), a.max(b))
        })
        .collect();
    let mut pairs = 0.0;
    for i in 0..N_ATOMS {
        for j in i + 1..N_ATOMS {
            if !excluded.contains(&(i, j)) {
                pairs += charges[i] * charges[j];
            }
        }
    }
    let (e_charge, avogadro, vacuum_permittivity) = (1.602176634e-19, 6.02214076e23, 8.8541878128e-12);
    let epsilon0 = 1e-6 * vacuum_permittivity / (e_charge * e_charge * avogadro);
    let one_4pi_eps0 = 1.0 / (4.0 * std::f64::consts::PI * epsilon0);
    let expected = -one_4pi_eps0 / 2.0 * pairs;
    assert!((offset - expected).abs() < 1e-9, "offset {offset} vs {expected}");
}

#[test]
fn copy_trick_matches_one_per_call_on_reference_exactly() {
    let x = perturbed(&min_energy_positions(), 30, 0.01, 11);
    let batch = Batch::new(&x, N_ATOMS).expect("batch");
    let mut single = pool("Reference");
    let expected = single.evaluate(&batch).expect("pool");
    // 30 configurations in copies of 8: three full calls and one padded one.
    let mut copies = replica("Reference", 8);
    let got = copies.evaluate_gradients(&batch).expect("replica");
    let total: f64 = expected.reduced_energies.iter().sum();
    assert!((got.total_reduced_energy - total).abs() < 1e-9 * total.abs(), "{} vs {total}", got.total_reduced_energy);
    for c in 0..30 {
        let r = 3 * N_ATOMS;
        let rel = relative_max_difference(&got.gradients[c * r..(c + 1) * r], &expected.gradients[c * r..(c + 1) * r]);
        assert!(rel < 1e-10, "configuration {c}: {rel:e}");
    }
    assert_eq!(GradientModel::evaluation_count(&copies), 30);
    assert_eq!(copies.overhead_evaluations(), 1, "one padded call, one filler evaluation");
}

#[test]
fn copy_trick_matches_one_per_call_on_cpu_for_100_configurations() {
    let x = perturbed(&min_energy_positions(), 100, 0.01, 12);
    let batch = Batch::new(&x, N_ATOMS).expect("batch");
    let expected = pool("CPU").evaluate(&batch).expect("pool");
    let mut copies = replica("CPU", 50);
    let got = copies.evaluate_gradients(&batch).expect("replica");
    let r = 3 * N_ATOMS;
    let mut worst = 0.0f64;
    for c in 0..100 {
        worst = worst
            .max(relative_max_difference(&got.gradients[c * r..(c + 1) * r], &expected.gradients[c * r..(c + 1) * r]));
    }
    assert!(worst < 1e-4, "forces differ by up to {worst:e} relative (single-precision CPU platform)");
    let total: f64 = expected.reduced_energies.iter().sum();
    let rel = ((got.total_reduced_energy - total) / total).abs();
    assert!(
        rel < 1e-5,
        "batch energy {} vs sum of single energies {total} after the offset (rel {rel:e})",
        got.total_reduced_energy
    );
    assert_eq!(GradientModel::evaluation_count(&copies), 100);
    assert_eq!(copies.overhead_evaluations(), 0);
}

#[test]
fn oversized_configurations_fall_back_to_the_exact_single_context() {
    // Stretch one configuration beyond the cut-off diameter: it must still be evaluated exactly.
    let mut x = perturbed(&min_energy_positions(), 4, 0.005, 13);
    for v in &mut x[3 * N_ATOMS..6 * N_ATOMS] {
        *v *= 6.0;
    }
    let batch = Batch::new(&x, N_ATOMS).expect("batch");
    let mut copies = replica("Reference", 4);
    assert!(!copies.fits(batch.config(1)));
    let got = copies.evaluate_gradients(&batch).expect("replica");
    let expected = pool("Reference").evaluate(&batch).expect("pool");
    let total: f64 = expected.reduced_energies.iter().sum();
    assert!((got.total_reduced_energy - total).abs() < 1e-9 * total.abs().max(1.0));
    assert!(relative_max_difference(&got.gradients, &expected.gradients) < 1e-10);
}
