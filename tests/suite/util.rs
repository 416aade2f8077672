//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

/// The repository root.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A file under data/alanine_dipeptide.
pub fn aldp(name: &str) -> PathBuf {
    root().join("data/alanine_dipeptide").join(name)
}

/// One entry of tests/data/aldp_reference.json (made by tools/make_reference_fixture.py).
pub struct Reference {
    pub system: String,
    pub structure: String,
    pub positions_nm: Vec<f64>,
    pub energy_kj_per_mol: f64,
    pub forces_kj_per_mol_nm: Vec<f64>,
}

fn numbers(value: &serde_json::Value) -> Vec<f64> {
    value.as_array().expect("array").iter().map(|v| v.as_f64().expect("number")).collect()
}

/// All entries of the reference fixture.
pub fn references() -> Vec<Reference> {
    let text = std::fs::read_to_string(root().join("tests/data/aldp_reference.json")).expect("fixture");
    let json: serde_json::Value = serde_json::from_str(&text).expect("fixture JSON");
    json["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| Reference {
            system: r["system"].as_str().expect("system").to_owned(),
            structure: r["structure"].as_str().expect("structure").to_owned(),
            positions_nm: numbers(&r["positions_nm"]),
            energy_kj_per_mol: r["energy_kj_per_mol"].as_f64().expect("energy"),
            forces_kj_per_mol_nm: numbers(&r["forces_kj_per_mol_nm"]),
        })
        .collect()
}

/// The minimum-energy structure (nm), as stored in the fixture.
pub fn min_energy_positions() -> Vec<f64> {
    references().into_iter().find(|r| r.structure == "min_energy").expect("min_energy").positions_nm
}

/// `count` configurations: `base` plus Gaussian noise of `sigma_nm` per coordinate, seeded.
pub fn perturbed(base: &[f64], count: usize, sigma_nm: f64, seed: u64) -> Vec<f64> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let noise = Normal::new(0.0, sigma_nm).expect("sigma");
    (0..count).flat_map(|_| base.iter().map(|x| x + noise.sample(&mut rng)).collect::<Vec<_>>()).collect()
}

/// max |a - b| / max |b| over one configuration's vectors.
pub fn relative_max_difference(a: &[f64], b: &[f64]) -> f64 {
    let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let diff = a.iter().zip(b).fold(0.0f64, |m, (x, y)| m.max((x - y).abs()));
    diff / scale
}

/// Two particles joined by a harmonic spring of rest length 0 (k in kJ/mol/nm^2): each component
/// of their separation is Gaussian with variance kT / k exactly.
pub fn spring_system(k: f64) -> cgflow::openmm::System {
    let xml = format!(
        r#"<?xml version="1.0" ?>
<System openmmVersion="8.6.1" type="System" version="1">
  <PeriodicBoxVectors><A x="2" y="0" z="0"/><B x="0" y="2" z="0"/><C x="0" y="0" z="2"/></PeriodicBoxVectors>
  <Particles><Particle mass="12"/><Particle mass="16"/></Particles>
  <Constraints/>
  <Forces>
    <Force forceGroup="0" name="HarmonicBondForce" type="HarmonicBondForce" usesPeriodic="0" version="2">
      <Bonds><Bond d="0" k="{k}" p1="0" p2="1"/></Bonds>
    </Force>
  </Forces>
</System>"#
    );
    cgflow::openmm::System::from_xml(&xml).expect("spring system")
}

/// Variance of one component of the spring's separation over every walker of `walkers` (made on
/// [`spring_system`]) and `frames` frames `steps_per_frame` steps apart, all three components pooled.
pub fn spring_separation_variance(walkers: &mut cgflow::md::Walkers, frames: usize, steps_per_frame: u64) -> f64 {
    let (mut sum, mut count) = (0.0, 0usize);
    for _ in 0..frames {
        walkers.step(steps_per_frame).expect("steps");
        for w in walkers.positions().expect("positions").chunks_exact(6) {
            for d in 0..3 {
                sum += (w[3 + d] - w[d]).powi(2);
                count += 1;
            }
        }
    }
    sum / count as f64
}
