//! Flow checkpoints: exact round trips of weights, bit-for-bit resumption of training, and clear
//! errors for mismatched, tampered, missing and truncated files.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use cgflow::error::Error;
use cgflow::flow::checkpoint::{load_flow, load_weights, save_flow, TrainingState};
use cgflow::flow::optim::{Adam, AdamConfig};
use cgflow::flow::{CouplingKind, Flow, FlowSpec, Precision};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

const PI: f64 = std::f64::consts::PI;

fn spec(precision: Precision, hidden: usize) -> FlowSpec {
    FlowSpec {
        dims: 6,
        circular: vec![1, 4],
        context: 3,
        layers: 4,
        coupling: CouplingKind::Spline { bins: 8, tail_bound: 5.0 },
        hidden,
        blocks: 1,
        shift_every: 2,
        seed: 3,
        precision,
    }
}

/// Replaces every weight by seeded N(0, 0.1^2) values, so the flow is far from its initial state.
fn randomize(flow: &Flow, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for (_, var) in flow.params().entries() {
        let values: Vec<f64> = (0..var.elem_count()).map(|_| 0.1 * rng.sample::<f64, _>(StandardNormal)).collect();
        let t = Tensor::from_vec(values, var.shape(), &Device::Cpu).unwrap().to_dtype(var.dtype()).unwrap();
        var.set(&t).unwrap();
    }
}

/// A training batch drawn from `rng`: N(0, 1.5^2) on real dims, uniform angles on circular ones,
/// contexts uniform on [-1, 1). One extra u32 leaves the generator in the middle of a word pair.
fn batch(flow: &Flow, n: usize, rng: &mut ChaCha8Rng) -> (Tensor, Tensor) {
    let spec = flow.spec();
    let mut x = Vec::with_capacity(n * spec.dims);
    for _ in 0..n {
        for d in 0..spec.dims {
            x.push(if spec.circular.contains(&d) {
                rng.gen_range(-PI..PI)
            } else {
                1.5 * rng.sample::<f64, _>(StandardNormal)
            });
        }
    }
    let c: Vec<f64> = (0..n * spec.context).map(|_| rng.gen_range(-1.0..1.0)).collect();
    rng.next_u32();
    let dtype = flow.dtype();
    let x = Tensor::from_vec(x, (n, spec.dims), &Device::Cpu).unwrap().to_dtype(dtype).unwrap();
    let c = Tensor::from_vec(c, (n, spec.context), &Device::Cpu).unwrap().to_dtype(dtype).unwrap();
    (x, c)
}

/// One step of training by example on a fresh batch.
fn train_step(flow: &Flow, adam: &mut Adam, rng: &mut ChaCha8Rng) {
    let (x, c) = batch(flow, 32, rng);
    let loss = flow.log_prob(&x, Some(&c)).unwrap().neg().unwrap().mean_all().unwrap();
    let grads = loss.backward().unwrap();
    adam.step(flow.params(), &grads, 1e-3).unwrap();
}

/// The bits of a tensor's values (f32 values are widened exactly).
fn bits(t: &Tensor) -> Vec<u64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

/// Every parameter of a flow, by name, as bits.
fn weights(flow: &Flow) -> Vec<(String, Vec<u64>)> {
    flow.params().entries().iter().map(|(name, var)| (name.clone(), bits(var.as_tensor()))).collect()
}

fn error_text<T: std::fmt::Debug>(result: cgflow::error::Result<T>) -> String {
    result.expect_err("expected an error").to_string()
}

/// 64-bit FNV-1a, written here independently of the library, to re-seal hand-edited weights.
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf29ce484222325;
    for &b in bytes {
        hash ^= b as u64;
        hash = hash.wrapping_mul(0x100000001b3);
    }
    hash
}

/// Replaces the weights file by `tensors` and records its length and hash in flow.json, as a
/// hand-made (but consistent) checkpoint would.
fn reseal(dir: &Path, tensors: &HashMap<String, Tensor>) {
    let path = dir.join("weights.safetensors");
    candle_core::safetensors::save(tensors, &path).unwrap();
    reseal_bytes(dir, &std::fs::read(&path).unwrap());
}

fn reseal_bytes(dir: &Path, bytes: &[u8]) {
    std::fs::write(dir.join("weights.safetensors"), bytes).unwrap();
    let json_path = dir.join("flow.json");
    let mut json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    json["weights"] = serde_json::json!({"bytes": bytes.len(), "fnv1a64": format!("{:016x}", fnv1a64(bytes))});
    std::fs::write(&json_path, serde_json::to_string_pretty(&json).unwrap()).unwrap();
}

