//! MD throughput of `cgflow::md::Walkers` (ALDP, LangevinMiddle 300 K, 1/ps, 1 fs, recording
//! phi/psi of every walker every 100 steps) against the same copy System driven from OpenMM's
//! Python layer (`benches/python_md.py`) with the same platform and walker count, in one run.
//!
//! Run: `cargo bench --bench md`. Environment: CGFLOW_BENCH_WALKERS (default 256),
//! CGFLOW_BENCH_STEPS (default 2000), CGFLOW_BENCH_PLATFORM (default CPU).

#[path = "common/mod.rs"]
mod common;
use common::env_or;

use std::process::Command;
use std::time::Instant;

use cgflow::coords::aldp;
use cgflow::md::{WalkerConfig, Walkers};
use cgflow::openmm::{Platform, System};

fn main() -> anyhow::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let walkers_n: usize = env_or("CGFLOW_BENCH_WALKERS", 256);
    let steps: u64 = env_or("CGFLOW_BENCH_STEPS", 2000);
    let platform_name: String = env_or("CGFLOW_BENCH_PLATFORM", "CPU".to_string());
    let record_every = 100;
    let system = System::from_xml_file(&root.join("data/alanine_dipeptide/aldp_obc1.xml"))?;
    let x0 = cgflow::io::read_positions(&root.join("data/alanine_dipeptide/position_min_energy_nm.xyz"))?.positions_nm;
    let platform = Platform::new(&platform_name)?;
    let config = WalkerConfig { walkers: walkers_n, ..Default::default() };
    let mut walkers = Walkers::new(&system, &platform, &config, &x0, |_| vec![])?;
    walkers.step(record_every)?;
    let start_positions = walkers.positions()?;
    let started = Instant::now();
    let mut recorded = 0usize;
    for _ in 0..steps / record_every {
        walkers.step(record_every)?;
        recorded += aldp::phi_psi(&walkers.positions()?)?.len();
    }
    let rust = (steps as f64 * walkers_n as f64) / started.elapsed().as_secs_f64();
    println!("ALDP MD, {walkers_n} walkers, {steps} steps each, recording phi/psi every {record_every} steps, platform {platform_name}");
    println!("cgflow Walkers:       {rust:10.0} walker-steps/s ({recorded} CV samples)");

    let dir = tempfile::tempdir()?;
    let (copies, _) = system.replicate(walkers_n, config.cutoff_nm)?;
    std::fs::write(dir.path().join("copies.xml"), copies.to_xml()?)?;
    cgflow::io::npy::write_npy(&dir.path().join("start.npy"), &[start_positions.len() / 3, 3], &start_positions)?;
    let output = Command::new(root.join(".venv/bin/python"))
        .arg(root.join("benches/python_md.py"))
        .arg("--system")
        .arg(dir.path().join("copies.xml"))
        .arg("--positions")
        .arg(dir.path().join("start.npy"))
        .args(["--walkers", &walkers_n.to_string(), "--steps", &steps.to_string(), "--platform", &platform_name])
        .output()?;
    if !output.status.success() {
        println!("Python baseline failed: {}", String::from_utf8_lossy(&output.stderr));
        return Ok(());
    }
    let value: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let python = value["walker_steps_per_second"].as_f64().unwrap_or(f64::NAN);
    println!("OpenMM Python layer:  {python:10.0} walker-steps/s");
    println!("ratio cgflow / Python: {:.2}", rust / python);
    Ok(())
}
