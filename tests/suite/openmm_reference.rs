//! Energies and forces against OpenMM's Python layer (fixture) and against finite differences.

use cgflow::energy::{Batch, EnergyModel, OpenMmEnergy, OpenMmEnergyConfig};
use cgflow::openmm::{Context, Integrator, Platform, System};

use crate::util::{aldp, perturbed, references, relative_max_difference};

fn reference_context(system: &str) -> Context {
    let system = System::from_xml_file(&aldp(&format!("{system}.xml"))).expect("system");
    Context::new(&system, &Platform::new("Reference").expect("platform"), Integrator::Verlet).expect("context")
}

#[test]
fn energies_and_forces_equal_openmm_python_on_reference() {
    let refs = references();
    assert_eq!(refs.len(), 4, "two systems x two structures");
    for r in refs {
        let mut context = reference_context(&r.system);
        let (energy, forces) = context.energy_and_forces(&r.positions_nm).expect("evaluate");
        let rel = ((energy - r.energy_kj_per_mol) / r.energy_kj_per_mol).abs();
        assert!(rel < 1e-6, "{} {}: {energy} vs {} (rel {rel:e})", r.system, r.structure, r.energy_kj_per_mol);
        let frel = relative_max_difference(&forces, &r.forces_kj_per_mol_nm);
        assert!(frel < 1e-6, "{} {}: forces differ by {frel:e} relative", r.system, r.structure);
    }
}

#[test]
fn structure_files_parse_to_the_fixture_positions() {
    let refs = references();
    let min = refs.iter().find(|r| r.structure == "min_energy").expect("min");
    let xyz = cgflow::io::read_positions(&aldp("position_min_energy_nm.xyz")).expect("xyz");
    assert_eq!(xyz.n_atoms, 22);
    assert!(relative_max_difference(&xyz.positions_nm, &min.positions_nm) < 1e-12);
    let crd = refs.iter().find(|r| r.structure == "crd").expect("crd");
    let parsed = cgflow::io::read_positions(&aldp("alanine-dipeptide.crd")).expect("crd");
    assert!(relative_max_difference(&parsed.positions_nm, &crd.positions_nm) < 1e-12);
    // The shipped PDB of the minimum-energy structure: 3 decimals in Å, so 5e-5 nm.
    let pdb = cgflow::io::read_positions(&aldp("min_energy.pdb")).expect("pdb");
    let worst = pdb.positions_nm.iter().zip(&min.positions_nm).fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
    assert!(worst <= 5.1e-5, "{worst}");
}

#[test]
fn forces_are_minus_the_finite_difference_gradient() {
    let r = references().into_iter().find(|r| r.system == "aldp_obc1" && r.structure == "crd").expect("crd");
    let mut context = reference_context("aldp_obc1");
    // Away from the idealised geometry, so that forces are large and varied.
    let x = perturbed(&r.positions_nm, 1, 0.005, 7);
    let (_, forces) = context.energy_and_forces(&x).expect("forces");
    let h = 1e-5;
    let mut worst = 0.0f64;
    let scale = forces.iter().fold(0.0f64, |m, f| m.max(f.abs()));
    for i in 0..x.len() {
        let mut plus = x.clone();
        plus[i] += h;
        let mut minus = x.clone();
        minus[i] -= h;
        let (ep, _) = context.energy_and_forces(&plus).expect("plus");
        let (em, _) = context.energy_and_forces(&minus).expect("minus");
        let gradient = (ep - em) / (2.0 * h);
        worst = worst.max((forces[i] + gradient).abs());
    }
    assert!(worst / scale < 1e-6, "max |F + dE/dx| = {worst:e}, force scale {scale:e}");
}

#[test]
fn energy_model_converts_to_kt_and_counts_exactly() {
    let r = references().into_iter().find(|r| r.system == "aldp_obc1" && r.structure == "min_energy").expect("min");
    let system = System::from_xml_file(&aldp("aldp_obc1.xml")).expect("system");
    let config = OpenMmEnergyConfig { temperature_k: 300.0, workers: Some(2), pin_threads: true };
    let mut model = OpenMmEnergy::new(&system, &Platform::new("Reference").expect("p"), &config).expect("model");
    let kt = 8.314462618e-3 * 300.0;
    let one = model.evaluate(&Batch::new(&r.positions_nm, 22).expect("batch")).expect("eval");
    assert!((one.reduced_energies[0] - r.energy_kj_per_mol / kt).abs() < 1e-9);
    for (g, f) in one.gradients.iter().zip(&r.forces_kj_per_mol_nm) {
        assert!((g + f / kt).abs() < 1e-9 * (1.0 + f.abs()));
    }
    assert_eq!(model.evaluation_count(), 1);
    let x = perturbed(&r.positions_nm, 7, 0.002, 1);
    model.evaluate(&Batch::new(&x, 22).expect("batch")).expect("eval");
    let x = perturbed(&r.positions_nm, 100, 0.002, 2);
    let many = model.evaluate(&Batch::new(&x, 22).expect("batch")).expect("eval");
    assert_eq!(many.reduced_energies.len(), 100);
    assert_eq!(model.evaluation_count(), 108);
    // Results do not depend on how the batch was split between workers.
    let mut single = reference_context("aldp_obc1");
    for i in [0usize, 49, 50, 99] {
        let (e, _) = single.energy_and_forces(&x[i * 66..(i + 1) * 66]).expect("single");
        assert!((many.reduced_energies[i] - e / kt).abs() < 1e-9, "configuration {i}");
    }
}
