//! Backmapping: a small ALDP conditional flow trained by example on short MD, saved as a molecule
//! model, turned back into all-atom structures at given (phi, psi); structures, energies and
//! weights checked against independent computations, and the model file's round trip and errors.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use candle_core::{Device, Tensor};
use cgflow::backmap::{backmap, BackmapConfig};
use cgflow::coords::aldp::{self, Chirality};
use cgflow::coords::geometry::wrap_angle;
use cgflow::energy::{Batch, EnergyModel, OpenMmEnergy, OpenMmEnergyConfig};
use cgflow::flow::molecular::{ConditionalMolecularTarget, ConditionalMolecule};
use cgflow::flow::molecule_model::{load_molecule_model, save_model_system, save_molecule_model, MoleculeModelInfo};
use cgflow::flow::optim::{Adam, AdamConfig};
use cgflow::flow::train::{ml_loss, TargetEnergy};
use cgflow::flow::{CouplingKind, Flow, FlowSpec, Precision};
use cgflow::md::{WalkerConfig, Walkers};
use cgflow::openmm::{Platform, System};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::util::{aldp as aldp_file, min_energy_positions};

/// The flow of the tests: the reference ALDP layout (58 dims, 10 circular, context 4) with fewer
/// and narrower layers, in mixed precision.
fn small_spec(seed: u64) -> FlowSpec {
    FlowSpec {
        layers: 4,
        hidden: 64,
        coupling: CouplingKind::Spline { bins: 8, tail_bound: 5.0 },
        ..FlowSpec::aldp_conditional(Precision::Mixed, seed)
    }
}

fn system() -> System {
    System::from_xml_file(&aldp_file("aldp_obc1.xml")).expect("system")
}

/// MD frames (nm) of 8 walkers from the minimum-energy structure: 500 steps of equilibration, then
/// one frame every 10 steps for 2000 steps (1600 frames), single-threaded CPU platform, seeded.
fn md_frames() -> Vec<f64> {
    let cpu = Platform::new("CPU").expect("CPU").with_property("Threads", "1");
    let config = WalkerConfig { walkers: 8, seed: 11, ..Default::default() };
    let mut walkers = Walkers::new(&system(), &cpu, &config, &min_energy_positions(), |_| vec![]).expect("walkers");
    walkers.step(500).expect("equilibrate");
    let mut frames = Vec::new();
    for _ in 0..200 {
        walkers.step(10).expect("steps");
        frames.extend(walkers.positions().expect("positions"));
    }
    frames
}

/// The model of the tests, trained once per test process by example on [`md_frames`] (300 Adam
/// steps of batch 64 at lr 3e-3, seeded; a few seconds), saved as a molecule model, and the (phi,
/// psi) of its training data.
struct Trained {
    dir: PathBuf,
    data_cg: Vec<f64>,
}

fn trained() -> &'static Trained {
    static TRAINED: OnceLock<Trained> = OnceLock::new();
    TRAINED.get_or_init(|| {
        let molecule = ConditionalMolecule::aldp(&min_energy_positions()).expect("molecule");
        let (fine, cg, _) = molecule.from_cartesian(&md_frames()).expect("flow coordinates");
        let n = cg.len() / 2;
        let flow = Flow::new(&small_spec(7), &Device::Cpu).expect("flow");
        let mut adam = Adam::new(flow.params(), AdamConfig::default());
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut order: Vec<usize> = (0..n).collect();
        let batch = 64;
        for step in 0..300 {
            if step % (n / batch) == 0 {
                order.shuffle(&mut rng);
            }
            let rows = &order[(step % (n / batch)) * batch..][..batch];
            let x: Vec<f64> = rows.iter().flat_map(|&i| fine[i * 58..(i + 1) * 58].iter().copied()).collect();
            let c: Vec<f64> = rows.iter().flat_map(|&i| [cg[2 * i], cg[2 * i + 1]]).collect();
            let x = Tensor::from_vec(x, (batch, 58), &Device::Cpu).expect("x");
            let c = Tensor::from_vec(molecule.context(&c), (batch, 4), &Device::Cpu).expect("c");
            let (loss, _) = ml_loss(&flow, &x, Some(&c)).expect("loss");
            adam.step(flow.params(), &loss.backward().expect("backward"), 3e-3).expect("adam");
        }
        // One folder per test process, left in target/tmp for inspection.
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("backmap-model-{}", std::process::id()));
        let info = MoleculeModelInfo::aldp(&system(), &min_energy_positions(), 300.0)
            .expect("info")
            .with_provenance(serde_json::json!({"test": "backmap", "frames": n}));
        save_molecule_model(&dir, &flow, &info).expect("save");
        save_model_system(&dir, &system()).expect("save the System");
        Trained { dir, data_cg: cg }
    })
}

