//! `cgflow md`: Langevin MD of many independent walkers through OpenMM, recording dihedral CVs
//! (phi, psi for alanine dipeptide) and DCD trajectories, with checkpoint and resume.
//!
//! Files in --out: `cv.f32` (per frame, per walker, per CV: float32 radians, little-endian),
//! `cv.json` (what the CV file holds: system fingerprint, walkers, CV definitions, steps per
//! frame, frames as of the last checkpoint), `walker_NNN.dcd` for the first --dcd-walkers walkers
//! (each centred on its centroid), and `md.ckpt`. A killed run resumed with --resume loses at most
//! the frames since the last checkpoint: the CV file and the trajectories are cut back to the
//! checkpoint and the frames after it are simulated again.
//!
//! With --histogram-bins, no `cv.f32` is kept: the run counts each pair of CVs into a histogram
//! and writes it at frames spaced evenly in log scale (`histograms/`, see
//! [`crate::io::cv_histograms`]), with the running histogram in the checkpoint, so that the
//! whole folder of a 1e8-evaluation run is a few MB. A run started without it can be continued
//! with it: its histograms are rebuilt from `cv.f32` on resume.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use clap::Args;

use crate::coords::geometry::dihedrals_of;
use crate::io::checkpoint::{bytes_f64, f64_bytes, write_checkpoint, Checkpoint};
use crate::io::cv_histograms::{self, HistogramSettings};
use crate::io::dcd::DcdWriter;
use crate::md::{WalkerConfig, Walkers};
use crate::openmm::{Platform, System};

/// Arguments of `cgflow md`.
#[derive(Debug, Args)]
pub struct MdArgs {
    /// Serialized OpenMM System (NoCutoff nonbonded forces, no constraints).
    #[arg(long, value_name = "XML")]
    system: PathBuf,
    /// Start structure for every walker (.pdb, .xyz, .npy, .crd).
    #[arg(long, value_name = "FILE")]
    positions: PathBuf,
    /// Output folder.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Independent walkers, all in one OpenMM Context.
    #[arg(long, default_value_t = 64)]
    walkers: usize,
    /// Steps per walker. A resumed run may be given more steps than it was started with: it
    /// continues to the new total.
    #[arg(long)]
    steps: u64,
    /// Steps between recorded frames. Keep it short against the time a dihedral takes to cross a
    /// histogram bin (10 fs for alanine dipeptide's 100 x 100 grid), so that the histogram holds
    /// what the run sampled.
    #[arg(long, default_value_t = 10)]
    record_every: u64,
    /// Temperature.
    #[arg(long, default_value_t = 300.0, value_name = "KELVIN")]
    temperature: f64,
    /// Langevin friction.
    #[arg(long, default_value_t = 1.0, value_name = "PER_PS")]
    friction: f64,
    /// Time step.
    #[arg(long, default_value_t = 1.0, value_name = "FS")]
    step_fs: f64,
    /// Random seed (non-zero for reproducible runs).
    #[arg(long, default_value_t = 1)]
    seed: i32,
    /// Dihedral CV as four 0-based atom indices, e.g. 4,6,8,14 (repeatable); given, it replaces
    /// --cg.
    #[arg(long = "dihedral", value_name = "I,J,K,L")]
    dihedrals: Vec<String>,
    /// The CVs as a CG definition (`backbone`: every phi and psi, alanine dipeptide's (phi, psi);
    /// `phi:R psi:R ...`; `I,J,K,L ...`), resolved by atom name and residue number from --topology,
    /// or from --positions when that is a PDB.
    #[arg(long, value_name = "DEFINITION", default_value = "backbone")]
    cg: String,
    /// PDB whose atom names and residue numbers resolve --cg (default: --positions, if a PDB).
    #[arg(long, value_name = "PDB")]
    topology: Option<PathBuf>,
    /// Walkers whose trajectories are written as DCD.
    #[arg(long, default_value_t = 1)]
    dcd_walkers: usize,
    /// Steps between checkpoints.
    #[arg(long, default_value_t = 10_000)]
    checkpoint_every: u64,
    /// OpenMM platform.
    #[arg(long, default_value = "CPU")]
    platform: String,
    /// Platform property KEY=VALUE (repeatable), e.g. Threads=1 for bit-reproducible resumes.
    #[arg(long = "property", value_name = "KEY=VALUE")]
    properties: Vec<String>,
    /// Continue the run in --out from its last checkpoint.
    #[arg(long)]
    resume: bool,
    /// Keep histograms of the CVs, two by two, with this many bins per CV, instead of their
    /// values (for runs too long to keep every frame).
    #[arg(long, value_name = "BINS")]
    histogram_bins: Option<usize>,
    /// Histograms written per decade of frames (with --histogram-bins).
    #[arg(long, default_value_t = 10)]
    marks_per_decade: usize,
}

