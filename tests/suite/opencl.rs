//! OpenMM's OpenCL platform, where one is available (a GPU's OpenCL driver, or pocl on the CPU from
//! `./setup.sh --opencl-cpu`): energies and forces against OpenMM's Python layer, the copy trick
//! against one-per-call evaluation, Langevin MD against an exact variance, and clean JSON output.
//!
//! Without OpenCL these tests print that they were skipped and pass; where pocl was installed but
//! OpenCL does not come up they fail, so that a broken install cannot pass unnoticed.

use cgflow::energy::{
    Batch, EnergyModel, GradientModel, OpenMmEnergy, OpenMmEnergyConfig, ReplicaEnergy, ReplicaEnergyConfig,
};
use cgflow::md::{WalkerConfig, Walkers};
use cgflow::openmm::{load_plugins, opencl_cpu_directory, Context, Integrator, Platform, System};

use crate::util::{
    aldp, min_energy_positions, perturbed, references, relative_max_difference, spring_separation_variance,
    spring_system,
};

const N_ATOMS: usize = 22;

/// The OpenCL platform, or None (with a note) where there is none and none was installed.
fn opencl() -> Option<Platform> {
    let report = load_plugins().expect("plugins");
    match Platform::new("OpenCL") {
        Ok(platform) => Some(platform),
        Err(e) => {
            let installed = opencl_cpu_directory().join("libpocl.so").exists();
            assert!(
                !installed,
                "pocl is installed in {} but OpenCL is not available: {e}; {:?}",
                opencl_cpu_directory().display(),
                report.failures
            );
            eprintln!("skipped: no OpenCL platform (./setup.sh --opencl-cpu installs one for the CPU)");
            None
        }
    }
}

#[test]
fn opencl_energies_and_forces_equal_openmm_python() {
    let Some(opencl) = opencl() else { return };
    // Double precision: the same numbers as OpenMM's Python layer on Reference (the fixture).
    for r in references() {
        let system = System::from_xml_file(&aldp(&format!("{}.xml", r.system))).expect("system");
        let platform = opencl.clone().with_property("Precision", "double");
        let mut context = Context::new(&system, &platform, Integrator::Verlet).expect("context");
        assert_eq!(context.platform_property("Precision").expect("property"), "double");
        let (energy, forces) = context.energy_and_forces(&r.positions_nm).expect("evaluate");
        let rel = ((energy - r.energy_kj_per_mol) / r.energy_kj_per_mol).abs();
        assert!(rel < 1e-6, "{} {}: {energy} vs {} (rel {rel:e})", r.system, r.structure, r.energy_kj_per_mol);
        // Absolute, not relative: near the minimum the forces are small (37 kJ/mol/nm at most), and
        // pocl's "double" mode is not exact double everywhere (energies agree to 1e-7, not 1e-12).
        let worst = forces.iter().zip(&r.forces_kj_per_mol_nm).fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
        assert!(worst < 0.02, "{} {}: forces differ by {worst} kJ/mol/nm", r.system, r.structure);
    }
    // Single precision: within float accuracy of the same numbers.
    let r = references().into_iter().find(|r| r.system == "aldp_obc1" && r.structure == "crd").expect("crd");
    let system = System::from_xml_file(&aldp("aldp_obc1.xml")).expect("system");
    let platform = opencl.with_property("Precision", "single");
    let mut context = Context::new(&system, &platform, Integrator::Verlet).expect("context");
    let (energy, forces) = context.energy_and_forces(&r.positions_nm).expect("evaluate");
    assert!(((energy - r.energy_kj_per_mol) / r.energy_kj_per_mol).abs() < 1e-5, "{energy} vs {}", r.energy_kj_per_mol);
    assert!(relative_max_difference(&forces, &r.forces_kj_per_mol_nm) < 1e-4);
}

