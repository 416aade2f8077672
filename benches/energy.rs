//! Microseconds per ALDP energy+force evaluation for a batch of 1024 configurations, three ways in
//! one run on the same machine:
//! 1. `OpenMmEnergy`: one Context per worker thread (pinned), one configuration per OpenMM call;
//! 2. `ReplicaEnergy`: the copy trick, many configurations per OpenMM call (per-configuration
//!    forces, batch-total energy);
//! 3. a plain OpenMM Python loop (`benches/python_loop.py`), one setPositions + getState per
//!    configuration.
//!
//! Run: `cargo bench --bench energy` (after `./setup.sh`). Options through environment variables:
//! CGFLOW_BENCH_CONFIGS (default 1024), CGFLOW_BENCH_COPIES (default 512), CGFLOW_BENCH_PLATFORM
//! (default CPU; OpenCL runs on the CPU after `./setup.sh --opencl-cpu`), CGFLOW_BENCH_CUTOFF_NM (copy-trick cut-off, default 2.0), CGFLOW_BENCH_PYTHON=0 to skip
//! the Python loop.

#[path = "common/mod.rs"]
mod common;
use common::{best_of, env_or};

use std::path::Path;
use std::process::Command;

use cgflow::energy::{
    Batch, EnergyModel, GradientModel, OpenMmEnergy, OpenMmEnergyConfig, ReplicaEnergy, ReplicaEnergyConfig,
};
use cgflow::openmm::{Platform, System};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

fn main() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let system_path = root.join("data/alanine_dipeptide/aldp_obc1.xml");
    let configs: usize = env_or("CGFLOW_BENCH_CONFIGS", 1024);
    let copies: usize = env_or("CGFLOW_BENCH_COPIES", 512);
    let platform_name: String = env_or("CGFLOW_BENCH_PLATFORM", "CPU".to_string());
    let cutoff_nm: f64 = env_or("CGFLOW_BENCH_CUTOFF_NM", ReplicaEnergyConfig::default().cutoff_nm);

    let system = System::from_xml_file(&system_path)?;
    let start = cgflow::io::read_positions(&root.join("data/alanine_dipeptide/position_min_energy_nm.xyz"))?;
    let n_atoms = system.num_particles();
    // Perturbed copies of the minimum-energy structure (Gaussian, 0.01 nm per coordinate), seeded.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2024);
    let noise = Normal::new(0.0, 0.01)?;
    let positions: Vec<f64> = (0..configs)
        .flat_map(|_| start.positions_nm.iter().map(|x| x + noise.sample(&mut rng)).collect::<Vec<_>>())
        .collect();
    let batch = Batch::new(&positions, n_atoms)?;
    let mut platform = Platform::new(&platform_name)?;
    if let Ok(threads) = std::env::var("CGFLOW_BENCH_THREADS") {
        platform = platform.with_property("Threads", &threads);
    }
    println!(
        "ALDP (22 atoms, OBC1), {configs} configurations, platform {platform_name}, OpenMM {}",
        cgflow::openmm::version()
    );

    let mut pool = OpenMmEnergy::new(&system, &platform, &OpenMmEnergyConfig::default())?;
    pool.evaluate(&Batch::new(&positions[..3 * n_atoms * pool.workers()], n_atoms)?)?;
    let pool_s = best_of(3, || {
        pool.evaluate(&batch).expect("pool evaluation");
    });
    let pool_us = pool_s / configs as f64 * 1e6;
    let pinned = if platform_name.eq_ignore_ascii_case("CPU") { "pinned " } else { "" };
    println!("one config per call, {} {pinned}workers: {pool_us:9.1} us/config (energies + forces)", pool.workers());

    let mut replica =
        ReplicaEnergy::new(&system, &platform, &ReplicaEnergyConfig { copies, cutoff_nm, ..Default::default() })?;
    replica.evaluate_gradients(&batch)?;
    let replica_s = best_of(3, || {
        replica.evaluate_gradients(&batch).expect("replica evaluation");
    });
    let replica_us = replica_s / configs as f64 * 1e6;
    println!("copy trick, {copies} copies per call:       {replica_us:9.1} us/config (forces + batch energy)");

    if std::env::var("CGFLOW_BENCH_PYTHON").as_deref() == Ok("0") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let npy = dir.path().join("positions.npy");
    cgflow::io::npy::write_npy(&npy, &[configs, n_atoms, 3], &positions)?;
    let python = root.join(".venv/bin/python");
    let mut command = Command::new(&python);
    // With pocl from `./setup.sh --opencl-cpu`, OpenMM's Python layer finds the OpenCL loader
    // through LD_LIBRARY_PATH (this process has already named pocl in OCL_ICD_FILENAMES).
    if let Some(dir) = cgflow::openmm::load_plugins()?.opencl_cpu {
        let mut paths = vec![dir];
        paths.extend(
            std::env::var_os("LD_LIBRARY_PATH")
                .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
                .unwrap_or_default(),
        );
        command.env("LD_LIBRARY_PATH", std::env::join_paths(paths)?);
    }
    let output = command
        .arg(root.join("benches/python_loop.py"))
        .args(["--system".as_ref(), system_path.as_os_str(), "--positions".as_ref(), npy.as_os_str()])
        .args(["--platform", &platform_name])
        .output();
    match output {
        Ok(out) if out.status.success() => {
            // The last line: OpenMM may print warnings on stdout before it (pocl's OpenCL does).
            let stdout = String::from_utf8_lossy(&out.stdout);
            let value: serde_json::Value = serde_json::from_str(stdout.trim().lines().last().unwrap_or(""))?;
            let python_us = value["microseconds_per_evaluation"].as_f64().unwrap_or(f64::NAN);
            println!("OpenMM Python loop:                      {python_us:9.1} us/config (energies + forces)");
            println!(
                "speed-up over the Python loop: one-per-call {:.1}x, copy trick {:.1}x",
                python_us / pool_us,
                python_us / replica_us
            );
        }
        Ok(out) => println!("Python loop failed: {}", String::from_utf8_lossy(&out.stderr)),
        Err(e) => println!("Python loop not run ({}): {e}", python.display()),
    }
    Ok(())
}