/// The running histogram of a --histogram-bins run.
struct HistogramRecord {
    settings: HistogramSettings,
    counts: Vec<f64>,
}

/// Rebuilds the histogram of the first `frames` frames of `cv.f32` in `dir` (a run started
/// without --histogram-bins), writing its marks.
fn histogram_from_values(
    dir: &Path,
    settings: HistogramSettings,
    walkers: usize,
    frames: u64,
) -> Result<HistogramRecord> {
    let cvs = settings.pairs.len() * 2;
    let path = dir.join(crate::io::cv_run::VALUES_FILE);
    let bytes =
        std::fs::read(&path).with_context(|| format!("reading {} to rebuild its histograms", path.display()))?;
    let frame_bytes = walkers * cvs * 4;
    if (bytes.len() as u64) < frames * frame_bytes as u64 {
        bail!("{} is shorter than the {frames} frames of the checkpoint", path.display());
    }
    let mut counts = vec![0.0; settings.size()];
    let mut values = vec![0.0; cvs];
    for f in 0..frames as usize {
        for w in 0..walkers {
            let at = f * frame_bytes + w * cvs * 4;
            for (c, v) in values.iter_mut().enumerate() {
                let b = &bytes[at + 4 * c..at + 4 * c + 4];
                *v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64;
            }
            settings.add_frame(&mut counts, &values)?;
        }
        let done = f as u64 + 1;
        if settings.is_mark(done) || done == frames {
            cv_histograms::write_mark(dir, &settings, done, &counts)?;
        }
    }
    Ok(HistogramRecord { settings, counts })
}

fn parse_dihedral(text: &str, n_atoms: usize) -> Result<[usize; 4]> {
    let parts: Vec<usize> = text
        .split(',')
        .map(|p| p.trim().parse::<usize>().with_context(|| format!("dihedral '{text}': '{p}' is not an atom index")))
        .collect::<Result<_>>()?;
    let atoms: [usize; 4] =
        parts.try_into().map_err(|_| anyhow::anyhow!("dihedral '{text}' needs four atom indices"))?;
    if let Some(bad) = atoms.iter().find(|&&a| a >= n_atoms) {
        bail!("dihedral '{text}': atom {bad} does not exist (the system has {n_atoms} atoms)");
    }
    Ok(atoms)
}

fn centred(walker: &[f64]) -> Vec<f64> {
    let n = (walker.len() / 3) as f64;
    let mut c = [0.0; 3];
    for a in walker.chunks_exact(3) {
        (0..3).for_each(|d| c[d] += a[d] / n);
    }
    walker.chunks_exact(3).flat_map(|a| [a[0] - c[0], a[1] - c[1], a[2] - c[2]]).collect()
}

