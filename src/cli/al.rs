//! `cgflow al`: active learning of alanine dipeptide's (phi, psi) PMF; also the runner behind
//! `cgflow grid` (the grid-conditioning control). Progress bars, a per-iteration log
//! (`log.jsonl`), PNGs of the PMF and its uncertainty after every iteration, a checkpoint after
//! every step and `--resume`.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::al::aldp::{AlEvent, AlMode, AldpAl, AldpAlConfig, AldpAlState, AldpIteration};
use crate::al::checkpoint::{has_al_state, load_al_state, save_al_state};
use crate::flow::molecule_model::{save_model_system, save_molecule_model, MoleculeModelInfo};
use crate::openmm::{Platform, System};
use anyhow::{bail, Context as _, Result};
use clap::{Args, ValueEnum};

/// Built-in settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Preset {
    /// Sized for a 2-core CPU (25 to 45 minutes, 1.9e6 energy evaluations).
    Fast,
    /// The reference code's settings (days on a CPU).
    Reference,
    /// Seconds per iteration: a smoke test.
    Tiny,
}

/// Arguments shared by `cgflow al` and `cgflow grid`.
#[derive(Debug, Args)]
pub struct AlArgs {
    /// Settings file (JSON; every field documented in `crate::al::aldp::AldpAlConfig`; unknown
    /// fields are rejected). Write one to start from with `--print-config`.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Built-in settings, used when no --config is given.
    #[arg(long, value_enum, default_value_t = Preset::Fast)]
    pub preset: Preset,
    /// Print the settings (of --config or --preset) as JSON and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Run folder: log.jsonl, PNGs, checkpoint/, model/, summary.json.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Continue the run in --out from its last checkpoint (with the settings it was started with).
    #[arg(long)]
    pub resume: bool,
    /// Stop after this many iterations in this session (the run can be resumed later).
    #[arg(long, value_name = "N")]
    pub iterations: Option<usize>,
    /// The alanine dipeptide System (ff96 + OBC1).
    #[arg(long, value_name = "XML", default_value = "data/alanine_dipeptide/aldp_obc1.xml")]
    pub system: PathBuf,
    /// Minimum-energy structure: normalisation centre and MD start.
    #[arg(long, value_name = "PDB", default_value = "data/alanine_dipeptide/min_energy.pdb")]
    pub structure: PathBuf,
    /// Reference bin probabilities (100 x 100 over [-pi, pi)^2, [phi][psi]) for the KLD; "none"
    /// to skip.
    #[arg(long, value_name = "NPY", default_value = "data/reference/aldp_umbrella/reference_probabilities.npy")]
    pub reference: PathBuf,
    /// OpenMM platform of the energies and the start-up MD.
    #[arg(long, default_value = "CPU")]
    pub platform: String,
}

fn preset(p: Preset) -> AldpAlConfig {
    match p {
        Preset::Fast => AldpAlConfig::fast(),
        Preset::Reference => AldpAlConfig::reference(),
        Preset::Tiny => AldpAlConfig::tiny(),
    }
}

fn read_config(path: &Path) -> Result<AldpAlConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let config: AldpAlConfig =
        serde_json::from_str(&text).with_context(|| format!("{}: invalid settings", path.display()))?;
    config.validate().with_context(|| format!("{}: invalid settings", path.display()))?;
    Ok(config)
}

