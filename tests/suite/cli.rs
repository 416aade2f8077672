//! The `cgflow` binary: results, and clear errors with a non-zero exit for bad input.

use std::path::Path;
use std::process::{Command, Output};

use crate::util::{aldp, min_energy_positions, references};

fn cgflow(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cgflow"));
    command.args(args);
    for (k, v) in envs {
        command.env(k, v);
    }
    command.output().expect("run cgflow")
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Runs cgflow expecting failure; returns stderr after checking it is a clean error, not a panic.
fn failing(args: &[&str], envs: &[(&str, &str)]) -> String {
    let out = cgflow(args, envs);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "expected exit 1; stderr: {stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

/// Starts cgflow with `args`, waits until `checkpoint` exists (plus a moment, so the run is
/// somewhere between two checkpoints), then kills it.
fn kill_after_checkpoint(args: &[&str], checkpoint: &Path) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cgflow")).args(args).spawn().expect("spawn");
    let started = std::time::Instant::now();
    while !checkpoint.exists() && started.elapsed().as_secs() < 60 {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    let _ = child.kill();
    let _ = child.wait();
    assert!(checkpoint.exists(), "the run wrote no checkpoint");
}

fn energy_json(args: &[&str]) -> serde_json::Value {
    let out = cgflow(args, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON")
}

#[test]
fn energy_of_the_minimum_energy_structure_with_forces() {
    let system = aldp("aldp_obc1.xml");
    let xyz = aldp("position_min_energy_nm.xyz");
    let v = energy_json(&["energy", "--system", path(&system), "--positions", path(&xyz), "--forces", "--json"]);
    let r = references().into_iter().find(|r| r.system == "aldp_obc1" && r.structure == "min_energy").expect("ref");
    let e = v["configurations"][0]["energy_kj_per_mol"].as_f64().expect("energy");
    assert!(((e - r.energy_kj_per_mol) / r.energy_kj_per_mol).abs() < 1e-6, "{e}");
    let u = v["configurations"][0]["reduced_energy"].as_f64().expect("u");
    assert!((u - e / (8.314462618e-3 * 300.0)).abs() < 1e-9);
    let forces = v["configurations"][0]["forces_kj_per_mol_nm"].as_array().expect("forces");
    assert_eq!(forces.len(), 22);
    assert!((forces[3][1].as_f64().expect("f") - r.forces_kj_per_mol_nm[10]).abs() < 1e-6);
    assert_eq!(v["platform"], "Reference");
}

#[test]
fn energy_of_a_pdb_and_of_an_npy_batch() {
    let system = aldp("aldp_obc1.xml");
    let pdb = aldp("min_energy.pdb");
    let v =
        energy_json(&["energy", "--system", path(&system), "--positions", path(&pdb), "--platform", "CPU", "--json"]);
    let e = v["configurations"][0]["energy_kj_per_mol"].as_f64().expect("energy");
    // The PDB stores 3 decimals in Å; the energy moves by a few thousandths of a kJ/mol.
    assert!((e + 172.6775).abs() < 0.02, "{e}");
    let dir = tempfile::tempdir().expect("tmp");
    let npy = dir.path().join("two.npy");
    let x = min_energy_positions();
    let mut two = x.clone();
    two.extend(x.iter().map(|v| v + 0.001));
    cgflow::io::npy::write_npy(&npy, &[2, 22, 3], &two).expect("npy");
    let v = energy_json(&["energy", "--system", path(&system), "--positions", path(&npy), "--json"]);
    assert_eq!(v["configurations"].as_array().expect("configs").len(), 2);
    // A rigid translation leaves the energy unchanged.
    let e0 = v["configurations"][0]["energy_kj_per_mol"].as_f64().expect("e0");
    let e1 = v["configurations"][1]["energy_kj_per_mol"].as_f64().expect("e1");
    assert!((e0 - e1).abs() < 1e-8, "{e0} {e1}");
}

#[test]
fn bad_input_gives_a_clear_error_and_exit_code_1() {
    let system = aldp("aldp_obc1.xml");
    let pdb = aldp("min_energy.pdb");
    let dir = tempfile::tempdir().expect("tmp");

    // Wrong atom count.
    let short = dir.path().join("short.npy");
    cgflow::io::npy::write_npy(&short, &[21, 3], &min_energy_positions()[..63]).expect("npy");
    let e = failing(&["energy", "--system", path(&system), "--positions", path(&short)], &[]);
    assert!(e.contains("21 atoms") && e.contains("22 particles"), "{e}");

    // NaN and infinite coordinates.
    for bad in [f64::NAN, f64::INFINITY] {
        let file = dir.path().join("bad.npy");
        let mut x = min_energy_positions();
        x[7] = bad;
        cgflow::io::npy::write_npy(&file, &[22, 3], &x).expect("npy");
        let e = failing(&["energy", "--system", path(&system), "--positions", path(&file)], &[]);
        assert!(e.contains("non-finite") && e.contains("atom 2"), "{e}");
    }

    // Malformed and missing XML.
    let broken = dir.path().join("broken.xml");
    std::fs::write(&broken, "<System><Particles><Particle mass=").expect("write");
    let e = failing(&["energy", "--system", path(&broken), "--positions", path(&pdb)], &[]);
    assert!(e.contains("broken.xml"), "{e}");
    let e = failing(&["energy", "--system", "/nonexistent.xml", "--positions", path(&pdb)], &[]);
    assert!(e.contains("/nonexistent.xml"), "{e}");

    // Unknown platform.
    let e = failing(&["energy", "--system", path(&system), "--positions", path(&pdb), "--platform", "Quantum"], &[]);
    assert!(e.contains("unknown OpenMM platform 'Quantum'"), "{e}");

    // Missing plugin directory.
    let e = failing(
        &["energy", "--system", path(&system), "--positions", path(&pdb)],
        &[("OPENMM_PLUGIN_DIR", "/nonexistent/plugins")],
    );
    assert!(e.contains("plugin directory not found") && e.contains("/nonexistent/plugins"), "{e}");

    // A PDB whose atoms do not match the System: the first two atoms swapped (H <-> C).
    let text = std::fs::read_to_string(&pdb).expect("pdb");
    let mut lines: Vec<&str> = text.lines().collect();
    let first = lines.iter().position(|l| l.starts_with("HETATM") || l.starts_with("ATOM")).expect("atom");
    lines.swap(first, first + 1);
    let swapped = dir.path().join("swapped.pdb");
    std::fs::write(&swapped, lines.join("\n")).expect("write");
    let e = failing(&["energy", "--system", path(&system), "--positions", path(&swapped)], &[]);
    assert!(e.contains("do not match"), "{e}");

    // Unknown file type.
    let e = failing(&["energy", "--system", path(&system), "--positions", path(&system)], &[]);
    assert!(e.contains(".xml"), "{e}");
}

#[test]
fn help_is_complete() {
    let out = cgflow(&["--help"], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("energy") && text.contains("info"), "{text}");
    let out = cgflow(&["energy", "--help"], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in ["--system", "--positions", "--platform", "--property", "--temperature", "--forces", "--json"] {
        assert!(text.contains(flag), "{flag} missing from energy --help");
    }
}

#[test]
fn umbrella_run_killed_and_resumed_loses_and_repeats_no_sample() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("run");
    let out_s = out.to_str().expect("utf-8");
    let system = aldp("aldp_obc1.xml");
    let args = [
        "umbrella",
        "--system",
        path(&system),
        "--out",
        out_s,
        "--windows",
        "3",
        "--steps",
        "3000",
        "--equilibrate",
        "300",
        "--bins",
        "12",
        "--checkpoint-every",
        "200",
        "--platform",
        "CPU",
    ];
    // Kill the first run once it has written a checkpoint or two.
    let checkpoint = out.join("umbrella.ckpt");
    kill_after_checkpoint(&args, &checkpoint);
    // Without --resume an existing run is not overwritten.
    let e = failing(&args, &[]);
    assert!(e.contains("--resume"), "{e}");
    let mut resumed: Vec<&str> = args.to_vec();
    resumed.push("--resume");
    let result = cgflow(&resumed, &[]);
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
    let report = || -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).expect("report")).expect("json")
    };
    // 9 windows x 3000 steps / 10 steps per sample = 2700 samples, whatever the kill; 9 x 3300
    // evaluations with the equilibration.
    assert_eq!(report()["samples"], 2700);
    assert_eq!(report()["energy_evaluations"], 29_700.0);
    assert_eq!(report()["mbar"]["newton_steps"].as_u64().map(|n| n > 0), Some(true));
    for name in ["reference_pmf_kt.npy", "reference_probabilities.npy", "half1_probabilities.npy"] {
        let a = cgflow::io::npy::read_npy(&out.join(name)).expect(name);
        assert_eq!(a.shape, vec![12, 12]);
    }
    let populations: f64 = ["beta_PII", "alpha_R", "phi_positive"]
        .iter()
        .map(|b| report()["populations"][b]["population"].as_f64().unwrap())
        .sum();
    assert!((populations - 1.0).abs() < 1e-12, "{populations}");
    // A resume with more steps extends every window: 9 x 4000 / 10 samples.
    let mut longer: Vec<&str> = args.to_vec();
    longer[8] = "4000";
    longer.push("--resume");
    let result = cgflow(&longer, &[]);
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
    assert_eq!(report()["samples"], 3600);
    // `cgflow reference` reads the same folder; runs of another System or kind are refused.
    let again = dir.path().join("again");
    let base = ["reference", "--umbrella", out_s, "--out", again.to_str().unwrap(), "--bins", "12", "--bootstrap", "2"];
    let result = cgflow(&base, &[]);
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
    let vacuum = aldp("aldp_vacuum.xml");
    let mut other_system = base.to_vec();
    other_system.extend(["--system", path(&vacuum)]);
    assert!(failing(&other_system, &[]).contains("another system"));
    let as_md = ["reference", "--umbrella", out_s, "--md", out_s, "--out", again.to_str().unwrap(), "--bins", "12"];
    assert!(failing(&as_md, &[]).contains("another kind of run"));
    // Other settings on the same folder are refused.
    let mut other: Vec<&str> = args.to_vec();
    other[6] = "4";
    other.push("--resume");
    let e = failing(&other, &[]);
    assert!(e.contains("other settings"), "{e}");
}

