//! `cgflow umbrella`: 2D umbrella sampling of two dihedral CVs (alanine dipeptide's (phi, psi) by
//! default, any pair of any molecule with `--cg`) with all windows as walkers of one OpenMM
//! Context, checkpointed, every window's samples stored (`cv.f32`, `cv.json`), then the binless
//! reference PMF from them (as `cgflow reference` makes it). A resume with more `--steps` extends
//! every window.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use clap::Args;

use crate::coords::cg_definition::resolve;
use crate::coords::geometry::dihedrals_of;
use crate::io::checkpoint::{write_checkpoint, Checkpoint};
use crate::md::umbrella::UmbrellaPlan;
use crate::md::{WalkerConfig, Walkers};
use crate::openmm::{Platform, System};

/// Arguments of `cgflow umbrella`.
#[derive(Debug, Args)]
pub struct UmbrellaArgs {
    /// Serialized OpenMM System (NoCutoff nonbonded forces, no constraints).
    #[arg(long, value_name = "XML", default_value = "data/alanine_dipeptide/aldp_obc1.xml")]
    system: PathBuf,
    /// Start structure for every window (.pdb, .xyz, .npy, .crd), or one structure per window (for
    /// instance the `final_positions_nm.npy` of a run with softer restraints at the same centres,
    /// so that stiff windows are not pulled from far away).
    #[arg(long, value_name = "FILE", default_value = "data/alanine_dipeptide/position_min_energy_nm.xyz")]
    positions: PathBuf,
    /// PDB whose atom names and residue numbers resolve --cg and --trans-walls (its coordinates are
    /// not used); it must have the System's atoms.
    #[arg(long, value_name = "PDB", default_value = "data/alanine_dipeptide/aldp.pdb")]
    topology: PathBuf,
    /// The two restrained CVs, as a CG definition: `phi:R psi:R` (residue numbers as in the PDB),
    /// `backbone` (every phi and psi: two for alanine dipeptide), or two `I,J,K,L` of 0-based atoms.
    #[arg(long, value_name = "DEFINITION", default_value = "backbone")]
    cg: String,
    /// The peptide bonds the trans walls hold: `omegas` (every peptide bond), `omega:R`, or
    /// `I,J,K,L` dihedrals.
    #[arg(long, value_name = "DEFINITION", default_value = "omegas")]
    trans_walls: String,
    /// Output folder: checkpoint, PMF grids and report.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Windows per dimension (n x n windows, all run at once as walkers).
    #[arg(long, default_value_t = 24)]
    windows: usize,
    /// Restraint force constant on phi and on psi, kJ/mol/rad^2.
    #[arg(long, default_value_t = 100.0)]
    k: f64,
    /// Run only the lattice windows whose centre lies in this box, `CV1_MIN:CV1_MAX,CV2_MIN:CV2_MAX`
    /// in degrees (repeatable; a range across +-180 is two boxes): stiff windows on a fine lattice
    /// where a coarse one leaves bins unsampled, combined with it by `cgflow reference`.
    #[arg(long = "centres-in", value_name = "BOX")]
    centres_in: Vec<String>,
    /// Force constant of the walls that keep both peptide bonds trans (flat-bottomed restraints on
    /// omega, zero within 90 degrees of trans), kJ/mol/rad^2; 0 turns them off. The reference is
    /// then the all-trans ensemble, the one unbiased MD samples.
    #[arg(long, default_value_t = 1000.0)]
    trans_wall_k: f64,
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
    /// Stop after the sampling, without the analysis (run `cgflow reference` on the folder later,
    /// for instance together with other runs).
    #[arg(long, conflicts_with = "analyze")]
    no_analysis: bool,
}

const CHECKPOINT_FILE: &str = "umbrella.ckpt";
const SAMPLES_FILE: &str = "cv.f32";
const SAMPLES_DESCRIPTION: &str = "cv.json";
const FINAL_POSITIONS_FILE: &str = "final_positions_nm.npy";
const TEMPERATURE_K: f64 = 300.0;

