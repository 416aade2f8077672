//! `cgflow backmap`: all-atom structures for CG points from a saved conditional molecular model.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use candle_core::Device;
use clap::Args;
use rand::SeedableRng;

use crate::backmap::{backmap, BackmapConfig, Backmapped};
use crate::energy::{OpenMmEnergy, OpenMmEnergyConfig};
use crate::flow::molecular::ConditionalMolecularTarget;
use crate::flow::molecule_model::{load_molecule_model, model_system};
use crate::io::cg_points::read_cg_points;
use crate::io::dcd::DcdWriter;
use crate::openmm::Platform;
use crate::units::AngleUnit;

/// Arguments of `cgflow backmap`.
#[derive(Debug, Args)]
pub struct BackmapArgs {
    /// Model folder written by `save_molecule_model` (flow.json, weights.safetensors, molecule.json,
    /// and system.xml in models saved since they carry their System).
    #[arg(long, value_name = "DIR")]
    model: PathBuf,

    /// CG points: a text file with one point per line, one value per CG angle of the model ("phi
    /// psi" for alanine dipeptide) separated by blanks and/or a comma, '#' starting a comment; or a
    /// .npy array of shape [points, CG angles]. Radians in [-pi, pi] unless --degrees; NaN,
    /// infinite and out-of-range angles are errors naming the line.
    #[arg(long, value_name = "FILE")]
    cg: PathBuf,

    /// Structures per CG point.
    #[arg(long, value_name = "N")]
    n: usize,

    /// Output structures: .pdb (multi-model, Å with 3 decimals), .dcd (Å, float32) or .npy (nm,
    /// float64, shape [structures, atoms, 3]), ordered by CG point. A table <out stem>.csv is
    /// written beside it with one row per structure: index, CG point, requested and achieved CG
    /// angles (rad), energy (kJ/mol), u (kT), log-weight and weight normalised over the structures of
    /// its CG point. The table holds the energies of the exact structures (as in the .npy); PDB
    /// rounding moves energies by about 0.1 kJ/mol.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,

    /// Serialized OpenMM System; must be the one the model was trained on (checked by fingerprint).
    /// Default: the `system.xml` the model carries.
    #[arg(long, value_name = "XML")]
    system: Option<PathBuf>,

    /// PDB whose atom names and residues label the output PDB (its coordinates are ignored).
    #[arg(long, value_name = "PDB", default_value = "data/alanine_dipeptide/aldp.pdb")]
    topology: PathBuf,

    /// OpenMM platform of the energy evaluations: CPU, Reference, OpenCL or CUDA where installed.
    #[arg(long, default_value = "CPU")]
    platform: String,

    /// Seed of the flow's random numbers (the output is reproducible from it).
    #[arg(long, default_value_t = 1)]
    seed: u64,

    /// The CG file holds degrees in [-180, 180] instead of radians.
    #[arg(long)]
    degrees: bool,

    /// Reject (and redraw) structures whose energy is above this bound, in kT (also non-finite
    /// energies); the weights are then those of the Boltzmann distribution restricted to energies
    /// below the bound. For alanine dipeptide 0 is a safe choice: about 70 kT above the minimum
    /// (-69.2 kT), far above thermal structures (about -39 +- 6 kT at 300 K), far below clashes.
    #[arg(long, value_name = "KT")]
    max_energy_kt: Option<f64>,

    /// Drawing rounds per CG point before giving up (each round redraws the rejected structures).
    #[arg(long, default_value_t = 20)]
    max_rounds: usize,
}

enum OutputFormat {
    Pdb,
    Dcd,
    Npy,
}

fn output_format(path: &Path) -> Result<OutputFormat> {
    match path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).as_deref() {
        Some("pdb") => Ok(OutputFormat::Pdb),
        Some("dcd") => Ok(OutputFormat::Dcd),
        Some("npy") => Ok(OutputFormat::Npy),
        _ => bail!("--out {}: the structures are written as .pdb, .dcd or .npy", path.display()),
    }
}