/// Runs `cgflow al` (`mode` ActiveLearning) or `cgflow grid` (`mode` Grid).
pub fn run(args: AlArgs, mode: AlMode) -> Result<()> {
    super::configure_flow_threads();
    let default_out = match mode {
        AlMode::ActiveLearning => "runs/al",
        AlMode::Grid => "runs/grid",
    };
    let out = args.out.clone().unwrap_or_else(|| PathBuf::from(default_out));
    let saved_config = out.join("config.json");
    let mut config = match &args.config {
        Some(path) => read_config(path)?,
        None => preset(args.preset),
    };
    // config.json is written before the start-up phase, so a folder holding it without a checkpoint
    // is a run killed during its start-up: a resume reruns the start-up, which is reproducible.
    let killed_in_startup = !has_al_state(&out) && saved_config.exists();
    if args.resume {
        if !has_al_state(&out) && !killed_in_startup {
            bail!("{}: no checkpoint to resume from (start the run without --resume)", out.display());
        }
        let saved = read_config(&saved_config)?;
        if args.config.is_some() && saved != config {
            bail!("--config differs from the settings the run in {} was started with", out.display());
        }
        config = saved;
    }
    if args.print_config {
        println!("{}", serde_json::to_string_pretty(&config)?);
        return Ok(());
    }
    if !args.resume && (has_al_state(&out) || killed_in_startup) {
        bail!(
            "{} already holds a run{}; use --resume to continue it, or choose another --out (or delete the \
             folder to start over)",
            out.display(),
            if killed_in_startup { " stopped during its start-up" } else { "" }
        );
    }

    let system = System::from_xml_file(&args.system)?;
    let structure = crate::io::read_positions(&args.structure)?;
    if structure.n_atoms != system.num_particles() {
        bail!("{} has {} atoms, the system {}", args.structure.display(), structure.n_atoms, system.num_particles());
    }
    let reference = if args.reference.as_os_str() == "none" {
        None
    } else {
        let array = crate::io::npy::read_npy(&args.reference)?;
        if array.shape != [100, 100] {
            bail!("{}: expected a (100, 100) array, got {:?}", args.reference.display(), array.shape);
        }
        Some(array.data)
    };
    let platform = Platform::new(&args.platform)?;
    let al = AldpAl::new(config.clone(), &system, &platform, &structure.positions_nm[..66], reference)?;

    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let mut state = if args.resume && !killed_in_startup {
        let state = load_al_state(&out, &al)?;
        println!(
            "resuming {} at iteration {} ({} evaluations so far)",
            out.display(),
            state.next_iteration,
            state.costs.total()
        );
        state
    } else {
        if killed_in_startup {
            println!("resuming {}: it stopped during its start-up, which is rerun", out.display());
        } else {
            crate::io::write_atomically(&saved_config, serde_json::to_string_pretty(&config)?.as_bytes())?;
        }
        let mut bars = Bars::default();
        let state = al.start(mode, &mut |e| bars.event(e))?;
        bars.finish();
        save_al_state(&out, &config, &state)?;
        crate::run_control::check_stop(&format!(
            "al checkpoint after its start-up; continue with --resume --out {}",
            out.display()
        ))?;
        state
    };
    rewrite_log(&out, &state.log)?;
    let mut done_here = 0;
    while !state.converged && args.iterations.map_or(true, |limit| done_here < limit) {
        let mut bars = Bars::default();
        let entry = al.iterate(&mut state, &mut |e| bars.event(e))?;
        bars.finish();
        // PNGs first: a kill before the checkpoint reruns the iteration and redraws them.
        write_pmf_files(&al, &state, &out, entry.iteration)?;
        save_al_state(&out, &config, &state)?;
        append_log(&out, &entry)?;
        print_iteration(&entry);
        done_here += 1;
        if !state.converged {
            crate::run_control::check_stop(&format!(
                "al checkpoint after iteration {}; continue with --resume --out {}",
                entry.iteration,
                out.display()
            ))?;
        }
    }
    if state.converged {
        let info = MoleculeModelInfo::aldp(&system, &structure.positions_nm[..66], 300.0)?.with_provenance(
            serde_json::json!({ "made_by": format!("cgflow {:?}", mode), "run": out, "evaluations": state.costs.total() }),
        );
        save_molecule_model(&out.join("model"), &state.flow, &info)?;
        save_model_system(&out.join("model"), &system)?;
        finish(&out, &state)?;
    } else {
        println!("stopped after {done_here} iterations; continue with --resume --out {}", out.display());
    }
    Ok(())
}

fn rewrite_log(out: &Path, log: &[AldpIteration]) -> Result<()> {
    let path = out.join("log.jsonl");
    let mut text = String::new();
    for entry in log {
        text.push_str(&serde_json::to_string(entry)?);
        text.push('\n');
    }
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
}

