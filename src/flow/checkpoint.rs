//! Flow checkpoints: a folder holding the architecture (`flow.json`) and the weights
//! (`weights.safetensors`), optionally with the training state needed to resume a run bit for
//! bit (optimiser moments, random-number generator, step counter, caller's own data).
//!
//! # Layout
//!
//! `flow.json`:
//!
//! ```json
//! {
//!   "format": "cgflow-flow",
//!   "version": 1,
//!   "spec": { ...FlowSpec... },
//!   "weights": {"bytes": 123456, "fnv1a64": "89abcdef01234567"},
//!   "training": null
//! }
//! ```
//!
//! or, with training state,
//!
//! ```json
//! "training": {
//!   "step": 300,
//!   "adam_step": 300,
//!   "rng": {"seed": "<64 hex digits>", "stream": 0, "word_pos": "12345"},
//!   "extra": <any JSON>
//! }
//! ```
//!
//! `weights` records the length and the 64-bit FNV-1a hash (16 lower-case hex digits) of the
//! bytes of `weights.safetensors`, so a weights file that does not belong to this `flow.json`
//! (truncated, or left by an interrupted overwrite) is refused instead of loaded. The optimiser's
//! step count is `adam_step`, kept in the JSON (exact as a `u64`); `word_pos` is a decimal
//! string because it is a `u128`.
//!
//! `weights.safetensors` holds every parameter under its store name in its own dtype and, when
//! there is training state, `adam.m.<name>` and `adam.v.<name>`: the Adam moments as f64
//! tensors of the parameter's shape.
//!
//! # Atomicity
//!
//! Both files are written to temporary names in the folder (`weights.safetensors.tmp`,
//! `flow.json.tmp`), synced, and renamed: the weights first, the JSON last. A crash before the
//! JSON is renamed leaves either no `flow.json` (a new folder) or an old `flow.json` whose
//! recorded hash does not match the new weights; either way loading fails with a clear error and
//! never returns a mixture. Overwriting a checkpoint in place does not keep the previous one
//! through such a crash; save to a fresh folder to keep it.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::flow::flow::check_finite;
use crate::flow::optim::AdamState;
use crate::flow::params::ParamStore;
use crate::flow::{Flow, FlowSpec};

/// Name of the architecture and training-state file inside a checkpoint folder.
pub const FLOW_FILE: &str = "flow.json";
/// Name of the tensor file inside a checkpoint folder.
pub const WEIGHTS_FILE: &str = "weights.safetensors";
/// The `format` field of `flow.json`.
pub const FORMAT: &str = "cgflow-flow";
/// The `version` field of `flow.json` this build writes and reads.
pub const VERSION: u64 = 1;

const ADAM_M: &str = "adam.m.";
const ADAM_V: &str = "adam.v.";

/// What a training run needs, beside the weights, to continue exactly where it stopped.
#[derive(Debug, Clone)]
pub struct TrainingState {
    /// The caller's step counter (training steps completed).
    pub step: u64,
    /// The optimiser's state; its moments must match the flow's parameters in store order.
    pub adam: AdamState,
    /// The generator that draws the training batches; restored to continue the same stream.
    pub rng: ChaCha8Rng,
    /// Any further data of the caller (schedules, loss history...), stored as given.
    pub extra: serde_json::Value,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    format: String,
    version: u64,
    spec: serde_json::Value,
    weights: WeightsDigest,
    training: Option<TrainingHeader>,
}

