//! Refits the PMF ensemble of a finished (or checkpointed) `cgflow al` run to its own labels, once
//! with uniform and once with ESS weights (`labels.fit_weights`), and prints the KLD to the
//! reference after each of several warm-started fits. The labels, points and ensemble settings are
//! the run's; only the weighting differs, so this isolates what the weights do to the fit, with no
//! energy evaluation.
//!
//! ```sh
//! cargo run --release --example pmf_refit -- runs/al-fast [FITS (default 4)] [SETTING=JSON ...]
//! ```
//!
//! Each `SETTING=JSON` overrides one of the run's settings by its dotted path, e.g.
//! `ensemble.final_lr=1e-4 labels.cap_kt=12 ensemble.members=20`.

use candle_core::Device;
use cgflow::al::config::{AlConfig, FitWeights, LabelConfig};
use cgflow::al::driver::PointSets;
use cgflow::al::search::grid_centres;
use cgflow::io::npy::read_npy;
use cgflow::metrics::kl_to_free_energy;
use cgflow::pmf::{CgFeatures, PmfEnsemble};
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let run = PathBuf::from(args.next().ok_or("usage: pmf_refit RUN_DIR [FITS] [SETTING=JSON ...]")?);
    let fits: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(4);
    let state: serde_json::Value = serde_json::from_slice(&std::fs::read(run.join("checkpoint/state.json"))?)?;
    let mut settings = state["config"].clone();
    for assignment in args {
        let (path, value) = assignment.split_once('=').ok_or(format!("{assignment}: expected SETTING=JSON"))?;
        let mut slot = &mut settings;
        for key in path.split('.') {
            slot = slot.get_mut(key).ok_or(format!("{path}: no such setting"))?;
        }
        *slot = serde_json::from_str(value)?;
    }
    let config: AlConfig = serde_json::from_value(settings)?;
    let points: PointSets = serde_json::from_value(state["points"].clone())?;
    // The loop's own preparation (labelled points, capped, centred); only the weights differ.
    let uniform = points.fit_set(&LabelConfig { fit_weights: FitWeights::Uniform, ..config.labels.clone() })?;
    let ess = points.fit_set(&LabelConfig { fit_weights: FitWeights::Ess, ..config.labels.clone() })?;
    let reference = read_npy(&PathBuf::from("data/reference/aldp_umbrella/reference_probabilities.npy"))?.data;
    let grid: Vec<f64> = grid_centres(100)?.iter().flatten().copied().collect();
    let e = &config.ensemble;
    println!(
        "{}: {} labelled points, {fits} fits of {} epochs, {} members, lr {} to {:?}, cap {:?} kT",
        run.display(),
        uniform.labels.len(),
        e.epochs,
        e.members,
        e.lr,
        e.final_lr,
        config.labels.cap_kt
    );
    for (name, set) in [("uniform", &uniform), ("ess", &ess)] {
        let mut ensemble = PmfEnsemble::new(CgFeatures::Angles { count: 2 }, config.ensemble.clone(), &Device::Cpu)?;
        let mut klds = Vec::new();
        for _ in 0..fits {
            ensemble.fit_weighted(&set.points, &set.labels, &set.weights)?;
            let (mean, _) = ensemble.predict(&grid)?;
            klds.push(format!("{:.4}", kl_to_free_energy(&reference, &mean)?));
        }
        println!("  {name:8} KLD after each fit: {}", klds.join(" "));
    }
    Ok(())
}