fn append_log(out: &Path, entry: &AldpIteration) -> Result<()> {
    let path = out.join("log.jsonl");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    writeln!(file, "{}", serde_json::to_string(entry)?).with_context(|| format!("writing {}", path.display()))
}

fn print_iteration(e: &AldpIteration) {
    let c = &e.costs;
    println!(
        "iteration {:>2}: {} train / {} test points, {:.3e} evaluations (MD {:.1e}, training {:.2e}, labels {:.2e}, \
         test {:.1e}), KLD {}, test rmse {}, D {:.1}%, ESS {:.1}%, {:.0} s, new centres {}",
        e.iteration,
        e.train_points,
        e.test_points,
        e.evaluations as f64,
        c.startup_md as f64,
        c.energy_training as f64,
        c.labels as f64,
        c.test_labels as f64,
        e.kld.map_or("-".to_owned(), |k| format!("{k:.4}")),
        e.test_rmse_kt.map_or("-".to_owned(), |k| format!("{k:.2} kT")),
        100.0 * e.d_fraction,
        100.0 * e.label_ess_fraction,
        e.wall_s,
        e.new_centres_deg.len()
    );
}

fn write_pmf_files(al: &AldpAl, state: &AldpAlState, out: &Path, iteration: usize) -> Result<()> {
    let (pmf, std) = al.pmf_grid(&state.ensemble, 100)?;
    for (name, values, label, clip, title) in [
        ("pmf", &pmf, "F / kT", 15.0, format!("ensemble-mean PMF, iteration {iteration}")),
        ("std", &std, "std / kT", f64::INFINITY, format!("ensemble std, iteration {iteration}")),
    ] {
        let path = out.join(format!("{name}_iter{iteration:02}.png"));
        crate::io::plot::heat_map_png(
            &path,
            &crate::io::plot::HeatMap {
                values,
                nx: 100,
                ny: 100,
                x_range: (-180.0, 180.0),
                y_range: (-180.0, 180.0),
                x_label: "phi / degree",
                y_label: "psi / degree",
                title: &title,
                colorbar_label: label,
                clip_max: clip.is_finite().then_some(clip),
                diverging: false,
            },
        )?;
    }
    // The latest PMF, and this iteration's (for curves of accuracy by region after the run).
    for name in ["pmf_kt.npy".to_owned(), format!("pmf_iter{iteration:02}_kt.npy")] {
        crate::io::npy::write_npy(&out.join(name), &[100, 100], &pmf)?;
    }
    Ok(())
}

fn finish(out: &Path, state: &AldpAlState) -> Result<()> {
    let last = state.log.last();
    let summary = serde_json::json!({
        "iterations": state.log.len(),
        "evaluations": state.costs.total(),
        "costs": state.costs,
        "kld": last.and_then(|e| e.kld),
        "wall_s": state.wall_s,
        "train_points": state.points.train.len(),
        "test_points": state.points.test.len(),
    });
    let path = out.join("summary.json");
    std::fs::write(&path, serde_json::to_string_pretty(&summary)?)
        .with_context(|| format!("writing {}", path.display()))?;
    println!(
        "done: {} (conditional flow in {}/model, ready for `cgflow backmap --model`)",
        path.display(),
        out.display()
    );
    Ok(())
}

/// One progress bar per phase.
#[derive(Default)]
struct Bars {
    bar: Option<indicatif::ProgressBar>,
}

impl Bars {
    fn event(&mut self, event: AlEvent) {
        match event {
            AlEvent::Phase { name, total } => {
                self.finish();
                let bar = indicatif::ProgressBar::new(total);
                bar.set_style(
                    indicatif::ProgressStyle::with_template("{msg:32} {bar:30} {pos}/{len}  {elapsed} ETA {eta}")
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                crate::run_control::start_phase(name, total);
                bar.set_message(name);
                self.bar = Some(bar);
            }
            AlEvent::Advance(n) => {
                crate::run_control::advance(n);
                if let Some(bar) = &self.bar {
                    bar.inc(n);
                }
            }
            AlEvent::Iteration(_) => self.finish(),
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
