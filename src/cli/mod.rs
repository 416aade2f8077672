//! Command-line interface: argument parsing and dispatch. One file per subcommand; no math here.

mod al;
mod backmap;
mod bg;
mod compare;
mod energy;
mod grid;
mod info;
mod md;
mod reference;
mod umbrella;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// cgflow: learned generative models on top of OpenMM energies.
///
/// Evaluate all-atom energies of any serialized OpenMM System, batched and exception-safe.
/// Positions are in nm (PDB files in Å as the format demands); energies are printed in kJ/mol
/// and in kT.
#[derive(Debug, Parser)]
#[command(name = "cgflow", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Potential energies (and optionally forces) of configurations under an OpenMM System.
    Energy(energy::EnergyArgs),
    /// OpenMM version, plugin directory, available platforms and plugin load failures.
    Info(info::InfoArgs),
    /// Langevin MD of many walkers: dihedral CVs, DCD trajectories, checkpoint and resume.
    Md(md::MdArgs),
    /// Cost curves (KL divergence to a reference PMF against energy evaluations) of MD or of
    /// Müller-Brown Monte Carlo, under each empty-bin rule, and speedups at equal KLD.
    Compare(Box<compare::CompareArgs>),
    /// 2D umbrella sampling of alanine dipeptide's (phi, psi) and WHAM: the reference PMF.
    Umbrella(umbrella::UmbrellaArgs),
    /// The binless (MBAR) reference PMF of (phi, psi) from stored umbrella (and MD) samples, with
    /// its halves, basin populations with errors, and a check against independent MD.
    Reference(reference::ReferenceArgs),
    /// All-atom structures for CG points (any molecule's CG angles) from a saved conditional flow,
    /// with energies and importance weights.
    Backmap(backmap::BackmapArgs),
    /// Boltzmann generator on a toy system (double well, harmonic box, Müller-Brown) with PNGs.
    Bg(bg::BgArgs),
    /// Active learning of a molecule's CG PMF (alanine dipeptide's (phi, psi) by default, any
    /// molecule with --cg) with a conditional flow and OpenMM.
    Al(al::AlArgs),
    /// Grid-conditioning control: the conditional flow trained on a uniform grid of the CG angles.
    Grid(grid::GridArgs),
}

/// Parses the command line, runs the subcommand and turns errors into a message and exit code 1.
pub fn main() -> ExitCode {
    match dispatch(Cli::parse().command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Why a subcommand run by a host ([`run_words`]) failed.
#[derive(Debug)]
pub enum HostRunError {
    /// The words do not parse: an unknown option, a missing or malformed value (clap's message).
    Usage(String),
    /// The command ran and failed.
    Failed(anyhow::Error),
}

/// Runs one subcommand from its words (those after `cgflow`, e.g. `["md", "--steps", "100", ...]`),
/// for a host such as the Python package: the same parsing, checks and code as the command line,
/// with errors returned instead of printed.
pub fn run_words(words: &[String]) -> std::result::Result<(), HostRunError> {
    let cli = Cli::try_parse_from(std::iter::once("cgflow".to_owned()).chain(words.iter().cloned()))
        .map_err(|e| HostRunError::Usage(e.render().to_string().trim_end().to_owned()))?;
    dispatch(cli.command).map_err(HostRunError::Failed)
}

/// One option of a subcommand, as a host needs it to turn keyword arguments into words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionInfo {
    /// The long name without dashes, e.g. `record-every`.
    pub long: String,
    /// Whether it takes a value (else it is a flag).
    pub takes_value: bool,
    /// Whether it may be given more than once (e.g. `md --dihedral`).
    pub repeatable: bool,
}

/// The options of subcommand `name` (`None` for an unknown subcommand).
pub fn subcommand_options(name: &str) -> Option<Vec<OptionInfo>> {
    use clap::CommandFactory;
    let command = Cli::command();
    let sub = command.find_subcommand(name)?;
    Some(
        sub.get_arguments()
            .filter_map(|a| {
                let long = a.get_long()?;
                (long != "help").then(|| OptionInfo {
                    long: long.to_owned(),
                    takes_value: a.get_action().takes_values(),
                    repeatable: matches!(a.get_action(), clap::ArgAction::Append),
                })
            })
            .collect(),
    )
}

fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Energy(args) => energy::run(args),
        Command::Info(args) => info::run(args),
        Command::Md(args) => md::run(args),
        Command::Compare(args) => compare::run(*args),
        Command::Umbrella(args) => umbrella::run(args),
        Command::Reference(args) => reference::run(args),
        Command::Bg(args) => bg::run(args),
        Command::Al(args) => al::run(args, crate::al::driver::AlMode::ActiveLearning),
        Command::Grid(args) => grid::run(args),
        Command::Backmap(args) => backmap::run(args),
    }
}

/// The walker state stored in a run checkpoint (the "openmm" section and the step counters).
pub(crate) fn walker_state(
    checkpoint: &crate::io::checkpoint::Checkpoint,
) -> anyhow::Result<crate::md::WalkerCheckpoint> {
    use anyhow::Context as _;
    Ok(crate::md::WalkerCheckpoint {
        openmm: checkpoint.section("openmm").context("checkpoint lacks the OpenMM state")?.to_vec(),
        steps_done: checkpoint.meta["steps_done"].as_u64().context("checkpoint lacks steps_done")?,
        steps_since_recentre: checkpoint.meta["steps_since_recentre"]
            .as_u64()
            .context("checkpoint lacks steps_since_recentre")?,
    })
}