fn edit_json(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("flow.json");
    let mut json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut json);
    std::fs::write(&path, serde_json::to_string_pretty(&json).unwrap()).unwrap();
}

#[test]
fn flow_checkpoint_round_trip_is_bit_identical() {
    for precision in [Precision::F64, Precision::F32] {
        let flow = Flow::new(&spec(precision, 16), &Device::Cpu).unwrap();
        randomize(&flow, 11);
        let dir = tempfile::tempdir().unwrap();
        save_flow(dir.path(), &flow, None).unwrap();
        let mut files: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        files.sort();
        assert_eq!(files, ["flow.json", "weights.safetensors"], "no temporary files are left behind");

        let (back, training) = load_flow(dir.path(), &Device::Cpu).unwrap();
        assert!(training.is_none());
        assert_eq!(back.spec(), flow.spec());
        assert_eq!(weights(&back), weights(&flow));
        for (_, var) in back.params().entries() {
            assert_eq!(var.dtype(), precision.dtype());
        }

        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let (x, c) = batch(&flow, 64, &mut rng);
        let expected = bits(&flow.log_prob(&x, Some(&c)).unwrap());
        assert_eq!(bits(&back.log_prob(&x, Some(&c)).unwrap()), expected);

        // Into an existing flow of the same spec (still at its initial weights).
        let fresh = Flow::new(&spec(precision, 16), &Device::Cpu).unwrap();
        assert_ne!(weights(&fresh), weights(&flow));
        load_weights(&fresh, dir.path()).unwrap();
        assert_eq!(weights(&fresh), weights(&flow));
        assert_eq!(bits(&fresh.log_prob(&x, Some(&c)).unwrap()), expected);
    }
}

#[test]
fn flow_checkpoint_resumes_training_bit_for_bit() {
    for precision in [Precision::F64, Precision::F32] {
        let config = AdamConfig { max_grad_norm: Some(10.0), ..AdamConfig::default() };

        // Six uninterrupted steps.
        let reference = Flow::new(&spec(precision, 16), &Device::Cpu).unwrap();
        randomize(&reference, 11);
        let mut adam = Adam::new(reference.params(), config);
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for _ in 0..6 {
            train_step(&reference, &mut adam, &mut rng);
        }

        // Three steps, a checkpoint, and three more steps in fresh objects.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ckpt");
        {
            let flow = Flow::new(&spec(precision, 16), &Device::Cpu).unwrap();
            randomize(&flow, 11);
            let mut adam = Adam::new(flow.params(), config);
            let mut rng = ChaCha8Rng::seed_from_u64(7);
            for _ in 0..3 {
                train_step(&flow, &mut adam, &mut rng);
            }
            assert_ne!(rng.get_word_pos() % 16, 0, "the generator stops inside a block");
            let state = TrainingState {
                step: 3,
                adam: adam.state().clone(),
                rng: rng.clone(),
                extra: serde_json::json!({"losses": [1.5, -2.25], "note": "half way"}),
            };
            save_flow(&path, &flow, Some(&state)).unwrap();
        }
        let (flow, training) = load_flow(&path, &Device::Cpu).unwrap();
        let training = training.expect("training state");
        assert_eq!(training.step, 3);
        assert_eq!(training.adam.step, 3);
        assert_eq!(training.extra, serde_json::json!({"losses": [1.5, -2.25], "note": "half way"}));
        let mut resumed = Adam::new(flow.params(), config);
        resumed.set_state(flow.params(), training.adam).unwrap();
        let mut rng = training.rng;
        for _ in 0..3 {
            train_step(&flow, &mut resumed, &mut rng);
        }

        assert_eq!(weights(&flow), weights(&reference), "{precision:?}");
        assert_eq!(resumed.state().step, adam.state().step);
        assert_eq!(resumed.state().m, adam.state().m);
        assert_eq!(resumed.state().v, adam.state().v);
        let mut reference_rng = rng.clone();
        assert_eq!(rng.next_u64(), reference_rng.next_u64());
    }
}

