//! Seeded mutation smoke run of every file reader: for each, a few thousand mutations of a valid
//! file (flipped bytes, inserted huge or non-finite numbers, deleted, doubled and cut spans) must
//! give `Ok` or `Err`, never a panic, and allocate no more than the file justifies. A separate test
//! target, because it installs a global allocator that counts the bytes each case allocates.
//!
//! Longer runs: `CGFLOW_FUZZ_SECONDS=600 cargo test --release --test fuzz_smoke -- --nocapture
//! --test-threads 1` mutates each reader's seed for that many seconds instead (with fresh seeds:
//! `CGFLOW_FUZZ_SEED`). A failing case is written out for a look with
//! `CGFLOW_FUZZ_REPLAY=NAME:CASE` (the reader's name and the case number its failure names, under
//! the same `CGFLOW_FUZZ_SEED`): the run then skips to that case, writes its input to
//! `fuzz-case.bin` in the working directory and reads only it.

use std::alloc::System;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static ALLOCATOR: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// One test at a time, set-up included: the allocation counts are global, so another test
/// building its seed files while a reader is measured would count against that reader.
static SERIAL: Mutex<()> = Mutex::new(());

/// Held for the whole of each test.
fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Mutations per reader in the smoke run.
const CASES: usize = 2000;

/// How long to run each reader: `CASES` mutations, or `CGFLOW_FUZZ_SECONDS` seconds.
fn budget() -> (usize, Option<std::time::Duration>) {
    match std::env::var("CGFLOW_FUZZ_SECONDS").ok().and_then(|s| s.parse::<f64>().ok()) {
        Some(s) if s > 0.0 => (usize::MAX, Some(std::time::Duration::from_secs_f64(s))),
        _ => (CASES, None),
    }
}

/// Tokens that break parsers: huge counts, negative and non-finite numbers, structure keywords.
const TOKENS: [&[u8]; 14] = [
    b"2999999999999",
    b"18446744073709551615",
    b"-1",
    b"0",
    b"NaN",
    b"inf",
    b"1e308",
    b"-1e308",
    b"\n",
    b"MODEL",
    b"ENDMDL",
    b"{",
    b"\"shape\": (4294967295, 22, 3)",
    b"\xff\xff\xff\x7f",
];

/// 1 to 3 random mutations of `seed`.
fn mutate(seed: &[u8], rng: &mut ChaCha8Rng) -> Vec<u8> {
    let mut bytes = seed.to_vec();
    for _ in 0..rng.gen_range(1..=3) {
        let at = rng.gen_range(0..=bytes.len());
        match rng.gen_range(0..6) {
            0 => {
                for _ in 0..rng.gen_range(1..=8) {
                    if !bytes.is_empty() {
                        let i = rng.gen_range(0..bytes.len());
                        bytes[i] = rng.gen();
                    }
                }
            }
            1 => {
                let token = TOKENS[rng.gen_range(0..TOKENS.len())];
                bytes.splice(at..at, token.iter().copied());
            }
            2 => {
                let end = (at + rng.gen_range(1..64)).min(bytes.len());
                bytes.drain(at..end);
            }
            3 => bytes.truncate(at),
            4 => {
                let end = (at + rng.gen_range(1..256)).min(bytes.len());
                let span = bytes[at..end].to_vec();
                bytes.splice(at..at, span);
            }
            _ => {
                // A number overwritten by a huge one, where the text has digits.
                if let Some(i) = (at..bytes.len()).find(|&i| bytes[i].is_ascii_digit()) {
                    let token = TOKENS[rng.gen_range(0..2)];
                    bytes.splice(i..(i + 1).min(bytes.len()), token.iter().copied());
                }
            }
        }
    }
    bytes
}

/// Runs `read` on `CASES` mutations of `seed`: no panic, and no more than `16 x input + 8 MiB`
/// allocated in all (room for parsed values, a reader's fixed buffers and the error message).
fn fuzz(name: &str, seed: &[u8], rng_seed: u64, read: impl Fn(&[u8]) -> bool) {
    fuzz_with_companions(name, seed, 0, rng_seed, read)
}

