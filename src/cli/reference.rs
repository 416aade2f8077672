//! `cgflow reference`: the binless (MBAR) reference PMF over (phi, psi) from the stored samples of
//! one or more umbrella runs (and, if asked, unbiased MD), with its two independent halves, basin
//! populations with block-bootstrap errors, the binned-WHAM estimate of the same samples beside it,
//! and a check of the populations against independent unbiased MD.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use clap::Args;
use rand::SeedableRng;

use crate::io::cv_run::CvRun;
use crate::md::mbar::{self, BiasedSamples, HarmonicBias2d, MbarConfig};
use crate::metrics::histogram::free_energy_from_probabilities;
use crate::metrics::ramachandran;
use crate::metrics::{halves_noise_floor, BinGrid};
use crate::units::kt_kj_per_mol;

/// Arguments of `cgflow reference`.
#[derive(Debug, Args)]
pub struct ReferenceArgs {
    /// Folder of a `cgflow umbrella` run (cv.f32 and cv.json); repeatable, all are combined.
    #[arg(long = "umbrella", value_name = "DIR", required_unless_present = "against")]
    umbrella: Vec<PathBuf>,
    /// Folder of an unbiased `cgflow md` run to include in the estimate (repeatable).
    #[arg(long = "md", value_name = "DIR")]
    md: Vec<PathBuf>,
    /// Folder of an independent unbiased `cgflow md` run whose basin populations are compared with
    /// the reference's (repeatable; not part of the estimate).
    #[arg(long = "check-md", value_name = "DIR")]
    check_md: Vec<PathBuf>,
    /// Check the --check-md runs against this reference folder (its report.json and
    /// reference_probabilities.npy) instead of estimating a reference from --umbrella runs.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["umbrella", "md", "export_samples"], requires = "check_md")]
    against: Option<PathBuf>,
    /// Steps of every MD walker left out at its start (equilibration from the start structure).
    #[arg(long, default_value_t = 100_000)]
    md_skip_steps: u64,
    /// The CV pair of MD runs that kept histograms of several pairs (`cgflow md --cg backbone`
    /// on a longer peptide) that matches the umbrella runs' two CVs, e.g. `2,3` for the second
    /// residue's (phi, psi) [default: 0,1]
    #[arg(long, value_name = "I,J", value_parser = super::parse_index_pair)]
    md_pair: Option<[usize; 2]>,
    /// The System the runs were made with (their fingerprints are checked).
    #[arg(long, value_name = "XML", default_value = "data/alanine_dipeptide/aldp_obc1.xml")]
    system: PathBuf,
    /// Output folder (not needed with --export-samples).
    #[arg(long, value_name = "DIR", required_unless_present_any = ["export_samples", "against"])]
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

/// Sub-grid points per bin and dimension with which a histogram run's counts enter MBAR
/// ([`BiasedSamples::binned`]).
const BIN_SUBDIVISIONS: usize = 3;

/// The states of one run folder and what they cost.
struct RunStates {
    /// One per walker (window), with its restraint in kT, or one binned unbiased state for an MD
    /// run that kept histograms.
    states: Vec<BiasedSamples>,
    /// Whether the run is unbiased MD.
    unbiased: bool,
    /// Energy evaluations the run cost.
    evaluations: f64,
    /// Frames of every walker left out at the start (none for umbrella windows).
    skipped_frames: u64,
    /// Simulated time between two of its samples as used, fs (for the weighting of draws per unit
    /// of simulated time).
    fs_per_sample: f64,
    /// Bins per dimension of a histogram run.
    histogram_bins: Option<usize>,
}

/// The states of one run folder, `skip_steps` of every MD walker left out and every `stride`-th
/// sample kept (see [`RunStates`]).
fn run_states(dir: &Path, system_xml: &str, system_path: &Path, stride: usize, md: MdReading) -> Result<RunStates> {
    if crate::io::cv_histograms::is_histogram_run(dir) {
        return histogram_run_state(dir, system_xml, system_path, md);
    }
    let skip_steps = md.skip_steps;
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
            Ok(BiasedSamples::new(bias, series.into_iter().skip(skip_frames).step_by(stride).collect()))
        })
        .collect::<Result<_>>()?;
    Ok(RunStates {
        states,
        unbiased: !umbrella,
        evaluations,
        skipped_frames: skip_frames as u64,
        fs_per_sample: (run.steps_per_frame * stride as u64) as f64 * step_fs(d),
        histogram_bins: None,
    })
}