#[test]
fn umbrella_and_md_take_the_cvs_of_any_molecule_by_name_and_resume_runs_stored_before_cg_existed() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = crate::util::root().join("data/ace_ala2_nme");
    let (system, structure) = (data.join("system_obc1.xml"), data.join("min_energy.pdb"));
    let out = dir.path().join("ace");
    let common = [
        "--windows",
        "3",
        "--k",
        "20",
        "--steps",
        "200",
        "--equilibrate",
        "300",
        "--bins",
        "6",
        "--checkpoint-every",
        "100",
    ];
    let mut args = vec!["umbrella", "--system", path(&system), "--positions", path(&structure)];
    args.extend(["--topology", path(&structure), "--out", path(&out)]);
    args.extend(common);
    // Its backbone has four dihedrals: umbrella sampling needs two named.
    let e = failing(&args, &[]);
    assert!(e.contains("gives 4") && e.contains("phi:R psi:R"), "{e}");
    let mut second_pair = args.clone();
    second_pair.extend(["--cg", "phi:3 psi:3"]);
    let result = cgflow(&second_pair, &[]);
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
    let description: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("cv.json")).expect("cv.json")).expect("json");
    assert_eq!(description["cvs"], serde_json::json!([[14, 16, 18, 24], [16, 18, 24, 26]]));
    assert_eq!(
        description["trans_walls"]["atoms"],
        serde_json::json!([[1, 4, 6, 8], [8, 14, 16, 18], [18, 24, 26, 28]])
    );
    // 9 windows x 200 steps / 10 per record, 2 CVs, float32.
    assert_eq!(std::fs::metadata(out.join("cv.f32")).expect("cv.f32").len(), 20 * 9 * 2 * 4);
    // A topology of another molecule, and a CV that is not there, are clear errors.
    let aldp_pdb = aldp("aldp.pdb");
    let mut wrong_topology = second_pair.clone();
    wrong_topology[6] = path(&aldp_pdb);
    assert!(failing(&wrong_topology, &[]).contains("has 22 atoms"));
    let mut missing = args.clone();
    missing.extend(["--cg", "phi:3 psi:4"]);
    assert!(failing(&missing, &[]).contains("lack the atoms of psi"));
    // MD records every backbone dihedral of it by default, named from its PDB; positions without
    // atom names need --topology (or --dihedral).
    let md = dir.path().join("ace_md");
    let md_args =
        ["md", "--system", path(&system), "--positions", path(&structure), "--out", path(&md), "--steps", "20"];
    let result = cgflow(&md_args, &[]);
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
    let description: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(md.join("cv.json")).expect("cv.json")).expect("json");
    assert_eq!(
        description["cvs"],
        serde_json::json!([[4, 6, 8, 14], [6, 8, 14, 16], [14, 16, 18, 24], [16, 18, 24, 26]])
    );
    let npy = dir.path().join("ace.npy");
    let positions = cgflow::io::read_positions(&structure).expect("pdb");
    cgflow::io::npy::write_npy(&npy, &[32, 3], &positions.positions_nm).expect("npy");
    let md_npy = dir.path().join("ace_md_npy");
    let no_names =
        ["md", "--system", path(&system), "--positions", path(&npy), "--out", path(&md_npy), "--steps", "20"];
    assert!(failing(&no_names, &[]).contains("--topology"));

    // ALDP by default; the same CVs by index give the same samples.
    let aldp_system = aldp("aldp_obc1.xml");
    let run = |name: &str, extra: &[&str]| {
        let out = dir.path().join(name);
        // The Reference platform: bit-reproducible, so the two runs can be compared byte for byte.
        let mut args = vec!["umbrella", "--system", path(&aldp_system), "--out", path(&out), "--platform", "Reference"];
        args.extend(common);
        args.extend(extra);
        let result = cgflow(&args, &[]);
        assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
        out
    };
    let by_default = run("aldp", &[]);
    let by_index = run("aldp_by_index", &["--cg", "4,6,8,14 6,8,14,16", "--trans-walls", "1,4,6,8 omega:3"]);
    assert_eq!(std::fs::read(by_default.join("cv.f32")).unwrap(), std::fs::read(by_index.join("cv.f32")).unwrap());
    // A run stored before --cg existed (its checkpoint's settings lack the CVs, its cv.json has
    // them) resumes, and is extended; other CVs on it are refused, naming both.
    let checkpoint_path = by_default.join("umbrella.ckpt");
    let mut checkpoint = cgflow::io::checkpoint::read_checkpoint(&checkpoint_path).expect("checkpoint");
    let settings = checkpoint.meta["settings"].as_object_mut().expect("settings");
    assert!(settings.remove("cvs").is_some() && settings.remove("trans_wall_dihedrals").is_some());
    cgflow::io::checkpoint::write_checkpoint(&checkpoint_path, &checkpoint).expect("write");
    let mut longer = vec![
        "umbrella",
        "--system",
        path(&aldp_system),
        "--out",
        path(&by_default),
        "--resume",
        "--platform",
        "Reference",
    ];
    longer.extend(common);
    let mut other_cvs = longer.clone();
    other_cvs.extend(["--cg", "psi:2 phi:2"]);
    let e = failing(&other_cvs, &[]);
    assert!(e.contains("was run with CVs [[4,6,8,14],[6,8,14,16]]"), "{e}");
    let steps_at = longer.iter().position(|a| *a == "200").expect("--steps");
    longer[steps_at] = "300";
    let result = cgflow(&longer, &[]);
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
    assert_eq!(std::fs::metadata(by_default.join("cv.f32")).unwrap().len(), 30 * 9 * 2 * 4);
}

