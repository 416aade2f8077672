//! Microseconds per configuration of the ALDP internal-coordinate transform on a batch of 1024:
//! forward (x -> z), inverse (z -> x) and the pull-back of du/dx to du/dz, against one OpenMM
//! energy+force evaluation measured in the same run (the copy trick on the CPU platform, the
//! fastest OpenMM path here, so the strictest yardstick). Goal: all three < 5 % of one evaluation.
//!
//! Run: `cargo bench --bench coords`.

#[path = "common/mod.rs"]
mod common;
use common::best_of;

use cgflow::coords::aldp;
use cgflow::energy::{
    Batch, EnergyModel, GradientModel, OpenMmEnergy, OpenMmEnergyConfig, ReplicaEnergy, ReplicaEnergyConfig,
};
use cgflow::openmm::{Platform, System};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

fn main() -> anyhow::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let x0 = cgflow::io::read_positions(&root.join("data/alanine_dipeptide/position_min_energy_nm.xyz"))?.positions_nm;
    let n = 1024;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let noise = Normal::new(0.0, 0.01)?;
    let x: Vec<f64> = (0..n).flat_map(|_| x0.iter().map(|v| v + noise.sample(&mut rng)).collect::<Vec<_>>()).collect();
    let transform = aldp::internal_coordinates(&x0)?;
    let (z, _) = transform.forward(&x)?;
    let (xc, _) = transform.inverse(&z)?;
    let grad: Vec<f64> = (0..xc.len()).map(|i| ((i % 7) as f64 - 3.0) * 10.0).collect();

    let per = |seconds: f64| seconds / n as f64 * 1e6;
    let forward = per(best_of(20, || {
        transform.forward(&x).expect("forward");
    }));
    let inverse = per(best_of(20, || {
        transform.inverse(&z).expect("inverse");
    }));
    let pullback = per(best_of(20, || {
        transform.pullback(&z, &xc, &grad).expect("pullback");
    }));

    let system = System::from_xml_file(&root.join("data/alanine_dipeptide/aldp_obc1.xml"))?;
    let mut energy = ReplicaEnergy::new(&system, &Platform::new("CPU")?, &ReplicaEnergyConfig::default())?;
    let batch = Batch::new(&xc, 22)?;
    energy.evaluate_gradients(&batch)?;
    let openmm = per(best_of(3, || {
        energy.evaluate_gradients(&batch).expect("energy");
    }));

    let system_pool = OpenMmEnergy::new(&system, &Platform::new("CPU")?, &OpenMmEnergyConfig::default());
    let mut pool = system_pool?;
    let per_call = per(best_of(2, || {
        pool.evaluate(&batch).expect("energy");
    }));
    let total = forward + inverse + pullback;
    println!(
        "ALDP internal coordinates, batch {n}, {} threads:",
        std::thread::available_parallelism().map_or(1, |t| t.get())
    );
    println!("  forward  x -> z        {forward:8.3} us/config");
    println!("  inverse  z -> x        {inverse:8.3} us/config");
    println!("  pull-back du/dx -> du/dz {pullback:6.3} us/config");
    println!("  all three              {total:8.3} us/config");
    println!("one OpenMM energy+force evaluation (copy trick, CPU): {openmm:.1} us/config");
    println!("one OpenMM energy+force evaluation (one per call, pinned workers): {per_call:.1} us/config");
    println!(
        "transform cost / OpenMM cost: {:.2} % of the copy trick, {:.2} % of one-per-call (goal < 5 %)",
        100.0 * total / openmm,
        100.0 * total / per_call
    );
    Ok(())
}
