//! `cgflow reference`: the binless (MBAR) reference PMF over (phi, psi) from the stored samples of
//! one or more umbrella runs (and, if asked, unbiased MD), with its two independent halves, basin
//! populations with block-bootstrap errors, the binned-WHAM estimate of the same samples beside it,
//! and a check of the populations against independent unbiased MD.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use clap::Args;
use rand::SeedableRng;

use cgflow::coords::aldp;
use cgflow::io::cv_run::CvRun;
use cgflow::md::mbar::{self, BiasedSamples, HarmonicBias2d, MbarConfig};
use cgflow::metrics::histogram::free_energy_from_probabilities;
use cgflow::metrics::{halves_noise_floor, BinGrid};
use cgflow::units::kt_kj_per_mol;

/// Arguments of `cgflow reference`.
#[derive(Debug, Args)]
pub struct ReferenceArgs {
    /// Folder of a `cgflow umbrella` run (cv.f32 and cv.json); repeatable, all are combined.
    #[arg(long = "umbrella", value_name = "DIR", required = true)]
    umbrella: Vec<PathBuf>,
    /// Folder of an unbiased `cgflow md` run to include in the estimate (repeatable).
    #[arg(long = "md", value_name = "DIR")]
    md: Vec<PathBuf>,
    /// Folder of an independent unbiased `cgflow md` run whose basin populations are compared with
    /// the reference's (repeatable; not part of the estimate).
    #[arg(long = "check-md", value_name = "DIR")]
    check_md: Vec<PathBuf>,
    /// Steps of every MD walker left out at its start (equilibration from the start structure).
    #[arg(long, default_value_t = 100_000)]
    md_skip_steps: u64,
    /// The System the runs were made with (their fingerprints are checked).
    #[arg(long, value_name = "XML", default_value = "data/alanine_dipeptide/aldp_obc1.xml")]
    system: PathBuf,
    /// Output folder (not needed with --export-samples).
    #[arg(long, value_name = "DIR", required_unless_present = "export_samples")]
    out: Option<PathBuf>,
    /// Bins per dimension of the output grids.
    #[arg(long, default_value_t = 100)]
    bins: usize,
    /// Use every N-th recorded sample.
    #[arg(long, default_value_t = 1)]
    stride: usize,
    /// Bootstrap replicates for the standard errors (0: none).
    #[arg(long, default_value_t = 20)]
    bootstrap: usize,
    /// Blocks per window in the block bootstrap.
    #[arg(long, default_value_t = 10)]
    blocks: usize,
    /// Seed of the bootstrap.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Skip the binned-WHAM estimate of the same samples.
    #[arg(long)]
    no_wham: bool,
    /// Write the samples of the (single) --umbrella run, every --export-stride-th record, as a run
    /// folder here (cv.json, cv.f32) that --umbrella reads back: a compact copy that can be kept
    /// and combined with later runs.
    #[arg(long, value_name = "DIR")]
    export_samples: Option<PathBuf>,
    /// Records per exported record.
    #[arg(long, default_value_t = 20)]
    export_stride: usize,
}

