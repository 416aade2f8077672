//! Backmapping any molecule from its data alone: a System, a PDB and a CG definition. Runs short
//! MD, trains a small conditional flow by example on its frames, saves it as a molecule model
//! (`molecule.json` version 2, with the System), and backmaps CG points taken from the MD data with
//! an energy bound; then checks the structures (CG angles measured on them, every
//! chiral centre's handedness against the reference, energies from a fresh OpenMM evaluation) and
//! writes a summary. No molecule-specific code: the molecule is the arguments.
//!
//! ```sh
//! cargo run --release --example backmap_any_molecule -- data/ace_ala2_nme/system_obc1.xml \
//!     data/ace_ala2_nme/min_energy.pdb backbone results/ace_ala2_nme_backmap
//! ```
//!
//! Writes OUT/model/ (the model, usable by `cgflow backmap --model`), OUT/structures.pdb,
//! OUT/summary.json. The flow is small and trained briefly, so the structures' weights are poor; the
//! point is that the geometry, the chirality and the energy bound hold for a molecule cgflow has no
//! code for.

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use cgflow::backmap::{backmap, BackmapConfig};
use cgflow::coords::cg_definition::resolve;
use cgflow::coords::chirality::signed_volume;
use cgflow::coords::geometry::{dihedral, wrap_angle};
use cgflow::energy::{Batch, EnergyModel, OpenMmEnergy, OpenMmEnergyConfig};
use cgflow::flow::molecular::ConditionalMolecularTarget;
use cgflow::flow::molecule_model::{load_molecule_model, save_model_system, save_molecule_model, MoleculeModelInfo};
use cgflow::flow::optim::{Adam, AdamConfig};
use cgflow::flow::train::ml_loss;
use cgflow::flow::{Flow, FlowSpec, Precision};
use cgflow::md::{WalkerConfig, Walkers};
use cgflow::openmm::{Platform, System};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Walkers, equilibration steps, frames per walker and steps between frames of the MD data.
const WALKERS: usize = 16;
const EQUILIBRATE: u64 = 2000;
const FRAMES: usize = 250;
const STRIDE: u64 = 20;
/// Adam steps of training by example, batch size, learning rate.
const STEPS: usize = 1500;
const BATCH: usize = 128;
const LEARNING_RATE: f64 = 2e-3;
/// CG points backmapped (taken from the MD data), structures per point.
const POINTS: usize = 8;
const PER_POINT: usize = 16;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [system_path, structure_path, cg_definition, out] = args.as_slice() else {
        return Err("usage: backmap_any_molecule SYSTEM.xml STRUCTURE.pdb CG_DEFINITION OUT_DIR".into());
    };
    let out = PathBuf::from(out);
    std::fs::create_dir_all(&out)?;
    let system = System::from_xml_file(system_path.as_ref())?;
    let pdb = cgflow::io::pdb::read_pdb(structure_path.as_ref())?
        .into_iter()
        .next()
        .ok_or_else(|| format!("{structure_path} holds no structure"))?;
    let x0 = pdb.positions_nm();
    let n_atoms = system.num_particles();
    let dihedrals = resolve(cg_definition, &pdb.atom_labels())?;
    let info = MoleculeModelInfo::for_system(&system, &x0, &dihedrals, 300.0)?;
    let molecule = info.molecule()?;
    println!(
        "{n_atoms} atoms, CG {dihedrals:?}: {} fine coordinates ({} circular), chiral centres at atoms {:?}",
        molecule.fine_dims(),
        molecule.fine_circular_indices().len(),
        molecule.chiral_centres().iter().map(|c| c.atom).collect::<Vec<_>>()
    );

    // MD data: WALKERS walkers from the structure, one thread (reproducible).
    let cpu = Platform::new("CPU")?.with_property("Threads", "1");
    let config = WalkerConfig { walkers: WALKERS, seed: 11, ..Default::default() };
    let mut walkers = Walkers::new(&system, &cpu, &config, &x0, |_| vec![])?;
    walkers.step(EQUILIBRATE)?;
    let mut frames = Vec::with_capacity(WALKERS * FRAMES * 3 * n_atoms);
    for _ in 0..FRAMES {
        walkers.step(STRIDE)?;
        frames.extend(walkers.positions()?);
    }
    let (fine, cg, _) = molecule.from_cartesian(&frames)?;
    let (f, c, n) = (molecule.fine_dims(), molecule.cg_dims(), cg.len() / molecule.cg_dims());
    println!("MD: {n} frames ({} evaluations)", walkers.evaluations());

    // Training by example.
    // The reference architecture for this molecule, smaller.
    let spec = FlowSpec { layers: 6, hidden: 96, ..molecule.reference_flow_spec(Precision::Mixed, 7) };
    let flow = Flow::new(&spec, &Device::Cpu)?;
    let mut adam = Adam::new(flow.params(), AdamConfig::default());
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut order: Vec<usize> = (0..n).collect();
    let per_epoch = n / BATCH;
    let mut last_loss = f64::NAN;
    for step in 0..STEPS {
        if step % per_epoch == 0 {
            order.shuffle(&mut rng);
        }
        let rows = &order[(step % per_epoch) * BATCH..][..BATCH];
        let x: Vec<f64> = rows.iter().flat_map(|&i| fine[i * f..(i + 1) * f].iter().copied()).collect();
        let s: Vec<f64> = rows.iter().flat_map(|&i| cg[i * c..(i + 1) * c].iter().copied()).collect();
        let x = Tensor::from_vec(x, (BATCH, f), &Device::Cpu)?;
        let s = Tensor::from_vec(molecule.context(&s), (BATCH, 2 * c), &Device::Cpu)?;
        let (loss, value) = ml_loss(&flow, &x, Some(&s))?;
        adam.step(flow.params(), &loss.backward()?, LEARNING_RATE)?;
        last_loss = value.loss;
    }
    println!("trained by example: {STEPS} steps, last loss {last_loss:.3}");
    let model = out.join("model");
    let info = info.with_provenance(serde_json::json!({
        "made_by": "examples/backmap_any_molecule.rs", "system": system_path, "structure": structure_path,
        "cg": cg_definition, "md_frames": n, "steps": STEPS,
    }));
    save_molecule_model(&model, &flow, &info)?;
    save_model_system(&model, &system)?;

    // Backmapping through the saved model, with an energy bound: the minimum structure's u plus
    // 1.5 kT per fine degree of freedom (three times the thermal kT/2 each: far above thermal
    // structures, far below clashes).
    let (flow, info) = load_molecule_model(&model, &Device::Cpu)?;
    let energy_config = OpenMmEnergyConfig { temperature_k: 300.0, ..Default::default() };
    let mut direct = OpenMmEnergy::new(&system, &Platform::new("Reference")?, &energy_config)?;
    let u_min = direct.evaluate(&Batch::new(&x0, n_atoms)?)?.reduced_energies[0];
    let bound_kt = u_min + 3.0 * f as f64 / 2.0;
    let target = ConditionalMolecularTarget::new(
        info.molecule()?,
        Box::new(OpenMmEnergy::new(&system, &Platform::new("CPU")?, &energy_config)?),
    )?;
    let points: Vec<f64> =
        (0..POINTS).flat_map(|k| cg[(k * n / POINTS) * c..(k * n / POINTS + 1) * c].to_vec()).collect();
    let config = BackmapConfig {
        samples_per_point: PER_POINT,
        max_energy_kt: Some(bound_kt),
        max_rounds: 200,
        ..Default::default()
    };
    let r = backmap(&flow, &target, &points, &config, &mut ChaCha8Rng::seed_from_u64(5))?;

    // Independent checks on the returned structures.
    let stride = 3 * n_atoms;
    let mut worst_angle = 0.0f64;
    let mut wrong_chirality = 0;
    for (i, x) in r.positions_nm.chunks_exact(stride).enumerate() {
        let atom = |a: usize| nalgebra::Point3::new(x[3 * a], x[3 * a + 1], x[3 * a + 2]);
        let j = r.cg_index[i];
        for (k, d) in dihedrals.iter().enumerate() {
            let measured = dihedral(&atom(d[0]), &atom(d[1]), &atom(d[2]), &atom(d[3]));
            worst_angle = worst_angle.max(wrap_angle(measured - points[j * c + k]).abs());
        }
        for centre in info.molecule()?.chiral_centres() {
            if signed_volume(x, &centre.substituents) * signed_volume(&x0, &centre.substituents) <= 0.0 {
                wrong_chirality += 1;
            }
        }
    }
    let u = direct.evaluate(&Batch::new(&r.positions_nm, n_atoms)?)?.reduced_energies;
    let worst_energy_difference = u.iter().zip(&r.reduced_energies).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    let u_max = u.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let draws: u64 = r.points.iter().map(|p| p.draws).sum();
    let ess: Vec<f64> = r.points.iter().map(|p| p.ess).collect();
    let models: Vec<Vec<f64>> = r.positions_nm.chunks_exact(stride).map(<[f64]>::to_vec).collect();
    cgflow::io::pdb::write_pdb(&out.join("structures.pdb"), &pdb.atoms, &models)?;
    let summary = serde_json::json!({
        "system": system_path, "structure": structure_path, "cg_definition": cg_definition, "cg_dihedrals": dihedrals,
        "atoms": n_atoms, "fine_dims": f, "chiral_centres": info.molecule()?.chiral_centres().iter().map(|c| c.atom).collect::<Vec<_>>(),
        "md_frames": n, "training_steps": STEPS, "last_loss": last_loss,
        "structures": r.cg_index.len(), "draws": draws, "rejected_chirality": r.rejected_chirality,
        "rejected_energy": r.rejected_energy, "energy_bound_kt": bound_kt, "u_min_kt": u_min, "u_max_kt": u_max,
        "max_cg_angle_error_rad": worst_angle, "structures_with_a_wrong_centre": wrong_chirality,
        "max_energy_difference_kt_vs_fresh_openmm": worst_energy_difference, "ess_per_point": ess,
    });
    std::fs::write(out.join("summary.json"), serde_json::to_string_pretty(&summary)? + "\n")?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    if worst_angle > 1e-8 || wrong_chirality > 0 || u_max > bound_kt {
        return Err("a check failed (see the summary)".into());
    }
    Ok(())
}