#[test]
fn flow_checkpoint_rejects_another_architecture() {
    let dir = tempfile::tempdir().unwrap();
    let saved = Flow::new(&spec(Precision::F64, 16), &Device::Cpu).unwrap();
    randomize(&saved, 11);
    save_flow(dir.path(), &saved, None).unwrap();

    // Wider conditioners: the error names a parameter and both shapes.
    let wider = Flow::new(&spec(Precision::F64, 32), &Device::Cpu).unwrap();
    let before = weights(&wider);
    let name = "layer0.conditioner.input.weight";
    let (small, large) = (saved.params().get(name).unwrap().dims().to_vec(), wider.params().get(name).unwrap().dims());
    assert_ne!(small, large);
    let message = error_text(load_weights(&wider, dir.path()));
    assert!(message.contains(&format!("{name}: checkpoint has {small:?}, model has {large:?}")), "{message}");
    assert!(message.contains("hidden: checkpoint 16, model 32"), "{message}");
    assert_eq!(weights(&wider), before, "a failed load changes nothing");

    // Same shapes, another spec.
    let mut other = spec(Precision::F64, 16);
    other.seed = 4;
    let reseeded = Flow::new(&other, &Device::Cpu).unwrap();
    let message = error_text(load_weights(&reseeded, dir.path()));
    assert!(message.contains("another flow spec") && message.contains("seed: checkpoint 3, model 4"), "{message}");

    // Another precision: the dtypes differ.
    let single = Flow::new(&spec(Precision::F32, 16), &Device::Cpu).unwrap();
    let message = error_text(load_weights(&single, dir.path()));
    assert!(message.contains("precision") && message.contains("dtype F64") && message.contains("F32"), "{message}");

    // A spec with an unknown field is rejected by both loaders, naming the field.
    edit_json(dir.path(), |json| json["spec"]["colour"] = serde_json::json!("blue"));
    let message = error_text(load_flow(dir.path(), &Device::Cpu));
    assert!(message.contains("colour") && message.contains("flow.json"), "{message}");
    let message = error_text(load_weights(&saved, dir.path()));
    assert!(message.contains("colour"), "{message}");
}

#[test]
fn flow_checkpoint_rejects_bad_headers() {
    let dir = tempfile::tempdir().unwrap();
    let flow = Flow::new(&spec(Precision::F64, 16), &Device::Cpu).unwrap();
    save_flow(dir.path(), &flow, None).unwrap();
    let json_path = dir.path().join("flow.json");
    let original = std::fs::read_to_string(&json_path).unwrap();

    std::fs::write(&json_path, &original[..original.len() / 2]).unwrap();
    let message = error_text(load_flow(dir.path(), &Device::Cpu));
    assert!(message.contains("malformed JSON") && message.contains("flow.json"), "{message}");

    std::fs::write(&json_path, &original).unwrap();
    edit_json(dir.path(), |json| json["format"] = serde_json::json!("something-else"));
    let message = error_text(load_flow(dir.path(), &Device::Cpu));
    assert!(message.contains("not a cgflow flow checkpoint") && message.contains("something-else"), "{message}");

    std::fs::write(&json_path, &original).unwrap();
    edit_json(dir.path(), |json| json["version"] = serde_json::json!(2));
    let message = error_text(load_flow(dir.path(), &Device::Cpu));
    assert!(message.contains("version 2"), "{message}");

    std::fs::write(&json_path, &original).unwrap();
    edit_json(dir.path(), |json| json["spec"]["layers"] = serde_json::json!(0));
    let message = error_text(load_flow(dir.path(), &Device::Cpu));
    assert!(message.contains("bad flow spec"), "{message}");

    // A training state whose generator seed is not hexadecimal.
    let mut state_rng = ChaCha8Rng::seed_from_u64(1);
    state_rng.next_u32();
    let adam = Adam::new(flow.params(), AdamConfig::default());
    let state = TrainingState { step: 0, adam: adam.state().clone(), rng: state_rng, extra: serde_json::Value::Null };
    save_flow(dir.path(), &flow, Some(&state)).unwrap();
    edit_json(dir.path(), |json| json["training"]["rng"]["seed"] = serde_json::json!("zz"));
    let message = error_text(load_flow(dir.path(), &Device::Cpu));
    assert!(message.contains("training.rng.seed"), "{message}");

    // Optimiser state that does not match the flow is refused at saving.
    let mut bad = adam.state().clone();
    bad.m.pop();
    let state = TrainingState { step: 0, adam: bad, rng: ChaCha8Rng::seed_from_u64(1), extra: serde_json::Value::Null };
    let message = error_text(save_flow(dir.path(), &flow, Some(&state)));
    assert!(message.contains("optimiser"), "{message}");
}