fn reference_energy() -> OpenMmEnergy {
    let config = OpenMmEnergyConfig { workers: Some(1), ..Default::default() };
    OpenMmEnergy::new(&system(), &Platform::new("Reference").expect("platform"), &config).expect("model")
}

/// The energy bound of the tests, in kT. The minimum-energy structure has u = -69.2 kT and an
/// equilibrium structure at 300 K about 30 kT more (kT/2 for each of the 60 internal degrees of
/// freedom), with fluctuations of about sqrt(30) = 5.5 kT; u = 0 lies about 70 kT above the
/// minimum, so it keeps every thermally relevant structure and rejects steric clashes, whose
/// energies run to 10^2 - 10^5 kT.
const BOUND_KT: f64 = 0.0;

/// CG points of the tests: two (phi, psi) of the training data (the C7eq / beta basin the MD run
/// explored), and two more in that basin.
fn cg_points(t: &Trained) -> Vec<f64> {
    vec![t.data_cg[0], t.data_cg[1], t.data_cg[1000], t.data_cg[1001], -1.5, 2.5, -2.5, 2.8]
}

fn loaded_target(t: &Trained) -> (Flow, ConditionalMolecularTarget) {
    let (flow, info) = load_molecule_model(&t.dir, &Device::Cpu).expect("load");
    let target = ConditionalMolecularTarget::new(info.molecule().expect("molecule"), Box::new(reference_energy()))
        .expect("target");
    (flow, target)
}

#[test]
fn backmapped_structures_have_the_requested_phi_psi_l_chirality_and_openmm_energies() {
    let t = trained();
    let (flow, target) = loaded_target(t);
    let cg = cg_points(t);
    let n = 40;
    let config = BackmapConfig { samples_per_point: n, max_energy_kt: Some(BOUND_KT), ..Default::default() };
    let r = backmap(&flow, &target, &cg, &config, &mut ChaCha8Rng::seed_from_u64(1)).expect("backmap");
    let structures = 4 * n;
    assert_eq!((r.cg_index.len(), r.positions_nm.len(), r.n_atoms), (structures, structures * 66, 22));
    assert!(r.cg_index.iter().enumerate().all(|(i, &j)| j == i / n));

    // (phi, psi) measured independently on the Cartesian structures: the requested points.
    let phi_psi = aldp::phi_psi(&r.positions_nm).expect("phi psi");
    for (i, pp) in phi_psi.iter().enumerate() {
        let j = r.cg_index[i];
        for k in 0..2 {
            let diff = wrap_angle(pp[k] - cg[2 * j + k]);
            assert!(diff.abs() < 1e-8, "structure {i}, angle {k}: {} vs requested {}", pp[k], cg[2 * j + k]);
            assert!(wrap_angle(r.cg_achieved_rad[2 * i + k] - pp[k]).abs() < 1e-10);
        }
    }
    assert!(aldp::chirality(&r.positions_nm).expect("chirality").iter().all(|&c| c == Chirality::L));

    // Energies: an independent OpenMM evaluation of the returned structures.
    let mut direct = reference_energy();
    let u = direct.evaluate(&Batch::new(&r.positions_nm, 22).expect("batch")).expect("energies").reduced_energies;
    let kt = 8.314462618e-3 * 300.0;
    for (i, &u) in u.iter().enumerate() {
        let (ui, ei) = (r.reduced_energies[i], r.energies_kj_per_mol[i]);
        assert!(ui.is_finite() && ui <= BOUND_KT, "structure {i}: u = {ui}");
        assert!((ui - u).abs() < 1e-9 * u.abs().max(1.0), "structure {i}: {ui} vs {u}");
        assert!((ei - u * kt).abs() < 1e-9 * (u * kt).abs().max(1.0), "structure {i}: {ei} kJ/mol vs {}", u * kt);
    }

    // Log-weights: -u + ln|det dx/dz| - ln q, with ln q and the log-det recomputed the other way
    // round (Cartesian -> flow coordinates -> flow inverse).
    let molecule = target.molecule();
    let (fine, cg_back, log_det_dz_dx) = molecule.from_cartesian(&r.positions_nm).expect("forward");
    let x = Tensor::from_vec(fine, (structures, 58), &Device::Cpu).expect("x");
    let c = Tensor::from_vec(molecule.context(&cg_back), (structures, 4), &Device::Cpu).expect("c");
    let log_q: Vec<f64> = flow.log_prob(&x, Some(&c)).expect("log q").to_vec1().expect("vec");
    for i in 0..structures {
        let expected = -u[i] - log_det_dz_dx[i] - log_q[i];
        assert!((r.log_weights[i] - expected).abs() < 1e-6, "structure {i}: {} vs {expected}", r.log_weights[i]);
    }

    // Weights normalised per point, proportional to exp(ln w).
    for j in 0..4 {
        let w = &r.normalized_weights[j * n..(j + 1) * n];
        let lw = &r.log_weights[j * n..(j + 1) * n];
        assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        let top = (0..n).max_by(|&a, &b| lw[a].total_cmp(&lw[b])).expect("max");
        for k in 0..n {
            assert!((w[k] / w[top] - (lw[k] - lw[top]).exp()).abs() < 1e-12);
        }
        let ess = 1.0 / w.iter().map(|v| v * v).sum::<f64>();
        assert!((r.points[j].ess - ess).abs() < 1e-9 * ess && (1.0..=n as f64).contains(&ess));
    }

    // Bookkeeping: every draw is kept, rejected as D-alanine (not evaluated) or rejected for its
    // energy (evaluated); the target's own counters agree.
    let draws: u64 = r.points.iter().map(|p| p.draws).sum();
    assert_eq!(draws, structures as u64 + r.rejected_chirality + r.rejected_energy);
    assert_eq!(r.evaluations, draws - r.rejected_chirality);
    assert_eq!((target.evaluations(), target.rejected()), (r.evaluations, r.rejected_chirality));

    // The same seed gives the same structures.
    let again = backmap(&flow, &target, &cg, &config, &mut ChaCha8Rng::seed_from_u64(1)).expect("backmap");
    assert_eq!(again, r);
}

