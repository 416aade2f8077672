//! Refits the PMF ensemble of a finished (or checkpointed) `cgflow al` run to its own labels, once
//! with uniform and once with ESS weights (`labels.fit_weights`), and prints the KLD to the
//! reference after each of several warm-started fits. The labels, points and ensemble settings are
//! the run's; only the weighting differs, so this isolates what the weights do to the fit, with no
//! energy evaluation.
//!
//! ```sh
//! cargo run --release --example pmf_refit -- runs/al-fast [FITS (default 4)] [FINAL_LR]
//! ```

use candle_core::Device;
use cgflow::al::aldp::{grid_centres, AldpAlConfig, FitWeights, LabelConfig, PointSets};
use cgflow::io::npy::read_npy;
use cgflow::metrics::kl_to_free_energy;
use cgflow::pmf::{CgFeatures, PmfEnsemble};
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let run = PathBuf::from(args.next().ok_or("usage: pmf_refit RUN_DIR [FITS] [FINAL_LR]")?);
    let fits: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(4);
    let state: serde_json::Value = serde_json::from_slice(&std::fs::read(run.join("checkpoint/state.json"))?)?;
    let mut config: AldpAlConfig = serde_json::from_value(state["config"].clone())?;
    if let Some(final_lr) = args.next() {
        config.ensemble.final_lr = Some(final_lr.parse()?);
    }
    let points: PointSets = serde_json::from_value(state["points"].clone())?;
    // The loop's own preparation (labelled points, capped, centred); only the weights differ.
    let uniform = points.fit_set(&LabelConfig { fit_weights: FitWeights::Uniform, ..config.labels.clone() })?;
    let ess = points.fit_set(&LabelConfig { fit_weights: FitWeights::Ess, ..config.labels.clone() })?;
    let reference = read_npy(&PathBuf::from("data/reference/aldp_umbrella/reference_probabilities.npy"))?.data;
    let grid: Vec<f64> = grid_centres(100)?.iter().flatten().copied().collect();
    let e = &config.ensemble;
    println!(
        "{}: {} labelled points, {fits} fits of {} epochs, lr {} to {:?}",
        run.display(),
        uniform.labels.len(),
        e.epochs,
        e.lr,
        e.final_lr
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
