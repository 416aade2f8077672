//! `cgflow al`: active learning of a molecule's CG PMF (alanine dipeptide's (phi, psi) by
//! default; any System with `--cg`); also the runner behind `cgflow grid` (the
//! grid-conditioning control). Progress bars, a per-iteration log (`log.jsonl`), PNGs of the PMF
//! (or of its 2D marginals) and its uncertainty after every iteration, a checkpoint after every
//! step and `--resume`.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::al::checkpoint::{has_al_state, load_al_state, save_al_state};
use crate::al::config::AlConfig;
use crate::al::driver::{ActiveLearning, AlMode, AlState};
use crate::al::molecule::{MarginalReference, MoleculeProblem, REFERENCE_BINS};
use crate::al::record::{AlEvent, AlIteration};
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
    /// Settings file (JSON; every field documented in `crate::al::config::AlConfig`; unknown
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
    /// The molecule's OpenMM System (NoCutoff nonbonded forces, no constraints).
    #[arg(long, value_name = "XML", default_value = "data/alanine_dipeptide/aldp_obc1.xml")]
    pub system: PathBuf,
    /// Minimum-energy structure: normalisation centre and MD start (.pdb, .xyz, .npy, .crd).
    #[arg(long, value_name = "FILE", default_value = "data/alanine_dipeptide/min_energy.pdb")]
    pub structure: PathBuf,
    /// The CG dihedrals, as a CG definition: `backbone` (every phi and psi), `phi:R psi:R ...`
    /// (residue numbers as in the PDB), or `I,J,K,L ...` (0-based atoms). The molecule's
    /// Z-matrix, circular dimensions and chiral centres then come from the System's bond graph
    /// and the structure, and a preset's search starts at the structure's CG point. Absent:
    /// alanine dipeptide's (phi, psi) with its hand-written Z-matrix (the presets' molecule).
    #[arg(long, value_name = "DEFINITION")]
    pub cg: Option<String>,
    /// PDB whose atom names and residue numbers resolve --cg (default: --structure, if a PDB).
    #[arg(long, value_name = "PDB")]
    pub topology: Option<PathBuf>,
    /// Reference bin probabilities (100 x 100 over [-pi, pi)^2, `[bin of i][bin of j]`) of CG
    /// dimensions i and j for the KLD, as `I,J=NPY` (0-based, in the order of --cg; repeatable,
    /// the KLD is then the mean over the references) or `NPY` for the pair 0,1; `none` for no
    /// KLD. Default: alanine dipeptide's reference without --cg, none with it.
    #[arg(long, value_name = "[I,J=]NPY")]
    pub reference: Vec<String>,
    /// Midpoints per integrated-out CG angle when a 2D marginal of a PMF over more than two
    /// angles is computed (KLD and PNGs).
    #[arg(long, value_name = "N", default_value_t = MoleculeProblem::DEFAULT_OTHER_BINS)]
    pub marginal_grid: usize,
    /// OpenMM platform of the energies and the start-up MD.
    #[arg(long, default_value = "CPU")]
    pub platform: String,
}

fn preset(p: Preset) -> AlConfig {
    match p {
        Preset::Fast => AlConfig::fast(),
        Preset::Reference => AlConfig::reference(),
        Preset::Tiny => AlConfig::tiny(),
    }
}