/// The time step of a run's `cv.json`, fs (umbrella runs, which do not record it, use 1 fs).
fn step_fs(description: &serde_json::Value) -> f64 {
    description["step_fs"].as_f64().unwrap_or(1.0)
}

/// The (phi, psi) counts of an unbiased MD histogram run between consecutive marks, from the first
/// mark at or after `skip_steps` to the last.
struct HistogramStretches {
    run: crate::io::cv_histograms::CvHistogramRun,
    /// Bins per dimension.
    bins: usize,
    /// Frames of every walker left out (the first mark kept).
    skipped_frames: u64,
    /// Counts per stretch, `bins * bins` each.
    stretches: Vec<Vec<f64>>,
}

/// Reads the stretches of a histogram run of unbiased MD; errors on fewer than `at_least` of them
/// after the frames left out (`why` says what needs them).
fn histogram_stretches(
    dir: &Path,
    system_xml: &str,
    system_path: &Path,
    md: MdReading,
    at_least: usize,
    why: &str,
) -> Result<HistogramStretches> {
    let run = unbiased_histogram_run(dir, system_xml, system_path)?;
    let (pair, bins) = cv_pair(&run, dir, md.pair)?;
    let per_pair = bins * bins;
    let skip_frames = md.skip_steps.div_ceil(run.steps_per_frame);
    let kept: Vec<&(u64, Vec<f64>)> = run.marks.iter().filter(|(f, _)| *f >= skip_frames).collect();
    if kept.len() < at_least + 1 {
        bail!(
            "{}: {} frames, fewer than {} histogram marks at or after the {skip_frames} frames left out ({why})",
            dir.display(),
            run.frames,
            at_least + 1
        );
    }
    let stretches = kept
        .windows(2)
        .map(|w| {
            let (before, after) = (&w[0].1[pair * per_pair..][..per_pair], &w[1].1[pair * per_pair..][..per_pair]);
            after.iter().zip(before).map(|(a, b)| a - b).collect()
        })
        .collect();
    let skipped_frames = kept[0].0;
    Ok(HistogramStretches { run, bins, skipped_frames, stretches })
}

/// An unbiased MD run that kept cumulative (phi, psi) histograms, as one binned state whose blocks
/// are the stretches between marks (at least two, so that it has two halves and a bootstrap).
/// Returns what [`run_states`] does.
fn histogram_run_state(dir: &Path, system_xml: &str, system_path: &Path, md: MdReading) -> Result<RunStates> {
    let h = histogram_stretches(
        dir,
        system_xml,
        system_path,
        md,
        2,
        "an estimate needs two stretches between marks: one per half",
    )?;
    let state = BiasedSamples::binned(HarmonicBias2d::UNBIASED, h.bins, h.stretches, BIN_SUBDIVISIONS)
        .with_context(|| format!("{}: histograms", dir.display()))?;
    let run = &h.run;
    Ok(RunStates {
        states: vec![state],
        unbiased: true,
        evaluations: run.walkers as f64 * run.frames as f64 * run.steps_per_frame as f64,
        skipped_frames: h.skipped_frames,
        fs_per_sample: run.steps_per_frame as f64 * step_fs(&run.description),
        histogram_bins: Some(h.bins),
    })
}

/// Samples of the states given by their samples (not binned).
fn sampled_count(states: &[BiasedSamples]) -> usize {
    states.iter().filter(|s| s.count_blocks.is_empty()).map(|s| s.samples.len()).sum()
}