#[test]
fn backmap_input_errors_name_the_point() {
    let t = trained();
    let (flow, target) = loaded_target(t);
    let config = BackmapConfig { samples_per_point: 4, ..Default::default() };
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let m = backmap(&flow, &target, &[-1.5, 2.5, 0.3, f64::NAN], &config, &mut rng).unwrap_err().to_string();
    assert!(m.contains("CG point 1, angle 2 of 2") && m.contains("NaN"), "{m}");
    let m = backmap(&flow, &target, &[-1.5, 2.5, -75.0, 60.0], &config, &mut rng).unwrap_err().to_string();
    assert!(m.contains("CG point 1, angle 1 of 2") && m.contains("outside [-pi, pi]"), "{m}");
    let m = backmap(&flow, &target, &[-1.5, 2.5, 0.3], &config, &mut rng).unwrap_err().to_string();
    assert!(m.contains("not a whole number of CG points"), "{m}");
    // At (phi, psi) = (1, -1), far from the training data, the flow keeps the CB and HA dihedrals
    // of the C7eq basin and almost every structure is D-alanine: bounded redrawing, then an error.
    let config = BackmapConfig { samples_per_point: 20, max_rounds: 3, ..Default::default() };
    let m = backmap(&flow, &target, &[-1.5, 2.5, 1.0, -1.0], &config, &mut rng).unwrap_err().to_string();
    assert!(
        m.contains("CG point 1 at [1.0, -1.0] rad")
            && m.contains("after 3 rounds")
            && m.contains("of the wrong chirality"),
        "{m}"
    );
    // A flow of another layout is refused.
    let other = Flow::new(&FlowSpec { dims: 6, circular: vec![], ..small_spec(1) }, &Device::Cpu).expect("flow");
    let m = backmap(&other, &target, &[-1.5, 2.5], &config, &mut rng).unwrap_err().to_string();
    assert!(m.contains("does not fit the molecule"), "{m}");
}

/// Replaces every weight by seeded N(0, 0.05^2) values, so the flow is far from the identity.
fn randomize(flow: &Flow, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for (_, var) in flow.params().entries() {
        let values: Vec<f64> = (0..var.elem_count())
            .map(|_| 0.05 * rand::Rng::sample::<f64, _>(&mut rng, rand_distr::StandardNormal))
            .collect();
        let t = Tensor::from_vec(values, var.shape(), &Device::Cpu).unwrap().to_dtype(var.dtype()).unwrap();
        var.set(&t).unwrap();
    }
}

fn aldp_info() -> MoleculeModelInfo {
    MoleculeModelInfo::aldp(&system(), &min_energy_positions(), 300.0).expect("info")
}

