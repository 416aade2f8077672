//! Checkpoints of an active-learning (or grid) run: a folder `checkpoint/`
//! inside the run folder holding `state.json` (points, log, costs, counters and the settings),
//! `flow/` (a flow checkpoint with the optimiser state, see [`crate::flow::checkpoint`]) and
//! `ensemble.safetensors`.
//!
//! A new checkpoint is written to `checkpoint.tmp/` and then swapped in by renames (the previous
//! one becomes `checkpoint.old/` until the swap is complete), so a kill at any moment leaves a
//! whole checkpoint behind: [`load_al_state`] takes `checkpoint/`, or `checkpoint.old/` when the
//! kill fell between the two renames.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::Device;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::al::config::AlConfig;
use crate::al::driver::{ActiveLearning, AlMode, AlState, PointSets};
use crate::al::record::{AlIteration, CostBreakdown};
use crate::error::{Error, Result};
use crate::flow::checkpoint::{load_flow, save_flow, TrainingState};

/// Format tag of `state.json` (named when only alanine dipeptide was run; kept so that every
/// earlier checkpoint still loads).
pub const FORMAT: &str = "cgflow-aldp-al-state";
/// Version of `state.json`.
pub const VERSION: u64 = 1;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    format: String,
    version: u64,
    config: AlConfig,
    mode: AlMode,
    next_iteration: usize,
    points: PointSets,
    log: Vec<AlIteration>,
    costs: CostBreakdown,
    wall_s: f64,
    reference_energy: f64,
    converged: bool,
    ensemble_fits: u64,
    /// FNV-1a of `ensemble.safetensors` (absent in checkpoints of earlier builds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ensemble_fnv1a64: Option<String>,
}

fn checkpoint_dir(run: &Path) -> PathBuf {
    run.join("checkpoint")
}

/// Whether `run` holds a checkpoint.
pub fn has_al_state(run: &Path) -> bool {
    checkpoint_dir(run).join("state.json").exists() || run.join("checkpoint.old").join("state.json").exists()
}

/// Saves `state` (run with `config`) into the run folder `run`, atomically.
pub fn save_al_state(run: &Path, config: &AlConfig, state: &AlState) -> Result<()> {
    std::fs::create_dir_all(run).map_err(|e| Error::io(run, e))?;
    let tmp = run.join("checkpoint.tmp");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let training = TrainingState {
        step: state.next_iteration as u64,
        adam: state.adam.state().clone(),
        rng: ChaCha8Rng::seed_from_u64(config.seed),
        extra: serde_json::Value::Null,
    };
    save_flow(&tmp.join("flow"), &state.flow, Some(&training))?;
    let ensemble_path = tmp.join("ensemble.safetensors");
    candle_core::safetensors::save(&state.ensemble.named_tensors()?, &ensemble_path)
        .map_err(|e| Error::invalid(format!("{}: {e}", ensemble_path.display())))?;
    let file = StateFile {
        format: FORMAT.to_owned(),
        version: VERSION,
        config: config.clone(),
        mode: state.mode,
        next_iteration: state.next_iteration,
        points: state.points.clone(),
        log: state.log.clone(),
        costs: state.costs,
        wall_s: state.wall_s,
        reference_energy: state.reference_energy,
        converged: state.converged,
        ensemble_fits: state.ensemble.fits(),
        ensemble_fnv1a64: Some(crate::io::fnv1a64_hex(
            &std::fs::read(&ensemble_path).map_err(|e| Error::io(&ensemble_path, e))?,
        )),
    };
    let json = serde_json::to_string_pretty(&file).map_err(|e| Error::invalid(e.to_string()))?;
    crate::io::write_file(&tmp.join("state.json"), json)?;
    let (current, old) = (checkpoint_dir(run), run.join("checkpoint.old"));
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
    }
    if current.exists() {
        std::fs::rename(&current, &old).map_err(|e| Error::io(&current, e))?;
    }
    std::fs::rename(&tmp, &current).map_err(|e| Error::io(&tmp, e))?;
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
    }
    Ok(())
}

/// Loads the checkpoint of the run folder `run` into the models of `al`. Errors when there is
/// none, when it is malformed, or when it was written with other settings than `al`'s (the
/// message names the first differing section).
pub fn load_al_state(run: &Path, al: &ActiveLearning) -> Result<AlState> {
    let dir =
        if checkpoint_dir(run).join("state.json").exists() { checkpoint_dir(run) } else { run.join("checkpoint.old") };
    let state_path = dir.join("state.json");
    let text = crate::io::read_text(&state_path)?;
    let file: StateFile = serde_json::from_str(&text).map_err(|e| Error::parse(&state_path, e.to_string()))?;
    if file.format != FORMAT || file.version != VERSION {
        return Err(Error::parse(&state_path, format!("not a {FORMAT} version {VERSION} file")));
    }
    if &file.config != al.config() {
        let saved = serde_json::to_value(&file.config).map_err(|e| Error::invalid(e.to_string()))?;
        let given = serde_json::to_value(al.config()).map_err(|e| Error::invalid(e.to_string()))?;
        let differing = given
            .as_object()
            .and_then(|g| g.iter().find(|(k, v)| saved.get(k.as_str()) != Some(v)).map(|(k, _)| k.clone()))
            .unwrap_or_default();
        return Err(Error::invalid(format!(
            "{}: the run was started with other settings (first difference: `{differing}`); resume it with \
             the same configuration",
            state_path.display()
        )));
    }
    let dims = al.problem().cg_dims();
    let points = &file.points;
    if let Some(p) = points.train.iter().chain(&points.test).find(|p| p.len() != dims) {
        return Err(Error::invalid(format!(
            "{}: a CG point of {} values; this run's problem has {dims} CG dimensions (another --cg?)",
            state_path.display(),
            p.len()
        )));
    }
    let (fresh_flow, mut adam, mut ensemble) = al.fresh_models()?;
    let (flow, training) = load_flow(&dir.join("flow"), &Device::Cpu)?;
    if flow.spec() != fresh_flow.spec() {
        return Err(Error::parse(dir.join("flow"), "the saved flow's architecture differs from the settings"));
    }
    let training = training.ok_or_else(|| Error::parse(dir.join("flow"), "the checkpoint has no optimiser state"))?;
    adam.set_state(flow.params(), training.adam)?;
    let ensemble_path = dir.join("ensemble.safetensors");
    let bytes = std::fs::read(&ensemble_path).map_err(|e| Error::io(&ensemble_path, e))?;
    if let Some(expected) = &file.ensemble_fnv1a64 {
        let found = crate::io::fnv1a64_hex(&bytes);
        if &found != expected {
            return Err(Error::parse(
                &ensemble_path,
                format!("corrupted: its FNV-1a is {found}, state.json recorded {expected}"),
            ));
        }
    }
    let tensors: HashMap<String, candle_core::Tensor> = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
        .map_err(|e| Error::parse(&ensemble_path, e.to_string()))?;
    if file.ensemble_fits > 0 {
        ensemble.load_tensors(&tensors)?;
    }
    ensemble.set_fits(file.ensemble_fits);
    Ok(AlState {
        marginal_pmfs: vec![],
        mode: file.mode,
        next_iteration: file.next_iteration,
        flow,
        adam,
        ensemble,
        points: file.points,
        log: file.log,
        costs: file.costs,
        wall_s: file.wall_s,
        reference_energy: file.reference_energy,
        converged: file.converged,
    })
}