/// Runs `cgflow backmap`.
pub fn run(args: BackmapArgs) -> Result<()> {
    let format = output_format(&args.out)?;
    if args.n == 0 {
        bail!("--n must be at least 1");
    }
    if args.max_energy_kt.is_some_and(f64::is_nan) {
        bail!("--max-energy-kt is NaN");
    }
    let (flow, info) = load_molecule_model(&args.model, &Device::Cpu)
        .with_context(|| format!("loading the model {}", args.model.display()))?;
    let system =
        model_system(&args.model, args.system.as_deref()).context("the System of the model (give it with --system)")?;
    info.check_system(&system).with_context(|| match &args.system {
        Some(path) => format!("--system {}", path.display()),
        None => format!("the System carried by {}", args.model.display()),
    })?;
    let molecule = info.molecule()?;
    let unit = if args.degrees { AngleUnit::Degrees } else { AngleUnit::Radians };
    let cg_dims = molecule.cg_dims();
    let cg = read_cg_points(&args.cg, cg_dims, unit)?;
    let template = match format {
        OutputFormat::Pdb => {
            let models = crate::io::pdb::read_pdb(&args.topology)?;
            let atoms = models.into_iter().next().map(|m| m.atoms).unwrap_or_default();
            if atoms.len() != info.n_atoms {
                bail!("--topology {} has {} atoms, the model {}", args.topology.display(), atoms.len(), info.n_atoms);
            }
            atoms
        }
        _ => Vec::new(),
    };

    let platform = Platform::new(&args.platform)?;
    let energy_config = OpenMmEnergyConfig { temperature_k: info.temperature_k, ..OpenMmEnergyConfig::default() };
    let energy = OpenMmEnergy::new(&system, &platform, &energy_config)?;
    let target = ConditionalMolecularTarget::new(molecule, Box::new(energy))?;
    let config = BackmapConfig {
        samples_per_point: args.n,
        max_energy_kt: args.max_energy_kt,
        max_rounds: args.max_rounds,
        temperature_k: info.temperature_k,
        ..BackmapConfig::default()
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(args.seed);
    let result = backmap(&flow, &target, &cg, &config, &mut rng)?;

    let stride = 3 * result.n_atoms;
    match format {
        OutputFormat::Pdb => {
            let models: Vec<Vec<f64>> = result.positions_nm.chunks_exact(stride).map(<[f64]>::to_vec).collect();
            crate::io::pdb::write_pdb(&args.out, &template, &models)?;
        }
        OutputFormat::Dcd => {
            let mut writer = DcdWriter::create(&args.out, result.n_atoms, 1, 0.0)?;
            for frame in result.positions_nm.chunks_exact(stride) {
                writer.append(frame)?;
            }
            writer.sync()?;
        }
        OutputFormat::Npy => {
            let shape = [result.cg_index.len(), result.n_atoms, 3];
            crate::io::npy::write_npy(&args.out, &shape, &result.positions_nm)?;
        }
    }
    let table = args.out.with_extension("csv");
    std::fs::write(
        &table,
        csv(&result, &cg, cg_dims, info.cg == crate::flow::molecule_model::CgDefinition::AldpPhiPsi),
    )
    .with_context(|| format!("writing {}", table.display()))?;
    print_summary(&args, &table, &result, crate::units::kt_kj_per_mol(info.temperature_k));
    Ok(())
}

/// The per-structure table; numbers in Rust's shortest exact form. Alanine dipeptide's CG angles
/// (`aldp_phi_psi`) are named phi and psi; any other model's cg1, cg2, ...
fn csv(result: &Backmapped, cg: &[f64], cg_dims: usize, aldp_phi_psi: bool) -> String {
    let names: Vec<String> =
        if aldp_phi_psi { vec!["phi".into(), "psi".into()] } else { (1..=cg_dims).map(|k| format!("cg{k}")).collect() };
    let mut text = String::from("structure,cg_index,");
    for name in &names {
        let _ = write!(text, "{name}_requested_rad,");
    }
    for name in &names {
        let _ = write!(text, "{name}_rad,");
    }
    text.push_str("energy_kj_per_mol,u_kt,log_weight,weight\n");
    for (i, &j) in result.cg_index.iter().enumerate() {
        let requested = &cg[j * cg_dims..(j + 1) * cg_dims];
        let achieved = &result.cg_achieved_rad[i * cg_dims..(i + 1) * cg_dims];
        // Infallible: writing to a String cannot fail.
        let _ = write!(text, "{i},{j},");
        for v in requested.iter().chain(achieved) {
            let _ = write!(text, "{v},");
        }
        let _ = writeln!(
            text,
            "{},{},{},{}",
            result.energies_kj_per_mol[i],
            result.reduced_energies[i],
            result.log_weights[i],
            result.normalized_weights[i]
        );
    }
    text
}

fn print_summary(args: &BackmapArgs, table: &Path, result: &Backmapped, kt: f64) {
    let structures = result.cg_index.len();
    let mean_kj = result.energies_kj_per_mol.iter().sum::<f64>() / structures as f64;
    println!(
        "{structures} structures for {} CG points -> {} and {}",
        result.points.len(),
        args.out.display(),
        table.display()
    );
    println!(
        "energy evaluations {}, rejected: {} of the wrong chirality (D amino acids), {} above the energy bound or non-finite",
        result.evaluations, result.rejected_chirality, result.rejected_energy
    );
    println!("mean energy {mean_kj:.3} kJ/mol ({:.3} kT)", mean_kj / kt);
    if result.points.len() <= 20 {
        println!("{:>6} {:>8} {:>10} {:>10} {:>14}", "point", "draws", "rejected", "ESS", "A [kT]");
        for (j, p) in result.points.iter().enumerate() {
            println!(
                "{j:>6} {:>8} {:>10} {:>10.2} {:>14.4}",
                p.draws,
                p.rejected_chirality + p.rejected_energy,
                p.ess,
                p.free_energy_kt
            );
        }
    } else {
        let ess = result.points.iter().map(|p| p.ess);
        let (lo, hi) = ess.clone().fold((f64::INFINITY, 0.0f64), |(lo, hi), e| (lo.min(e), hi.max(e)));
        println!(
            "ESS per point: min {lo:.2}, mean {:.2}, max {hi:.2} (of {})",
            ess.sum::<f64>() / result.points.len() as f64,
            args.n
        );
    }
}