#[test]
fn opencl_copy_trick_equals_one_per_call_on_reference() {
    let Some(opencl) = opencl() else { return };
    let system = System::from_xml_file(&aldp("aldp_obc1.xml")).expect("system");
    let x = perturbed(&min_energy_positions(), 40, 0.01, 11);
    let batch = Batch::new(&x, N_ATOMS).expect("batch");
    let config = OpenMmEnergyConfig { workers: Some(2), ..Default::default() };
    let mut exact = OpenMmEnergy::new(&system, &Platform::new("Reference").expect("Reference"), &config).expect("pool");
    let expected = exact.evaluate(&batch).expect("reference");
    // 16 copies per call: 40 configurations take three calls, the last one padded.
    let platform = opencl.with_property("Precision", "mixed");
    let mut replica = ReplicaEnergy::new(&system, &platform, &ReplicaEnergyConfig { copies: 16, ..Default::default() })
        .expect("replica");
    let got = replica.evaluate_gradients(&batch).expect("copy trick");
    let stride = 3 * N_ATOMS;
    let worst = (0..40)
        .map(|i| {
            let range = i * stride..(i + 1) * stride;
            relative_max_difference(&got.gradients[range.clone()], &expected.gradients[range])
        })
        .fold(0.0f64, f64::max);
    assert!(worst < 1e-4, "copy-trick gradients differ by {worst:e} relative");
    let total: f64 = expected.reduced_energies.iter().sum();
    let rel = ((got.total_reduced_energy - total) / total).abs();
    assert!(rel < 1e-5, "batch energy {} vs {total} (rel {rel:e})", got.total_reduced_energy);
    assert_eq!(replica.evaluation_count(), 40);
}

#[test]
fn opencl_langevin_md_samples_the_exact_spring_variance() {
    let Some(opencl) = opencl() else { return };
    // Two particles joined by a spring of rest length 0: each component of the separation is
    // Gaussian with variance kT / k.
    let k = 500.0;
    let system = spring_system(k);
    let config = WalkerConfig { walkers: 64, step_fs: 2.0, friction_per_ps: 5.0, seed: 23, ..Default::default() };
    let mut walkers =
        Walkers::new(&system, &opencl, &config, &[0.0, 0.0, 0.0, 0.05, 0.0, 0.0], |_| vec![]).expect("walkers");
    walkers.step(1000).expect("equilibrate");
    let variance = spring_separation_variance(&mut walkers, 100, 50);
    let expected = 8.314462618e-3 * 300.0 / k;
    // 64 walkers x 100 frames x 3 components, frames 0.1 ps apart (correlation time about 0.2 ps):
    // about 5000 independent samples, 2 % statistical error.
    assert!((variance / expected - 1.0).abs() < 0.08, "variance {variance} vs kT/k = {expected}");
}

#[test]
fn opencl_json_output_stays_parseable() {
    let Some(_) = opencl() else { return };
    // pocl makes OpenMM print "WARNING: Using an unsupported OpenCL implementation" on stdout while
    // it creates a Context; the shim sends that to stderr, so stdout is JSON only.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cgflow"))
        .args(["energy", "--platform", "OpenCL", "--json", "--system"])
        .arg(aldp("aldp_obc1.xml"))
        .arg("--positions")
        .arg(aldp("min_energy.pdb"))
        .output()
        .expect("run cgflow");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    assert_eq!(json["platform"], "OpenCL");
    let energy = json["configurations"][0]["energy_kj_per_mol"].as_f64().expect("energy");
    // The same structure (the PDB's 3 decimals in Å) on Reference, in double precision.
    let pdb = cgflow::io::read_positions(&aldp("min_energy.pdb")).expect("pdb");
    let system = System::from_xml_file(&aldp("aldp_obc1.xml")).expect("system");
    let reference = Platform::new("Reference").expect("Reference");
    let (expected, _) = Context::new(&system, &reference, Integrator::Verlet)
        .expect("context")
        .energy_and_forces(&pdb.positions_nm)
        .expect("energy");
    assert!(((energy - expected) / expected).abs() < 1e-5, "{energy} vs {expected}");
}

#[test]
fn a_broken_opencl_cpu_install_is_reported_not_fatal() {
    // Files that are not libraries where the loader and pocl should be: `cgflow info` still runs,
    // and lists the install among the plugin failures, with the loader's reason.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("libOpenCL.so.1"), b"not a library").expect("write");
    std::fs::write(dir.path().join("libpocl.so"), b"not a library").expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cgflow"))
        .args(["info", "--json"])
        .env("CGFLOW_OPENCL_CPU_DIR", dir.path())
        .output()
        .expect("run cgflow");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    assert!(json["opencl_cpu"].is_null());
    let failures = json["plugin_load_failures"].as_array().expect("failures");
    let reported = failures.iter().filter_map(|f| f.as_str()).find(|f| f.starts_with("OpenCL for CPUs"));
    let reported = reported.unwrap_or_else(|| panic!("no OpenCL-for-CPUs failure in {failures:?}"));
    assert!(reported.contains("libOpenCL.so.1") && reported.contains("cannot load"), "{reported}");
}