/// [`fuzz`] for a reader that also reads unmutated companion files of `companion_bytes` in all
/// (the weights beside a checkpoint's JSON): they count towards what the input justifies.
fn fuzz_with_companions(name: &str, seed: &[u8], companion_bytes: usize, rng_seed: u64, read: impl Fn(&[u8]) -> bool) {
    let extra: u64 = std::env::var("CGFLOW_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut rng = ChaCha8Rng::seed_from_u64(rng_seed ^ (extra << 32));
    assert!(read(seed), "{name}: the unmutated seed must be read");
    let (mut cases, duration) = budget();
    let replay = std::env::var("CGFLOW_FUZZ_REPLAY").ok().and_then(|r| {
        let (reader, case) = r.rsplit_once(':')?;
        (reader == name).then(|| case.parse::<usize>().ok()).flatten()
    });
    if let Some(case) = replay {
        cases = case + 1;
    }
    let started = std::time::Instant::now();
    let (mut ok, mut err) = (0, 0);
    for case in 0..cases {
        if duration.is_some_and(|d| started.elapsed() > d) && replay.is_none() {
            break;
        }
        let input = mutate(seed, &mut rng);
        if replay.is_some_and(|r| case < r) {
            continue;
        }
        if replay.is_some() {
            std::fs::write("fuzz-case.bin", &input).expect("write the replayed case");
        }
        let region = Region::new(ALLOCATOR);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read(&input)));
        let change = region.change();
        let largest = change.bytes_allocated + change.bytes_reallocated.max(0) as usize;
        let excerpt = String::from_utf8_lossy(&input[..input.len().min(300)]).into_owned();
        match result {
            Ok(true) => ok += 1,
            Ok(false) => err += 1,
            Err(_) => panic!("{name}: case {case} panicked on input starting {excerpt:?}"),
        }
        let bound = 16 * (input.len() + companion_bytes) + (8 << 20);
        assert!(
            largest <= bound,
            "{name}: case {case} allocated {largest} bytes for {} input bytes: {excerpt:?}",
            input.len()
        );
    }
    eprintln!("{name}: {} mutations in {:.1} s, {ok} read, {err} refused", ok + err, started.elapsed().as_secs_f64());
}

fn data(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("data/alanine_dipeptide").join(name)).expect("seed file")
}

fn as_text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn text_position_readers_survive_mutations() {
    let _serial = serial();
    let p = Path::new("fuzz");
    fuzz("pdb", &data("min_energy.pdb"), 1, |b| {
        cgflow::io::pdb::parse_pdb(&as_text(b), p).and_then(|m| cgflow::io::pdb::positions_from_models(&m)).is_ok()
    });
    fuzz("xyz", &data("position_min_energy_nm.xyz"), 2, |b| cgflow::io::xyz::parse_xyz(&as_text(b), None, p).is_ok());
    fuzz("crd", &data("alanine-dipeptide.crd"), 3, |b| cgflow::io::inpcrd::parse_inpcrd(&as_text(b), p).is_ok());
    let cg = b"# phi psi (degrees)\n-150 155\n-70, 140\n60 45\n";
    fuzz("cg points", cg, 4, |b| {
        cgflow::io::cg_points::parse_cg_text(&as_text(b), 2, cgflow::units::AngleUnit::Degrees, p).is_ok()
    });
}

#[test]
fn binary_readers_survive_mutations() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tmp");
    let p = Path::new("fuzz");
    let values: Vec<f64> = (0..2 * 22 * 3).map(|i| 0.01 * i as f64).collect();
    let npy = cgflow::io::npy::format_npy(&[2, 22, 3], &values).expect("npy");
    fuzz("npy", &npy, 5, |b| cgflow::io::npy::parse_npy(b, p).and_then(|a| a.into_positions()).is_ok());

    let dcd_path = dir.path().join("seed.dcd");
    let mut writer = cgflow::io::dcd::DcdWriter::create(&dcd_path, 22, 10, 0.001).expect("dcd");
    for f in 0..3 {
        writer.append(&values[..66].iter().map(|v| v + f as f64).collect::<Vec<_>>()).expect("frame");
    }
    drop(writer);
    let dcd = std::fs::read(&dcd_path).expect("dcd bytes");
    let case = dir.path().join("case.dcd");
    fuzz("dcd", &dcd, 6, |b| {
        std::fs::write(&case, b).expect("write");
        cgflow::io::dcd::read_dcd(&case).is_ok()
    });

    let ckpt_path = dir.path().join("seed.ckpt");
    let checkpoint = cgflow::io::checkpoint::Checkpoint {
        meta: serde_json::json!({"steps_done": 10, "settings": {"walkers": 4}}),
        sections: vec![("openmm".into(), vec![7u8; 300]), ("half1".into(), cgflow::io::checkpoint::f64_bytes(&values))],
    };
    cgflow::io::checkpoint::write_checkpoint(&ckpt_path, &checkpoint).expect("checkpoint");
    let ckpt = std::fs::read(&ckpt_path).expect("ckpt bytes");
    let case = dir.path().join("case.ckpt");
    fuzz("md checkpoint", &ckpt, 7, |b| {
        std::fs::write(&case, b).expect("write");
        cgflow::io::checkpoint::read_checkpoint(&case).is_ok()
    });
}

