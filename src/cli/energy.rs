//! `cgflow energy`: potential energies and forces of configurations under an OpenMM System.

use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use clap::Args;

use crate::energy::{non_finite_configurations, Batch, NonFinitePolicy, OpenMmEnergy, OpenMmEnergyConfig};
use crate::openmm::{Platform, System};

/// Arguments of `cgflow energy`.
#[derive(Debug, Args)]
pub struct EnergyArgs {
    /// Serialized OpenMM System (XML), e.g. data/alanine_dipeptide/aldp_obc1.xml.
    #[arg(long, value_name = "XML")]
    system: PathBuf,

    /// Configurations: .pdb (Å; one per MODEL), .xyz (Å, or nm when the comment line says nm),
    /// .npy in nm with shape (atoms, 3) or (configs, atoms, 3), or an AMBER .crd/.inpcrd (Å).
    #[arg(long, value_name = "FILE")]
    positions: PathBuf,

    /// OpenMM platform: Reference (double precision), CPU, OpenCL or CUDA where installed.
    #[arg(long, default_value = "Reference")]
    platform: String,

    /// Platform property KEY=VALUE (repeatable), e.g. Precision=double on CUDA or Threads=2 on CPU.
    #[arg(long = "property", value_name = "KEY=VALUE")]
    properties: Vec<String>,

    /// Temperature that defines kT for the reduced energies.
    #[arg(long, default_value_t = 300.0, value_name = "KELVIN")]
    temperature: f64,

    /// Worker threads, each with its own OpenMM Context (default: one per CPU core, at most one
    /// per configuration).
    #[arg(long)]
    workers: Option<usize>,

    /// Also print the forces on every atom (kJ/mol/nm).
    #[arg(long)]
    forces: bool,

    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,

    /// Configurations with a NaN or infinite energy or force: `error` (exit 1, naming them),
    /// `warn` (print them, with a warning on stderr) or `ignore` (print them).
    #[arg(long, value_enum, default_value_t = NonFinitePolicy::Error)]
    non_finite: NonFinitePolicy,

    /// Skip the check that the structure's elements match the System's particle masses (needed
    /// for systems with repartitioned hydrogen masses).
    #[arg(long)]
    no_element_check: bool,
}

fn parse_property(text: &str) -> Result<(String, String)> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => bail!("platform property '{text}' is not of the form KEY=VALUE"),
    }
}

/// Runs `cgflow energy`.
pub fn run(args: EnergyArgs) -> Result<()> {
    let system = System::from_xml_file(&args.system)?;
    let positions = crate::io::read_positions(&args.positions)?;
    let n_atoms = system.num_particles();
    if positions.n_atoms != n_atoms {
        bail!(
            "{} has {} atoms per configuration but the System {} has {} particles",
            args.positions.display(),
            positions.n_atoms,
            args.system.display(),
            n_atoms
        );
    }
    if let (Some(elements), false) = (&positions.elements, args.no_element_check) {
        crate::chem::check_elements_match_masses(elements, &system.masses()?)
            .with_context(|| format!("{} does not match {}", args.positions.display(), args.system.display()))?;
    }
    let mut platform = Platform::new(&args.platform)?;
    for property in &args.properties {
        let (key, value) = parse_property(property)?;
        platform = platform.with_property(&key, &value);
    }
    let batch = Batch::new(&positions.positions_nm, n_atoms)
        .with_context(|| format!("bad coordinates in {}", args.positions.display()))?;
    let config = OpenMmEnergyConfig {
        temperature_k: args.temperature,
        workers: Some(args.workers.unwrap_or_else(|| {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(batch.len()).max(1)
        })),
        pin_threads: true,
    };
    let mut model = OpenMmEnergy::new(&system, &platform, &config)?;
    let (energies_kj, forces) = model.evaluate_kj(&batch)?;
    let kt = model.kt_kj_per_mol();
    let bad = non_finite_configurations(&energies_kj, &forces, n_atoms);
    if !bad.is_empty() && args.non_finite != NonFinitePolicy::Ignore {
        let listed: Vec<String> = bad.iter().take(10).map(|i| i.to_string()).collect();
        let more = if bad.len() > 10 { format!(" and {} more", bad.len() - 10) } else { String::new() };
        let message = format!(
            "{} of {} configurations of {} have a non-finite energy or force (configuration {}{more}; overlapping atoms?)",
            bad.len(),
            energies_kj.len(),
            args.positions.display(),
            listed.join(", ")
        );
        if args.non_finite == NonFinitePolicy::Error {
            bail!("{message}; --non-finite warn or ignore prints them");
        }
        eprintln!("warning: {message}");
    }
    if args.json {
        print_json(&args, model.platform_name(), kt, &energies_kj, &forces, n_atoms)
    } else {
        print_table(&args, model.platform_name(), kt, &energies_kj, &forces, n_atoms);
        Ok(())
    }
}

fn print_table(args: &EnergyArgs, platform: &str, kt: f64, energies_kj: &[f64], forces: &[f64], n_atoms: usize) {
    println!(
        "# system {} | positions {} | platform {platform} | T = {} K, kT = {kt:.6} kJ/mol",
        args.system.display(),
        args.positions.display(),
        args.temperature
    );
    println!("{:>6} {:>20} {:>16}", "config", "energy [kJ/mol]", "u [kT]");
    for (i, e) in energies_kj.iter().enumerate() {
        println!("{i:>6} {e:>20.8} {:>16.8}", e / kt);
        if args.forces {
            for (a, f) in forces[i * 3 * n_atoms..(i + 1) * 3 * n_atoms].chunks_exact(3).enumerate() {
                println!("       atom {a:>4}  F = ({:>14.6}, {:>14.6}, {:>14.6}) kJ/mol/nm", f[0], f[1], f[2]);
            }
        }
    }
}

fn print_json(
    args: &EnergyArgs,
    platform: &str,
    kt: f64,
    energies_kj: &[f64],
    forces: &[f64],
    n_atoms: usize,
) -> Result<()> {
    let configurations: Vec<serde_json::Value> = energies_kj
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let mut entry = serde_json::json!({"energy_kj_per_mol": e, "reduced_energy": e / kt});
            if args.forces {
                let f: Vec<[f64; 3]> = forces[i * 3 * n_atoms..(i + 1) * 3 * n_atoms]
                    .chunks_exact(3)
                    .map(|c| [c[0], c[1], c[2]])
                    .collect();
                entry["forces_kj_per_mol_nm"] = serde_json::json!(f);
            }
            entry
        })
        .collect();
    let value = serde_json::json!({
        "system": args.system,
        "positions": args.positions,
        "platform": platform,
        "temperature_k": args.temperature,
        "kt_kj_per_mol": kt,
        "configurations": configurations,
    });
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(())
}
