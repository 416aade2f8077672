//! Langevin MD through the shim: reproducible with a seed, and physically sensible.

use cgflow::openmm::{Context, Integrator, Platform, System};

use crate::util::{aldp, min_energy_positions};

fn langevin_context(seed: i32) -> Context {
    let system = System::from_xml_file(&aldp("aldp_obc1.xml")).expect("system");
    let integrator = Integrator::LangevinMiddle { temperature_k: 300.0, friction_per_ps: 5.0, step_ps: 0.001, seed };
    // The CPU platform keeps its random state per Context (the Reference platform's Langevin draws
    // from one process-wide generator that other test threads may use at the same time); one
    // thread makes its trajectories bit-reproducible.
    let cpu = Platform::new("CPU").expect("p").with_property("Threads", "1");
    let mut context = Context::new(&system, &cpu, integrator).expect("context");
    context.set_positions(&min_energy_positions()).expect("positions");
    context.set_velocities_to_temperature(300.0, seed).expect("velocities");
    context
}

#[test]
fn langevin_md_is_reproducible_and_thermalises() {
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
    // Kinetic energy averaged over 10 ps against (3N - 3)/2 kT: N = 22 atoms, no constraints, and the
    // system's CMMotionRemover keeps the centre-of-mass momentum at zero: 78.57 kJ/mol at 300 K.
    // One sample of a 63-dof kinetic energy fluctuates by sqrt(2/63) = 18 %; at friction 5/ps it
    // decorrelates within about 0.1 ps, so 10 ps give about 100 independent samples: 2 % error.
    let mut mean = 0.0;
    for _ in 0..1000 {
        a.step(10).expect("steps");
        mean += a.energies().expect("energies").1 / 1000.0;
    }
    let expected = 1.5 * 21.0 * 8.314462618e-3 * 300.0;
    assert!((mean - expected).abs() < 0.08 * expected, "mean kinetic energy {mean} vs {expected} kJ/mol");
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