/// Draws of the binned states, as weighed in the estimate.
fn binned_count(states: &[BiasedSamples]) -> f64 {
    states.iter().filter(|s| !s.count_blocks.is_empty()).map(|s| s.total_count()).sum()
}

/// Reads a histogram run and checks that it is unbiased MD of this System at 300 K.
fn unbiased_histogram_run(
    dir: &Path,
    system_xml: &str,
    system_path: &Path,
) -> Result<crate::io::cv_histograms::CvHistogramRun> {
    let run = crate::io::cv_histograms::CvHistogramRun::read(dir)?;
    run.check_system(dir, system_xml, system_path)?;
    let d = &run.description;
    // `cgflow md` histogram runs carry no "kind"; anything that names another kind is refused.
    let kind = d["kind"].as_str().unwrap_or("md");
    let at_300_k = d["temperature_k"].as_f64().is_some_and(|t| (t - 300.0).abs() < 1e-9);
    if kind != "md" || !at_300_k {
        bail!("{}: not unbiased MD at 300 K (kind {kind}, temperature {} K)", dir.display(), d["temperature_k"]);
    }
    Ok(run)
}

/// How unbiased MD folders are read: the steps of every walker left out at the start, and the
/// CV pair (of a run that kept histograms) the estimate is of.
#[derive(Debug, Clone, Copy)]
struct MdReading {
    skip_steps: u64,
    pair: [usize; 2],
}

/// The position of the histogram of CVs `pair` among a histogram run's pairs, and its bins per
/// dimension.
fn cv_pair(run: &crate::io::cv_histograms::CvHistogramRun, dir: &Path, pair: [usize; 2]) -> Result<(usize, usize)> {
    let Some(k) = run.settings.pairs.iter().position(|p| *p == pair) else {
        bail!("{}: no histogram of CVs {} and {} (it keeps {:?})", dir.display(), pair[0], pair[1], run.settings.pairs);
    };
    Ok((k, run.settings.bins))
}

fn populations_json(values: &[f64], errors: Option<&[f64]>) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for (i, name) in ramachandran::BASIN_NAMES.iter().enumerate() {
        let mut entry = serde_json::json!({"population": values[i]});
        if let Some(e) = errors {
            entry["standard_error"] = serde_json::json!(if e[i].is_finite() { Some(e[i]) } else { None });
        }
        out.insert((*name).into(), entry);
    }
    serde_json::Value::Object(out)
}

/// The basin populations of one unbiased MD folder, block by block: its walkers for a run that
/// kept CV values, the stretches of time between histogram marks for one that kept histograms
/// (each pooled over the run's walkers).
struct MdBlocks {
    /// Per block, the fraction of its samples in each basin.
    populations: Vec<Vec<f64>>,
    /// Samples per block.
    sizes: Vec<f64>,
    walkers: usize,
    evaluations: f64,
    /// Frames of every walker left out at the start.
    skipped_frames: u64,
    /// Whether samples were assigned to basins by their bin's centre (histogram runs) or by
    /// their own value.
    by_bin_centre: bool,
    /// Bins per dimension of a histogram run.
    bins: Option<usize>,
}

impl MdBlocks {
    /// Mean and batch-means standard error per basin, over `blocks` pooled.
    fn populations(blocks: &[&MdBlocks]) -> Result<(Vec<f64>, Vec<f64>)> {
        let sizes: Vec<f64> = blocks.iter().flat_map(|b| b.sizes.iter().copied()).collect();
        let (mut mean, mut se) = (Vec::new(), Vec::new());
        for basin in 0..ramachandran::BASIN_NAMES.len() {
            let values: Vec<f64> = blocks.iter().flat_map(|b| b.populations.iter().map(|p| p[basin])).collect();
            let m = crate::metrics::batch_means::weighted_batch_means(&values, &sizes)?;
            mean.push(m.mean);
            se.push(m.standard_error);
        }
        Ok((mean, se))
    }
}