fn read_config(path: &Path) -> Result<AlConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let config: AlConfig =
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
    // A preset's search start is alanine dipeptide's (phi, psi); another molecule's search starts at
    // its structure's CG point.
    if args.cg.is_some() && args.config.is_none() {
        config.search.start_deg = None;
    }
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
    let n_atoms = system.num_particles();
    if structure.n_atoms != n_atoms {
        bail!("{} has {} atoms, the system {n_atoms}", args.structure.display(), structure.n_atoms);
    }
    let structure_nm = &structure.positions_nm[..3 * n_atoms];
    if args.topology.is_some() && args.cg.is_none() {
        bail!("--topology names the atoms of a --cg definition; give --cg too");
    }
    let (info, names) = match &args.cg {
        None => (
            MoleculeModelInfo::aldp(&system, structure_nm, 300.0)
                .context("without --cg the molecule is alanine dipeptide; give --cg for another")?,
            vec!["phi".to_owned(), "psi".to_owned()],
        ),
        Some(definition) => {
            let (dihedrals, names) = resolve_cg(definition, args.topology.as_deref(), &args.structure, n_atoms)?;
            let info = MoleculeModelInfo::for_system(&system, structure_nm, &dihedrals, 300.0)
                .with_context(|| format!("--cg '{definition}'"))?;
            (info, names)
        }
    };
    let molecule = info.molecule()?;
    let references = read_references(&args.reference, args.cg.is_none(), molecule.cg_dims())?;
    let pairs = marginal_pairs(molecule.cg_dims(), &references);
    let platform = Platform::new(&args.platform)?;
    let problem = MoleculeProblem::new(molecule, &system, &platform, structure_nm, references)?
        .with_other_bins(args.marginal_grid)?;
    let al = ActiveLearning::new(config.clone(), Box::new(problem))?;
    let output = PmfOutput { out: &out, pairs: &pairs, other_bins: args.marginal_grid, names: &names };

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
        write_pmf_files(&al, &state, &output, entry.iteration)?;
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
        let info = info.with_provenance(
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

fn rewrite_log(out: &Path, log: &[AlIteration]) -> Result<()> {
    let path = out.join("log.jsonl");
    let mut text = String::new();
    for entry in log {
        text.push_str(&serde_json::to_string(entry)?);
        text.push('\n');
    }
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
}

fn append_log(out: &Path, entry: &AlIteration) -> Result<()> {
    let path = out.join("log.jsonl");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    writeln!(file, "{}", serde_json::to_string(entry)?).with_context(|| format!("writing {}", path.display()))
}

fn print_iteration(e: &AlIteration) {
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

/// The CG dihedrals of `definition`, resolved by atom name and residue number from `topology`
/// (default: `structure`, if a PDB), and their names (`phi 2`, ...).
fn resolve_cg(
    definition: &str,
    topology: Option<&Path>,
    structure: &Path,
    n_atoms: usize,
) -> Result<(Vec<[usize; 4]>, Vec<String>)> {
    let is_pdb = |p: &Path| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("pdb"));
    let topology = match topology {
        Some(path) => path,
        None if is_pdb(structure) => structure,
        None => bail!(
            "--structure {} has no atom names: give --topology PDB to resolve --cg '{definition}'",
            structure.display()
        ),
    };
    let labels = super::topology_labels(topology, n_atoms)?;
    let dihedrals = crate::coords::cg_definition::resolve(definition, &labels)
        .with_context(|| format!("--cg '{definition}' on {}", topology.display()))?;
    let names = crate::coords::cg_definition::names(&dihedrals, &labels);
    Ok((dihedrals, names))
}

/// The marginal references of `--reference` items (`I,J=NPY`, `NPY` for the pair 0,1, or `none`);
/// with none given, alanine dipeptide's committed reference when `aldp_default`.
fn read_references(items: &[String], aldp_default: bool, cg_dims: usize) -> Result<Vec<MarginalReference>> {
    const ALDP_REFERENCE: &str = "data/reference/aldp_umbrella/reference_probabilities.npy";
    let items: Vec<String> = match items {
        [] if aldp_default => vec![ALDP_REFERENCE.to_owned()],
        [] => vec![],
        [none] if none == "none" => vec![],
        _ if items.iter().any(|i| i == "none") => bail!("--reference none cannot be combined with references"),
        _ => items.to_vec(),
    };
    items
        .iter()
        .map(|item| {
            // `I,J=` in front names the pair; a path may hold `=` itself.
            let pair_prefix = item
                .split_once('=')
                .and_then(|(pair, path)| Some((super::parse_index_pair(pair).ok()?, PathBuf::from(path))));
            let ([i, j], path) = pair_prefix.unwrap_or(([0, 1], PathBuf::from(item)));
            let pair = (i, j);
            if pair.0 >= cg_dims || pair.1 >= cg_dims || pair.0 == pair.1 {
                bail!("--reference '{item}': ({}, {}) is not a pair of the {cg_dims} CG dimensions", pair.0, pair.1);
            }
            let array = crate::io::npy::read_npy(&path)?;
            if array.shape != [REFERENCE_BINS, REFERENCE_BINS] {
                bail!(
                    "{}: expected a ({REFERENCE_BINS}, {REFERENCE_BINS}) array, got {:?}",
                    path.display(),
                    array.shape
                );
            }
            Ok(MarginalReference { pair, probabilities: array.data })
        })
        .collect()
}

/// The pairs of CG dimensions whose PMFs are drawn for a problem of more than two: those of the
/// references, or (0, 1), (2, 3), ... without any (and, for an odd count, the last two).
fn marginal_pairs(cg_dims: usize, references: &[MarginalReference]) -> Vec<(usize, usize)> {
    if references.is_empty() {
        let mut pairs: Vec<(usize, usize)> = (0..cg_dims / 2).map(|k| (2 * k, 2 * k + 1)).collect();
        if cg_dims % 2 == 1 && cg_dims > 2 {
            pairs.push((cg_dims - 2, cg_dims - 1));
        }
        pairs
    } else {
        references.iter().map(|r| r.pair).collect()
    }
}

/// Where the PMFs of a run go: its folder, and for more than two CG angles the marginals drawn.
struct PmfOutput<'a> {
    out: &'a Path,
    pairs: &'a [(usize, usize)],
    other_bins: usize,
    /// Names of the CG angles, for axes and titles.
    names: &'a [String],
}