/// The settings a resumed run must share with the stored one. `--steps` is not among them: a
/// resume with more steps extends every window.
fn settings(args: &UmbrellaArgs, plan: &UmbrellaPlan, system_xml: &str) -> serde_json::Value {
    let mut settings = settings_before_any_molecule(args, system_xml);
    settings["cvs"] = serde_json::json!(plan.cv_dihedrals);
    settings["trans_wall_dihedrals"] = serde_json::json!(plan.trans_wall_dihedrals);
    // Only when given, so that runs stored before boxes existed still resume.
    if !plan.centre_boxes_rad.is_empty() {
        settings["centre_boxes_rad"] = serde_json::json!(plan.centre_boxes_rad);
    }
    settings
}

/// A `--centres-in` box, `A:B,C:D` in degrees, in radians.
fn parse_box(text: &str) -> Result<[[f64; 2]; 2]> {
    let ranges: Vec<&str> = text.split(',').collect();
    let parse_range = |r: &str| -> Result<[f64; 2]> {
        let (lo, hi) = r.split_once(':').with_context(|| format!("'{r}' is not MIN:MAX"))?;
        let value = |v: &str| -> Result<f64> {
            let d: f64 = v.trim().parse().with_context(|| format!("'{v}' is not a number of degrees"))?;
            Ok(d.to_radians())
        };
        Ok([value(lo)?, value(hi)?])
    };
    match ranges.as_slice() {
        [a, b] => Ok([parse_range(a)?, parse_range(b)?]),
        _ => bail!("'{text}': a box is CV1_MIN:CV1_MAX,CV2_MIN:CV2_MAX in degrees"),
    }
}

/// The settings as runs stored them before `--cg` and `--trans-walls` existed (alanine dipeptide
/// only; their CVs and walls are in their `cv.json`).
fn settings_before_any_molecule(args: &UmbrellaArgs, system_xml: &str) -> serde_json::Value {
    serde_json::json!({
        "system_fingerprint": crate::io::fingerprint(system_xml),
        "windows": args.windows, "k_kj_per_mol_rad2": args.k, "trans_wall_k_kj_per_mol_rad2": args.trans_wall_k,
        "equilibrate": args.equilibrate, "record_every": args.record_every,
        "platform": args.platform, "seed": args.seed, "temperature_k": TEMPERATURE_K,
    })
}

/// The settings to compare a stored checkpoint with: [`settings`], or, for a run stored before
/// `--cg` existed, the older form, once its `cv.json` shows the same CVs and walls.
fn settings_to_match(
    args: &UmbrellaArgs,
    plan: &UmbrellaPlan,
    system_xml: &str,
    checkpoint_path: &Path,
) -> Result<serde_json::Value> {
    let wanted = settings(args, plan, system_xml);
    if !checkpoint_path.exists() {
        return Ok(wanted);
    }
    let stored = crate::io::checkpoint::read_checkpoint(checkpoint_path)?;
    if stored.meta["settings"].get("cvs").is_some() {
        return Ok(wanted);
    }
    let description_path = args.out.join(SAMPLES_DESCRIPTION);
    let text = std::fs::read_to_string(&description_path)
        .with_context(|| format!("reading {}", description_path.display()))?;
    let description: serde_json::Value = serde_json::from_str(&text)?;
    let walls = if plan.trans_wall_k_kj_per_mol_rad2 > 0.0 {
        &description["trans_walls"]["atoms"]
    } else {
        &wanted["trans_wall_dihedrals"]
    };
    if description["cvs"] != wanted["cvs"] || *walls != wanted["trans_wall_dihedrals"] {
        bail!(
            "{} was run with CVs {} and trans walls {}; --cg and --trans-walls give {} and {}",
            args.out.display(),
            description["cvs"],
            walls,
            wanted["cvs"],
            wanted["trans_wall_dihedrals"]
        );
    }
    Ok(settings_before_any_molecule(args, system_xml))
}

