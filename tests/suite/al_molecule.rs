//! Active learning of any molecule through the one driver: the second peptide, Ace-(Ala)2-Nme
//! (four CG angles, two chiral CA), from its data alone: the tiny preset through the CLI, its
//! per-marginal KLDs, its model backmapped, and a killed-and-resumed run.

use cgflow::al::checkpoint::{load_al_state, save_al_state};
use cgflow::al::config::AlConfig;
use cgflow::al::driver::{ActiveLearning, AlMode};
use cgflow::al::molecule::{MarginalReference, MoleculeProblem};
use cgflow::al::record::AlIteration;
use cgflow::openmm::{Platform, System};

use crate::util::root;

const SYSTEM: &str = "data/ace_ala2_nme/system_obc1.xml";
const STRUCTURE: &str = "data/ace_ala2_nme/min_energy.pdb";
/// phi 2, psi 2, phi 3, psi 3 (data/ace_ala2_nme/README.md).
const BACKBONE: [[usize; 4]; 4] = [[4, 6, 8, 14], [6, 8, 14, 16], [14, 16, 18, 24], [16, 18, 24, 26]];

/// A smooth reference density on the 100 x 100 grid, different for each `shift`.
fn synthetic_reference(shift: f64) -> Vec<f64> {
    let c: Vec<f64> =
        (0..100).map(|k| -std::f64::consts::PI + (k as f64 + 0.5) * std::f64::consts::TAU / 100.0).collect();
    let mut p: Vec<f64> = c
        .iter()
        .flat_map(|&a| c.iter().map(move |&b| (-(2.0 * (a - shift).cos() + (b + shift).sin())).exp()))
        .collect();
    let z: f64 = p.iter().sum();
    p.iter_mut().for_each(|v| *v /= z);
    p
}

fn cgflow(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_cgflow")).current_dir(root()).args(args).output().expect("cgflow")
}

