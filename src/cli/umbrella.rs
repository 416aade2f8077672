//! `cgflow umbrella`: 2D umbrella sampling of ALDP's (phi, psi) with all windows as walkers of one
//! OpenMM Context, checkpointed, then WHAM into the reference PMF.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use clap::Args;

use cgflow::coords::aldp;
use cgflow::io::checkpoint::{bytes_f64, f64_bytes, write_checkpoint, Checkpoint};
use cgflow::md::umbrella::{UmbrellaHistograms, UmbrellaPlan};
use cgflow::md::wham::WhamConfig;
use cgflow::md::{WalkerConfig, Walkers};
use cgflow::metrics::divergence::kl_divergence;
use cgflow::metrics::histogram::smooth_periodic_2d;
use cgflow::openmm::{Platform, System};

/// Arguments of `cgflow umbrella`.
#[derive(Debug, Args)]
pub struct UmbrellaArgs {
    /// Serialized OpenMM System of alanine dipeptide (22 atoms, NoCutoff).
    #[arg(long, value_name = "XML", default_value = "data/alanine_dipeptide/aldp_obc1.xml")]
    system: PathBuf,
    /// Start structure for every window (.pdb, .xyz, .npy, .crd).
    #[arg(long, value_name = "FILE", default_value = "data/alanine_dipeptide/position_min_energy_nm.xyz")]
    positions: PathBuf,
    /// Output folder: checkpoint, PMF grids and report.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Windows per dimension (n x n windows, all run at once as walkers).
    #[arg(long, default_value_t = 24)]
    windows: usize,
    /// Restraint force constant on phi and on psi, kJ/mol/rad^2.
    #[arg(long, default_value_t = 100.0)]
    k: f64,
    /// Production steps per window (1 fs each); the first half of them fills half 1 of the
    /// histograms, the second half half 2.
    #[arg(long, default_value_t = 100_000)]
    steps: u64,
    /// Equilibration steps per window before recording.
    #[arg(long, default_value_t = 5_000)]
    equilibrate: u64,
    /// Steps between recorded samples.
    #[arg(long, default_value_t = 10)]
    record_every: u64,
    /// Histogram bins per dimension.
    #[arg(long, default_value_t = 100)]
    bins: usize,
    /// Steps between checkpoints.
    #[arg(long, default_value_t = 5_000)]
    checkpoint_every: u64,
    /// OpenMM platform.
    #[arg(long, default_value = "CPU")]
    platform: String,
    /// Random seed (non-zero).
    #[arg(long, default_value_t = 2024)]
    seed: i32,
    /// Continue the run in --out from its last checkpoint.
    #[arg(long)]
    resume: bool,
    /// Only analyse what the checkpoint in --out holds (WHAM and report), without running MD.
    #[arg(long)]
    analyze: bool,
}

const CHECKPOINT_FILE: &str = "umbrella.ckpt";
const TEMPERATURE_K: f64 = 300.0;

fn settings(args: &UmbrellaArgs, system_xml: &str) -> serde_json::Value {
    serde_json::json!({
        "system_fingerprint": cgflow::io::fingerprint(system_xml),
        "windows": args.windows, "k_kj_per_mol_rad2": args.k, "steps": args.steps,
        "equilibrate": args.equilibrate, "record_every": args.record_every, "bins": args.bins,
        "platform": args.platform, "seed": args.seed, "temperature_k": TEMPERATURE_K,
    })
}