#[derive(Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct WeightsDigest {
    bytes: u64,
    fnv1a64: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrainingHeader {
    step: u64,
    adam_step: u64,
    rng: RngHeader,
    #[serde(default)]
    extra: serde_json::Value,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RngHeader {
    seed: String,
    stream: u64,
    word_pos: String,
}

fn digest(bytes: &[u8]) -> WeightsDigest {
    WeightsDigest { bytes: bytes.len() as u64, fnv1a64: crate::io::fnv1a64_hex(bytes) }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex32(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Removes a temporary file after a failed save; a failure to remove it changes nothing.
fn discard(path: &Path) {
    let _ = std::fs::remove_file(path);
}

/// Writes `tensors` to `dir/weights.safetensors` through a synced temporary file and returns the
/// digest of the bytes written.
fn write_weights(dir: &Path, tensors: &HashMap<String, Tensor>) -> Result<WeightsDigest> {
    let path = dir.join(WEIGHTS_FILE);
    let temporary = dir.join(format!("{WEIGHTS_FILE}.tmp"));
    let result = (|| -> Result<WeightsDigest> {
        candle_core::safetensors::save(tensors, &temporary)
            .map_err(|e| Error::io(&temporary, std::io::Error::other(e.to_string())))?;
        std::fs::File::open(&temporary).and_then(|f| f.sync_all()).map_err(|e| Error::io(&temporary, e))?;
        let bytes = std::fs::read(&temporary).map_err(|e| Error::io(&temporary, e))?;
        let digest = digest(&bytes);
        std::fs::rename(&temporary, &path).map_err(|e| Error::io(&path, e))?;
        Ok(digest)
    })();
    if result.is_err() {
        discard(&temporary);
    }
    result
}

/// Writes `contents` to `dir/flow.json` through a synced temporary file.
fn write_header(dir: &Path, contents: &[u8]) -> Result<()> {
    let path = dir.join(FLOW_FILE);
    let temporary = dir.join(format!("{FLOW_FILE}.tmp"));
    let result = (|| -> std::io::Result<()> {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(contents)?;
        file.sync_all()?;
        std::fs::rename(&temporary, &path)
    })();
    if result.is_err() {
        discard(&temporary);
    }
    result.map_err(|e| Error::io(&path, e))
}

/// Flushes the folder's entries (the renames) to disk.
fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    std::fs::File::open(dir).and_then(|f| f.sync_all()).map_err(|e| Error::io(dir, e))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Saves `flow` (and, when given, the training state) as a checkpoint in the folder `dir`,
/// creating the folder if needed and replacing an earlier checkpoint there.
///
/// The files are written atomically (see the [module documentation](self)). Fails, writing
/// nothing, when a weight is non-finite, or when the optimiser state does not match the flow's
/// parameters or holds non-finite moments.
pub fn save_flow(dir: &Path, flow: &Flow, training: Option<&TrainingState>) -> Result<()> {
    let store = flow.params();
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for (name, var) in store.entries() {
        let tensor = var.as_tensor().to_device(&Device::Cpu)?;
        check_finite(&tensor, name).map_err(|e| Error::invalid(format!("cannot save the flow: {}", message(e))))?;
        tensors.insert(name.clone(), tensor);
    }
    let training_header = match training {
        None => None,
        Some(state) => {
            let adam = &state.adam;
            let n = store.entries().len();
            if adam.m.len() != n || adam.v.len() != n {
                return Err(Error::invalid(format!(
                    "cannot save the training state: the optimiser has {} first and {} second moments, the flow \
                     has {n} parameter tensors",
                    adam.m.len(),
                    adam.v.len()
                )));
            }
            for (((name, var), m), v) in store.entries().iter().zip(&adam.m).zip(&adam.v) {
                for (prefix, moment) in [(ADAM_M, m), (ADAM_V, v)] {
                    let key = format!("{prefix}{name}");
                    if moment.len() != var.elem_count() {
                        return Err(Error::invalid(format!(
                            "cannot save the training state: {key} has {} values, the parameter has {}",
                            moment.len(),
                            var.elem_count()
                        )));
                    }
                    if let Some(i) = moment.iter().position(|x| !x.is_finite()) {
                        return Err(Error::invalid(format!(
                            "cannot save the training state: {key} holds a non-finite value at index {i}"
                        )));
                    }
                    tensors.insert(key, Tensor::from_vec(moment.clone(), var.shape(), &Device::Cpu)?);
                }
            }
            Some(TrainingHeader {
                step: state.step,
                adam_step: adam.step,
                rng: RngHeader {
                    seed: hex(&state.rng.get_seed()),
                    stream: state.rng.get_stream(),
                    word_pos: state.rng.get_word_pos().to_string(),
                },
                extra: state.extra.clone(),
            })
        }
    };
    let spec = serde_json::to_value(flow.spec()).map_err(|e| Error::invalid(format!("flow spec: {e}")))?;

    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let weights = write_weights(dir, &tensors)?;
    let header = Header { format: FORMAT.to_string(), version: VERSION, spec, weights, training: training_header };
    let mut json = serde_json::to_vec_pretty(&header).map_err(|e| Error::invalid(format!("flow.json: {e}")))?;
    json.push(b'\n');
    write_header(dir, &json)?;
    sync_dir(dir)
}

/// The text of an error without the "invalid input: " prefix of [`Error::InvalidInput`].
fn message(error: Error) -> String {
    match error {
        Error::InvalidInput(m) => m,
        other => other.to_string(),
    }
}

/// A checkpoint as read from disk: its header, its spec, and its tensors (on the CPU).
struct Stored {
    weights_path: PathBuf,
    spec: FlowSpec,
    training: Option<TrainingHeader>,
    tensors: HashMap<String, Tensor>,
}

/// Reads and checks `flow.json` (format, version, spec) and `weights.safetensors` (digest,
/// safetensors structure).
fn read_stored(dir: &Path) -> Result<Stored> {
    let metadata = std::fs::metadata(dir).map_err(|e| Error::io(dir, e))?;
    if !metadata.is_dir() {
        return Err(Error::invalid(format!(
            "{}: not a folder (a flow checkpoint is a folder holding {FLOW_FILE} and {WEIGHTS_FILE})",
            dir.display()
        )));
    }
    let json_path = dir.join(FLOW_FILE);
    let text = crate::io::read_text(&json_path)?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::parse(&json_path, format!("malformed JSON: {e}")))?;
    match value.get("format").and_then(|f| f.as_str()) {
        Some(FORMAT) => {}
        Some(other) => {
            return Err(Error::parse(
                &json_path,
                format!("not a cgflow flow checkpoint: format is \"{other}\", expected \"{FORMAT}\""),
            ))
        }
        None => {
            return Err(Error::parse(
                &json_path,
                format!("not a cgflow flow checkpoint: no \"format\": \"{FORMAT}\" field"),
            ))
        }
    }
    match value.get("version").and_then(|v| v.as_u64()) {
        Some(VERSION) => {}
        Some(other) => {
            return Err(Error::parse(
                &json_path,
                format!("unsupported flow checkpoint version {other} (this build reads version {VERSION})"),
            ))
        }
        None => return Err(Error::parse(&json_path, "no integer \"version\" field")),
    }
    let header: Header =
        serde_json::from_value(value).map_err(|e| Error::parse(&json_path, format!("bad checkpoint header: {e}")))?;
    let spec: FlowSpec =
        serde_json::from_value(header.spec).map_err(|e| Error::parse(&json_path, format!("bad flow spec: {e}")))?;
    spec.validate().map_err(|e| Error::parse(&json_path, format!("bad flow spec: {}", message(e))))?;

    let weights_path = dir.join(WEIGHTS_FILE);
    let bytes = std::fs::read(&weights_path).map_err(|e| Error::io(&weights_path, e))?;
    let found = digest(&bytes);
    if found != header.weights {
        return Err(Error::parse(
            &weights_path,
            format!(
                "does not belong to {FLOW_FILE}: it has {} bytes with FNV-1a {}, {FLOW_FILE} expects {} bytes with \
                 FNV-1a {} (a truncated file, or a save interrupted between the two files)",
                found.bytes, found.fnv1a64, header.weights.bytes, header.weights.fnv1a64
            ),
        ));
    }
    let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
        .map_err(|e| Error::parse(&weights_path, format!("not a readable safetensors file: {e}")))?;
    // The weights file must be able to hold the flow the spec describes (4 bytes a parameter at
    // the least) before the flow is built: a hostile spec would otherwise allocate without bound.
    let least_bytes = spec.min_parameters().saturating_mul(4);
    if least_bytes > bytes.len() as u128 {
        return Err(Error::parse(
            &json_path,
            format!(
                "its spec describes a flow of at least {} parameters, more than the {} bytes of {WEIGHTS_FILE} can hold",
                spec.min_parameters(),
                bytes.len()
            ),
        ));
    }
    Ok(Stored { weights_path, spec, training: header.training, tensors })
}

/// Checks one stored tensor against the expected shape and dtype and for finiteness.
fn check_tensor(name: &str, tensor: &Tensor, shape: &[usize], dtype: DType) -> std::result::Result<(), String> {
    if tensor.dims() != shape {
        return Err(format!("{name}: checkpoint has {:?}, model has {shape:?}", tensor.dims()));
    }
    if tensor.dtype() != dtype {
        return Err(format!("{name}: checkpoint has dtype {:?}, model has {dtype:?}", tensor.dtype()));
    }
    check_finite(tensor, name).map_err(message)
}

/// Checks that `tensors` holds exactly the parameters of `store` (and the Adam moments when
/// `with_adam`), with the right shapes, dtypes and finite values. Returns every problem found.
fn check_tensors(tensors: &HashMap<String, Tensor>, store: &ParamStore, with_adam: bool) -> Vec<String> {
    let mut problems = Vec::new();
    let mut expected: Vec<(String, Vec<usize>, DType)> = Vec::new();
    for (name, var) in store.entries() {
        expected.push((name.clone(), var.dims().to_vec(), var.dtype()));
    }
    if with_adam {
        for (name, var) in store.entries() {
            expected.push((format!("{ADAM_M}{name}"), var.dims().to_vec(), DType::F64));
            expected.push((format!("{ADAM_V}{name}"), var.dims().to_vec(), DType::F64));
        }
    }
    for (name, shape, dtype) in &expected {
        match tensors.get(name) {
            None => problems.push(format!("{name}: missing from the checkpoint (model has {shape:?})")),
            Some(tensor) => {
                if let Err(problem) = check_tensor(name, tensor, shape, *dtype) {
                    problems.push(problem);
                }
            }
        }
    }
    let mut extra: Vec<&String> =
        tensors.keys().filter(|key| !expected.iter().any(|(name, _, _)| name == *key)).collect();
    extra.sort();
    for name in extra {
        let dims = tensors[name].dims();
        problems.push(if !with_adam && (name.starts_with(ADAM_M) || name.starts_with(ADAM_V)) {
            format!("{name}: optimiser state in the weights, but {FLOW_FILE} has no training state")
        } else {
            format!("{name}: in the checkpoint ({dims:?}) but not in the model")
        });
    }
    problems
}

/// Joins up to five problems into one message.
fn summarize(problems: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut text = problems.iter().take(SHOWN).cloned().collect::<Vec<_>>().join("; ");
    if problems.len() > SHOWN {
        text.push_str(&format!("; and {} more", problems.len() - SHOWN));
    }
    text
}

/// The fields of two specs that differ, as "field: checkpoint X, model Y".
fn spec_differences(stored: &FlowSpec, model: &FlowSpec) -> Vec<String> {
    let (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) =
        (serde_json::to_value(stored), serde_json::to_value(model))
    else {
        return vec![format!("checkpoint {stored:?}, model {model:?}")];
    };
    a.iter()
        .filter_map(|(key, va)| {
            let vb = b.get(key).unwrap_or(&serde_json::Value::Null);
            (va != vb).then(|| format!("{key}: checkpoint {va}, model {vb}"))
        })
        .collect()
}

/// Sets every parameter of `store` from `tensors` (already checked).
fn assign(store: &ParamStore, tensors: &HashMap<String, Tensor>, device: &Device) -> Result<()> {
    for (name, var) in store.entries() {
        let tensor = tensors
            .get(name)
            .ok_or_else(|| Error::invalid(format!("{name}: missing from the checkpoint")))?
            .to_device(device)?;
        var.set(&tensor)?;
    }
    Ok(())
}

/// Rebuilds the training state from the header and the stored moments (already checked).
fn training_state(
    stored: &Stored,
    store: &ParamStore,
    header: &TrainingHeader,
    json_path: &Path,
) -> Result<TrainingState> {
    let seed = unhex32(&header.rng.seed)
        .ok_or_else(|| Error::parse(json_path, "training.rng.seed is not 64 hexadecimal digits"))?;
    let word_pos: u128 = header
        .rng
        .word_pos
        .parse()
        .map_err(|_| Error::parse(json_path, "training.rng.word_pos is not a non-negative decimal integer"))?;
    let mut rng = <ChaCha8Rng as rand::SeedableRng>::from_seed(seed);
    rng.set_stream(header.rng.stream);
    rng.set_word_pos(word_pos);
    let mut m = Vec::with_capacity(store.entries().len());
    let mut v = Vec::with_capacity(store.entries().len());
    for (name, _) in store.entries() {
        for (prefix, out) in [(ADAM_M, &mut m), (ADAM_V, &mut v)] {
            let key = format!("{prefix}{name}");
            let tensor = stored
                .tensors
                .get(&key)
                .ok_or_else(|| Error::parse(&stored.weights_path, format!("{key}: missing from the checkpoint")))?;
            out.push(tensor.flatten_all()?.to_vec1::<f64>()?);
        }
    }
    Ok(TrainingState {
        step: header.step,
        adam: AdamState { step: header.adam_step, m, v },
        rng,
        extra: header.extra.clone(),
    })
}

/// Loads the checkpoint in the folder `dir`: builds the flow from the saved spec on `device`,
/// sets every parameter from the saved weights, and returns the training state when one was
/// saved (restore the optimiser with [`Adam::set_state`](crate::flow::optim::Adam::set_state)).
///
/// Fails with [`Error::Io`] naming the path when the folder or a file is missing, and with
/// [`Error::Parse`] naming the file when `flow.json` is malformed, of another format or
/// version, or has a spec with unknown fields, and when the weights do not belong to that
/// `flow.json`, are not a safetensors file, or hold a parameter that is missing, extra, of the
/// wrong shape or dtype, or non-finite.
pub fn load_flow(dir: &Path, device: &Device) -> Result<(Flow, Option<TrainingState>)> {
    let stored = read_stored(dir)?;
    let flow = Flow::new(&stored.spec, device)?;
    let problems = check_tensors(&stored.tensors, flow.params(), stored.training.is_some());
    if !problems.is_empty() {
        return Err(Error::parse(&stored.weights_path, summarize(&problems)));
    }
    let training = match &stored.training {
        None => None,
        Some(header) => Some(training_state(&stored, flow.params(), header, &dir.join(FLOW_FILE))?),
    };
    assign(flow.params(), &stored.tensors, device)?;
    Ok((flow, training))
}

/// Loads the weights of the checkpoint in the folder `dir` into `flow`, which must have been
/// built from the same spec; any training state in the checkpoint is checked but not returned.
///
/// Nothing is changed when it fails. A checkpoint of another spec is an
/// [`Error::InvalidInput`] listing the fields that differ and the first parameters whose shapes
/// or dtypes differ ("layer0.conditioner.input.weight: checkpoint has [16, 9], model has
/// [32, 9]"); the other failures are those of [`load_flow`].
pub fn load_weights(flow: &Flow, dir: &Path) -> Result<()> {
    let stored = read_stored(dir)?;
    let problems = check_tensors(&stored.tensors, flow.params(), stored.training.is_some());
    if stored.spec != *flow.spec() {
        let mut text = format!(
            "{}: the checkpoint is of another flow spec ({})",
            dir.display(),
            spec_differences(&stored.spec, flow.spec()).join(", ")
        );
        if !problems.is_empty() {
            text.push_str(&format!("; {}", summarize(&problems)));
        }
        return Err(Error::invalid(text));
    }
    if !problems.is_empty() {
        return Err(Error::parse(&stored.weights_path, summarize(&problems)));
    }
    if let Some(header) = &stored.training {
        training_state(&stored, flow.params(), header, &dir.join(FLOW_FILE))?;
    }
    assign(flow.params(), &stored.tensors, flow.device())
}
