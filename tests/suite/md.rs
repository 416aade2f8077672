//! Langevin MD through the shim: reproducible with a seed, and physically sensible.

use cgflow::openmm::{Context, Integrator, Platform, System};

use crate::util::{aldp, min_energy_positions};

fn langevin_context(seed: i32) -> Context {
    let system = System::from_xml_file(&aldp("aldp_obc1.xml")).expect("system");
    let integrator = Integrator::LangevinMiddle { temperature_k: 300.0, friction_per_ps: 1.0, step_ps: 0.001, seed };
    let mut context = Context::new(&system, &Platform::new("Reference").expect("p"), integrator).expect("context");
    context.set_positions(&min_energy_positions()).expect("positions");
    context.set_velocities_to_temperature(300.0, seed).expect("velocities");
    context
}

#[test]
fn langevin_md_is_reproducible_and_thermalises() {
    // The Reference platform's Langevin random numbers come from one process-wide generator,
    // reseeded when a context is created: two contexts are reproducible one after the other, not
    // interleaved.
    let mut a = langevin_context(42);
    a.step(2000).expect("steps");
    let xa = a.positions().expect("x");
    let mut b = langevin_context(42);
    b.step(2000).expect("steps");
    let xb = b.positions().expect("x");
    assert_eq!(xa, xb, "same seed, same platform: same trajectory");
    assert!((a.time_ps().expect("t") - 2.0).abs() < 1e-9);
    let moved = xa.iter().zip(min_energy_positions()).fold(0.0f64, |m, (p, q)| m.max((p - q).abs()));
    assert!(moved > 0.01, "atoms moved by at most {moved} nm in 2 ps");
    // Kinetic energy averaged over 2 ps, against (3N/2) kT for N = 22 atoms (no constraints, no
    // centre-of-mass removal in the kinetic energy): 82.3 kJ/mol at 300 K. Langevin at 1/ps
    // relaxes quickly; 200 samples of a 66-dof system fluctuate by about 2 %.
    let mut mean = 0.0;
    for _ in 0..200 {
        a.step(10).expect("steps");
        mean += a.energies().expect("energies").1 / 200.0;
    }
    let expected = 1.5 * 22.0 * 8.314462618e-3 * 300.0;
    assert!((mean - expected).abs() < 0.12 * expected, "mean kinetic energy {mean} vs {expected} kJ/mol");
    let mut c = langevin_context(7);
    c.step(2000).expect("steps");
    assert_ne!(c.positions().expect("x"), xa, "another seed, another trajectory");
}

#[test]
fn velocities_round_trip() {
    let system = System::from_xml_file(&aldp("aldp_obc1.xml")).expect("system");
    let mut context = Context::new(&system, &Platform::new("Reference").expect("p"), Integrator::Verlet).expect("c");
    let v: Vec<f64> = (0..66).map(|i| (i as f64 - 33.0) * 0.01).collect();
    context.set_velocities(&v).expect("set");
    let back = context.velocities().expect("get");
    assert!(v.iter().zip(&back).all(|(a, b)| (a - b).abs() < 1e-12));
    assert!(context.set_velocities(&v[..60]).is_err());
}
