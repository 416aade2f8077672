//! Alanine-dipeptide active learning: settings files, and a killed-and-resumed run that ends
//! exactly where an uninterrupted one does.

use cgflow::al::checkpoint::{load_al_state, save_al_state};
use cgflow::al::config::AlConfig;
use cgflow::al::driver::{ActiveLearning, AlMode};
use cgflow::al::molecule::{MarginalReference, MoleculeProblem};
use cgflow::flow::molecular::ConditionalMolecule;
use cgflow::openmm::{Platform, System};

use crate::util::{aldp as aldp_file, min_energy_positions, root};

fn experiment(config: AlConfig) -> ActiveLearning {
    let system = System::from_xml_file(&aldp_file("aldp_obc1.xml")).expect("system");
    let reference = cgflow::io::npy::read_npy(&root().join("data/reference/aldp_umbrella/reference_probabilities.npy"))
        .expect("reference")
        .data;
    let x = min_energy_positions();
    let molecule = ConditionalMolecule::aldp(&x).expect("molecule");
    let references = vec![MarginalReference { pair: (0, 1), probabilities: reference }];
    let problem = MoleculeProblem::new(molecule, &system, &Platform::new("CPU").expect("platform"), &x, references)
        .expect("problem");
    ActiveLearning::new(config, Box::new(problem)).expect("experiment")
}

#[test]
fn shipped_settings_files_are_the_presets_and_unknown_fields_are_named() {
    for (file, preset) in
        [("configs/aldp_fast.json", AlConfig::fast()), ("configs/aldp_reference.json", AlConfig::reference())]
    {
        let text = std::fs::read_to_string(root().join(file)).expect("settings file");
        let parsed: AlConfig = serde_json::from_str(&text).expect("parses");
        assert_eq!(parsed, preset, "{file}");
        parsed.validate().expect("valid");
    }
    let mut value = serde_json::to_value(AlConfig::fast()).expect("json");
    value["energy_training"]["learning_rate"] = serde_json::json!(1e-3);
    let err = serde_json::from_value::<AlConfig>(value).unwrap_err().to_string();
    assert!(err.contains("unknown field `learning_rate`"), "{err}");
    let bad = AlConfig { test_fraction: 1.5, ..AlConfig::tiny() };
    assert!(bad.validate().unwrap_err().to_string().contains("test_fraction"));
    for tau in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let bad = AlConfig { old_temperature_kt: Some(tau), ..AlConfig::tiny() };
        assert!(bad.validate().unwrap_err().to_string().contains("old_temperature_kt must be positive"), "{tau}");
    }
}

/// Equal JSON values, numbers within 1e-9 relative (integers exactly).
fn assert_close(a: &serde_json::Value, b: &serde_json::Value, path: &str) {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!((x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1e-300), "{path}: {x} vs {y}");
        }
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len(), "{path}: lengths");
            x.iter().zip(y).enumerate().for_each(|(i, (x, y))| assert_close(x, y, &format!("{path}[{i}]")));
        }
        (Value::Object(x), Value::Object(y)) => {
            assert_eq!(x.len(), y.len(), "{path}: keys");
            x.iter().for_each(|(k, v)| assert_close(v, &y[k], &format!("{path}.{k}")));
        }
        _ => assert_eq!(a, b, "{path}"),
    }
}

#[test]
fn resumed_run_equals_uninterrupted_run() {
    resumed_run_equals_uninterrupted_run_with(AlConfig::tiny());
}

#[test]
fn resumed_run_equals_uninterrupted_run_with_labels_from_training_ess_weights_annealed_fits_and_uniform_old_points() {
    // The tiny preset draws the older points by weight (as the fast one does); this covers the
    // uniform draw.
    let tiny = AlConfig::tiny();
    assert_eq!(tiny.old_temperature_kt, Some(2.0));
    let labels = cgflow::al::config::LabelConfig {
        from_training: true,
        weights: cgflow::al::config::EstimateWeights::StepEss,
        fit_weights: cgflow::al::config::FitWeights::Ess,
        ..tiny.labels.clone()
    };
    let ensemble = cgflow::pmf::EnsembleConfig { final_lr: Some(1e-4), ..tiny.ensemble.clone() };
    resumed_run_equals_uninterrupted_run_with(AlConfig { labels, ensemble, old_temperature_kt: None, ..tiny });
}