#[test]
fn flow_checkpoint_missing_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere");
    match load_flow(&missing, &Device::Cpu) {
        Err(Error::Io { path, .. }) => assert_eq!(path, missing),
        other => panic!("expected an Io error, got {other:?}"),
    }

    let flow = Flow::new(&spec(Precision::F64, 16), &Device::Cpu).unwrap();
    let ckpt = dir.path().join("ckpt");
    save_flow(&ckpt, &flow, None).unwrap();
    std::fs::remove_file(ckpt.join("weights.safetensors")).unwrap();
    let result = load_flow(&ckpt, &Device::Cpu);
    let message = format!("{:?}", result.as_ref().map(|_| ()));
    match result {
        Err(Error::Io { path, .. }) => assert_eq!(path, ckpt.join("weights.safetensors")),
        _ => panic!("expected an Io error naming weights.safetensors, got {message}"),
    }
    let message = error_text(load_weights(&flow, &ckpt));
    assert!(message.contains("weights.safetensors"), "{message}");

    std::fs::remove_file(ckpt.join("flow.json")).unwrap();
    let message = error_text(load_flow(&ckpt, &Device::Cpu));
    assert!(message.contains("flow.json"), "{message}");

    std::fs::write(dir.path().join("file"), b"x").unwrap();
    let message = error_text(load_flow(&dir.path().join("file"), &Device::Cpu));
    assert!(message.contains("not a folder"), "{message}");
}

#[test]
fn flow_checkpoint_truncated_or_foreign_weights_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let flow = Flow::new(&spec(Precision::F64, 16), &Device::Cpu).unwrap();
    randomize(&flow, 11);
    save_flow(dir.path(), &flow, None).unwrap();
    let weights_path = dir.path().join("weights.safetensors");
    let bytes = std::fs::read(&weights_path).unwrap();
    let json = std::fs::read(dir.path().join("flow.json")).unwrap();

    for keep in [0, 7, 100, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(dir.path().join("flow.json"), &json).unwrap();
        std::fs::write(&weights_path, &bytes[..keep]).unwrap();
        let message = error_text(load_flow(dir.path(), &Device::Cpu));
        assert!(message.contains("weights.safetensors") && message.contains("does not belong"), "{message}");
        // Even with a consistent hash, a truncated file is an error, not a panic.
        reseal_bytes(dir.path(), &bytes[..keep]);
        let message = error_text(load_flow(dir.path(), &Device::Cpu));
        assert!(message.contains("not a readable safetensors file"), "{keep}: {message}");
        let message = error_text(load_weights(&flow, dir.path()));
        assert!(message.contains("weights.safetensors"), "{message}");
    }
    // One flipped bit anywhere (in the safetensors header, in a tensor's data, in the last byte)
    // is refused, even where the file would still parse as safetensors.
    for at in [3, 20, bytes.len() / 2, bytes.len() - 1] {
        let mut flipped = bytes.clone();
        flipped[at] ^= 0x10;
        std::fs::write(&weights_path, &flipped).unwrap();
        let message = error_text(load_flow(dir.path(), &Device::Cpu));
        assert!(message.contains("does not belong"), "byte {at}: {message}");
    }
    reseal_bytes(dir.path(), &bytes);
    load_flow(dir.path(), &Device::Cpu).unwrap();

    // The weights of another save (as after a crash between the two renames) are refused.
    let other = tempfile::tempdir().unwrap();
    randomize(&flow, 12);
    save_flow(other.path(), &flow, None).unwrap();
    std::fs::copy(other.path().join("weights.safetensors"), &weights_path).unwrap();
    let message = error_text(load_flow(dir.path(), &Device::Cpu));
    assert!(message.contains("does not belong"), "{message}");
}