#[test]
fn md_killed_and_resumed_loses_and_repeats_no_frame() {
    let dir = tempfile::tempdir().expect("tmp");
    let system = aldp("aldp_obc1.xml");
    let start = aldp("min_energy.pdb");
    let run_args = |out: &str| -> Vec<String> {
        [
            "md",
            "--system",
            path(&system),
            "--positions",
            path(&start),
            "--out",
            out,
            "--walkers",
            "4",
            "--steps",
            "3000",
            "--record-every",
            "50",
            "--checkpoint-every",
            "200",
            "--dcd-walkers",
            "2",
            "--property",
            "Threads=1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let straight = dir.path().join("straight");
    let out = cgflow(&run_args(straight.to_str().expect("utf-8")).iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let killed = dir.path().join("killed");
    let args = run_args(killed.to_str().expect("utf-8"));
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    kill_after_checkpoint(&arg_refs, &killed.join("md.ckpt"));
    let mut resume: Vec<&str> = args.iter().map(String::as_str).collect();
    resume.push("--resume");
    let out = cgflow(&resume, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // 3000 steps / 50 = 60 frames x 4 walkers x 2 CVs x 4 bytes: none lost, none repeated.
    let frame = 4 * 2 * 4;
    let a = std::fs::read(straight.join("cv.f32")).expect("cv");
    let b = std::fs::read(killed.join("cv.f32")).expect("cv");
    assert_eq!((a.len(), b.len()), (60 * frame, 60 * frame));
    for f in 1..60 {
        assert_ne!(b[(f - 1) * frame..f * frame], b[f * frame..(f + 1) * frame], "frame {f} repeats frame {}", f - 1);
    }
    // The first frames, written before the kill by the same seed on one thread, are the
    // uninterrupted run's; after the resume the runs agree to round-off only (OpenMM rebuilds its
    // neighbour list at the restored positions, so sums run in another order) and drift apart.
    assert_eq!(a[..4 * frame], b[..4 * frame]);
    let (header, frames) = cgflow::io::dcd::read_dcd(&killed.join("walker_001.dcd")).expect("dcd");
    assert_eq!((header.frames, frames.len(), header.n_atoms), (60, 60, 22));
    // A resume with more steps continues the finished run to the new total: 4000 / 50 = 80 frames.
    let mut longer = resume.clone();
    let at = longer.iter().position(|a| *a == "3000").expect("--steps");
    longer[at] = "4000";
    let out = cgflow(&longer, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read(killed.join("cv.f32")).expect("cv").len(), 80 * frame);
    let description: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(killed.join("cv.json")).expect("cv.json")).expect("json");
    assert_eq!((description["frames"].as_u64(), description["steps"].as_u64()), (Some(80), Some(4000)));

    // A CV that names an atom the system lacks.
    let e = failing(
        &[
            "md",
            "--system",
            path(&system),
            "--positions",
            path(&start),
            "--out",
            path(&dir.path().join("bad")),
            "--steps",
            "10",
            "--dihedral",
            "0,1,2,40",
        ],
        &[],
    );
    assert!(e.contains("atom 40 does not exist"), "{e}");
}

#[test]
fn non_finite_energies_are_an_error_by_default_and_printed_when_asked() {
    let dir = tempfile::tempdir().expect("tmp");
    // Every atom at the origin: OpenMM returns NaN energies and forces.
    let zeros = dir.path().join("zeros.npy");
    cgflow::io::npy::write_npy(&zeros, &[2, 22, 3], &[0.0; 2 * 22 * 3]).expect("npy");
    let system = aldp("aldp_obc1.xml");
    let args = ["energy", "--system", path(&system), "--positions", path(&zeros), "--platform", "CPU"];
    let e = failing(&args, &[]);
    assert!(
        e.contains("2 of 2 configurations") && e.contains("configuration 0, 1") && e.contains("--non-finite"),
        "{e}"
    );
    for policy in ["warn", "ignore"] {
        let mut with: Vec<&str> = args.to_vec();
        with.extend(["--non-finite", policy, "--json"]);
        let out = cgflow(&with, &[]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        // JSON has no NaN: the energies are null.
        assert!(v["configurations"][1]["energy_kj_per_mol"].is_null(), "{v}");
        assert_eq!(String::from_utf8_lossy(&out.stderr).contains("warning: 2 of 2"), policy == "warn");
    }
}

#[test]
fn a_crd_whose_header_claims_trillions_of_atoms_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tmp");
    let crd = dir.path().join("huge.crd");
    std::fs::write(&crd, "title\n2999999999999\n   1.0000000   2.0000000   3.0000000\n").expect("write");
    let system = aldp("aldp_obc1.xml");
    let e = failing(&["energy", "--system", path(&system), "--positions", path(&crd)], &[]);
    assert!(e.contains("2999999999999 atoms cannot fit"), "{e}");
}

#[test]
fn a_run_folder_left_by_a_run_killed_before_its_first_checkpoint_is_not_overwritten() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("md");
    std::fs::create_dir_all(&out).expect("dir");
    std::fs::write(out.join("cv.f32"), [1u8; 64]).expect("write");
    std::fs::write(out.join("walker_000.dcd"), [1u8; 64]).expect("write");
    let (system, start) = (aldp("aldp_obc1.xml"), aldp("min_energy.pdb"));
    let args = ["md", "--system", path(&system), "--positions", path(&start), "--out", path(&out), "--steps", "20"];
    let e = failing(&args, &[]);
    assert!(e.contains("cv.f32, walker_000.dcd") && e.contains("remove them"), "{e}");
    assert_eq!(std::fs::read(out.join("cv.f32")).expect("kept"), vec![1u8; 64]);
    let mut resume = args.to_vec();
    resume.push("--resume");
    assert!(failing(&resume, &[]).contains("no checkpoint"));
    // A missing file's OS error is named once.
    let e = failing(&["energy", "--system", path(&dir.path().join("missing.xml")), "--positions", path(&start)], &[]);
    assert_eq!(e.matches("os error 2").count(), 1, "{e}");
}

/// The (phi, psi) histogram of the first `frames` frames of a cv.f32 of `walkers` walkers,
/// binned here independently of the library.
fn histogram_of_values(cv: &[u8], walkers: usize, frames: usize, bins: usize) -> Vec<f64> {
    let value = |i: usize| f32::from_le_bytes([cv[4 * i], cv[4 * i + 1], cv[4 * i + 2], cv[4 * i + 3]]) as f64;
    let bin = |x: f64| {
        { ((x + std::f64::consts::PI) / (2.0 * std::f64::consts::PI) * bins as f64).floor() as i64 }
            .rem_euclid(bins as i64) as usize
    };
    let mut counts = vec![0.0; bins * bins];
    for s in 0..frames * walkers {
        counts[bin(value(2 * s)) * bins + bin(value(2 * s + 1))] += 1.0;
    }
    counts
}

/// `cgflow reference --against` on a 12 x 12 histogram run of 4 walkers and 300 frames whose CV
/// values are `cv`: the blocks are the stretches between marks, their basin populations (by bin
/// centre) and batch-means errors are recomputed here from the values, and the reference's
/// populations from a uniform grid by counting bin centres. Then the bad inputs.
fn md_check_of_a_histogram_run_against_a_reference_folder(dir: &Path, run: &Path, cv: &[u8]) {
    use std::f64::consts::PI;
    let bins = 12;
    let centre = |i: usize| -PI + (i as f64 + 0.5) * 2.0 * PI / bins as f64;
    // Basin 0 beta/PII, 1 alpha_R (phi < 0, -2.5 < psi < 1), 2 phi >= 0, of a bin's centre.
    let basin = |b: usize| {
        let (phi, psi) = (centre(b / bins), centre(b % bins));
        if phi >= 0.0 {
            2
        } else if psi > -2.5 && psi < 1.0 {
            1
        } else {
            0
        }
    };
    // Marks at or after the 400 steps (40 frames) left out: 40, 63, 100, 158, 251, 300.
    let marks = [40, 63, 100, 158, 251, 300];
    let (mut block_populations, mut sizes) = (Vec::new(), Vec::new());
    for w in marks.windows(2) {
        let (a, b) = (histogram_of_values(cv, 4, w[0], bins), histogram_of_values(cv, 4, w[1], bins));
        let counts: Vec<f64> = b.iter().zip(&a).map(|(b, a)| b - a).collect();
        let mut p = [0.0; 3];
        for (i, c) in counts.iter().enumerate() {
            p[basin(i)] += c;
        }
        let n: f64 = counts.iter().sum();
        assert_eq!(n, 4.0 * (w[1] - w[0]) as f64);
        block_populations.push(p.map(|x| x / n));
        sizes.push(n);
    }
    let total: f64 = sizes.iter().sum();
    let sum_sq: f64 = sizes.iter().map(|n| n * n).sum();
    let expected: Vec<(f64, f64)> = (0..3)
        .map(|k| {
            let mean = block_populations.iter().zip(&sizes).map(|(p, n)| p[k] * n).sum::<f64>() / total;
            let ss: f64 = block_populations.iter().zip(&sizes).map(|(p, n)| (n * (p[k] - mean)).powi(2)).sum();
            (mean, (ss / (total * total - sum_sq)).sqrt())
        })
        .collect();
    // A uniform reference on the same bins, with made-up errors.
    let reference = dir.join("reference");
    std::fs::create_dir_all(&reference).expect("mkdir");
    let write_reference = |shape: &[usize], report: serde_json::Value| {
        let n: usize = shape.iter().product();
        cgflow::io::npy::write_npy(&reference.join("reference_probabilities.npy"), shape, &vec![1.0 / n as f64; n])
            .expect("npy");
        std::fs::write(reference.join("report.json"), report.to_string()).expect("report");
    };
    let names = ["beta_PII", "alpha_R", "phi_positive"];
    let report = serde_json::json!({"populations": {
        "beta_PII": {"population": 0.2, "standard_error": 0.01},
        "alpha_R": {"population": 0.3, "standard_error": 0.02},
        "phi_positive": {"population": 0.5, "standard_error": 0.03}}});
    let errors = [0.01, 0.02, 0.03];
    write_reference(&[bins, bins], report.clone());
    let mut uniform = [0.0; 3];
    for b in 0..bins * bins {
        uniform[basin(b)] += 1.0 / (bins * bins) as f64;
    }
    assert!((uniform[1] - 42.0 / 144.0).abs() < 1e-12, "{uniform:?}");
    let out = dir.join("md_check");
    let system = aldp("aldp_obc1.xml");
    let args = |runs: &[&Path], system: &Path| -> Vec<String> {
        let mut a: Vec<String> =
            ["reference", "--against", path(&reference), "--out", path(&out), "--system", path(system)]
                .map(String::from)
                .to_vec();
        for r in runs {
            a.extend(["--check-md".to_string(), path(r).to_string()]);
        }
        a.extend(["--md-skip-steps", "400"].map(String::from));
        a
    };
    let result = cgflow(&args(&[run, run], &system).iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
    assert!(String::from_utf8_lossy(&result.stdout).contains("alpha_R (%): MD | reference"));
    let check: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("md_check.json")).expect("md_check.json"))
            .expect("json");
    let one = &check["runs"][0];
    assert_eq!(one["blocks"], 5);
    assert_eq!(one["frames_left_out_per_walker"], serde_json::json!([40]));
    for (k, name) in names.iter().enumerate() {
        let (mean, se) = expected[k];
        let got = &one["populations"][name];
        assert!((got["population"].as_f64().unwrap() - mean).abs() < 1e-12, "{name}: {got} vs {mean}");
        assert!((got["standard_error"].as_f64().unwrap() - se).abs() < 1e-12, "{name}: {got} vs {se}");
        let own = one["reference_populations_counted_the_same_way"][name]["population"].as_f64().unwrap();
        assert!((own - uniform[k]).abs() < 1e-12, "{name}: {own}");
        let z = (uniform[k] - mean) / (se * se + errors[k] * errors[k]).sqrt();
        assert!((one["z_reference_minus_md"][k].as_f64().unwrap() - z).abs() < 1e-9, "{name}");
        // The same run twice pooled: the same mean, and no spread between the runs.
        let pooled = &check["pooled"];
        assert!((pooled["populations"][name]["population"].as_f64().unwrap() - mean).abs() < 1e-12);
        assert!(pooled["standard_error_between_runs"][name].as_f64().unwrap().abs() < 1e-12);
    }
    // Bad input: another System, a grid of other bins, a grid that is not square, a report
    // without an error.
    let e = failing(&args(&[run], &aldp("aldp_vacuum.xml")).iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    assert!(e.contains("another system"), "{e}");
    let run_once = || failing(&args(&[run], &system).iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    write_reference(&[10, 10], report.clone());
    assert!(run_once().contains("the reference is on 10 x 10 bins"));
    write_reference(&[12, 6], report.clone());
    assert!(run_once().contains("not a square grid"));
    let mut no_error = report;
    no_error["populations"]["alpha_R"].as_object_mut().expect("object").remove("standard_error");
    write_reference(&[bins, bins], no_error);
    assert!(run_once().contains("no population with a standard error for alpha_R"));
}

#[test]
fn md_histogram_runs_match_their_cv_values_and_resume_and_migrate() {
    let dir = tempfile::tempdir().expect("tmp");
    let (system, start) = (aldp("aldp_obc1.xml"), aldp("min_energy.pdb"));
    let run_args = |out: &Path, steps: &str, histogram: bool| -> Vec<String> {
        let mut a: Vec<String> = [
            "md",
            "--system",
            path(&system),
            "--positions",
            path(&start),
            "--out",
            path(out),
            "--walkers",
            "4",
            "--steps",
            steps,
            "--record-every",
            "10",
            "--checkpoint-every",
            "400",
            "--dcd-walkers",
            "0",
            "--property",
            "Threads=1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if histogram {
            a.extend(["--histogram-bins", "12", "--marks-per-decade", "5"].map(String::from));
        }
        a
    };
    let run = |a: &[String]| {
        let out = cgflow(&a.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    let read = |d: &Path| cgflow::io::cv_histograms::CvHistogramRun::read(d).expect("histogram run");
    // The same dynamics (one seed, one thread), recorded as CV values and as histograms.
    let values_dir = dir.path().join("values");
    run(&run_args(&values_dir, "3000", false));
    let cv = std::fs::read(values_dir.join("cv.f32")).expect("cv");
    let straight = dir.path().join("straight");
    run(&run_args(&straight, "3000", true));
    assert!(!straight.join("cv.f32").exists());
    let h = read(&straight);
    assert_eq!((h.walkers, h.frames, h.steps_per_frame), (4, 300, 10));
    md_check_of_a_histogram_run_against_a_reference_folder(dir.path(), &straight, &cv);
    // Marks at round(10^(k/5)) frames up to 300, and the final frame; no checkpoint's histogram
    // between marks is left behind.
    let frames: Vec<u64> = h.marks.iter().map(|m| m.0).collect();
    assert_eq!(frames, vec![1, 2, 3, 4, 6, 10, 16, 25, 40, 63, 100, 158, 251, 300]);
    for (f, counts) in &h.marks {
        assert_eq!(counts, &histogram_of_values(&cv, 4, *f as usize, 12), "mark at {f} frames");
    }

    // Killed after a checkpoint and resumed: every mark is there once, with all its counts.
    let killed = dir.path().join("killed");
    let args = run_args(&killed, "3000", true);
    kill_after_checkpoint(&args.iter().map(String::as_str).collect::<Vec<_>>(), &killed.join("md.ckpt"));
    let mut resume = args.clone();
    resume.push("--resume".into());
    run(&resume);
    let k = read(&killed);
    assert_eq!(k.marks.iter().map(|m| m.0).collect::<Vec<_>>(), frames);
    // Before the first checkpoint (40 frames) the runs are the same trajectory.
    assert_eq!(k.at(40), h.at(40));
    // Continued to more steps; a resume without --histogram-bins, or with other bins, is refused.
    let mut longer = resume.clone();
    let at = longer.iter().position(|a| a == "3000").expect("--steps");
    longer[at] = "4000".into();
    run(&longer);
    assert_eq!(read(&killed).marks.last().map(|m| m.0), Some(400));
    let plain: Vec<String> = run_args(&killed, "4000", false).into_iter().chain(["--resume".to_string()]).collect();
    let e = failing(&plain.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    assert!(e.contains("continue it with --histogram-bins"), "{e}");
    let mut other = longer.clone();
    let at = other.iter().position(|a| a == "12").expect("bins");
    other[at] = "24".into();
    let e = failing(&other.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    assert!(e.contains("other settings"), "{e}");
    // A fresh histogram run refuses the folder of an earlier one, even without its checkpoint.
    assert!(failing(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[]).contains("pass --resume"));
    std::fs::remove_file(killed.join("md.ckpt")).expect("remove");
    let e = failing(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    assert!(e.contains("histograms"), "{e}");

    // A run started with CV values and continued with histograms: rebuilt from cv.f32, the
    // marks equal those of the run that kept histograms from the start.
    let migrated = dir.path().join("migrated");
    run(&run_args(&migrated, "1500", false));
    let mut continued = run_args(&migrated, "3000", true);
    continued.push("--resume".into());
    run(&continued);
    let m = read(&migrated);
    for f in [1, 10, 40, 100] {
        assert_eq!(m.at(f).map(<[f64]>::to_vec), Some(histogram_of_values(&cv, 4, f as usize, 12)), "{f}");
    }
    assert_eq!(m.marks.last().map(|m| m.0), Some(300));
}

#[test]
fn reference_takes_md_histograms_as_a_binned_state_weighed_per_unit_of_time() {
    let dir = tempfile::tempdir().expect("tmp");
    let system = aldp("aldp_obc1.xml");
    let (md, umbrella, out) = (dir.path().join("md"), dir.path().join("umbrella"), dir.path().join("ref"));
    let start = aldp("min_energy.pdb");
    let ok = |args: &[&str]| {
        let o = cgflow(args, &[]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    ok(&[
        "md",
        "--system",
        path(&system),
        "--positions",
        path(&start),
        "--out",
        path(&md),
        "--walkers",
        "2",
        "--steps",
        "3000",
        "--record-every",
        "10",
        "--histogram-bins",
        "12",
        "--dcd-walkers",
        "0",
        "--property",
        "Threads=1",
    ]);
    // Umbrella samples every 20 steps, MD frames every 10: each MD frame counts 1/2.
    ok(&[
        "umbrella",
        "--system",
        path(&system),
        "--out",
        path(&umbrella),
        "--windows",
        "3",
        "--steps",
        "1200",
        "--equilibrate",
        "200",
        "--record-every",
        "20",
        "--bins",
        "12",
        "--no-analysis",
    ]);
    assert!(!umbrella.join("report.json").exists(), "--no-analysis analysed");
    let shape = cgflow::io::npy::read_npy(&umbrella.join("final_positions_nm.npy")).expect("final positions").shape;
    assert_eq!(shape, vec![9, 22, 3]);
    let reference = |bins: &str, extra: &[&str]| {
        let mut a = vec![
            "reference",
            "--system",
            path(&system),
            "--umbrella",
            path(&umbrella),
            "--md",
            path(&md),
            "--out",
            path(&out),
            "--bins",
            bins,
            "--bootstrap",
            "2",
            "--no-wham",
        ];
        a.extend_from_slice(extra);
        a.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let args = reference("12", &["--md-skip-steps", "500"]);
    ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).expect("report")).expect("json");
    let inputs = report["inputs"].as_array().expect("inputs");
    assert_eq!(inputs[0]["count_scale"], 1.0);
    assert_eq!(inputs[0]["samples"], 9 * 60);
    assert_eq!(inputs[1]["count_scale"], 0.5);
    // Frames from the first mark at or after 50 (500 steps) to 300, for 2 walkers.
    let left_out = inputs[1]["frames_left_out_per_walker"].as_f64().expect("left out");
    assert!((50.0..100.0).contains(&left_out), "{left_out}");
    assert_eq!(inputs[1]["binned_frames"], 2.0 * (300.0 - left_out));
    assert_eq!(report["binned_md_frames_weighted"], (300.0 - left_out));
    assert!(report["halves_kld"]["kernel_1_bins"].as_f64().is_some_and(|v| v.is_finite() && v > 0.0));
    let p = cgflow::io::npy::read_npy(&out.join("reference_probabilities.npy")).expect("p").data;
    assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);

    // A grid the histogram does not nest in, and a run with fewer than two stretches after the
    // frames left out, are clear errors.
    let args = reference("5", &["--md-skip-steps", "500"]);
    let e = failing(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    assert!(e.contains("does not nest"), "{e}");
    let args = reference("12", &["--md-skip-steps", "2990"]);
    let e = failing(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    assert!(e.contains("fewer than 3 histogram marks"), "{e}");
    // An MD pair other than the dihedrals the umbrella windows restrain, and one the run did not
    // keep, are refused.
    let args = reference("12", &["--md-skip-steps", "500", "--md-pair", "1,0"]);
    let e = failing(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    assert!(e.contains("are not the dihedrals"), "{e}");
}