/// Runs `cgflow md`.
pub fn run(args: MdArgs) -> Result<()> {
    if args.record_every == 0 || args.checkpoint_every == 0 || args.steps == 0 {
        bail!("--steps, --record-every and --checkpoint-every must be positive");
    }
    let system_xml =
        std::fs::read_to_string(&args.system).with_context(|| format!("reading {}", args.system.display()))?;
    let system = System::from_xml(&system_xml).with_context(|| format!("{}", args.system.display()))?;
    let n_atoms = system.num_particles();
    let cvs: Vec<[usize; 4]> = if args.dihedrals.is_empty() {
        let is_pdb = |p: &Path| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("pdb"));
        let topology = match &args.topology {
            Some(path) => path.clone(),
            None if is_pdb(&args.positions) => args.positions.clone(),
            None => bail!(
                "--positions {} has no atom names: give --topology PDB to resolve --cg '{}', or the CVs as --dihedral \
                 I,J,K,L",
                args.positions.display(),
                args.cg
            ),
        };
        let labels = crate::cli::topology_labels(&topology, n_atoms)?;
        crate::coords::cg_definition::resolve(&args.cg, &labels)
            .with_context(|| format!("--cg '{}' on {}", args.cg, topology.display()))?
    } else {
        args.dihedrals.iter().map(|d| parse_dihedral(d, n_atoms)).collect::<Result<_>>()?
    };
    let start = crate::io::read_positions(&args.positions)?;
    if start.n_atoms != n_atoms {
        bail!("{} has {} atoms but the System has {n_atoms}", args.positions.display(), start.n_atoms);
    }
    let mut platform = Platform::new(&args.platform)?;
    for p in &args.properties {
        let (k, v) = p.split_once('=').with_context(|| format!("platform property '{p}' is not KEY=VALUE"))?;
        platform = platform.with_property(k, v);
    }
    let config = WalkerConfig {
        walkers: args.walkers,
        temperature_k: args.temperature,
        friction_per_ps: args.friction,
        step_fs: args.step_fs,
        seed: args.seed,
        ..Default::default()
    };
    let description = serde_json::json!({
        "system": args.system, "system_fingerprint": crate::io::fingerprint(&system_xml), "n_atoms": n_atoms,
        "walkers": args.walkers, "cvs": cvs, "steps_per_frame": args.record_every, "step_fs": args.step_fs,
        "temperature_k": args.temperature, "friction_per_ps": args.friction, "seed": args.seed,
        "platform": args.platform, "properties": args.properties,
    });
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let checkpoint_path = args.out.join("md.ckpt");
    let cv_path = args.out.join("cv.f32");
    let mut walkers = Walkers::new(&system, &platform, &config, start.frame(0).context("no structure")?, |_| vec![])?;
    let dcd_walkers = args.dcd_walkers.min(args.walkers);
    let dcd_path = |w: usize| args.out.join(format!("walker_{w:03}.dcd"));
    let step_ps = (args.step_fs * 1e-3) as f32;
    let frame_steps = u32::try_from(args.record_every).context("--record-every too large")?;
    let histogram_settings = args
        .histogram_bins
        .map(|bins| HistogramSettings::consecutive_pairs(cvs.len(), bins, args.marks_per_decade))
        .transpose()
        .context("--histogram-bins")?;
    let mut frames: u64 = 0;
    let mut dcds = Vec::with_capacity(dcd_walkers);
    let mut histogram: Option<HistogramRecord> = None;
    if let Some(c) = crate::cli::run_checkpoint(&checkpoint_path, args.resume, "run", &description)? {
        walkers.restore(&crate::cli::walker_state(&c)?)?;
        frames = c.meta["frames"].as_u64().context("frames")?;
        let stored = c.meta.get("histogram");
        histogram = match (&histogram_settings, stored) {
            (Some(settings), Some(stored)) => {
                if &settings.to_json() != stored {
                    bail!(
                        "{} keeps histograms with other settings ({stored}); give the same --histogram-bins and \
                         --marks-per-decade",
                        checkpoint_path.display()
                    );
                }
                let counts = bytes_f64(c.section("cv_histogram").context("checkpoint lacks its histogram")?)?;
                if counts.len() != settings.size() {
                    bail!(
                        "{}: the histogram has {} values, not {}",
                        checkpoint_path.display(),
                        counts.len(),
                        settings.size()
                    );
                }
                cv_histograms::cut_marks_after(&args.out, frames)?;
                Some(HistogramRecord { settings: settings.clone(), counts })
            }
            (Some(settings), None) => {
                eprintln!(
                    "md: rebuilding the histograms of the {frames} frames in {}; from here on the run keeps \
                     histograms only (cv.f32 can then be removed)",
                    cv_path.display()
                );
                cv_histograms::cut_marks_after(&args.out, 0)?;
                Some(histogram_from_values(&args.out, settings.clone(), args.walkers, frames)?)
            }
            (None, Some(stored)) => {
                bail!("{} keeps histograms ({stored}): continue it with --histogram-bins", checkpoint_path.display())
            }
            (None, None) => {
                let cv_bytes = frames * (args.walkers * cvs.len() * 4) as u64;
                let file = OpenOptions::new()
                    .write(true)
                    .open(&cv_path)
                    .with_context(|| format!("opening {}", cv_path.display()))?;
                if file.metadata()?.len() < cv_bytes {
                    bail!("{} is shorter than the {frames} frames of the checkpoint", cv_path.display());
                }
                file.set_len(cv_bytes)?;
                None
            }
        };
        for w in 0..dcd_walkers {
            dcds.push(DcdWriter::open_truncated(&dcd_path(w), n_atoms, frames as u32, frame_steps, step_ps)?);
        }
    } else {
        crate::cli::refuse_leftovers(&args.out, &checkpoint_path, |name| {
            name == "cv.f32"
                || name == "cv.json"
                || name == cv_histograms::MARKS_DIR
                || (name.starts_with("walker_") && name.ends_with(".dcd"))
        })?;
        match &histogram_settings {
            Some(settings) => {
                histogram = Some(HistogramRecord { settings: settings.clone(), counts: vec![0.0; settings.size()] })
            }
            None => std::fs::write(&cv_path, b"").with_context(|| format!("creating {}", cv_path.display()))?,
        }
        for w in 0..dcd_walkers {
            dcds.push(DcdWriter::create(&dcd_path(w), n_atoms, frame_steps, step_ps)?);
        }
    }
    let mut cv_file = match histogram {
        Some(_) => None,
        None => Some(
            OpenOptions::new().append(true).open(&cv_path).with_context(|| format!("opening {}", cv_path.display()))?,
        ),
    };
    let histogram_json = histogram.as_ref().map(|h| h.settings.to_json());
    let write_description = |frames: u64| -> Result<()> {
        let mut d = description.clone();
        d["frames"] = serde_json::json!(frames);
        d["steps"] = serde_json::json!(args.steps);
        match &histogram_json {
            Some(h) => {
                d["histogram"] = h.clone();
                d["layout"] = serde_json::json!(
                    "histograms/frames_NNNNNNNNN.npy: cumulative counts [pair][bin][bin] over [-pi, pi) per CV"
                );
            }
            None => d["layout"] = serde_json::json!("float32 little-endian [frame][walker][cv], radians"),
        }
        crate::io::write_atomically(&args.out.join("cv.json"), serde_json::to_string_pretty(&d)?.as_bytes())?;
        Ok(())
    };
    let bar = crate::cli::step_progress(args.steps);
    let started = Instant::now();
    let first_step = walkers.steps_done();
    let stride = 3 * n_atoms;
    let mut since_checkpoint = 0;
    while walkers.steps_done() < args.steps {
        let chunk = args.record_every.min(args.steps - walkers.steps_done());
        walkers.step(chunk)?;
        since_checkpoint += chunk;
        if walkers.steps_done() % args.record_every == 0 {
            let x = walkers.positions()?;
            let angles = dihedrals_of(&x, n_atoms, &cvs)?;
            let mut record = Vec::with_capacity(args.walkers * cvs.len() * 4);
            for values in angles.chunks_exact(cvs.len()) {
                match &mut histogram {
                    Some(h) => h.settings.add_frame(&mut h.counts, values)?,
                    None => values.iter().for_each(|&v| record.extend_from_slice(&(v as f32).to_le_bytes())),
                }
            }
            if let Some(file) = &mut cv_file {
                file.write_all(&record).with_context(|| format!("writing {}", cv_path.display()))?;
            }
            for (w, dcd) in dcds.iter_mut().enumerate() {
                dcd.append(&centred(&x[w * stride..(w + 1) * stride]))?;
            }
            frames += 1;
            if let Some(h) = histogram.as_ref().filter(|h| h.settings.is_mark(frames)) {
                cv_histograms::write_mark(&args.out, &h.settings, frames, &h.counts)?;
            }
        }
        if since_checkpoint >= args.checkpoint_every || walkers.steps_done() == args.steps {
            if let Some(file) = &cv_file {
                file.sync_data()?;
            }
            for dcd in &mut dcds {
                dcd.sync()?;
            }
            // Order matters for a kill at any point: the histogram at the checkpoint's frames is
            // written before the checkpoint, cv.json after it (so a mark exists at the frames it
            // announces), and the previous checkpoint's histogram, unless it lies on a mark, last.
            if let Some(h) = &histogram {
                cv_histograms::write_mark(&args.out, &h.settings, frames, &h.counts)?;
            }
            let state = walkers.checkpoint()?;
            let mut meta = serde_json::json!({"run": description, "steps_done": state.steps_done,
                "steps_since_recentre": state.steps_since_recentre, "frames": frames,
                "evaluations": walkers.evaluations()});
            let mut sections = vec![("openmm".to_string(), state.openmm)];
            if let Some(h) = &histogram {
                meta["histogram"] = h.settings.to_json();
                sections.push(("cv_histogram".into(), f64_bytes(&h.counts)));
            }
            write_checkpoint(&checkpoint_path, &Checkpoint { meta, sections })?;
            write_description(frames)?;
            if let Some(h) = &histogram {
                cv_histograms::remove_between_marks_before(&args.out, &h.settings, frames)?;
            }
            since_checkpoint = 0;
            if walkers.steps_done() < args.steps {
                crate::run_control::check_stop(&format!(
                    "md checkpoint at step {} of {} in {}; continue with --resume",
                    walkers.steps_done(),
                    args.steps,
                    args.out.display()
                ))?;
            }
        }
        let rate = (walkers.steps_done() - first_step) as f64 * args.walkers as f64
            / started.elapsed().as_secs_f64().max(1e-9);
        bar.set_position(walkers.steps_done());
        crate::run_control::set_done(walkers.steps_done());
        bar.set_message(format!("{rate:.0} walker-steps/s"));
    }
    bar.finish();
    println!(
        "md: {} walkers x {} steps = {} energy evaluations; {frames} frames in {}; {:.1} s this run",
        args.walkers,
        walkers.steps_done(),
        walkers.evaluations(),
        args.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