#[test]
fn training_samples_add_to_the_labels_at_no_cost() {
    // With `from_training` alone every random draw is the same as without, so the two runs see the
    // same flows and label samples; the training samples only add weight to the labels.
    let tiny = AlConfig::tiny();
    let with_labels = |from_training| AlConfig {
        labels: cgflow::al::config::LabelConfig { from_training, ..tiny.labels.clone() },
        ..tiny.clone()
    };
    let run = |config: AlConfig| {
        let mut quiet = |_| {};
        let al = experiment(config);
        let mut state = al.start(AlMode::ActiveLearning, &mut quiet).expect("start");
        al.iterate(&mut state, &mut quiet).expect("iteration 0");
        state
    };
    let plain = run(with_labels(false));
    let joined = run(with_labels(true));
    assert_eq!(plain.log[0].evaluations, joined.log[0].evaluations);
    // The labels of iteration 0 are of the start points (the search that follows differs).
    let start = plain.log[0].train_points - plain.points.newest;
    assert_eq!(plain.points.train[..start], joined.points.train[..start]);
    let (a, b) = (&plain.points.train_label_ess[..start], &joined.points.train_label_ess[..start]);
    assert!(a.iter().zip(b).all(|(x, y)| y >= x), "an ESS fell");
    let gained = a.iter().zip(b).filter(|(x, y)| *y > *x).count();
    assert!(gained > a.len() / 2, "only {gained} of {} labels gained ESS", a.len());
}

fn resumed_run_equals_uninterrupted_run_with(config: AlConfig) {
    let al = experiment(config.clone());
    let mut quiet = |_| {};
    // Uninterrupted: start and two iterations.
    let mut state = al.start(AlMode::ActiveLearning, &mut quiet).expect("start");
    let start_points = state.points.clone();
    al.iterate(&mut state, &mut quiet).expect("iteration 0");
    al.iterate(&mut state, &mut quiet).expect("iteration 1");
    assert!(state.converged);

    // Killed after every step and resumed from the checkpoint, with a fresh experiment (a new
    // process would build a new one).
    let dir = tempfile::tempdir().expect("tempdir");
    let first = experiment(config.clone());
    let mut resumed = first.start(AlMode::ActiveLearning, &mut quiet).expect("start");
    assert_eq!(resumed.points, start_points, "start-up MD and point selection are reproducible");
    save_al_state(dir.path(), first.config(), &resumed).expect("save");
    for _ in 0..2 {
        let again = experiment(config.clone());
        resumed = load_al_state(dir.path(), &again).expect("load");
        again.iterate(&mut resumed, &mut quiet).expect("iterate");
        save_al_state(dir.path(), again.config(), &resumed).expect("save");
    }
    assert!(resumed.converged);
    let strip = |log: &[cgflow::al::record::AlIteration]| {
        log.iter()
            .map(|e| cgflow::al::record::AlIteration { wall_s: 0.0, phase_s: Default::default(), ..e.clone() })
            .collect::<Vec<_>>()
    };
    // OpenMM's CPU kernels may sum in another order in a fresh Context, so energies (and what
    // follows from them) agree to rounding, not bit for bit; counts and points agree exactly.
    let (a, b) = (serde_json::to_value(strip(&resumed.log)).unwrap(), serde_json::to_value(strip(&state.log)).unwrap());
    assert_close(&a, &b, "log");
    assert_eq!(resumed.points, state.points);
    let (pmf_a, _) = al.pmf_grid(&state.ensemble, 20).expect("pmf");
    let (pmf_b, _) = al.pmf_grid(&resumed.ensemble, 20).expect("pmf");
    assert!(pmf_a.iter().zip(&pmf_b).all(|(x, y)| (x - y).abs() < 1e-8), "PMFs differ");
    // Every evaluation is accounted for, by purpose.
    let last = state.log.last().expect("log");
    let c = last.costs;
    assert_eq!(c.startup_md, 2000);
    assert_eq!(last.evaluations, c.startup_md + c.energy_training + c.labels + c.test_labels + c.other);
    assert!(last.kld.expect("kld").is_finite());

    // A checkpoint refuses other settings.
    let other = experiment(AlConfig { seed: 2, ..config });
    let err = load_al_state(dir.path(), &other).err().expect("refused").to_string();
    assert!(err.contains("first difference: `seed`"), "{err}");
}