/// The blocks of one unbiased MD folder, `skip_steps` of every walker left out (for a histogram
/// run: up to the first mark at or after them).
fn md_blocks(dir: &Path, system_xml: &str, system_path: &Path, md: MdReading) -> Result<MdBlocks> {
    if !crate::io::cv_histograms::is_histogram_run(dir) {
        let RunStates { states, evaluations, skipped_frames, .. } = run_states(dir, system_xml, system_path, 1, md)?;
        if states.iter().any(|s| s.bias != HarmonicBias2d::UNBIASED) {
            bail!("{}: an umbrella run, not unbiased MD", dir.display());
        }
        return Ok(MdBlocks {
            populations: mbar::series_region_fractions(
                &states,
                ramachandran::BASIN_NAMES.len(),
                ramachandran::basin_of,
            ),
            sizes: states.iter().map(|s| s.samples.len() as f64).collect(),
            walkers: states.len(),
            evaluations,
            skipped_frames,
            by_bin_centre: false,
            bins: None,
        });
    }
    let h = histogram_stretches(dir, system_xml, system_path, md, 1, "the check needs one stretch")?;
    let (mut populations, mut sizes) = (Vec::new(), Vec::new());
    for counts in &h.stretches {
        let total: f64 = counts.iter().sum();
        let p: Vec<f64> = counts.iter().map(|c| c / total).collect();
        populations.push(mbar::grid_region_populations(
            &p,
            h.bins,
            ramachandran::BASIN_NAMES.len(),
            ramachandran::basin_of,
        )?);
        sizes.push(total);
    }
    let run = &h.run;
    Ok(MdBlocks {
        populations,
        sizes,
        walkers: run.walkers,
        evaluations: run.walkers as f64 * run.frames as f64 * run.steps_per_frame as f64,
        skipped_frames: h.skipped_frames,
        by_bin_centre: true,
        bins: Some(h.bins),
    })
}

/// The reference's populations as an MD folder's are counted: by bin centre on the MD grid for
/// histogram runs (from the reference's probability grid, which must have the same bins), else
/// the reference's own.
fn reference_populations_like(
    md: &MdBlocks,
    own: &[f64],
    probabilities: &[f64],
    bins: usize,
    dir: &Path,
) -> Result<Vec<f64>> {
    match md.bins {
        None => Ok(own.to_vec()),
        Some(b) if b == bins => Ok(mbar::grid_region_populations(
            probabilities,
            bins,
            ramachandran::BASIN_NAMES.len(),
            ramachandran::basin_of,
        )?),
        Some(b) => bail!("{}: a {b} x {b} histogram, the reference is on {bins} x {bins} bins", dir.display()),
    }
}

