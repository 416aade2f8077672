//! Writes the copy-trick System of alanine dipeptide (N non-interacting copies, `CutoffNonPeriodic`
//! nonbonded forces) as OpenMM XML, for inspecting or timing it outside cgflow
//! (`benches/energy_breakdown.py` reads it).
//!
//! `cargo run --release --example write_copy_system -- OUT.xml [COPIES] [CUTOFF_NM]`
//! (defaults: 512 copies, 2.0 nm).

use cgflow::openmm::System;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let out = args.get(1).ok_or_else(|| anyhow::anyhow!("usage: write_copy_system OUT.xml [COPIES] [CUTOFF_NM]"))?;
    let copies: usize = args.get(2).map_or(Ok(512), |s| s.parse())?;
    let cutoff_nm: f64 = args.get(3).map_or(Ok(2.0), |s| s.parse())?;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let system = System::from_xml_file(&root.join("data/alanine_dipeptide/aldp_obc1.xml"))?;
    let (copy_system, offset_kj_per_mol) = system.replicate(copies, cutoff_nm)?;
    std::fs::write(out, copy_system.to_xml()?)?;
    println!("{copies} copies, cut-off {cutoff_nm} nm, energy offset per copy {offset_kj_per_mol:.6} kJ/mol -> {out}");
    Ok(())
}
