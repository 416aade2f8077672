//! Prints how closely the copy trick (`ReplicaEnergy`) reproduces one-configuration-per-call
//! evaluations (`OpenMmEnergy`) for perturbed alanine dipeptide configurations, on a platform.
//!
//! `cargo run --release --example copy_trick_check -- [PLATFORM] [CONFIGS] [COPIES]`
//! (defaults: CPU 100 50).

use cgflow::energy::{
    Batch, EnergyModel, GradientModel, OpenMmEnergy, OpenMmEnergyConfig, ReplicaEnergy, ReplicaEnergyConfig,
};
use cgflow::openmm::{Platform, System};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let platform = Platform::new(args.get(1).map_or("CPU", String::as_str))?;
    let configs: usize = args.get(2).map_or(Ok(100), |s| s.parse())?;
    let copies: usize = args.get(3).map_or(Ok(50), |s| s.parse())?;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let system = System::from_xml_file(&root.join("data/alanine_dipeptide/aldp_obc1.xml"))?;
    let start = cgflow::io::read_positions(&root.join("data/alanine_dipeptide/position_min_energy_nm.xyz"))?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(12);
    let noise = Normal::new(0.0, 0.01)?;
    let x: Vec<f64> = (0..configs)
        .flat_map(|_| start.positions_nm.iter().map(|v| v + noise.sample(&mut rng)).collect::<Vec<_>>())
        .collect();
    let batch = Batch::new(&x, 22)?;
    let single = OpenMmEnergy::new(&system, &platform, &OpenMmEnergyConfig::default())?.evaluate(&batch)?;
    let mut replica = ReplicaEnergy::new(&system, &platform, &ReplicaEnergyConfig { copies, ..Default::default() })?;
    let batched = replica.evaluate_gradients(&batch)?;
    let stride = 66;
    let mut worst = 0.0f64;
    for c in 0..configs {
        let (a, b) =
            (&batched.gradients[c * stride..(c + 1) * stride], &single.gradients[c * stride..(c + 1) * stride]);
        let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let diff = a.iter().zip(b).fold(0.0f64, |m, (p, q)| m.max((p - q).abs()));
        worst = worst.max(diff / scale);
    }
    let total: f64 = single.reduced_energies.iter().sum();
    println!("platform {}, {configs} configurations, {copies} copies per call", platform.name());
    println!("energy offset per copy: {:.9} kJ/mol", replica.energy_offset_kj_per_mol());
    println!("forces: max over configurations of max|dF| / max|F| = {worst:.3e}");
    println!(
        "batch energy: copy trick {:.9} kT, sum of single evaluations {total:.9} kT, relative difference {:.3e}",
        batched.total_reduced_energy,
        ((batched.total_reduced_energy - total) / total).abs()
    );
    Ok(())
}