/// The check of one or more MD folders against reference populations `(values, errors)` whose
/// probability grid is `probabilities` (bins x bins): each folder alone, and all pooled.
fn md_checks(
    dirs: &[PathBuf],
    reference: (&[f64], &[f64]),
    probabilities: &[f64],
    bins: usize,
    system_xml: &str,
    system_path: &Path,
    md: MdReading,
) -> Result<serde_json::Value> {
    let blocks: Vec<MdBlocks> =
        dirs.iter().map(|d| md_blocks(d, system_xml, system_path, md)).collect::<Result<_>>()?;
    let compare = |group: &[&MdBlocks], origin: &Path| -> Result<serde_json::Value> {
        let (mean, se) = MdBlocks::populations(group)?;
        let own = reference_populations_like(group[0], reference.0, probabilities, bins, origin)?;
        let z: Vec<f64> =
            (0..mean.len()).map(|i| (own[i] - mean[i]) / (se[i].powi(2) + reference.1[i].powi(2)).sqrt()).collect();
        Ok(serde_json::json!({
            "walkers": group.iter().map(|b| b.walkers).sum::<usize>(),
            "evaluations": group.iter().map(|b| b.evaluations).sum::<f64>(),
            "frames_left_out_per_walker": group.iter().map(|b| b.skipped_frames).collect::<Vec<_>>(),
            "blocks": group.iter().map(|b| b.sizes.len()).sum::<usize>(),
            "basins_by": if group[0].by_bin_centre { "bin centre" } else { "sample" },
            "populations": populations_json(&mean, Some(&se)),
            "reference_populations_counted_the_same_way": populations_json(&own, Some(reference.1)),
            "z_reference_minus_md": z,
            "within_two_standard_errors": z.iter().all(|v| v.abs() <= 2.0)}))
    };
    let mut runs = Vec::new();
    for (dir, b) in dirs.iter().zip(&blocks) {
        let mut entry = compare(&[b], dir)?;
        entry["folder"] = serde_json::json!(dir);
        runs.push(entry);
    }
    let mut out = serde_json::json!({
        "standard_errors": "batch means: walkers as blocks for runs that kept CV values, the stretches between histogram marks (pooled over walkers) for runs that kept histograms",
        "runs": runs});
    if blocks.len() > 1 {
        if blocks.iter().any(|b| b.by_bin_centre != blocks[0].by_bin_centre) {
            bail!("--check-md: runs that kept CV values and runs that kept histograms count basins differently; check them separately");
        }
        let all: Vec<&MdBlocks> = blocks.iter().collect();
        let mut pooled = compare(&all, &dirs[0])?;
        // The runs' own spread, a check on the blocks' error with as many degrees of freedom as runs.
        let per_run: Vec<(Vec<f64>, Vec<f64>)> =
            blocks.iter().map(|b| MdBlocks::populations(&[b])).collect::<Result<_>>()?;
        let sizes: Vec<f64> = blocks.iter().map(|b| b.sizes.iter().sum()).collect();
        let between: Vec<f64> = (0..ramachandran::BASIN_NAMES.len())
            .map(|i| {
                let values: Vec<f64> = per_run.iter().map(|r| r.0[i]).collect();
                Ok(crate::metrics::batch_means::weighted_batch_means(&values, &sizes)?.standard_error)
            })
            .collect::<Result<_>>()?;
        pooled["standard_error_between_runs"] = serde_json::Value::Object(
            ramachandran::BASIN_NAMES
                .iter()
                .zip(&between)
                .map(|(n, e)| (n.to_string(), serde_json::json!(e)))
                .collect(),
        );
        out["pooled"] = pooled;
    }
    Ok(out)
}