#[test]
fn run_folders_survive_mutations() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tmp");
    let run = dir.path().join("run");
    std::fs::create_dir_all(&run).expect("dir");
    let description = serde_json::to_vec_pretty(&serde_json::json!({
        "kind": "umbrella", "walkers": 4, "cvs": [[4, 6, 8, 14], [6, 8, 14, 16]], "frames": 5,
        "steps_per_frame": 10, "k_kj_per_mol_rad2": 100.0, "temperature_k": 300.0,
        "centres_rad": [[-1.0, 1.0], [1.0, -1.0], [0.0, 0.0], [2.0, 2.0]], "system_fingerprint": "0"}))
    .expect("json");
    let values: Vec<u8> = (0..5 * 4 * 2).flat_map(|i| (0.1 * i as f32 - 2.0).to_le_bytes()).collect();
    std::fs::write(run.join("cv.f32"), &values).expect("values");
    fuzz("cv.json", &description, 8, |b| {
        std::fs::write(run.join("cv.json"), b).expect("write");
        cgflow::io::cv_run::CvRun::read(&run).is_ok()
    });
    std::fs::write(run.join("cv.json"), &description).expect("write");
    fuzz("cv.f32", &values, 9, |b| {
        std::fs::write(run.join("cv.f32"), b).expect("write");
        cgflow::io::cv_run::CvRun::read(&run).is_ok()
    });
    let settings = serde_json::to_vec_pretty(&cgflow::al::config::AlConfig::fast()).expect("settings");
    fuzz("al settings", &settings, 10, |b| {
        serde_json::from_slice::<cgflow::al::config::AlConfig>(b).is_ok_and(|c| c.validate().is_ok())
    });
}

#[test]
fn histogram_run_folders_survive_mutations() {
    let _serial = serial();
    use cgflow::io::cv_histograms::{write_mark, CvHistogramRun, HistogramSettings};
    let dir = tempfile::tempdir().expect("tmp");
    let run = dir.path().join("run");
    let settings = HistogramSettings::consecutive_pairs(2, 6, 10).expect("settings");
    let mut counts = vec![0.0; settings.size()];
    for f in 1..=3u64 {
        for w in 0..4 {
            counts[(f as usize * 7 + w * 5) % 36] += 1.0;
        }
        write_mark(&run, &settings, f, &counts).expect("mark");
    }
    let description = serde_json::to_vec_pretty(&serde_json::json!({
        "kind": "md", "walkers": 4, "cvs": [[4, 6, 8, 14], [6, 8, 14, 16]], "frames": 3, "steps": 30,
        "steps_per_frame": 10, "temperature_k": 300.0, "system_fingerprint": "0", "seed": 1,
        "histogram": settings.to_json()}))
    .expect("json");
    fuzz("histogram run cv.json", &description, 17, |b| {
        std::fs::write(run.join("cv.json"), b).expect("write");
        CvHistogramRun::read(&run).is_ok()
    });
    std::fs::write(run.join("cv.json"), &description).expect("write");
    let mark = cgflow::io::cv_histograms::mark_path(&run, 3);
    let seed = std::fs::read(&mark).expect("mark");
    fuzz("histogram run mark (.npy)", &seed, 18, |b| {
        std::fs::write(&mark, b).expect("write");
        CvHistogramRun::read(&run).is_ok()
    });
}