/// The states of one run folder: one per walker (window), with its restraint in kT.
fn run_states(
    dir: &Path,
    system_xml: &str,
    system_path: &Path,
    stride: usize,
    skip_steps: u64,
) -> Result<(Vec<BiasedSamples>, f64)> {
    let run = CvRun::read(dir)?;
    run.check_system(dir, system_xml, system_path)?;
    let d = &run.description;
    let umbrella = d["kind"] == "umbrella";
    let biases: Vec<HarmonicBias2d> = if umbrella {
        let t = d["temperature_k"].as_f64().context("cv.json lacks temperature_k")?;
        let k_kt = d["k_kj_per_mol_rad2"].as_f64().context("cv.json lacks k_kj_per_mol_rad2")? / kt_kj_per_mol(t);
        let centres = d["centres_rad"].as_array().context("cv.json lacks centres_rad")?;
        if centres.len() != run.walkers {
            bail!("{}: {} restraint centres for {} windows", dir.display(), centres.len(), run.walkers);
        }
        centres
            .iter()
            .map(|c| {
                let phi = c[0].as_f64().context("centre")?;
                let psi = c[1].as_f64().context("centre")?;
                Ok(HarmonicBias2d { centre_rad: [phi, psi], spring_kt_per_rad2: [k_kt, k_kt] })
            })
            .collect::<Result<_>>()?
    } else {
        if (d["temperature_k"].as_f64().unwrap_or(300.0) - 300.0).abs() > 1e-9 {
            bail!("{}: MD at {} K; the reference is at 300 K", dir.display(), d["temperature_k"]);
        }
        vec![HarmonicBias2d::UNBIASED; run.walkers]
    };
    let skip_frames = if umbrella { 0 } else { skip_steps.div_ceil(run.steps_per_frame) as usize };
    if skip_frames >= run.frames {
        bail!("{}: {} frames, all within the {skip_steps} steps left out", dir.display(), run.frames);
    }
    let mut evaluations = run.walkers as f64 * run.frames as f64 * run.steps_per_frame as f64;
    evaluations += run.walkers as f64 * d["equilibrate_steps"].as_f64().unwrap_or(0.0);
    let states = biases
        .into_iter()
        .enumerate()
        .map(|(w, bias)| -> Result<BiasedSamples> {
            let series = run.walker_pairs(w)?;
            Ok(BiasedSamples { bias, samples: series.into_iter().skip(skip_frames).step_by(stride).collect() })
        })
        .collect::<Result<_>>()?;
    Ok((states, evaluations))
}

fn populations_json(values: &[f64], errors: Option<&[f64]>) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for (i, name) in aldp::BASIN_NAMES.iter().enumerate() {
        let mut entry = serde_json::json!({"population": values[i]});
        if let Some(e) = errors {
            entry["standard_error"] = serde_json::json!(if e[i].is_finite() { Some(e[i]) } else { None });
        }
        out.insert((*name).into(), entry);
    }
    serde_json::Value::Object(out)
}

/// Basin populations of independent MD walkers (mean and standard error over walkers), with the
/// walkers and evaluations of the run.
fn md_check(
    dir: &Path,
    system_xml: &str,
    system_path: &Path,
    skip_steps: u64,
) -> Result<(Vec<f64>, Vec<f64>, usize, f64)> {
    let (states, evaluations) = run_states(dir, system_xml, system_path, 1, skip_steps)?;
    let (mean, se) = mbar::series_region_populations(&states, aldp::BASIN_NAMES.len(), aldp::basin_of);
    Ok((mean, se, states.len(), evaluations))
}

impl ReferenceArgs {
    /// The reference of one umbrella run folder, written into it, with the default settings.
    pub fn for_umbrella_run(dir: &Path, system: &Path, bins: usize) -> ReferenceArgs {
        ReferenceArgs {
            umbrella: vec![dir.to_path_buf()],
            md: vec![],
            check_md: vec![],
            md_skip_steps: 100_000,
            system: system.to_path_buf(),
            out: Some(dir.to_path_buf()),
            bins,
            stride: 1,
            bootstrap: 20,
            blocks: 10,
            seed: 1,
            no_wham: false,
            export_samples: None,
            export_stride: 20,
        }
    }
}