/// What `cv.f32` of an umbrella run holds: the windows' restraints and the records so far.
fn samples_description(args: &UmbrellaArgs, plan: &UmbrellaPlan, system_xml: &str, records: u64) -> serde_json::Value {
    let centres = plan.centres();
    serde_json::json!({
        "kind": "umbrella", "system_fingerprint": crate::io::fingerprint(system_xml),
        "walkers": plan.windows(), "cvs": plan.cv_dihedrals,
        "k_kj_per_mol_rad2": plan.k_kj_per_mol_rad2, "centres_rad": centres,
        "trans_walls": {"k_kj_per_mol_rad2": plan.trans_wall_k_kj_per_mol_rad2, "atoms": plan.trans_wall_dihedrals,
            "flat_half_width_rad": crate::md::umbrella::TRANS_WALL_HALF_WIDTH_RAD,
            "note": "common to every window and zero on trans structures: they cancel in MBAR"},
        "temperature_k": TEMPERATURE_K, "equilibrate_steps": args.equilibrate,
        "steps_per_frame": args.record_every, "frames": records, "seed": args.seed,
        "layout": "float32 little-endian [frame][window][cv], radians",
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
    let labels = crate::cli::topology_labels(&args.topology, system.num_particles()).context("--topology")?;
    let cvs = resolve(&args.cg, &labels).with_context(|| format!("--cg '{}'", args.cg))?;
    let cv_dihedrals: [[usize; 4]; 2] = cvs.as_slice().try_into().map_err(|_| {
        anyhow::anyhow!(
            "umbrella sampling restrains two CVs, and --cg '{}' gives {} for this molecule: name two, e.g. --cg \
             'phi:R psi:R'",
            args.cg,
            cvs.len()
        )
    })?;
    let trans_wall_dihedrals = if args.trans_wall_k > 0.0 {
        resolve(&args.trans_walls, &labels).with_context(|| format!("--trans-walls '{}'", args.trans_walls))?
    } else {
        Vec::new()
    };
    let plan = UmbrellaPlan {
        cv_dihedrals,
        trans_wall_dihedrals,
        windows_per_dim: args.windows,
        k_kj_per_mol_rad2: args.k,
        bins: args.bins,
        trans_wall_k_kj_per_mol_rad2: args.trans_wall_k,
        centre_boxes_rad: args
            .centres_in
            .iter()
            .map(|b| parse_box(b).with_context(|| format!("--centres-in '{b}'")))
            .collect::<Result<_>>()?,
    };
    plan.validate()?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let checkpoint_path = args.out.join(CHECKPOINT_FILE);
    let wanted = settings_to_match(&args, &plan, &system_xml, &checkpoint_path)?;

    let stored = crate::cli::run_checkpoint(&checkpoint_path, args.resume || args.analyze, "settings", &wanted)?;
    if !args.analyze {
        simulate(&args, &system, &system_xml, &plan, stored.as_ref(), &checkpoint_path, &wanted)?;
    }
    if args.no_analysis {
        return Ok(());
    }
    analyse(&args)
}

/// Runs (or continues) the windows to `--steps` production steps.
#[allow(clippy::too_many_arguments)]
fn simulate(
    args: &UmbrellaArgs,
    system: &System,
    system_xml: &str,
    plan: &UmbrellaPlan,
    stored: Option<&Checkpoint>,
    checkpoint_path: &Path,
    settings: &serde_json::Value,
) -> Result<()> {
    let start = crate::io::read_positions(&args.positions)?;
    let centres = plan.centres();
    let windows = centres.len();
    let start_nm = match start.n_configs {
        1 => start.frame(0).context("no structure")?,
        n if n == windows => &start.positions_nm[..],
        n => bail!("{}: {n} structures for {windows} windows (give one, or one per window)", args.positions.display()),
    };
    let config = WalkerConfig { walkers: windows, seed: args.seed, ..Default::default() };
    let platform = Platform::new(&args.platform)?;
    let mut walkers = Walkers::new(system, &platform, &config, start_nm, |w| plan.restraints_at(centres[w]))?;
    let samples_path = args.out.join(SAMPLES_FILE);
    let record_bytes = (windows * 8) as u64;
    let mut records = 0;
    if let Some(c) = stored {
        walkers.restore(&crate::cli::walker_state(c)?)?;
        records = c.meta["records"].as_u64().context("checkpoint lacks records")?;
        // Records written after the checkpoint are simulated again: cut them off.
        let file = OpenOptions::new()
            .write(true)
            .open(&samples_path)
            .with_context(|| format!("opening {}", samples_path.display()))?;
        if file.metadata()?.len() < records * record_bytes {
            bail!("{} is shorter than the {records} records of the checkpoint", samples_path.display());
        }
        file.set_len(records * record_bytes)?;
    } else {
        crate::cli::refuse_leftovers(&args.out, checkpoint_path, |name| {
            name == SAMPLES_FILE || name == SAMPLES_DESCRIPTION
        })?;
        std::fs::write(&samples_path, b"").with_context(|| format!("creating {}", samples_path.display()))?;
    }
    let mut samples_file = OpenOptions::new()
        .append(true)
        .open(&samples_path)
        .with_context(|| format!("opening {}", samples_path.display()))?;
    let total = args.equilibrate + args.steps;
    let bar = crate::cli::step_progress(total);
    bar.set_position(walkers.steps_done());
    crate::run_control::set_done(walkers.steps_done());
    let started = Instant::now();
    let steps_at_start = walkers.steps_done();
    let mut since_checkpoint = 0;
    let write_checkpoint_now = |walkers: &mut Walkers, records: u64, file: &mut std::fs::File| -> Result<()> {
        file.sync_data()?;
        let state = walkers.checkpoint()?;
        let checkpoint = Checkpoint {
            meta: serde_json::json!({"settings": settings, "steps_done": state.steps_done,
                "steps_since_recentre": state.steps_since_recentre, "records": records,
                "evaluations": walkers.evaluations()}),
            sections: vec![("openmm".into(), state.openmm)],
        };
        write_checkpoint(checkpoint_path, &checkpoint)?;
        let description = samples_description(args, plan, system_xml, records);
        std::fs::write(args.out.join(SAMPLES_DESCRIPTION), serde_json::to_string_pretty(&description)?)?;
        Ok(())
    };
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
            let angles = dihedrals_of(&walkers.positions()?, system.num_particles(), &plan.cv_dihedrals)?;
            let mut record = Vec::with_capacity(record_bytes as usize);
            for angle in angles {
                record.extend_from_slice(&(angle as f32).to_le_bytes());
            }
            samples_file.write_all(&record).with_context(|| format!("writing {}", samples_path.display()))?;
            records += 1;
        }
        if since_checkpoint >= args.checkpoint_every || done == total {
            write_checkpoint_now(&mut walkers, records, &mut samples_file)?;
            since_checkpoint = 0;
            if done < total {
                crate::run_control::check_stop(&format!(
                    "umbrella checkpoint at {done} of {total} steps in {}; continue with --resume",
                    args.out.display()
                ))?;
            }
        }
        let rate = (done - steps_at_start) as f64 * windows as f64 / started.elapsed().as_secs_f64().max(1e-9);
        bar.set_position(done);
        crate::run_control::set_done(done);
        bar.set_message(format!("{rate:.0} walker-steps/s"));
    }
    if stored.is_some() && walkers.steps_done() == steps_at_start {
        // A resume of a finished run (or with fewer --steps than done) writes the description again.
        write_checkpoint_now(&mut walkers, records, &mut samples_file)?;
    }
    bar.finish();
    // Every window's last structure (the copies' offsets do not matter: `--positions` re-places
    // each structure), to start stiffer windows at the same centres from.
    let n_atoms = system.num_particles();
    crate::io::npy::write_npy(&args.out.join(FINAL_POSITIONS_FILE), &[windows, n_atoms, 3], &walkers.positions()?)?;
    eprintln!(
        "umbrella: {} windows x {} steps = {} energy evaluations, {:.0} s this run",
        plan.windows(),
        walkers.steps_done(),
        walkers.evaluations(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The binless reference from this run's samples (`cgflow reference --umbrella OUT --out OUT`).
fn analyse(args: &UmbrellaArgs) -> Result<()> {
    crate::cli::reference::run(crate::cli::reference::ReferenceArgs::for_umbrella_run(
        &args.out,
        &args.system,
        args.bins,
    ))
}
