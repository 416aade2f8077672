//! Bad input gets an error with a clear message, never a panic or an abort.

use cgflow::energy::{Batch, EnergyModel, OpenMmEnergy, OpenMmEnergyConfig};
use cgflow::openmm::{Context, Integrator, Platform, System};
use cgflow::Error;

use crate::util::{aldp, min_energy_positions};

fn message(result: Result<impl std::fmt::Debug, Error>) -> String {
    result.expect_err("an error was expected").to_string()
}

#[test]
fn wrong_atom_count_is_rejected() {
    let system = System::from_xml_file(&aldp("aldp_obc1.xml")).expect("system");
    let mut model = OpenMmEnergy::new(&system, &Platform::new("Reference").expect("p"), &OpenMmEnergyConfig::default())
        .expect("model");
    let x = vec![0.1; 21 * 3];
    let m = message(model.evaluate(&Batch::new(&x, 21).expect("batch")));
    assert!(m.contains("22 atoms") && m.contains("21"), "{m}");
    let m = message(Batch::new(&x[..62], 21));
    assert!(m.contains("not a whole number"), "{m}");
    let mut context = Context::new(&system, &Platform::new("Reference").expect("p"), Integrator::Verlet).expect("c");
    let m = message(context.energy_and_forces(&x));
    assert!(m.contains("expected"), "{m}");
    assert_eq!(model.evaluation_count(), 0, "a rejected batch is not counted");
}

#[test]
fn nan_and_infinite_coordinates_are_rejected() {
    let mut x = min_energy_positions();
    x[3 * 5 + 1] = f64::NAN;
    let m = message(Batch::new(&x, 22));
    assert!(m.contains("non-finite") && m.contains("atom 5"), "{m}");
    x[3 * 5 + 1] = f64::INFINITY;
    assert!(message(Batch::new(&x, 22)).contains("inf"));
    let system = System::from_xml_file(&aldp("aldp_obc1.xml")).expect("system");
    let mut context = Context::new(&system, &Platform::new("CPU").expect("p"), Integrator::Verlet).expect("c");
    assert!(message(context.energy_and_forces(&x)).contains("non-finite"));
}

#[test]
fn malformed_and_missing_xml_are_rejected() {
    let m = message(System::from_xml("<System version=\"1\"><Particles><Particle mass=\"oops\"/>"));
    assert!(m.starts_with("OpenMM:"), "{m}");
    let m = message(System::from_xml("not xml at all"));
    assert!(m.contains("not a serialized OpenMM System"), "{m}");
    let m = message(System::from_xml_file("/nonexistent/system.xml".as_ref()));
    assert!(m.contains("/nonexistent/system.xml"), "{m}");
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("truncated.xml");
    let xml = std::fs::read_to_string(aldp("aldp_obc1.xml")).expect("xml");
    std::fs::write(&path, &xml[..xml.len() / 2]).expect("write");
    let m = message(System::from_xml_file(&path));
    assert!(m.contains("truncated.xml"), "{m}");
}

#[test]
fn unknown_platform_lists_the_available_ones() {
    let m = message(Platform::new("Quantum"));
    assert!(m.contains("unknown OpenMM platform 'Quantum'") && m.contains("Reference") && m.contains("CPU"), "{m}");
}

#[test]
fn bad_platform_property_is_an_openmm_error() {
    let system = System::from_xml_file(&aldp("aldp_obc1.xml")).expect("system");
    let platform = Platform::new("CPU").expect("p").with_property("NoSuchProperty", "1");
    let m = message(Context::new(&system, &platform, Integrator::Verlet));
    assert!(m.starts_with("OpenMM:") && m.contains("NoSuchProperty"), "{m}");
}

#[test]
fn copy_trick_rejects_unsupported_systems() {
    let xml = std::fs::read_to_string(aldp("aldp_obc1.xml")).expect("xml");
    // A cut-off in the original system would make the trick inexact.
    let cutoff = xml.replacen("method=\"0\"", "method=\"1\"", 1);
    let system = System::from_xml(&cutoff).expect("system");
    let m = message(system.replicate(4, 2.0));
    assert!(m.contains("NoCutoff"), "{m}");
    let system = System::from_xml(&xml).expect("system");
    assert!(message(system.replicate(0, 2.0)).contains("at least 1"));
    assert!(message(system.replicate(2, -1.0)).contains("cut-off"));
}