/// Runs `cgflow umbrella`.
pub fn run(args: UmbrellaArgs) -> Result<()> {
    if args.record_every == 0 || args.checkpoint_every == 0 || args.steps < 2 {
        bail!("--record-every and --checkpoint-every must be positive and --steps at least 2");
    }
    let system_xml =
        std::fs::read_to_string(&args.system).with_context(|| format!("reading {}", args.system.display()))?;
    let system = System::from_xml(&system_xml).with_context(|| format!("{}", args.system.display()))?;
    if system.num_particles() != aldp::N_ATOMS {
        bail!(
            "{} has {} particles; umbrella sampling over (phi, psi) is defined for alanine dipeptide (22)",
            args.system.display(),
            system.num_particles()
        );
    }
    let plan = UmbrellaPlan { windows_per_dim: args.windows, k_kj_per_mol_rad2: args.k, bins: args.bins };
    plan.validate()?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let checkpoint_path = args.out.join(CHECKPOINT_FILE);
    let wanted = settings(&args, &system_xml);

    let stored = crate::cli::run_checkpoint(&checkpoint_path, args.resume || args.analyze, "settings", &wanted)?;
    let mut histograms = match &stored {
        Some(c) => UmbrellaHistograms::from_counts(
            &plan,
            bytes_f64(c.section("half1").context("checkpoint lacks half1")?)?,
            bytes_f64(c.section("half2").context("checkpoint lacks half2")?)?,
        )?,
        None => UmbrellaHistograms::new(&plan)?,
    };
    let steps_done = if args.analyze {
        stored.as_ref().and_then(|c| c.meta["steps_done"].as_u64()).unwrap_or(0)
    } else {
        simulate(&args, &system, &plan, &mut histograms, stored.as_ref(), &checkpoint_path, &wanted)?
    };
    analyse(&args, &plan, &histograms, steps_done)
}

#[allow(clippy::too_many_arguments)]
fn simulate(
    args: &UmbrellaArgs,
    system: &System,
    plan: &UmbrellaPlan,
    histograms: &mut UmbrellaHistograms,
    stored: Option<&Checkpoint>,
    checkpoint_path: &Path,
    settings: &serde_json::Value,
) -> Result<u64> {
    let start = cgflow::io::read_positions(&args.positions)?;
    let config = WalkerConfig { walkers: plan.windows(), seed: args.seed, ..Default::default() };
    let platform = Platform::new(&args.platform)?;
    let mut walkers =
        Walkers::new(system, &platform, &config, start.frame(0).context("no structure")?, |w| plan.restraints(w))?;
    if let Some(c) = stored {
        walkers.restore(&crate::cli::walker_state(c)?)?;
    }
    let total = args.equilibrate + args.steps;
    let bar = crate::cli::step_progress(total);
    bar.set_position(walkers.steps_done());
    let started = Instant::now();
    let steps_at_start = walkers.steps_done();
    let mut since_checkpoint = 0;
    while walkers.steps_done() < total {
        let done = walkers.steps_done();
        // Stop at the end of equilibration, then move in recording strides.
        let chunk = if done < args.equilibrate {
            (args.equilibrate - done).min(args.record_every)
        } else {
            args.record_every.min(total - done)
        };
        walkers.step(chunk)?;
        since_checkpoint += chunk;
        let done = walkers.steps_done();
        if done > args.equilibrate && (done - args.equilibrate) % args.record_every == 0 {
            let half = usize::from(done - args.equilibrate > args.steps / 2);
            let angles = aldp::phi_psi(&walkers.positions()?)?;
            for (w, [phi, psi]) in angles.iter().enumerate() {
                histograms.add(w, half, *phi, *psi)?;
            }
        }
        if since_checkpoint >= args.checkpoint_every || done == total {
            let state = walkers.checkpoint()?;
            let checkpoint = Checkpoint {
                meta: serde_json::json!({"settings": settings, "steps_done": state.steps_done,
                    "steps_since_recentre": state.steps_since_recentre,
                    "evaluations": walkers.evaluations()}),
                sections: vec![
                    ("openmm".into(), state.openmm),
                    ("half1".into(), f64_bytes(histograms.counts(0))),
                    ("half2".into(), f64_bytes(histograms.counts(1))),
                ],
            };
            write_checkpoint(checkpoint_path, &checkpoint)?;
            since_checkpoint = 0;
        }
        let rate = (done - steps_at_start) as f64 * plan.windows() as f64 / started.elapsed().as_secs_f64().max(1e-9);
        bar.set_position(done);
        bar.set_message(format!("{rate:.0} walker-steps/s"));
    }
    bar.finish();
    eprintln!(
        "umbrella: {} windows x {} steps = {} energy evaluations, {:.0} s this run",
        plan.windows(),
        total,
        walkers.evaluations(),
        started.elapsed().as_secs_f64()
    );
    Ok(walkers.steps_done())
}