#[test]
fn model_checkpoint_and_method_files_survive_mutations() {
    let _serial = serial();
    use cgflow::al::config::AlConfig;
    use cgflow::al::driver::{ActiveLearning, AlMode};
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().expect("tmp");
    // A real start of the tiny active-learning preset: its checkpoint and its flow as a model.
    let system =
        cgflow::openmm::System::from_xml_file(&root.join("data/alanine_dipeptide/aldp_obc1.xml")).expect("system");
    let structure =
        cgflow::io::read_positions(&root.join("data/alanine_dipeptide/position_min_energy_nm.xyz")).expect("structure");
    let platform = cgflow::openmm::Platform::new("CPU").expect("platform");
    let molecule = cgflow::flow::molecular::ConditionalMolecule::aldp(&structure.positions_nm).expect("molecule");
    let problem =
        cgflow::al::molecule::MoleculeProblem::new(molecule, &system, &platform, &structure.positions_nm, vec![])
            .expect("problem");
    let al = ActiveLearning::new(AlConfig::tiny(), Box::new(problem)).expect("al");
    let state = al.start(AlMode::ActiveLearning, &mut |_| {}).expect("start");
    let run = dir.path().join("run");
    cgflow::al::checkpoint::save_al_state(&run, al.config(), &state).expect("save state");
    let model = dir.path().join("model");
    let info =
        cgflow::flow::molecule_model::MoleculeModelInfo::aldp(&system, &structure.positions_nm, 300.0).expect("info");
    cgflow::flow::molecule_model::save_molecule_model(&model, &state.flow, &info).expect("save model");
    let cpu = candle_core::Device::Cpu;

    let load_model = || cgflow::flow::molecule_model::load_molecule_model(&model, &cpu).is_ok();
    for (name, file, rng_seed) in [("flow.json", "flow.json", 11), ("molecule.json", "molecule.json", 12)] {
        let path = model.join(file);
        let seed = std::fs::read(&path).expect("seed");
        fuzz(name, &seed, rng_seed, |b| {
            std::fs::write(&path, b).expect("write");
            load_model()
        });
        std::fs::write(&path, &seed).expect("restore");
    }
    // Weights with their checksum resealed, so that the safetensors reader itself is fuzzed.
    let (weights_path, flow_path) = (model.join("weights.safetensors"), model.join("flow.json"));
    let weights = std::fs::read(&weights_path).expect("weights");
    let header: serde_json::Value = serde_json::from_slice(&std::fs::read(&flow_path).expect("flow")).expect("json");
    fuzz("weights.safetensors (resealed)", &weights, 13, |b| {
        let mut sealed = header.clone();
        sealed["weights"] = serde_json::json!({"bytes": b.len(), "fnv1a64": cgflow::io::fnv1a64_hex(b)});
        std::fs::write(&flow_path, serde_json::to_vec(&sealed).expect("json")).expect("write");
        std::fs::write(&weights_path, b).expect("write");
        load_model()
    });

    let state_path = run.join("checkpoint").join("state.json");
    let seed = std::fs::read(&state_path).expect("state");
    let checkpoint = run.join("checkpoint");
    let companions: usize =
        [checkpoint.join("ensemble.safetensors"), checkpoint.join("flow").join("weights.safetensors")]
            .iter()
            .map(|p| std::fs::metadata(p).expect("companion").len() as usize)
            .sum();
    fuzz_with_companions("al checkpoint state.json", &seed, companions, 14, |b| {
        std::fs::write(&state_path, b).expect("write");
        cgflow::al::checkpoint::load_al_state(&run, &al).is_ok()
    });

    let points = b"evaluations,kld,wall_s\n# from a run\n1.2e5, 0.31, 12.5\n4.4e5 0.052 40\n1.86e6,0.0078,1043\n";
    let p = Path::new("fuzz");
    fuzz("method points (csv)", points, 15, |b| {
        cgflow::io::method_points::parse_method_points(&as_text(b), false, p).is_ok()
    });
    let log = b"{\"iteration\": 0, \"evaluations\": 120000, \"kld\": 0.31, \"wall_s\": 12.5}\n\
                {\"iteration\": 1, \"evaluations\": 440000, \"kld\": 0.052, \"wall_s\": 40.0}\n";
    fuzz("method points (log.jsonl)", log, 16, |b| {
        cgflow::io::method_points::parse_method_points(&as_text(b), true, p).is_ok()
    });
}