#[test]
fn molecule_model_round_trip_reproduces_log_prob_bit_for_bit() {
    let flow = Flow::new(&small_spec(21), &Device::Cpu).expect("flow");
    randomize(&flow, 4);
    let info = aldp_info().with_provenance(serde_json::json!({"iteration": 3, "kld": 0.0123}));
    let dir = tempfile::tempdir().expect("tmp");
    let model = dir.path().join("model");
    save_molecule_model(&model, &flow, &info).expect("save");
    let (loaded, loaded_info) = load_molecule_model(&model, &Device::Cpu).expect("load");
    assert_eq!(loaded_info, info);
    assert_eq!(loaded.spec(), flow.spec());
    assert_eq!(
        loaded_info.molecule().expect("molecule"),
        ConditionalMolecule::aldp(&min_energy_positions()).expect("m")
    );
    // The fingerprint is the one the other commands record: the hash of the System file's text.
    let xml = std::fs::read_to_string(aldp_file("aldp_obc1.xml")).expect("xml");
    assert_eq!(info.system_fingerprint, cgflow::io::fingerprint(&xml));
    assert_eq!((info.n_atoms, info.temperature_k, info.cg.name().as_str()), (22, 300.0, "aldp-phi-psi"));

    // log q of random fine coordinates at random (phi, psi): the same bits.
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let spec = flow.spec();
    let n = 64;
    let x: Vec<f64> = (0..n * 58)
        .map(|i| {
            if spec.circular.contains(&(i % 58)) {
                rand::Rng::gen_range(&mut rng, -std::f64::consts::PI..std::f64::consts::PI)
            } else {
                2.0 * rand::Rng::sample::<f64, _>(&mut rng, rand_distr::StandardNormal)
            }
        })
        .collect();
    let cg: Vec<f64> = (0..2 * n).map(|_| rand::Rng::gen_range(&mut rng, -3.0..3.0)).collect();
    let molecule = info.molecule().expect("molecule");
    let x = Tensor::from_vec(x, (n, 58), &Device::Cpu).expect("x");
    let c = Tensor::from_vec(molecule.context(&cg), (n, 4), &Device::Cpu).expect("c");
    let bits = |f: &Flow| -> Vec<u64> {
        f.log_prob(&x, Some(&c)).expect("log q").to_vec1::<f64>().expect("vec").iter().map(|v| v.to_bits()).collect()
    };
    let original = bits(&flow);
    assert_eq!(bits(&loaded), original);
    let identity = Flow::new(&small_spec(21), &Device::Cpu).expect("flow");
    assert_ne!(bits(&identity), original, "the randomised weights change log q");

    // The system check.
    loaded_info.check_system(&system()).expect("same system");
    let vacuum = System::from_xml_file(&aldp_file("aldp_vacuum.xml")).expect("vacuum");
    let m = loaded_info.check_system(&vacuum).unwrap_err().to_string();
    let other = cgflow::io::system_fingerprint(&vacuum).expect("fingerprint");
    assert!(
        m.contains("trained on another system") && m.contains(&info.system_fingerprint) && m.contains(&other),
        "{m}"
    );
}