impl ReferenceArgs {
    /// The reference of one umbrella run folder, written into it, with the default settings.
    pub fn for_umbrella_run(dir: &Path, system: &Path, bins: usize) -> ReferenceArgs {
        ReferenceArgs {
            umbrella: vec![dir.to_path_buf()],
            md: vec![],
            check_md: vec![],
            against: None,
            md_skip_steps: 100_000,
            md_pair: None,
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

/// How the MD folders of `args` are read.
fn md_reading(args: &ReferenceArgs) -> MdReading {
    MdReading { skip_steps: args.md_skip_steps, pair: args.md_pair.unwrap_or([0, 1]) }
}

/// Errors unless every umbrella folder restrains the same two dihedrals and every MD folder's CV
/// pair (`--md-pair`, also of the `--check-md` folders) is made of them, so that all the states
/// of one estimate, and its check, describe one pair. A dihedral and its reverse are the same
/// angle; folders whose `cv.json` names no CVs (none of cgflow's) are not checked.
fn check_same_cvs(args: &ReferenceArgs, md: MdReading) -> Result<()> {
    let cvs_of = |dir: &Path| -> Result<Vec<Vec<u64>>> {
        let path = dir.join(crate::io::cv_run::DESCRIPTION_FILE);
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let d: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{}", path.display()))?;
        let cvs = d["cvs"].as_array().cloned().unwrap_or_default();
        Ok(cvs
            .iter()
            .map(|cv| {
                let mut atoms: Vec<u64> = cv
                    .as_array()
                    .map(|a| a.iter().filter_map(|v| v.as_f64()).map(|v| v as u64).collect())
                    .unwrap_or_default();
                if atoms.first() > atoms.last() {
                    atoms.reverse();
                }
                atoms
            })
            .collect())
    };
    let Some(first) = args.umbrella.first() else { return Ok(()) };
    let umbrella = cvs_of(first)?;
    if umbrella.is_empty() {
        return Ok(());
    }
    for dir in &args.umbrella[1..] {
        let cvs = cvs_of(dir)?;
        if !cvs.is_empty() && cvs != umbrella {
            bail!("{}: restrains {cvs:?}, {} restrains {umbrella:?}", dir.display(), first.display());
        }
    }
    for dir in args.md.iter().chain(&args.check_md) {
        let cvs = cvs_of(dir)?;
        if cvs.is_empty() {
            continue;
        }
        let pair: Vec<Vec<u64>> = md.pair.iter().filter_map(|&i| cvs.get(i).cloned()).collect();
        if pair != umbrella {
            bail!(
                "{}: its CVs {} and {} ({:?}) are not the dihedrals {} restrains ({umbrella:?}); choose the pair with \
                 --md-pair",
                dir.display(),
                md.pair[0],
                md.pair[1],
                pair,
                first.display()
            );
        }
    }
    Ok(())
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
    if let Some(reference) = &args.against {
        return check_against(reference, &args, &system_xml);
    }
    let out = args.out.as_deref().context("--out is needed")?;
    check_same_cvs(&args, md_reading(&args))?;
    let started = Instant::now();
    let mut states = Vec::new();
    let mut evaluations = 0.0;
    let mut inputs = Vec::new();
    let folders = args.umbrella.iter().map(|d| (d, true)).chain(args.md.iter().map(|d| (d, false)));
    let mut runs = Vec::new();
    for (dir, is_umbrella) in folders {
        let run = run_states(dir, &system_xml, &args.system, args.stride, md_reading(&args))?;
        if is_umbrella != run.states.iter().all(|st| st.bias != HarmonicBias2d::UNBIASED) {
            bail!(
                "{}: passed as {} but holds another kind of run",
                dir.display(),
                if is_umbrella { "--umbrella" } else { "--md" }
            );
        }
        if let Some(md_bins) = run.histogram_bins {
            if md_bins % args.bins != 0 {
                bail!(
                    "{}: a {md_bins} x {md_bins} histogram does not nest in the {b} x {b} grid of --bins {b}: use a \
                     --bins that divides {md_bins}",
                    dir.display(),
                    b = args.bins
                );
            }
        }
        runs.push((dir, run));
    }
    // Draws are weighed per unit of simulated time: a folder's samples count as many samples of the
    // most finely recorded umbrella folder (of any folder, without umbrella runs) as fit into the
    // time between two of them (MD frames every 10 fs beside umbrella samples every 50 fs count 1/5
    // each), so that a finely recorded run does not outweigh the others by its record interval
    // alone. MBAR is unchanged by a common factor on every count, so only the ratios matter.
    let finest = |umbrella_only: bool| {
        runs.iter()
            .filter(|(_, r)| !(umbrella_only && r.unbiased))
            .map(|(_, r)| r.fs_per_sample)
            .fold(f64::INFINITY, f64::min)
    };
    let unit_fs = if finest(true).is_finite() { finest(true) } else { finest(false) };
    for (dir, run) in runs {
        let count_scale = run.fs_per_sample / unit_fs;
        let s = if count_scale == 1.0 {
            run.states
        } else {
            run.states.into_iter().map(|st| st.with_counts_scaled(count_scale)).collect::<crate::error::Result<_>>()?
        };
        inputs.push(serde_json::json!({"folder": dir, "states": s.len(),
            "samples": sampled_count(&s), "binned_frames": binned_count(&s) / count_scale,
            "frames_left_out_per_walker": run.skipped_frames, "evaluations": run.evaluations,
            "fs_per_sample": run.fs_per_sample, "count_scale": count_scale}));
        evaluations += run.evaluations;
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
        ramachandran::BASIN_NAMES.len(),
        ramachandran::basin_of,
        args.bootstrap,
        args.blocks,
        &mut rng,
    )?;
    let [first, second] = mbar::split_halves(&states);
    // The full solution starts each half's solve where the half keeps every state.
    let start = |half: &[BiasedSamples]| (half.len() == states.len()).then_some(&solution.free_energies_kt[..]);
    let (_, p1) = mbar::dihedral_probabilities(&first, args.bins, &config, start(&first))?;
    let (_, p2) = mbar::dihedral_probabilities(&second, args.bins, &config, start(&second))?;
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
    crate::io::npy::write_npy(&out.join("reference_probabilities.npy"), &[b, b], &p)?;
    crate::io::npy::write_npy(&out.join("reference_pmf_kt.npy"), &[b, b], &free_energy)?;
    crate::io::npy::write_npy(&out.join("half1_probabilities.npy"), &[b, b], &p1)?;
    crate::io::npy::write_npy(&out.join("half2_probabilities.npy"), &[b, b], &p2)?;
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
        "estimator": "MBAR (each window's bias at each sample; MD histograms on a sub-grid of each bin), Newton with a line search",
        "settings": {"stride": args.stride, "bins": b, "bias_cutoff_kt": config.bias_cutoff_kt,
            "tolerance": config.tolerance, "bootstrap_replicates": args.bootstrap, "bootstrap_blocks_per_window": args.blocks,
            "seed": args.seed, "md_skip_steps": args.md_skip_steps},
        "inputs": inputs, "energy_evaluations": evaluations,
        "samples": sampled_count(&states),
        "binned_md_frames_weighted": binned_count(&states),
        "md_histograms": format!("unbiased MD runs that kept histograms enter as binned states: each bin's counts on a {BIN_SUBDIVISIONS} x {BIN_SUBDIVISIONS} sub-grid inside it; MD draws weighed per unit of simulated time like the umbrella samples (count_scale)"),
        "mbar": {"newton_steps": solution.iterations, "max_relative_mismatch": solution.max_relative_mismatch},
        "halves_kld": halves_json,
        "basins": "beta_PII: phi < 0 outside alpha_R; alpha_R: phi < 0, -2.5 < psi < 1 rad; phi_positive: phi >= 0",
        "populations": populations_json(&populations, Some(&errors)),
        "bins_never_visited": p.iter().filter(|v| **v == 0.0).count(),
    });
    if !args.no_wham {
        report["binned_wham_same_samples"] = wham_populations(&states, b)?;
    }
    if !args.check_md.is_empty() {
        report["md_check"] =
            md_checks(&args.check_md, (&populations, &errors), &p, b, &system_xml, &args.system, md_reading(&args))?;
    }
    report["seconds"] = serde_json::json!(started.elapsed().as_secs_f64());
    let text = serde_json::to_string_pretty(&report)?;
    std::fs::write(out.join("report.json"), &text).with_context(|| format!("writing {}", out.display()))?;
    println!("{text}");
    Ok(())
}

/// `--against`: the --check-md runs against the populations and probability grid of a reference
/// folder written by this command.
fn check_against(reference: &Path, args: &ReferenceArgs, system_xml: &str) -> Result<()> {
    let report_path = reference.join("report.json");
    let text = std::fs::read_to_string(&report_path).with_context(|| format!("reading {}", report_path.display()))?;
    let report: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", report_path.display()))?;
    let (mut values, mut errors) = (Vec::new(), Vec::new());
    for name in ramachandran::BASIN_NAMES {
        let entry = &report["populations"][name];
        let (Some(v), Some(e)) = (entry["population"].as_f64(), entry["standard_error"].as_f64()) else {
            bail!("{}: no population with a standard error for {name}", report_path.display());
        };
        values.push(v);
        errors.push(e);
    }
    let grid_path = reference.join("reference_probabilities.npy");
    let grid = crate::io::npy::read_npy(&grid_path)?;
    let [b, b2] = grid.shape[..] else {
        bail!("{}: shape {:?}, not a square grid", grid_path.display(), grid.shape);
    };
    if b != b2 || b == 0 {
        bail!("{}: shape {:?}, not a square grid", grid_path.display(), grid.shape);
    }
    let mut out =
        md_checks(&args.check_md, (&values, &errors), &grid.data, b, system_xml, &args.system, md_reading(args))?;
    out["reference"] = serde_json::json!(reference);
    out["command"] = serde_json::json!(std::env::args().collect::<Vec<_>>().join(" "));
    out["md_skip_steps"] = serde_json::json!(args.md_skip_steps);
    let text = serde_json::to_string_pretty(&out)?;
    match &args.out {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            crate::io::write_atomically(&dir.join("md_check.json"), text.as_bytes())?;
            print!("{}", md_check_table(&out));
            eprintln!("wrote {}", dir.join("md_check.json").display());
        }
        None => println!("{text}"),
    }
    Ok(())
}