/// Runs `cgflow reference`.
pub fn run(args: ReferenceArgs) -> Result<()> {
    if args.stride == 0 || args.bins == 0 || args.blocks == 0 {
        bail!("--stride, --bins and --blocks must be positive");
    }
    let system_xml =
        std::fs::read_to_string(&args.system).with_context(|| format!("reading {}", args.system.display()))?;
    if let Some(dir) = &args.export_samples {
        let [source] = args.umbrella.as_slice() else {
            bail!("--export-samples takes exactly one --umbrella run");
        };
        return export_samples(source, dir, args.export_stride, &system_xml, &args.system);
    }
    let out = args.out.as_deref().context("--out is needed")?;
    let started = Instant::now();
    let mut states = Vec::new();
    let mut evaluations = 0.0;
    let mut inputs = Vec::new();
    let folders = args.umbrella.iter().map(|d| (d, true)).chain(args.md.iter().map(|d| (d, false)));
    for (dir, is_umbrella) in folders {
        let (s, e) = run_states(dir, &system_xml, &args.system, args.stride, args.md_skip_steps)?;
        if is_umbrella != s.iter().all(|st| st.bias != HarmonicBias2d::UNBIASED) {
            bail!(
                "{}: passed as {} but holds another kind of run",
                dir.display(),
                if is_umbrella { "--umbrella" } else { "--md" }
            );
        }
        inputs.push(serde_json::json!({"folder": dir, "states": s.len(),
            "samples": s.iter().map(|st| st.samples.len()).sum::<usize>(), "evaluations": e}));
        evaluations += e;
        states.extend(s);
    }
    let config = MbarConfig::default();
    let (solution, p) = mbar::dihedral_probabilities(&states, args.bins, &config, None)?;
    if !solution.converged {
        bail!("MBAR did not converge: {solution:?}");
    }
    eprintln!("reference: MBAR over {} states converged in {} Newton steps", states.len(), solution.iterations);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(args.seed);
    let (populations, errors) = mbar::region_populations_with_errors(
        &states,
        &solution,
        &config,
        aldp::BASIN_NAMES.len(),
        aldp::basin_of,
        args.bootstrap,
        args.blocks,
        &mut rng,
    )?;
    let [first, second] = mbar::split_halves(&states);
    let (_, p1) = mbar::dihedral_probabilities(&first, args.bins, &config, Some(&solution.free_energies_kt))?;
    let (_, p2) = mbar::dihedral_probabilities(&second, args.bins, &config, Some(&solution.free_energies_kt))?;
    let grid = BinGrid::dihedral(args.bins);
    let mut halves_json = serde_json::Map::new();
    for kernel in [0.0, 1.0, 2.0] {
        let floor = halves_noise_floor(&p1, &p2, &grid, kernel)?;
        let v = floor.kld_halves;
        halves_json
            .insert(format!("kernel_{kernel}_bins"), serde_json::json!(if v.is_finite() { Some(v) } else { None }));
    }
    let b = args.bins;
    let free_energy = free_energy_from_probabilities(&p);
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    cgflow::io::npy::write_npy(&out.join("reference_probabilities.npy"), &[b, b], &p)?;
    cgflow::io::npy::write_npy(&out.join("reference_pmf_kt.npy"), &[b, b], &free_energy)?;
    cgflow::io::npy::write_npy(&out.join("half1_probabilities.npy"), &[b, b], &p1)?;
    cgflow::io::npy::write_npy(&out.join("half2_probabilities.npy"), &[b, b], &p2)?;
    let (f1, f2) = (free_energy_from_probabilities(&p1), free_energy_from_probabilities(&p2));
    let difference: Vec<f64> = f1.iter().zip(&f2).map(|(a, c)| a - c).collect();
    pmf_png(
        &out.join("reference_pmf.png"),
        &free_energy,
        b,
        "Alanine dipeptide PMF (umbrella sampling + MBAR)",
        "F / kT",
        false,
    )?;
    pmf_png(&out.join("halves_difference.png"), &difference, b, "PMF half 1 - half 2 (MBAR)", "dF / kT", true)?;

    let mut report = serde_json::json!({
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "estimator": "MBAR (binless: each window's bias at each sample), Newton with a line search",
        "settings": {"stride": args.stride, "bins": b, "bias_cutoff_kt": config.bias_cutoff_kt,
            "tolerance": config.tolerance, "bootstrap_replicates": args.bootstrap, "bootstrap_blocks_per_window": args.blocks,
            "seed": args.seed, "md_skip_steps": args.md_skip_steps},
        "inputs": inputs, "energy_evaluations": evaluations,
        "samples": states.iter().map(|s| s.samples.len()).sum::<usize>(),
        "mbar": {"newton_steps": solution.iterations, "max_relative_mismatch": solution.max_relative_mismatch},
        "halves_kld": halves_json,
        "basins": "beta_PII: phi < 0 outside alpha_R; alpha_R: phi < 0, -2.5 < psi < 1 rad; phi_positive: phi >= 0",
        "populations": populations_json(&populations, Some(&errors)),
        "bins_never_visited": p.iter().filter(|v| **v == 0.0).count(),
    });
    if !args.no_wham {
        report["binned_wham_same_samples"] = wham_populations(&states, b)?;
    }
    let mut checks = Vec::new();
    for dir in &args.check_md {
        let (mean, se, walkers, e) = md_check(dir, &system_xml, &args.system, args.md_skip_steps)?;
        let z: Vec<f64> =
            (0..mean.len()).map(|i| (populations[i] - mean[i]) / (se[i].powi(2) + errors[i].powi(2)).sqrt()).collect();
        checks.push(serde_json::json!({"folder": dir, "walkers": walkers, "evaluations": e,
            "populations": populations_json(&mean, Some(&se)),
            "z_reference_minus_md": z, "within_two_standard_errors": z.iter().all(|v| v.abs() <= 2.0)}));
    }
    report["md_check"] = serde_json::json!(checks);
    report["seconds"] = serde_json::json!(started.elapsed().as_secs_f64());
    let text = serde_json::to_string_pretty(&report)?;
    std::fs::write(out.join("report.json"), &text).with_context(|| format!("writing {}", out.display()))?;
    println!("{text}");
    Ok(())
}