fn cgflow_al(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_cgflow"))
        .current_dir(root())
        .args(["al", "--preset", "tiny"])
        .args(args)
        .output()
        .expect("run cgflow")
}

fn log_lines(dir: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("log.jsonl"))
        .expect("log")
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).expect("json line");
            v["wall_s"] = serde_json::json!(0.0);
            v["phase_s"] = serde_json::Value::Null;
            v
        })
        .collect()
}

#[test]
fn cli_run_killed_at_any_moment_and_resumed_ends_like_an_uninterrupted_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let whole = dir.path().join("whole");
    let output = cgflow_al(&["--out", whole.to_str().unwrap()]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    for file in [
        "config.json",
        "log.jsonl",
        "pmf_iter00.png",
        "std_iter01.png",
        "pmf_kt.npy",
        "pmf_iter01_kt.npy",
        "summary.json",
    ] {
        assert!(whole.join(file).exists(), "{file} missing");
    }
    let read = |name: &str| std::fs::read(whole.join(name)).expect(name);
    assert_eq!(read("pmf_kt.npy"), read("pmf_iter01_kt.npy"), "pmf_kt.npy is the last iteration's");
    assert_ne!(read("pmf_iter00_kt.npy"), read("pmf_iter01_kt.npy"));
    let expected = log_lines(&whole);
    assert_eq!(expected.len(), 2);
    // The final model is a molecule model that `cgflow backmap` takes (the tiny flow is barely
    // trained, hence the loose energy bound).
    let cg = dir.path().join("cg.txt");
    std::fs::write(&cg, "-80 150\n-70 -40\n").expect("cg file");
    let structures = dir.path().join("s.npy");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_cgflow"))
        .current_dir(root())
        .args(["backmap", "--model", whole.join("model").to_str().unwrap(), "--cg", cg.to_str().unwrap()])
        .args(["--degrees", "--n", "3", "--max-energy-kt", "1e5", "--out", structures.to_str().unwrap()])
        .output()
        .expect("backmap");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let x = cgflow::io::npy::read_npy(&structures).expect("structures");
    assert_eq!(x.shape, vec![6, 22, 3]);

    // Kill a second run at several moments, resuming each time, until it finishes.
    let killed = dir.path().join("killed");
    let mut kills = 0;
    // The first kills come during the start-up (before the first checkpoint); a resume reruns it.
    let mut killed_in_startup = 0;
    for delay_ms in [40u64, 120, 300, 900, 600, 1200, 100_000] {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_cgflow"));
        command.current_dir(root()).args(["al", "--preset", "tiny", "--out", killed.to_str().unwrap()]);
        if killed.join("config.json").exists() {
            command.arg("--resume");
            if !killed.join("checkpoint").exists() && !killed.join("checkpoint.old").exists() {
                killed_in_startup += 1;
                // Without --resume such a folder is refused, not overwritten.
                let fresh = cgflow_al(&["--out", killed.to_str().unwrap()]);
                let stderr = String::from_utf8_lossy(&fresh.stderr);
                assert!(!fresh.status.success() && stderr.contains("stopped during its start-up"), "{stderr}");
            }
        }
        let mut child =
            command.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().expect("spawn");
        let start = std::time::Instant::now();
        let finished = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break Some(status);
            }
            if start.elapsed().as_millis() as u64 > delay_ms {
                break None;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        match finished {
            Some(status) => {
                assert!(status.success());
                break;
            }
            None => {
                child.kill().expect("kill");
                child.wait().expect("reap");
                kills += 1;
            }
        }
    }
    assert!(killed.join("summary.json").exists(), "the resumed run did not finish ({kills} kills)");
    let got = log_lines(&killed);
    assert_close(&serde_json::Value::Array(got), &serde_json::Value::Array(expected), "log");
    // The final PMF, bit for bit.
    let pmf = |dir: &std::path::Path| std::fs::read(dir.join("pmf_kt.npy")).expect("pmf");
    assert_eq!(pmf(&killed), pmf(&whole), "the resumed run's PMF differs ({killed_in_startup} start-up kills)");

    // Whatever the timing above gave, the state a kill during the start-up MD leaves (the
    // settings written, no checkpoint yet) resumes and ends bit-identical.
    let startup = dir.path().join("killed_in_startup");
    std::fs::create_dir_all(&startup).expect("folder");
    std::fs::copy(whole.join("config.json"), startup.join("config.json")).expect("config");
    let output = cgflow_al(&["--out", startup.to_str().unwrap(), "--resume"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("stopped during its start-up"), "{stdout}");
    assert_eq!(pmf(&startup), pmf(&whole));

    // A checkpoint whose ensemble weights lost one bit is refused on resume.
    let ensemble = whole.join("checkpoint").join("ensemble.safetensors");
    let mut bytes = std::fs::read(&ensemble).expect("ensemble");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&ensemble, &bytes).expect("write");
    let output = cgflow_al(&["--out", whole.to_str().unwrap(), "--resume"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && stderr.contains("corrupted"), "{stderr}");
}

#[test]
fn cli_rejects_unknown_fields_missing_checkpoints_and_overwrites() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut value = serde_json::to_value(AlConfig::tiny()).expect("json");
    value["search"]["treshold_kt"] = serde_json::json!(0.3);
    let file = dir.path().join("bad.json");
    std::fs::write(&file, value.to_string()).expect("write");
    let output = cgflow_al(&["--config", file.to_str().unwrap(), "--out", dir.path().join("a").to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && stderr.contains("unknown field `treshold_kt`"), "{stderr}");

    let output = cgflow_al(&["--resume", "--out", dir.path().join("none").to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && stderr.contains("no checkpoint to resume from"), "{stderr}");

    let output = cgflow_al(&["--out", dir.path().join("b").to_str().unwrap(), "--iterations", "1"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let output = cgflow_al(&["--out", dir.path().join("b").to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && stderr.contains("already holds a run"), "{stderr}");
}

/// The tiny preset's log as the loop wrote it before it became the generic driver (commit
/// 14c079d, `cgflow al --preset tiny`): the driver keeps alanine dipeptide's results. Counts are
/// exact; energies sum in OpenMM's order, so values agree to rounding.
#[test]
fn tiny_preset_gives_what_the_alanine_dipeptide_loop_gave() {
    // The CLI's defaults: the System, min_energy.pdb, the committed reference.
    let system = System::from_xml_file(&aldp_file("aldp_obc1.xml")).expect("system");
    let x = cgflow::io::read_positions(&aldp_file("min_energy.pdb")).expect("structure").positions_nm;
    let reference = cgflow::io::npy::read_npy(&root().join("data/reference/aldp_umbrella/reference_probabilities.npy"))
        .expect("reference")
        .data;
    let problem = MoleculeProblem::new(
        ConditionalMolecule::aldp(&x).expect("molecule"),
        &system,
        &Platform::new("CPU").expect("platform"),
        &x,
        vec![MarginalReference { pair: (0, 1), probabilities: reference }],
    )
    .expect("problem");
    let al = ActiveLearning::new(AlConfig::tiny(), Box::new(problem)).expect("driver");
    let mut quiet = |_| {};
    let mut state = al.start(AlMode::ActiveLearning, &mut quiet).expect("start");
    let expected = [
        (2692, [2000, 193, 397, 101, 1], 2.0752879640743673, 352.2745363924578),
        (3494, [2000, 355, 991, 147, 1], 2.0060861792757736, 361.8047211651284),
    ];
    for (evaluations, costs, kld, loss) in expected {
        let e = al.iterate(&mut state, &mut quiet).expect("iterate");
        let c = e.costs;
        assert_eq!(
            (e.evaluations, [c.startup_md, c.energy_training, c.labels, c.test_labels, c.other]),
            (evaluations, costs)
        );
        assert!((e.kld.expect("kld") - kld).abs() < 1e-6 * kld, "KLD {:?} vs {kld}", e.kld);
        assert!((e.energy_loss - loss).abs() < 1e-6 * loss, "loss {} vs {loss}", e.energy_loss);
    }
}