/// The MD check as a table: per run and pooled, each basin's MD population beside the reference's
/// (both in %, with standard errors) and their z.
fn md_check_table(check: &serde_json::Value) -> String {
    let percent = |p: &serde_json::Value| {
        format!(
            "{:.2} +- {:.2}",
            100.0 * p["population"].as_f64().unwrap_or(f64::NAN),
            100.0 * p["standard_error"].as_f64().unwrap_or(f64::NAN)
        )
    };
    let mut rows: Vec<(String, &serde_json::Value)> = Vec::new();
    for run in check["runs"].as_array().into_iter().flatten() {
        rows.push((run["folder"].as_str().unwrap_or("?").to_string(), run));
    }
    if !check["pooled"].is_null() {
        rows.push(("pooled".to_string(), &check["pooled"]));
    }
    let mut table = String::new();
    for (i, name) in ramachandran::BASIN_NAMES.iter().enumerate() {
        table.push_str(&format!("{name} (%): MD | reference | z (reference - MD)\n"));
        for (label, row) in &rows {
            table.push_str(&format!(
                "  {label:<40} {:>9.2e} evaluations  {:>16}  {:>16}  {:+.2}\n",
                row["evaluations"].as_f64().unwrap_or(f64::NAN),
                percent(&row["populations"][*name]),
                percent(&row["reference_populations_counted_the_same_way"][*name]),
                row["z_reference_minus_md"][i].as_f64().unwrap_or(f64::NAN)
            ));
        }
    }
    let verdict = |row: &serde_json::Value| row["within_two_standard_errors"].as_bool().unwrap_or(false);
    let agree = rows.iter().filter(|(_, r)| verdict(r)).count();
    table.push_str(&format!("within two standard errors in every basin: {agree} of {} rows\n", rows.len()));
    table
}

/// Basin populations of binned WHAM on the same samples (the bias at bin centres), for comparison.
fn wham_populations(states: &[BiasedSamples], bins: usize) -> Result<serde_json::Value> {
    let wham = mbar::binned_wham(states, bins)?;
    let p = mbar::grid_region_populations(
        &wham.probabilities,
        bins,
        ramachandran::BASIN_NAMES.len(),
        ramachandran::basin_of,
    )?;
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
    crate::io::write_atomically(&dir.join(crate::io::cv_run::VALUES_FILE), &bytes)?;
    crate::io::write_atomically(
        &dir.join(crate::io::cv_run::DESCRIPTION_FILE),
        serde_json::to_string_pretty(&description)?.as_bytes(),
    )?;
    eprintln!("exported {} of {} records of {} windows to {}", kept.len(), run.frames, run.walkers, dir.display());
    Ok(())
}

/// A (phi, psi) heat map of values on the bins x bins grid, in degrees.
fn pmf_png(path: &Path, values: &[f64], bins: usize, title: &str, label: &str, diverging: bool) -> Result<()> {
    let map = crate::io::plot::HeatMap {
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
    Ok(crate::io::plot::heat_map_png(path, &map)?)
}