/// Basin populations of binned WHAM on the same samples (the bias at bin centres), for comparison.
fn wham_populations(states: &[BiasedSamples], bins: usize) -> Result<serde_json::Value> {
    let wham = mbar::binned_wham(states, bins)?;
    let p = mbar::grid_region_populations(&wham.probabilities, bins, aldp::BASIN_NAMES.len(), aldp::basin_of)?;
    Ok(serde_json::json!({"converged": wham.converged, "populations_by_bin_centre": populations_json(&p, None)}))
}

/// Every `stride`-th record of the umbrella run in `source` as a run folder in `dir`.
fn export_samples(source: &Path, dir: &Path, stride: usize, system_xml: &str, system_path: &Path) -> Result<()> {
    if stride == 0 {
        bail!("--export-stride must be positive");
    }
    let run = CvRun::read(source)?;
    run.check_system(source, system_xml, system_path)?;
    if run.description["kind"] != "umbrella" {
        bail!("{} is not an umbrella run", source.display());
    }
    let frame = run.walkers * run.cvs;
    let kept: Vec<&[f32]> = run.values.chunks_exact(frame).skip(stride - 1).step_by(stride).collect();
    if kept.is_empty() {
        bail!("{}: fewer than {stride} records", source.display());
    }
    let mut bytes = Vec::with_capacity(kept.len() * frame * 4);
    for v in kept.iter().flat_map(|f| f.iter()) {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    let mut description = run.description.clone();
    description["frames"] = serde_json::json!(kept.len());
    description["steps_per_frame"] = serde_json::json!(run.steps_per_frame * stride as u64);
    description["exported_from"] = serde_json::json!({"folder": source, "frames": run.frames, "stride": stride});
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    cgflow::io::write_atomically(&dir.join(cgflow::io::cv_run::VALUES_FILE), &bytes)?;
    cgflow::io::write_atomically(
        &dir.join(cgflow::io::cv_run::DESCRIPTION_FILE),
        serde_json::to_string_pretty(&description)?.as_bytes(),
    )?;
    eprintln!("exported {} of {} records of {} windows to {}", kept.len(), run.frames, run.walkers, dir.display());
    Ok(())
}

/// A (phi, psi) heat map of values on the bins x bins grid, in degrees.
fn pmf_png(path: &Path, values: &[f64], bins: usize, title: &str, label: &str, diverging: bool) -> Result<()> {
    let map = cgflow::io::plot::HeatMap {
        values,
        nx: bins,
        ny: bins,
        x_range: (-180.0, 180.0),
        y_range: (-180.0, 180.0),
        x_label: "phi / degree",
        y_label: "psi / degree",
        title,
        colorbar_label: label,
        clip_max: Some(if diverging { 2.0 } else { 15.0 }),
        diverging,
    };
    Ok(cgflow::io::plot::heat_map_png(path, &map)?)
}