/// Parses `I,J`, two 0-based indices (a pair of CVs or CG dimensions), for clap.
pub(crate) fn parse_index_pair(text: &str) -> Result<[usize; 2], String> {
    text.split_once(',')
        .and_then(|(i, j)| Some([i.trim().parse().ok()?, j.trim().parse().ok()?]))
        .ok_or_else(|| format!("'{text}': expected I,J (two 0-based indices)"))
}

/// The atom names and residue numbers of the PDB `path` (its first model), which CG definitions
/// are resolved against; an error unless it has the System's `n_atoms` atoms.
pub(crate) fn topology_labels(
    path: &std::path::Path,
    n_atoms: usize,
) -> anyhow::Result<Vec<crate::coords::cg_definition::AtomLabel>> {
    let model = crate::io::pdb::read_pdb(path)?.into_iter().next().unwrap_or_default();
    if model.atoms.len() != n_atoms {
        anyhow::bail!("{} has {} atoms, the System {n_atoms}", path.display(), model.atoms.len());
    }
    Ok(model.atom_labels())
}

/// Thread settings for flow training, applied before any thread pool starts (explicit settings
/// in the environment win): one candle thread (candle's parallel elementwise ops spin-wait on a
/// pool of their own that fights gemm's threads on a small machine), and `RAYON_NUM_THREADS` set
/// to the available cores, because without it candle parses /proc/cpuinfo on every matrix
/// product (measured: 13 % of a training step of a small network).
pub fn configure_flow_threads() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        std::env::set_var("RAYON_NUM_THREADS", cores.to_string());
    }
}

/// A progress bar over MD steps per walker; its message shows the throughput.
/// The same progress is published to [`crate::run_control`] (callers set the position on both).
pub(crate) fn step_progress(total_steps: u64) -> indicatif::ProgressBar {
    crate::run_control::start_phase("steps per walker", total_steps);
    let bar = indicatif::ProgressBar::new(total_steps);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} steps per walker  {msg}  ETA {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

/// The checkpoint of a run folder, under one policy for every long-running command: an existing
/// checkpoint is continued only when asked (`continuing`) and only if the settings it stores under
/// `key` equal `settings`; asking to continue without a checkpoint is an error.
pub(crate) fn run_checkpoint(
    path: &std::path::Path,
    continuing: bool,
    key: &str,
    settings: &serde_json::Value,
) -> anyhow::Result<Option<crate::io::checkpoint::Checkpoint>> {
    if !path.exists() {
        if continuing {
            anyhow::bail!("no checkpoint {} to continue", path.display());
        }
        return Ok(None);
    }
    if !continuing {
        anyhow::bail!("{} exists: pass --resume to continue it, or choose another --out", path.display());
    }
    let checkpoint = crate::io::checkpoint::read_checkpoint(path)?;
    if &checkpoint.meta[key] != settings {
        anyhow::bail!(
            "{} was written with other settings or another system:\n  stored {}\n  now    {}",
            path.display(),
            checkpoint.meta[key],
            settings
        );
    }
    Ok(Some(checkpoint))
}

/// Refuses to start a fresh run in a folder that holds files of an earlier run (one killed before
/// its first checkpoint, say), naming them, instead of overwriting them silently.
pub(crate) fn refuse_leftovers(
    dir: &std::path::Path,
    checkpoint: &std::path::Path,
    is_leftover: impl Fn(&str) -> bool,
) -> anyhow::Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    let mut found: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| is_leftover(n))
        .collect();
    if found.is_empty() {
        return Ok(());
    }
    found.sort();
    anyhow::bail!(
        "{} holds files of an earlier run ({}) but no checkpoint {} to continue it: remove them to start over, or \
         choose another --out",
        dir.display(),
        found.join(", "),
        checkpoint.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_see_the_options_of_a_subcommand_and_get_usage_errors_back() {
        let md = subcommand_options("md").expect("md exists");
        let find = |long: &str| md.iter().find(|o| o.long == long).cloned();
        assert_eq!(
            find("record-every"),
            Some(OptionInfo { long: "record-every".into(), takes_value: true, repeatable: false })
        );
        assert_eq!(find("resume"), Some(OptionInfo { long: "resume".into(), takes_value: false, repeatable: false }));
        assert_eq!(find("dihedral"), Some(OptionInfo { long: "dihedral".into(), takes_value: true, repeatable: true }));
        assert!(find("help").is_none());
        assert!(subcommand_options("fly").is_none());
        let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        match run_words(&words(&["md", "--bogus", "1"])) {
            Err(HostRunError::Usage(message)) => assert!(message.contains("--bogus"), "{message}"),
            other => panic!("expected a usage error, got {other:?}"),
        }
        match run_words(&words(&[
            "md",
            "--system",
            "/nonexistent.xml",
            "--positions",
            "x.pdb",
            "--out",
            "o",
            "--steps",
            "1",
        ])) {
            Err(HostRunError::Failed(e)) => assert!(format!("{e:#}").contains("/nonexistent.xml"), "{e:#}"),
            other => panic!("expected a failure, got {other:?}"),
        }
    }
}