#[test]
fn flow_checkpoint_checks_every_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let flow = Flow::new(&spec(Precision::F64, 16), &Device::Cpu).unwrap();
    randomize(&flow, 11);
    save_flow(dir.path(), &flow, None).unwrap();
    let stored = candle_core::safetensors::load(dir.path().join("weights.safetensors"), &Device::Cpu).unwrap();
    let name = "layer1.conditioner.output.bias";
    assert!(stored.contains_key(name));

    // Non-finite value.
    let mut tensors = stored.clone();
    let mut values = tensors[name].to_vec1::<f64>().unwrap();
    values[2] = f64::NAN;
    tensors.insert(name.to_string(), Tensor::new(values, &Device::Cpu).unwrap());
    reseal(dir.path(), &tensors);
    let message = error_text(load_flow(dir.path(), &Device::Cpu));
    assert!(message.contains(name) && message.contains("non-finite"), "{message}");

    // Wrong dtype.
    let mut tensors = stored.clone();
    tensors.insert(name.to_string(), tensors[name].to_dtype(DType::F32).unwrap());
    reseal(dir.path(), &tensors);
    let message = error_text(load_flow(dir.path(), &Device::Cpu));
    assert!(message.contains(name) && message.contains("dtype F32") && message.contains("F64"), "{message}");

    // Missing, extra, and reshaped tensors.
    let mut tensors = stored.clone();
    tensors.remove(name);
    tensors.insert("layer9.extra".to_string(), Tensor::zeros(3, DType::F64, &Device::Cpu).unwrap());
    let reshaped = "layer0.conditioner.input.weight";
    let (rows, cols) = tensors[reshaped].dims2().unwrap();
    tensors.insert(reshaped.to_string(), tensors[reshaped].reshape((cols, rows)).unwrap());
    reseal(dir.path(), &tensors);
    let message = error_text(load_flow(dir.path(), &Device::Cpu));
    assert!(message.contains(&format!("{name}: missing")), "{message}");
    assert!(message.contains("layer9.extra"), "{message}");
    assert!(message.contains(&format!("{reshaped}: checkpoint has [{cols}, {rows}], model has [{rows}, {cols}]")));

    // Optimiser moments without training state.
    let mut tensors = stored.clone();
    tensors.insert(format!("adam.m.{name}"), stored[name].clone());
    reseal(dir.path(), &tensors);
    let message = error_text(load_flow(dir.path(), &Device::Cpu));
    assert!(message.contains("no training state"), "{message}");

    // Non-finite weights are refused at saving.
    let var = flow.params().get(name).unwrap();
    var.set(&Tensor::full(f64::INFINITY, var.shape(), &Device::Cpu).unwrap()).unwrap();
    let message = error_text(save_flow(dir.path(), &flow, None));
    assert!(message.contains(name) && message.contains("non-finite"), "{message}");
}

#[test]
fn a_spec_larger_than_its_weights_is_refused_before_anything_is_allocated() {
    let dir = tempfile::tempdir().unwrap();
    let flow = Flow::new(&spec(Precision::F64, 16), &Device::Cpu).unwrap();
    save_flow(dir.path(), &flow, None).unwrap();
    let json_path = dir.path().join("flow.json");
    let mut header: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    // What a fuzzed flow.json did: 2999999999999 hidden units (a 30 TB allocation, then SIGABRT).
    header["spec"]["hidden"] = serde_json::json!(2_999_999_999_999u64);
    std::fs::write(&json_path, header.to_string()).unwrap();
    let message = error_text(load_flow(dir.path(), &Device::Cpu));
    assert!(message.contains("flow.json") && message.contains("more than the"), "{message}");
}

#[test]
fn the_parameter_bound_lies_below_every_built_flow_and_refuses_an_inflated_spec() {
    let cpu = Device::Cpu;
    let base = FlowSpec::aldp_conditional(Precision::F32, 3);
    let affine = CouplingKind::Affine { max_log_scale: 3.0 };
    let specs = [
        FlowSpec { hidden: 16, layers: 2, ..base.clone() },
        FlowSpec { hidden: 8, layers: 3, blocks: 2, ..base.clone() },
        FlowSpec { dims: 1, circular: vec![0], context: 2, hidden: 8, layers: 2, ..base.clone() },
        FlowSpec { dims: 3, circular: vec![], context: 0, hidden: 8, layers: 3, shift_every: 0, ..base.clone() },
        FlowSpec { dims: 16, circular: vec![], context: 0, coupling: affine, hidden: 64, layers: 8, ..base.clone() },
        FlowSpec { dims: 2, circular: vec![], context: 0, coupling: affine, hidden: 8, layers: 4, ..base.clone() },
        FlowSpec { dims: 5, circular: vec![1, 4], context: 1, hidden: 4, layers: 5, ..base.clone() },
    ];
    for spec in &specs {
        let built = Flow::new(spec, &cpu).expect("flow").params().count() as u128;
        assert!(spec.min_parameters() <= built, "{spec:?}: bound {} > {built}", spec.min_parameters());
        assert!(spec.min_parameters() * 2 > built, "{spec:?}: bound {} loose for {built}", spec.min_parameters());
    }
    // The fuzzers' case: a saved ALDP flow whose spec says 508 dims instead of 58. Its weights
    // file cannot hold that flow: refused before the flow is built.
    let dir = tempfile::tempdir().expect("tmp");
    let small = FlowSpec { hidden: 32, layers: 4, ..base };
    save_flow(dir.path(), &Flow::new(&small, &cpu).expect("flow"), None).expect("save");
    let path = dir.path().join("flow.json");
    let text = std::fs::read_to_string(&path).expect("flow.json").replace("\"dims\": 58", "\"dims\": 508");
    std::fs::write(&path, text).expect("write");
    let e = error_text(load_flow(dir.path(), &cpu));
    assert!(e.contains("parameters"), "{e}");
}