fn analyse(args: &UmbrellaArgs, plan: &UmbrellaPlan, histograms: &UmbrellaHistograms, steps_done: u64) -> Result<()> {
    let wham = WhamConfig::default();
    let started = Instant::now();
    let both = histograms.pmf(plan, &[0, 1], TEMPERATURE_K, &wham)?;
    let b = args.bins;
    let mut report = serde_json::json!({
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "samples_per_half": histograms.samples(),
        "steps_per_window_done": steps_done,
        "wham_iterations": both.iterations, "wham_converged": both.converged,
        "wham_max_change_kt": both.max_change,
    });
    cgflow::io::npy::write_npy(&args.out.join("reference_probabilities.npy"), &[b, b], &both.probabilities)?;
    cgflow::io::npy::write_npy(&args.out.join("reference_pmf_kt.npy"), &[b, b], &both.free_energy_kt)?;
    pmf_png(
        &args.out.join("reference_pmf.png"),
        &both.free_energy_kt,
        b,
        "Alanine dipeptide PMF (umbrella sampling + WHAM)",
        "F / kT",
        false,
    )?;
    // The two halves are independent estimates; their divergence measures the reference's noise.
    if histograms.samples().iter().all(|&n| n > 0.0) {
        let halves =
            [histograms.pmf(plan, &[0], TEMPERATURE_K, &wham)?, histograms.pmf(plan, &[1], TEMPERATURE_K, &wham)?];
        let kld_raw = kl_divergence(&halves[0].probabilities, &halves[1].probabilities)?;
        report["kld_half1_half2_raw"] = serde_json::json!(if kld_raw.is_finite() { Some(kld_raw) } else { None });
        for sigma in [1.0, 2.0] {
            let smooth = |p: &[f64]| smooth_periodic_2d(p, b, b, sigma);
            let kld = kl_divergence(&smooth(&halves[0].probabilities)?, &smooth(&halves[1].probabilities)?)?;
            report[format!("kld_half1_half2_smoothed_sigma{sigma}_bins")] = serde_json::json!(kld);
        }
        let difference: Vec<f64> =
            halves[0].free_energy_kt.iter().zip(&halves[1].free_energy_kt).map(|(a, c)| a - c).collect();
        pmf_png(&args.out.join("halves_difference.png"), &difference, b, "PMF half 1 - half 2", "dF / kT", true)?;
        cgflow::io::npy::write_npy(&args.out.join("half1_probabilities.npy"), &[b, b], &halves[0].probabilities)?;
        cgflow::io::npy::write_npy(&args.out.join("half2_probabilities.npy"), &[b, b], &halves[1].probabilities)?;
    }
    report["analysis_seconds"] = serde_json::json!(started.elapsed().as_secs_f64());
    let text = serde_json::to_string_pretty(&report)?;
    std::fs::write(args.out.join("report.json"), &text).with_context(|| format!("writing {}", args.out.display()))?;
    println!("{text}");
    Ok(())
}

/// A (phi, psi) heat map of values on the bins x bins grid, in degrees.
fn pmf_png(path: &Path, values: &[f64], bins: usize, title: &str, label: &str, diverging: bool) -> Result<()> {
    let map = cgflow::io::plot::HeatMap {
        values,
        nx: bins,
        ny: bins,
        x_range: (-180.0, 180.0),
        y_range: (-180.0, 180.0),
        x_label: "phi / degree",
        y_label: "psi / degree",
        title,
        colorbar_label: label,
        clip_max: Some(if diverging { 2.0 } else { 15.0 }),
        diverging,
    };
    Ok(cgflow::io::plot::heat_map_png(path, &map)?)
}