fn heat_map(
    path: &Path,
    values: &[f64],
    x_label: &str,
    y_label: &str,
    title: &str,
    label: &str,
    clip: f64,
) -> Result<()> {
    crate::io::plot::heat_map_png(
        path,
        &crate::io::plot::HeatMap {
            values,
            nx: 100,
            ny: 100,
            x_range: (-180.0, 180.0),
            y_range: (-180.0, 180.0),
            x_label,
            y_label,
            title,
            colorbar_label: label,
            clip_max: clip.is_finite().then_some(clip),
            diverging: false,
        },
    )?;
    Ok(())
}

fn write_pmf_files(al: &ActiveLearning, state: &AlState, output: &PmfOutput, iteration: usize) -> Result<()> {
    let out = output.out;
    if al.problem().cg_dims() == 1 {
        // One CG angle: the PMF on 100 bin centres (no picture).
        let (lo, hi) = (-std::f64::consts::PI, std::f64::consts::PI);
        let centres = crate::metrics::Axis::new(lo, hi, REFERENCE_BINS)?.centres();
        let (mut pmf, _) = state.ensemble.predict(&centres)?;
        let min = pmf.iter().copied().fold(f64::INFINITY, f64::min);
        pmf.iter_mut().for_each(|v| *v -= min);
        for name in ["pmf_kt.npy".to_owned(), format!("pmf_iter{iteration:02}_kt.npy")] {
            crate::io::npy::write_npy(&out.join(name), &[REFERENCE_BINS], &pmf)?;
        }
        return Ok(());
    }
    if al.problem().cg_dims() != 2 {
        for &(i, j) in output.pairs {
            let scored = state.marginal_pmfs.iter().find(|(pair, _)| *pair == (i, j)).map(|(_, f)| f.clone());
            let pmf = match scored {
                Some(pmf) => pmf,
                None => al.marginal_pmf(&state.ensemble, (i, j), REFERENCE_BINS, output.other_bins)?,
            };
            let (a, b) = (&output.names[i], &output.names[j]);
            let title = format!("ensemble-mean PMF of ({a}, {b}), iteration {iteration}");
            let path = out.join(format!("pmf_{i}_{j}_iter{iteration:02}.png"));
            let (x, y) = (format!("{a} / degree"), format!("{b} / degree"));
            heat_map(&path, &pmf, &x, &y, &title, "F / kT", 15.0)?;
            for name in [format!("pmf_{i}_{j}_kt.npy"), format!("pmf_{i}_{j}_iter{iteration:02}_kt.npy")] {
                crate::io::npy::write_npy(&out.join(name), &[REFERENCE_BINS, REFERENCE_BINS], &pmf)?;
            }
        }
        return Ok(());
    }
    let (pmf, std) = al.pmf_grid(&state.ensemble, 100)?;
    for (name, values, label, clip, title) in [
        ("pmf", &pmf, "F / kT", 15.0, format!("ensemble-mean PMF, iteration {iteration}")),
        ("std", &std, "std / kT", f64::INFINITY, format!("ensemble std, iteration {iteration}")),
    ] {
        let path = out.join(format!("{name}_iter{iteration:02}.png"));
        let [x, y] = [0, 1].map(|k| format!("{} / degree", output.names[k]));
        heat_map(&path, values, &x, &y, &title, label, clip)?;
    }
    // The latest PMF, and this iteration's (for curves of accuracy by region after the run).
    for name in ["pmf_kt.npy".to_owned(), format!("pmf_iter{iteration:02}_kt.npy")] {
        crate::io::npy::write_npy(&out.join(name), &[100, 100], &pmf)?;
    }
    Ok(())
}

fn finish(out: &Path, state: &AlState) -> Result<()> {
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