#[test]
fn second_peptide_tiny_preset_runs_from_its_data_with_a_kld_per_marginal_and_backmaps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let references: Vec<std::path::PathBuf> = [0.3, -1.1]
        .iter()
        .enumerate()
        .map(|(k, &shift)| {
            let path = dir.path().join(format!("reference_{k}.npy"));
            cgflow::io::npy::write_npy(&path, &[100, 100], &synthetic_reference(shift)).expect("write");
            path
        })
        .collect();
    let run = dir.path().join("run");
    let reference_01 = format!("0,1={}", references[0].display());
    let reference_23 = format!("2,3={}", references[1].display());
    let common = ["al", "--preset", "tiny", "--system", SYSTEM, "--structure", STRUCTURE, "--cg", "backbone"];
    let args: Vec<&str> = common
        .iter()
        .copied()
        .chain(["--reference", &reference_01, "--reference", &reference_23, "--out", run.to_str().unwrap()])
        .collect();
    let output = cgflow(&args);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));

    // The presets start the search at the structure's CG point when the molecule is given by --cg.
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).expect("config")).expect("json");
    assert!(config["search"].get("start_deg").is_none(), "{}", config["search"]);

    // Each iteration's KLD is the mean of the two marginals' KLDs, and each marginal's KLD is the
    // KL divergence of its reference to the marginal PMF the run wrote (recomputed here).
    let lines: Vec<AlIteration> = std::fs::read_to_string(run.join("log.jsonl"))
        .expect("log")
        .lines()
        .map(|l| serde_json::from_str(l).expect("log line"))
        .collect();
    assert_eq!(lines.len(), 2);
    for line in &lines {
        assert_eq!(line.kld_marginals.len(), 2);
        let mean = (line.kld_marginals[0] + line.kld_marginals[1]) / 2.0;
        assert!((line.kld.expect("kld") - mean).abs() < 1e-12);
        assert!(line.new_centres_deg.iter().all(|c| c.len() == 4));
    }
    let last = lines.last().expect("last");
    for (k, (pair, shift)) in [("0_1", 0.3), ("2_3", -1.1)].iter().enumerate() {
        let pmf = cgflow::io::npy::read_npy(&run.join(format!("pmf_{pair}_kt.npy"))).expect("marginal pmf");
        assert_eq!(pmf.shape, vec![100, 100]);
        let q: Vec<f64> = pmf.data.iter().map(|f| (-f).exp()).collect();
        let zq: f64 = q.iter().sum();
        let p = synthetic_reference(*shift);
        let kl: f64 = p.iter().zip(&q).map(|(p, q)| p * (p / (q / zq)).ln()).sum();
        assert!((kl - last.kld_marginals[k]).abs() < 1e-6 * kl.max(1.0), "{pair}: {kl} vs {}", last.kld_marginals[k]);
        assert!(run.join(format!("pmf_{pair}_iter01.png")).exists());
    }

    // The model is a version-2 molecule model of the peptide's four CG dihedrals, and it
    // backmaps: the structures have the requested CG angles, both CA keep the reference's hand.
    let molecule: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("model/molecule.json")).expect("molecule.json"))
            .expect("json");
    assert_eq!(molecule["version"], 2);
    assert_eq!(molecule["cg"]["dihedrals"], serde_json::json!(BACKBONE));
    let cg_file = dir.path().join("cg.txt");
    let requested: [[f64; 4]; 2] = [[-80.0, 150.0, -70.0, -40.0], [-150.0, 160.0, 60.0, 40.0]];
    let text: String = requested.iter().map(|r| format!("{} {} {} {}\n", r[0], r[1], r[2], r[3])).collect();
    std::fs::write(&cg_file, text).expect("cg file");
    let structures = dir.path().join("s.npy");
    let output = cgflow(&[
        "backmap",
        "--model",
        run.join("model").to_str().unwrap(),
        "--cg",
        cg_file.to_str().unwrap(),
        "--degrees",
        "--n",
        "3",
        "--max-energy-kt",
        "1e6",
        "--out",
        structures.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let x = cgflow::io::npy::read_npy(&structures).expect("structures");
    assert_eq!(x.shape, vec![6, 32, 3]);
    let angles = cgflow::coords::geometry::dihedrals_of(&x.data, 32, &BACKBONE).expect("dihedrals");
    for (s, measured) in angles.chunks(4).enumerate() {
        for (a, r) in measured.iter().zip(&requested[s / 3]) {
            let error = cgflow::coords::geometry::wrap_angle(a - r.to_radians()).abs();
            assert!(error < 1e-8, "structure {s}: {} vs {r} degrees", a.to_degrees());
        }
    }
    let system = System::from_xml_file(&root().join(SYSTEM)).expect("system");
    let reference = cgflow::io::read_positions(&root().join(STRUCTURE)).expect("structure");
    let centres = cgflow::coords::chirality::chiral_centres(
        &system.masses().unwrap(),
        &system.bonds().unwrap(),
        &reference.positions_nm,
    )
    .expect("centres");
    assert_eq!(centres.iter().map(|c| c.atom).collect::<Vec<_>>(), vec![8, 18]);
    let kept = cgflow::coords::chirality::keeps_chirality(&centres, 32, &x.data).expect("chirality");
    assert!(kept.iter().all(|&k| k), "a backmapped structure has a D-alanine");

    // Bad input: a reference of a pair the molecule lacks, and a CG dihedral of unbonded atoms.
    let bad_pair = format!("0,4={}", references[0].display());
    let out = dir.path().join("bad");
    let output = cgflow(
        &common.iter().copied().chain(["--reference", &bad_pair, "--out", out.to_str().unwrap()]).collect::<Vec<_>>(),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && stderr.contains("not a pair of the 4 CG dimensions"), "{stderr}");
    let output = cgflow(&[
        "al",
        "--preset",
        "tiny",
        "--system",
        SYSTEM,
        "--structure",
        STRUCTURE,
        "--cg",
        "0,6,8,14",
        "--out",
        out.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && stderr.contains("not bonded in sequence"), "{stderr}");
}

fn peptide_experiment(config: AlConfig) -> ActiveLearning {
    let system = System::from_xml_file(&root().join(SYSTEM)).expect("system");
    let structure = cgflow::io::read_positions(&root().join(STRUCTURE)).expect("structure");
    let molecule = cgflow::coords::molecule::Molecule::new(
        &system.masses().expect("masses"),
        &system.bonds().expect("bonds"),
        &structure.positions_nm,
        &BACKBONE,
    )
    .expect("molecule");
    let molecule = cgflow::flow::molecular::ConditionalMolecule::from_molecule(&molecule).expect("conditional");
    let references = vec![MarginalReference { pair: (2, 3), probabilities: synthetic_reference(0.5) }];
    let platform = Platform::new("CPU").expect("platform");
    let problem = MoleculeProblem::new(molecule, &system, &platform, &structure.positions_nm, references)
        .expect("problem")
        .with_other_bins(6)
        .expect("other bins");
    ActiveLearning::new(config, Box::new(problem)).expect("experiment")
}

#[test]
fn second_peptide_run_killed_after_every_step_and_resumed_ends_like_an_uninterrupted_one() {
    let config = AlConfig {
        search: cgflow::al::config::AlSearchConfig { start_deg: None, ..AlConfig::tiny().search },
        ..AlConfig::tiny()
    };
    let al = peptide_experiment(config.clone());
    let mut quiet = |_| {};
    let mut state = al.start(AlMode::ActiveLearning, &mut quiet).expect("start");
    assert!(state.points.train.iter().chain(&state.points.test).all(|p| p.len() == 4));
    al.iterate(&mut state, &mut quiet).expect("iteration 0");
    al.iterate(&mut state, &mut quiet).expect("iteration 1");
    assert!(state.converged);

    let dir = tempfile::tempdir().expect("tempdir");
    let first = peptide_experiment(config.clone());
    let mut resumed = first.start(AlMode::ActiveLearning, &mut quiet).expect("start");
    save_al_state(dir.path(), first.config(), &resumed).expect("save");
    for _ in 0..2 {
        let again = peptide_experiment(config.clone());
        resumed = load_al_state(dir.path(), &again).expect("load");
        again.iterate(&mut resumed, &mut quiet).expect("iterate");
        save_al_state(dir.path(), again.config(), &resumed).expect("save");
    }
    assert_eq!(resumed.points, state.points);
    assert_eq!(resumed.costs, state.costs);
    for (a, b) in resumed.log.iter().zip(&state.log) {
        // One reference: its KLD alone, no per-marginal list.
        assert!(a.kld_marginals.is_empty());
        let (a, b) = (a.kld.expect("kld"), b.kld.expect("kld"));
        assert!((a - b).abs() <= 1e-9 * a.abs().max(1e-12), "{a} vs {b}");
    }
    let pmf = |s: &cgflow::al::driver::AlState| al.marginal_pmf(&s.ensemble, (0, 1), 20, 4).expect("marginal");
    let (a, b) = (pmf(&state), pmf(&resumed));
    assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-8), "marginal PMFs differ");
    // A 2D PMF grid is refused for four CG angles.
    assert!(al.pmf_grid(&state.ensemble, 10).unwrap_err().to_string().contains("two CG dimensions"));
}