#[test]
fn malformed_missing_and_mismatched_models_are_clear_errors() {
    let dir = tempfile::tempdir().expect("tmp");
    let good = dir.path().join("good");
    let flow = Flow::new(&small_spec(2), &Device::Cpu).expect("flow");
    save_molecule_model(&good, &flow, &aldp_info()).expect("save");
    let molecule_json = std::fs::read_to_string(good.join("molecule.json")).expect("json");
    let load = |d: &Path| load_molecule_model(d, &Device::Cpu).map(|_| ()).unwrap_err().to_string();

    // A flow of another layout: refused on saving (nothing written) and on loading.
    let toy =
        Flow::new(&FlowSpec { dims: 6, circular: vec![1], context: 3, ..small_spec(1) }, &Device::Cpu).expect("toy");
    let refused = dir.path().join("refused");
    let m = save_molecule_model(&refused, &toy, &aldp_info()).unwrap_err().to_string();
    assert!(m.contains("does not fit the molecule aldp-phi-psi") && m.contains("58 dims, context width 4"), "{m}");
    assert!(!refused.exists());
    let other = dir.path().join("other");
    cgflow::flow::checkpoint::save_flow(&other, &toy, None).expect("save flow");
    let m = load(&other);
    assert!(m.contains("no molecule.json"), "{m}");
    std::fs::write(other.join("molecule.json"), &molecule_json).expect("write");
    let m = load(&other);
    assert!(m.contains("the flow has 6 dims, context width 3") && m.contains("58 dims"), "{m}");

    // Broken molecule.json files.
    let cases = [
        ("{", "malformed JSON"),
        (r#"{"format": "cgflow-flow", "version": 1}"#, "not a cgflow molecule model"),
        (&molecule_json.replace("\"version\": 2", "\"version\": 7"), "unsupported molecule model version 7"),
        (
            &molecule_json
                .replace("\"version\": 2", "\"version\": 1")
                .replace("\"aldp-phi-psi\"", r#"{"dihedrals": [[4, 6, 8, 14]], "masses": [], "bonds": []}"#),
            "in version 1",
        ),
        (&molecule_json.replace("aldp-phi-psi", "aldp-chi1"), "unknown CG definition \"aldp-chi1\""),
        (&molecule_json.replace("\"n_atoms\": 22", "\"n_atoms\": 21"), "has 66 values, 21 atoms need 63"),
        (
            &molecule_json
                .replace("\"aldp-phi-psi\"", r#"{"dihedrals": [[4, 6, 8, 14]], "masses": [1.0], "bonds": []}"#),
            "1 masses for 22 atoms",
        ),
        (
            &molecule_json.replace(
                "\"aldp-phi-psi\"",
                &format!(r#"{{"dihedrals": [[4, 6, 8, 14]], "masses": {:?}, "bonds": [[0, 40]]}}"#, vec![12.0; 22]),
            ),
            "(0, 40)",
        ),
        (&molecule_json.replace("\"temperature_k\": 300.0", "\"temperature_k\": -1.0"), "temperature must be positive"),
        (&molecule_json.replace("\"provenance\"", "\"provenance_typo\""), "unknown field `provenance_typo`"),
    ];
    for (text, expected) in cases {
        std::fs::write(good.join("molecule.json"), text).expect("write");
        let m = load(&good);
        assert!(m.contains("molecule.json") && m.contains(expected), "{expected}: {m}");
    }
    let m = load(&dir.path().join("missing"));
    assert!(m.contains("missing"), "{m}");
}

fn cgflow_bin(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_cgflow")).args(args).output().expect("run cgflow")
}

/// Runs cgflow expecting a clean failure (exit 1, "error: ..." and no panic); returns stderr.
fn failing(args: &[&str]) -> String {
    let out = cgflow_bin(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "expected exit 1; stderr: {stderr}");
    assert!(stderr.starts_with("error: ") && !stderr.contains("panicked"), "{stderr}");
    stderr
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// The CSV table of a run: one row of numbers per structure (the header checked).
fn read_table(path: &Path) -> Vec<Vec<f64>> {
    let text = std::fs::read_to_string(path).expect("csv");
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some(
            "structure,cg_index,phi_requested_rad,psi_requested_rad,phi_rad,psi_rad,energy_kj_per_mol,u_kt,\
             log_weight,weight"
        )
    );
    lines.map(|l| l.split(',').map(|v| v.parse().expect("number")).collect()).collect()
}

/// OpenMM Reference energies (kJ/mol) and forces of structures.
fn energies_and_forces(positions: &[f64]) -> (Vec<f64>, Vec<f64>) {
    reference_energy().evaluate_kj(&Batch::new(positions, 22).expect("batch")).expect("energies")
}

#[test]
fn cli_writes_structures_and_a_table_that_match_independent_openmm_energies() {
    let t = trained();
    let dir = tempfile::tempdir().expect("tmp");
    let cg = cg_points(t);
    let cg_file = dir.path().join("cg.txt");
    let mut text = String::from("# phi psi (rad)\n");
    for p in cg.chunks(2) {
        text.push_str(&format!("{}, {}\n\n", p[0], p[1]));
    }
    std::fs::write(&cg_file, text).expect("cg");
    let n = 10;
    let run = |out: &Path| {
        let bound = BOUND_KT.to_string();
        let args = [
            "backmap",
            "--model",
            s(&t.dir),
            "--cg",
            s(&cg_file),
            "--n",
            "10",
            "--out",
            s(out),
            "--platform",
            "Reference",
        ];
        let out = cgflow_bin(&[&args[..], &["--seed", "5", "--max-energy-kt", &bound]].concat());
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let (npy, pdb, dcd) = (dir.path().join("s.npy"), dir.path().join("s.pdb"), dir.path().join("s.dcd"));
    let stdout = run(&npy);
    assert!(stdout.contains("40 structures for 4 CG points") && stdout.contains("of the wrong chirality"), "{stdout}");
    let table = std::fs::read(dir.path().join("s.csv")).expect("csv");
    run(&pdb);
    assert_eq!(std::fs::read(dir.path().join("s.csv")).expect("csv"), table, "same seed, same table");
    run(&dcd);
    assert_eq!(std::fs::read(dir.path().join("s.csv")).expect("csv"), table, "same seed, same table");

    // The table: requested points as given, achieved (phi, psi) equal to them, u = E / kT below
    // the bound, weights normalised per point.
    let rows = read_table(&dir.path().join("s.csv"));
    assert_eq!(rows.len(), 4 * n);
    let kt = 8.314462618e-3 * 300.0;
    for (i, row) in rows.iter().enumerate() {
        let j = i / n;
        assert_eq!((row[0], row[1]), (i as f64, j as f64));
        assert_eq!((row[2], row[3]), (cg[2 * j], cg[2 * j + 1]));
        assert!(wrap_angle(row[4] - cg[2 * j]).abs() < 1e-8 && wrap_angle(row[5] - cg[2 * j + 1]).abs() < 1e-8);
        assert!((row[6] / kt - row[7]).abs() < 1e-9 * row[7].abs().max(1.0) && row[7] <= BOUND_KT, "{row:?}");
    }
    for j in 0..4 {
        let total: f64 = rows[j * n..(j + 1) * n].iter().map(|r| r[9]).sum();
        assert!((total - 1.0).abs() < 1e-12, "point {j}: weights sum to {total}");
    }

    // The .npy holds the exact structures: L-alanine, the requested (phi, psi), and the table's
    // energies from an independent OpenMM evaluation.
    let exact = cgflow::io::read_positions(&npy).expect("npy");
    assert_eq!((exact.n_configs, exact.n_atoms), (4 * n, 22));
    let x = exact.positions_nm;
    assert!(aldp::chirality(&x).expect("chirality").iter().all(|&c| c == Chirality::L));
    for (i, pp) in aldp::phi_psi(&x).expect("phi psi").iter().enumerate() {
        let j = i / n;
        assert!(wrap_angle(pp[0] - cg[2 * j]).abs() < 1e-8 && wrap_angle(pp[1] - cg[2 * j + 1]).abs() < 1e-8);
    }
    let (e, _) = energies_and_forces(&x);
    for (i, row) in rows.iter().enumerate() {
        assert!((row[6] - e[i]).abs() < 1e-9 * e[i].abs().max(1.0), "structure {i}: {} vs {}", row[6], e[i]);
    }

    // The PDB (Å with 3 decimals: each coordinate within 5e-5 nm) and the DCD (Å as float32:
    // within |x| 2^-23) hold the same structures. Their energies agree with the table within the
    // first-order bound sum_k |F_k| |dx_k| of that rounding plus, for the PDB, 0.25 kJ/mol for the
    // second-order term (1/2 lambda_max |dx|^2 with lambda_max < 3e6 kJ/mol/nm^2, a Gershgorin bound
    // of the Hessian from the stiffest bonds, and |dx|^2 <= 66 (5e-5 nm)^2).
    let models = cgflow::io::pdb::read_pdb(&pdb).expect("pdb");
    assert_eq!(models.len(), 4 * n);
    assert_eq!((models[0].atoms[0].name.as_str(), models[0].atoms[0].residue_name.as_str()), ("H1", "ACE"));
    assert_eq!((models[0].atoms[8].name.as_str(), models[0].atoms[8].residue_name.as_str()), ("CA", "ALA"));
    let from_pdb: Vec<f64> = models.iter().flat_map(|m| m.positions_nm()).collect();
    let (_, frames) = cgflow::io::dcd::read_dcd(&dcd).expect("dcd");
    let from_dcd: Vec<f64> = frames.concat();
    let (_, forces) = energies_and_forces(&x);
    for (positions, name) in [(&from_pdb, "pdb"), (&from_dcd, "dcd")] {
        assert_eq!(positions.len(), x.len());
        let delta = |k: usize| if name == "pdb" { 5e-5 + 1e-12 } else { x[k].abs() * 2f64.powi(-23) + 1e-15 };
        assert!((0..x.len()).all(|k| (positions[k] - x[k]).abs() <= delta(k)), "{name}: rounding");
        assert!(aldp::chirality(positions).expect("chirality").iter().all(|&c| c == Chirality::L));
        let (e_read, _) = energies_and_forces(positions);
        for i in 0..4 * n {
            let first: f64 = (i * 66..(i + 1) * 66).map(|k| forces[k].abs() * delta(k)).sum();
            let tolerance = first + if name == "pdb" { 0.25 } else { 1e-6 };
            let diff = (e_read[i] - rows[i][6]).abs();
            assert!(diff <= tolerance, "{name} structure {i}: |dE| = {diff} kJ/mol > {tolerance}");
        }
    }
}

#[test]
fn cli_rejects_bad_cg_files_other_systems_other_architectures_and_missing_files() {
    let t = trained();
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("out.pdb");
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).expect("write");
        p
    };
    let good = write("good.txt", "-1.5 2.5\n");
    let backmap_args = |model: &Path, cg: &Path| -> Vec<String> {
        ["backmap", "--model", s(model), "--cg", s(cg), "--n", "2", "--out", s(&out)].map(String::from).to_vec()
    };
    let fail = |args: Vec<String>| failing(&args.iter().map(String::as_str).collect::<Vec<_>>());

    let m = fail(backmap_args(&t.dir, &write("nan.txt", "# phi psi\n-1.5 2.5\n0.1 nan\n")));
    assert!(m.contains("nan.txt") && m.contains("line 3") && m.contains("NaN"), "{m}");
    let m = fail(backmap_args(&t.dir, &write("inf.txt", "-1.5, inf\n")));
    assert!(m.contains("line 1") && m.contains("inf"), "{m}");
    let m = fail(backmap_args(&t.dir, &write("degrees.txt", "-75 150\n")));
    assert!(m.contains("line 1") && m.contains("outside [-pi, pi]"), "{m}");
    let mut args = backmap_args(&t.dir, &write("far.txt", "-75 190\n"));
    args.push("--degrees".into());
    let m = fail(args);
    assert!(m.contains("outside [-180, 180]"), "{m}");
    let m = fail(backmap_args(&t.dir, &dir.path().join("absent.txt")));
    assert!(m.contains("absent.txt"), "{m}");

    let mut args = backmap_args(&t.dir, &good);
    args.extend(["--system".into(), s(&aldp_file("aldp_vacuum.xml")).into()]);
    let m = fail(args);
    assert!(m.contains("trained on another system") && m.contains("aldp_vacuum.xml"), "{m}");

    // A flow checkpoint of another architecture beside a valid molecule.json, a bare flow
    // checkpoint, and no model at all.
    let other = dir.path().join("other");
    let toy =
        Flow::new(&FlowSpec { dims: 6, circular: vec![1], context: 3, ..small_spec(1) }, &Device::Cpu).expect("toy");
    cgflow::flow::checkpoint::save_flow(&other, &toy, None).expect("save flow");
    let m = fail(backmap_args(&other, &good));
    assert!(m.contains("no molecule.json"), "{m}");
    std::fs::copy(t.dir.join("molecule.json"), other.join("molecule.json")).expect("copy");
    let m = fail(backmap_args(&other, &good));
    assert!(m.contains("does not fit the molecule") && m.contains("6 dims"), "{m}");
    let m = fail(backmap_args(&dir.path().join("nowhere"), &good));
    assert!(m.contains("nowhere"), "{m}");

    // The model carries its System: backmapping works from any working directory without
    // --system; a model without system.xml names the flag, and save_model_system refuses a
    // System the model was not trained on.
    let elsewhere = tempfile::tempdir().expect("tmp");
    let out_npy = dir.path().join("elsewhere.npy");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_cgflow"))
        .current_dir(elsewhere.path())
        .args(["backmap", "--model", s(&t.dir), "--cg", s(&good), "--n", "2", "--out", s(&out_npy)])
        .output()
        .expect("run cgflow");
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert_eq!(cgflow::io::npy::read_npy(&out_npy).expect("npy").shape, vec![2, 22, 3]);
    let bare = dir.path().join("bare");
    std::fs::create_dir_all(&bare).expect("dir");
    for f in ["flow.json", "weights.safetensors", "molecule.json"] {
        std::fs::copy(t.dir.join(f), bare.join(f)).expect("copy");
    }
    let m = fail(backmap_args(&bare, &good));
    assert!(m.contains("carries no system.xml") && m.contains("--system"), "{m}");
    let vacuum = System::from_xml_file(&aldp_file("aldp_vacuum.xml")).expect("vacuum");
    assert!(save_model_system(&bare, &vacuum).unwrap_err().to_string().contains("another system"));

    let mut args = backmap_args(&t.dir, &good);
    args[8] = s(&dir.path().join("out.xyz")).into();
    let m = fail(args);
    assert!(m.contains(".pdb, .dcd or .npy"), "{m}");
    assert!(!out.exists(), "no output after an error");
}

#[test]
fn a_version_1_model_still_backmaps_and_any_molecule_saves_as_version_2() {
    // The trained ALDP model, its molecule.json rewritten as version 1 wrote it: the same
    // structures from the same seed.
    let t = trained();
    let dir = tempfile::tempdir().expect("tmp");
    let v1 = dir.path().join("v1");
    std::fs::create_dir_all(&v1).expect("mkdir");
    for name in ["flow.json", "weights.safetensors", "system.xml"] {
        std::fs::copy(t.dir.join(name), v1.join(name)).expect("copy");
    }
    let json = std::fs::read_to_string(t.dir.join("molecule.json")).expect("json");
    assert!(json.contains("\"version\": 2") && json.contains("\"cg\": \"aldp-phi-psi\""), "{json}");
    std::fs::write(v1.join("molecule.json"), json.replace("\"version\": 2", "\"version\": 1")).expect("write");
    let cg = cg_points(t);
    let config = BackmapConfig { samples_per_point: 5, ..Default::default() };
    let run = |model: &Path| {
        let (flow, info) = load_molecule_model(model, &Device::Cpu).expect("load");
        let target = ConditionalMolecularTarget::new(info.molecule().expect("molecule"), Box::new(reference_energy()))
            .expect("t");
        backmap(&flow, &target, &cg, &config, &mut ChaCha8Rng::seed_from_u64(8)).expect("backmap")
    };
    let (old, new) = (run(&v1), run(&t.dir));
    assert_eq!(old.positions_nm, new.positions_nm);
    assert!(aldp::chirality(&old.positions_nm).expect("chirality").iter().all(|&c| c == Chirality::L));

    // Ace-(Ala)2-Nme as data: its model (a small untrained flow) saves as version 2 with its CG
    // dihedrals and bond graph, loads back to the same molecule, and backmaps to structures with
    // both alanines L and the requested angles.
    use cgflow::coords::cg_definition::resolve;
    use cgflow::coords::geometry::dihedral;
    let data = crate::util::root().join("data/ace_ala2_nme");
    let peptide = System::from_xml_file(&data.join("system_obc1.xml")).expect("system");
    let pdb = cgflow::io::pdb::read_pdb(&data.join("min_energy.pdb")).expect("pdb").remove(0);
    let x0 = pdb.positions_nm();
    let dihedrals = resolve("backbone", &pdb.atom_labels()).expect("cg");
    let info = MoleculeModelInfo::for_system(&peptide, &x0, &dihedrals, 300.0).expect("info");
    let molecule = info.molecule().expect("molecule");
    let spec = FlowSpec {
        dims: molecule.fine_dims(),
        circular: molecule.fine_circular_indices(),
        context: molecule.context_width(),
        layers: 2,
        hidden: 16,
        ..small_spec(3)
    };
    let flow = Flow::new(&spec, &Device::Cpu).expect("flow");
    let model = dir.path().join("ace_ala2_nme");
    save_molecule_model(&model, &flow, &info).expect("save");
    save_model_system(&model, &peptide).expect("system");
    let json = std::fs::read_to_string(model.join("molecule.json")).expect("json");
    assert!(json.contains("\"version\": 2") && json.contains("\"dihedrals\"") && json.contains("\"bonds\""));
    let (loaded, loaded_info) = load_molecule_model(&model, &Device::Cpu).expect("load");
    assert_eq!(loaded_info, info);
    assert_eq!(loaded_info.molecule().expect("molecule"), molecule);
    let config = OpenMmEnergyConfig { workers: Some(1), ..Default::default() };
    let energy = OpenMmEnergy::new(&peptide, &Platform::new("Reference").expect("p"), &config).expect("energy");
    let target = ConditionalMolecularTarget::new(molecule, Box::new(energy)).expect("target");
    let requested = [-1.4, 2.6, -1.2, 2.4, -1.3, -0.7, -2.5, 2.9];
    let config = BackmapConfig { samples_per_point: 4, max_rounds: 200, ..Default::default() };
    let r = backmap(&loaded, &target, &requested, &config, &mut ChaCha8Rng::seed_from_u64(2)).expect("backmap");
    // Chirality by hand: ((C - N) x (CB - N)) . (HA - N) of each alanine, with the reference's sign.
    let volume = |x: &[f64], [n, c, cb, ha]: [usize; 4]| {
        let p = |i: usize| nalgebra::Vector3::new(x[3 * i], x[3 * i + 1], x[3 * i + 2]);
        (p(c) - p(n)).cross(&(p(cb) - p(n))).dot(&(p(ha) - p(n)))
    };
    let alanines = [[6, 14, 10, 9], [16, 24, 20, 19]];
    for (i, x) in r.positions_nm.chunks_exact(96).enumerate() {
        let j = r.cg_index[i];
        for ala in alanines {
            assert!(volume(x, ala) * volume(&x0, ala) > 0.0, "structure {i}: alanine {ala:?} is D");
        }
        let atom = |a: usize| nalgebra::Point3::new(x[3 * a], x[3 * a + 1], x[3 * a + 2]);
        for (k, d) in dihedrals.iter().enumerate() {
            let diff = wrap_angle(dihedral(&atom(d[0]), &atom(d[1]), &atom(d[2]), &atom(d[3])) - requested[4 * j + k]);
            assert!(diff.abs() < 1e-8, "structure {i}, CG angle {k}: {diff:e}");
        }
    }
    assert_eq!(r.cg_index.len(), 8);
}
