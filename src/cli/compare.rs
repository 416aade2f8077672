//! `cgflow compare`: cost curves against a reference distribution (KL divergence against energy
//! evaluations) and speedups at equal KLD.
//!
//! Two baselines: the MD run of a `cgflow md` folder against a (phi, psi) reference (`--md`,
//! `--reference`), averaged over independent groups of walkers, or Metropolis Monte Carlo on
//! Müller-Brown against the exact PMF (`--muller-brown`), averaged over runs. Each empty-bin rule
//! (`--empty-bins`, repeatable) gives its own curve; `--method-points` reads a method's (evaluations,
//! KLD) points and prints its speedup over the baseline under every rule. A third baseline is the
//! curves saved by an earlier `--out` (`--baseline-curves`): a method can then be compared with a
//! committed MD curve without the MD run's files.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use clap::Args;

use crate::energy::toy::MullerBrown;
use crate::io::method_points::{read_method_points, MethodPoint};
use crate::md::mc_baseline::{muller_brown_mc_curves, muller_brown_reference, MbMcConfig};
use crate::metrics::cost_curve::{
    kld_at, log_spaced_frames, md_cost_curve, mean_curve, pooled_histogram_cost_curve, resolves, ruler_floor,
    speedup_at_equal_kld, standard_error_curve, stitch_curves, CostPoint, HistogramMarks, SpeedupEstimate,
    WalkerSamples, RESOLUTION_FACTOR,
};
use crate::metrics::{halves_noise_floor, BinGrid, EmptyBinRule, HalvesNoiseFloor, KlReference};

/// Arguments of `cgflow compare`.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Reference probabilities on the bins x bins (phi, psi) grid (.npy), e.g. from `cgflow umbrella`.
    #[arg(long, value_name = "NPY", required_unless_present_any = ["muller_brown", "baseline_curves"])]
    reference: Option<PathBuf>,
    /// Output folder of a `cgflow md` run of alanine dipeptide (cv.f32 and cv.json). Repeatable:
    /// independent realisations (distinct seeds) are pooled into one run of all their walkers,
    /// cut to the frames every one has; `--groups R,1` with R realisations of equal size then gives
    /// each realisation's curve (their spread is the band of the plot) and the pooled curve.
    #[arg(long, value_name = "DIR", required_unless_present_any = ["muller_brown", "baseline_curves"])]
    md: Vec<PathBuf>,
    /// The System the run must have used; a CV file from another system is refused.
    #[arg(long, value_name = "XML")]
    system: Option<PathBuf>,
    /// The pair of CVs (0-based, in the order the MD run recorded them) that --reference is the
    /// 2D marginal of, for MD runs that kept histograms of several pairs (a peptide's (phi_i,
    /// psi_i), e.g. `2,3` for the second residue's) [default: 0,1]
    #[arg(long, value_name = "I,J", value_parser = super::parse_index_pair)]
    cv_pair: Option<[usize; 2]>,
    /// Split the walkers into this many independent runs and average their curves; a list (e.g.
    /// 8,1) also gives the curve of each count, and the stitched curve takes each range of
    /// evaluations from the most groups that reach it.
    #[arg(long, value_delimiter = ',', default_values_t = vec![4])]
    groups: Vec<usize>,
    /// Empty-bin rule for model histograms (repeatable): none, pseudo-mass:M (a uniform probability
    /// mass M mixed into the normalised histogram), smooth:SIGMA[:FLOOR] (Gaussian kernel of SIGMA
    /// bins, periodic on (phi, psi), then a uniform floor of total probability FLOOR, default 1e-4).
    /// No rule depends on the number of recorded frames. Default: pseudo-mass:1e-4,smooth:1,smooth:2;
    /// with --baseline-curves, every rule the file holds (a rule given must be among them).
    #[arg(long = "empty-bins", value_name = "RULE", value_delimiter = ',')]
    empty_bins: Vec<String>,
    /// Compare at the resolution of a Gaussian kernel of this many bins: the reference and every
    /// model distribution are smoothed with it (the reference's noise floor is measured the same way).
    /// 0 compares on the raw grid, where a pseudo-mass curve depends on the MD record interval (it
    /// counts empty bins); from 1 bin on, every shipped rule reads the same curve at record intervals
    /// of 1 and 10 steps.
    #[arg(long, default_value_t = 1.0, value_name = "SIGMA")]
    smooth_reference: f64,
    /// With --smooth-reference: smooth the reference only, not the model distributions (this biases
    /// the KLD by about KL(p || S p)).
    #[arg(long)]
    smooth_reference_only: bool,
    /// The reference's two independent halves (.npy), for its noise floor. Default: the files
    /// half1_probabilities.npy and half2_probabilities.npy next to --reference, when they exist.
    #[arg(long, value_delimiter = ',', value_name = "NPY,NPY")]
    halves: Vec<PathBuf>,
    /// Points per decade of evaluations.
    #[arg(long, default_value_t = 10)]
    per_decade: usize,
    /// Evaluation counts to report the KLD at (default 1e6,1e7,1e8; 1e4,1e5,1e6 with --muller-brown).
    #[arg(long, value_delimiter = ',', value_name = "E")]
    milestones: Vec<f64>,
    /// KLD levels at which to report the evaluations the baseline needs (its first crossing,
    /// log-log interpolated): how much a speedup at that KLD depends on the empty-bin rule.
    #[arg(long, value_delimiter = ',', value_name = "KLD", default_values_t = vec![0.1, 0.03, 0.01, 0.003])]
    kld_levels: Vec<f64>,
    /// A method's (evaluations, KLD) points: CSV (two columns, optional header, # comments) or
    /// JSON (an array of [evaluations, kld] pairs or of objects with "evaluations" and "kld", or
    /// an object holding such an array under "log", "points" or "iterations"). Prints the speedup
    /// over the baseline at each point under every rule.
    #[arg(long, value_name = "FILE")]
    method_points: Option<PathBuf>,
    /// A method's PMF in kT on the reference's grid (.npy, as `cgflow al` writes pmf_kt.npy) and
    /// the energy evaluations it cost (and optionally its wall seconds), PMF:EVALUATIONS[:WALL_S]
    /// (repeatable): its KLD to the reference is computed here, at this comparison's resolution,
    /// and it joins the method's points. The way to re-read a committed run on a new reference.
    #[arg(long = "method-pmf", value_name = "NPY:EVALUATIONS[:WALL_S]")]
    method_pmfs: Vec<String>,
    /// Name of the method in the output and plot.
    #[arg(long, default_value = "method")]
    method_label: String,
    /// MD throughput on the machine the method ran on, energy evaluations (walker-steps) per second,
    /// measured in the same session: gives each method point with a wall time its wall-clock
    /// speedup (MD's evaluations to the same KLD at this rate, over the method's wall time).
    #[arg(long, value_name = "PER_S")]
    md_throughput: Option<f64>,
    /// Also plot the curves (log-log) to this PNG.
    #[arg(long, value_name = "PNG")]
    plot: Option<PathBuf>,
    /// Write the curves as JSON here.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Baseline: Metropolis Monte Carlo on Müller-Brown against the exact PMF over s = x1 - x2
    /// (100 bins on [-2.5, 1.1], quadrature) instead of an MD run.
    #[arg(long, conflicts_with_all = ["reference", "md", "system"])]
    muller_brown: bool,
    /// Baseline: the curves of an earlier `cgflow compare --out` (any baseline kind), read back
    /// instead of recomputed; KLDs, standard errors and the end of the run come from the file.
    #[arg(
        long,
        value_name = "JSON",
        conflicts_with_all = [
            "reference", "md", "system", "muller_brown", "halves", "smooth_reference", "smooth_reference_only",
            "groups", "per_decade"
        ]
    )]
    baseline_curves: Option<PathBuf>,
    /// Müller-Brown: independent runs (averaged).
    #[arg(long, default_value_t = 8)]
    mb_runs: usize,
    /// Müller-Brown: chains per run.
    #[arg(long, default_value_t = 16)]
    mb_chains: usize,
    /// Müller-Brown: proposals per chain.
    #[arg(long, default_value_t = 62_500)]
    mb_steps: usize,
    /// Müller-Brown: proposal step size (standard deviation in x1 and x2).
    #[arg(long, default_value_t = 0.1)]
    mb_step_size: f64,
    /// Müller-Brown: start of every chain, X1,X2 (default: the global minimum).
    #[arg(long, value_delimiter = ',', value_name = "X1,X2", default_values_t = vec![-0.558, 1.442])]
    mb_start: Vec<f64>,
    /// Müller-Brown: seed of run 0 (run r uses seed + r).
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// Plot titles of the two baseline kinds.
const MD_TITLE: &str = "alanine dipeptide: KLD to the reference vs energy evaluations";
const MB_TITLE: &str = "Müller-Brown Metropolis: KLD to the exact PMF vs energy evaluations";

/// (label, mean curve, individual curves) of one group count or run set.
type CurvePart = (String, Vec<CostPoint>, Vec<Vec<CostPoint>>);

/// A baseline curve under one rule: the stitched curve and what it was made of.
struct RuleCurves {
    rule: EmptyBinRule,
    /// The rule's own bias: the KLD of the reference itself under it.
    bias: f64,
    /// One entry per group count or run set.
    parts: Vec<CurvePart>,
    stitched: Vec<CostPoint>,
}

/// Runs `cgflow compare`.
pub fn run(args: CompareArgs) -> Result<()> {
    let rules = args
        .empty_bins
        .iter()
        .map(|r| r.parse::<EmptyBinRule>().map_err(anyhow::Error::from))
        .collect::<Result<Vec<_>>>()?;
    if args.per_decade == 0 {
        bail!("--per-decade must be positive");
    }
    if let Some(bad) = args.kld_levels.iter().chain(&args.milestones).find(|x| !(x.is_finite() && **x > 0.0)) {
        bail!("--kld-levels and --milestones must be finite and positive, got {bad}");
    }
    if let Some(t) = args.md_throughput.filter(|t| !(t.is_finite() && *t > 0.0)) {
        bail!("--md-throughput must be finite and positive, got {t}");
    }
    let mut method_with_wall = args.method_points.as_deref().map(read_method_points).transpose()?;
    if !args.method_pmfs.is_empty() {
        let points = pmf_points(&args)?;
        method_with_wall.get_or_insert_with(Vec::new).extend(points);
    }
    let method: Option<Vec<CostPoint>> = method_with_wall.as_ref().map(|m| m.iter().map(|p| p.point).collect());
    let baseline = match &args.baseline_curves {
        Some(path) => saved_baseline(path, &rules)?,
        None => {
            let rules = if rules.is_empty() { EmptyBinRule::shipped() } else { rules };
            if args.muller_brown {
                muller_brown_baseline(&args, &rules)?
            } else {
                md_baseline(&args, &rules)?
            }
        }
    };
    let default_milestones = if args.muller_brown { vec![1e4, 1e5, 1e6] } else { vec![1e6, 1e7, 1e8] };
    let milestones = if args.milestones.is_empty() { default_milestones } else { args.milestones.clone() };

    println!("{}", baseline.header.join("\n"));
    let mut rule_json = Vec::new();
    for curves in &baseline.rules {
        println!("\n## empty bins: {}", curves.rule);
        let bias = curves.bias;
        if bias > 0.0 {
            println!("# this rule's own bias (KLD of the reference itself under it): {bias:.3e}");
        }
        println!("{:>16} {:>12}   (stitched: {})", "evaluations", "KLD", baseline.stitch_note);
        for p in &curves.stitched {
            println!("{:>16.0} {:>12.6}", p.evaluations, p.kld);
        }
        let mut milestone_json = Vec::new();
        for &e in &milestones {
            let kld = kld_at(&curves.stitched, e)?;
            // Every curve that reaches e, with the standard error over its groups or runs.
            let mut by_part = Vec::new();
            for (label, mean, each) in &curves.parts {
                if let Some(k) = kld_at(mean, e)? {
                    let sem = if each.len() > 1 { kld_at(&standard_error_curve(each)?, e)? } else { None };
                    by_part.push((label.clone(), k, sem));
                }
            }
            let text = |(label, k, sem): &(String, f64, Option<f64>)| match sem {
                Some(sem) => format!("{k:.6} +- {sem:.6} ({label})"),
                None => format!("{k:.6} ({label})"),
            };
            match (kld, by_part.split_first()) {
                (Some(_), Some((first, rest))) => {
                    let others: Vec<String> = rest.iter().map(text).collect();
                    let also = if others.is_empty() { String::new() } else { format!("; also {}", others.join(", ")) };
                    println!("KLD at {e:.0e} evaluations: {}{also}", text(first));
                }
                _ => println!("KLD at {e:.0e} evaluations: not within the curve (not extrapolated)"),
            }
            milestone_json.push(serde_json::json!({
                "evaluations": e, "kld": kld, "from": by_part.first().map(|p| p.0.clone()),
                "standard_error": by_part.first().and_then(|p| p.2),
                "by_curve": by_part.iter().map(|(label, k, sem)| serde_json::json!({
                    "curve": label, "kld": k, "standard_error": sem})).collect::<Vec<_>>(),
            }));
        }
        if let Some(end) = &baseline.end_of_run {
            let last = curves.stitched.last().context("empty curve")?;
            println!(
                "end of run: {:.6e} evaluations made, {:.6e} of them histogrammed: KLD {:.6}",
                end.evaluations_made, last.evaluations, last.kld
            );
        }
        let mut levels_json = Vec::new();
        for &level in &args.kld_levels {
            let reach = speedup_at_equal_kld(&curves.stitched, CostPoint { evaluations: 1.0, kld: level })?;
            let (evaluations, text) = match reach {
                SpeedupEstimate::Interpolated { baseline_evaluations, .. } => {
                    (Some(baseline_evaluations), format!("{baseline_evaluations:.3e} evaluations"))
                }
                SpeedupEstimate::BeyondBaseline { baseline_lowest_kld, baseline_last_evaluations, .. } => (
                    None,
                    format!("not within {baseline_last_evaluations:.3e} evaluations (lowest {baseline_lowest_kld:.4})"),
                ),
                SpeedupEstimate::BeforeBaseline { baseline_first_evaluations, .. } => {
                    (None, format!("already at its first point ({baseline_first_evaluations:.3e} evaluations)"))
                }
            };
            println!("{} reaches KLD {level}: {text}", baseline.name);
            levels_json.push(serde_json::json!({"kld": level, "evaluations": evaluations, "text": text}));
        }
        let mut speedup_json = Vec::new();
        if let Some(points) = &method {
            println!("speedup of {} over the baseline at equal KLD ({}):", args.method_label, curves.rule);
            for p in points {
                let s = speedup_at_equal_kld(&curves.stitched, *p)?;
                println!("  {:>14.4e} evaluations, KLD {:>10.6}: {s}", p.evaluations, p.kld);
                speedup_json.push(speedup_to_json(p, &s));
            }
        }
        rule_json.push(serde_json::json!({
            "rule": curves.rule.to_string(),
            "rule_bias": finite_or_null(bias),
            "stitched": pairs(&curves.stitched),
            "parts": curves.parts.iter().map(|(label, mean, each)| serde_json::json!({
                "label": label, "mean": pairs(mean), "curves": each.iter().map(|c| pairs(c)).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "band": spread_band(&curves.parts).map(|b| serde_json::json!({
                "of": b.of, "evaluations": b.evaluations, "lowest": b.lowest, "highest": b.highest})),
            "milestones": milestone_json,
            "end_of_run": baseline.end_of_run.as_ref().map(|_| curves.stitched.last().map(|p| serde_json::json!({
                "evaluations_histogrammed": p.evaluations, "kld": p.kld}))),
            "evaluations_to_reach": levels_json,
            "speedups": speedup_json,
        }));
    }
    let summary = match &method_with_wall {
        Some(points) => summary(&baseline, points, args.md_throughput, &args.method_label)?,
        None => serde_json::Value::Null,
    };
    if let Some(png) = &args.plot {
        plot(png, &baseline, method.as_deref(), &args.method_label)?;
    }
    if let Some(out) = &args.out {
        let value = serde_json::json!({
            "command": std::env::args().collect::<Vec<_>>().join(" "),
            "baseline": baseline.info,
            "noise_floor": baseline.floor.map(|f| serde_json::json!({
                "kld_halves": finite_or_null(f.kld_halves), "floor_whole_reference": finite_or_null(f.floor_whole),
                "floor_one_half": finite_or_null(f.floor_half), "kernel_bins": f.kernel_bins})),
            "end_of_run_evaluations_made": baseline.end_of_run.as_ref().map(|e| e.evaluations_made),
            "method": method_with_wall.as_ref().map(|m| serde_json::json!({"label": args.method_label,
                "points": m.iter().map(|p| serde_json::json!([p.point.evaluations, p.point.kld, p.wall_s])).collect::<Vec<_>>(),
                "md_throughput_per_s": args.md_throughput})),
            "summary": summary,
            "rules": rule_json,
        });
        std::fs::write(out, serde_json::to_string_pretty(&value)?)
            .with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}

/// The method points of `--method-pmf`: each PMF's KLD to `--reference` at the comparison's
/// resolution (its kernel smooths the model's distribution too, unless --smooth-reference-only).
fn pmf_points(args: &CompareArgs) -> Result<Vec<MethodPoint>> {
    let Some(reference_path) = &args.reference else {
        bail!("--method-pmf needs --reference");
    };
    let reference = crate::io::npy::read_npy(reference_path)?;
    let bins = match reference.shape.as_slice() {
        [a, b] if a == b => *a,
        other => bail!("{}: expected a square (bins, bins) array, got shape {other:?}", reference_path.display()),
    };
    let mut kl_reference = KlReference::new(&reference.data, BinGrid::dihedral(bins), args.smooth_reference)
        .with_context(|| format!("reference {}", reference_path.display()))?;
    if args.smooth_reference_only {
        kl_reference = kl_reference.smoothing_reference_only();
    }
    args.method_pmfs
        .iter()
        .map(|spec| {
            let parts: Vec<&str> = spec.rsplitn(3, ':').collect();
            let number = |text: &str, what: &str| -> Result<f64> {
                let x: f64 =
                    text.parse().with_context(|| format!("--method-pmf {spec}: {what} '{text}' is not a number"))?;
                if !(x.is_finite() && x > 0.0) {
                    bail!("--method-pmf {spec}: {what} must be finite and positive, got {x}");
                }
                Ok(x)
            };
            // PATH:E or PATH:E:W; a path may itself hold colons, so read from the right.
            let (path, evaluations, wall_s) = match parts.as_slice() {
                [w, e, path] if w.parse::<f64>().is_ok() && e.parse::<f64>().is_ok() => {
                    (path.to_string(), number(e, "evaluations")?, Some(number(w, "wall seconds")?))
                }
                [e, rest @ ..] if !rest.is_empty() => {
                    let path = rest.iter().rev().copied().collect::<Vec<_>>().join(":");
                    (path, number(e, "evaluations")?, None)
                }
                _ => bail!("--method-pmf {spec}: expected PMF.npy:EVALUATIONS[:WALL_S]"),
            };
            let pmf = crate::io::npy::read_npy(Path::new(&path))?;
            if pmf.shape != reference.shape {
                bail!("{path}: a PMF of shape {:?}, the reference has {:?}", pmf.shape, reference.shape);
            }
            let kld = kl_reference.kl_to_free_energy(&pmf.data).with_context(|| format!("KLD of {path}"))?;
            println!("# method PMF {path}: {evaluations:.4e} evaluations, KLD {kld:.6}");
            Ok(MethodPoint { point: CostPoint { evaluations, kld }, wall_s })
        })
        .collect()
}

/// The end of an MD run: evaluations made (steps x walkers), which may exceed the last frame's.
struct EndOfRun {
    evaluations_made: f64,
}

/// Everything the output needs about one baseline.
struct Baseline {
    header: Vec<String>,
    stitch_note: String,
    info: serde_json::Value,
    floor: Option<HalvesNoiseFloor>,
    end_of_run: Option<EndOfRun>,
    rules: Vec<RuleCurves>,
    /// Whether the reference is exact (quadrature), so that it has no noise floor.
    exact_reference: bool,
    /// Short name for legends.
    name: &'static str,
    title: String,
}

fn md_baseline(args: &CompareArgs, rules: &[EmptyBinRule]) -> Result<Baseline> {
    let (Some(reference_path), false) = (&args.reference, args.md.is_empty()) else {
        bail!("--reference and --md are needed (or --muller-brown)");
    };
    let md_dirs = &args.md;
    let reference = crate::io::npy::read_npy(reference_path)?;
    let bins = match reference.shape.as_slice() {
        [a, b] if a == b => *a,
        other => bail!("{}: expected a square (bins, bins) array, got shape {other:?}", reference_path.display()),
    };
    let grid = BinGrid::dihedral(bins);
    let mut kl_reference = KlReference::new(&reference.data, grid, args.smooth_reference)
        .with_context(|| format!("reference {}", reference_path.display()))?;
    if args.smooth_reference_only {
        kl_reference = kl_reference.smoothing_reference_only();
    }
    let floor = reference_floor(args, reference_path, &grid)?;

    let system_xml = args
        .system
        .as_ref()
        .map(|s| std::fs::read_to_string(s).with_context(|| format!("reading {}", s.display())))
        .transpose()?;
    let histogram_runs = md_dirs.iter().filter(|d| crate::io::cv_histograms::is_histogram_run(d)).count();
    let source = match histogram_runs {
        0 if args.cv_pair.is_some() => {
            bail!("--cv-pair picks a pair of MD runs that kept histograms; these runs keep the values of two CVs")
        }
        0 => values_source(md_dirs, args.system.as_deref(), system_xml.as_deref())?,
        n if n == md_dirs.len() => {
            let pair = args.cv_pair.unwrap_or([0, 1]);
            histogram_source(md_dirs, args.system.as_deref(), system_xml.as_deref(), bins, pair)?
        }
        _ => bail!(
            "--md: {histogram_runs} of the {} folders keep histograms and the rest CV values; pool one kind",
            md_dirs.len()
        ),
    };
    let md_text = md_dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(" + ");
    let (walkers, frames, steps_per_frame) = (source.walkers(), source.frames(), source.steps_per_frame());
    let units = source.units();
    let mut groups = args.groups.clone();
    if groups.is_empty() || groups.iter().any(|&g| g == 0 || g > units || units % g != 0 && source.is_histograms()) {
        match source {
            MdSource::Values(_) => bail!("--groups must be between 1 and the number of walkers ({walkers})"),
            MdSource::Histograms { .. } => bail!(
                "--groups: runs that keep histograms split into groups of whole runs only; with {units} runs give \
                 divisors of {units} (e.g. --groups {units},1)"
            ),
        }
    }
    // Most groups first: their mean is the best estimate wherever it reaches.
    groups.sort_unstable_by(|a, b| b.cmp(a));
    groups.dedup();
    let at_frames = source.curve_frames(args.per_decade);
    let mut rule_curves = Vec::new();
    for &rule in rules {
        let mut parts = Vec::new();
        for &g in &groups {
            let curves = (0..g)
                .map(|i| source.group_curve(&kl_reference, g, i, &at_frames, rule))
                .collect::<Result<Vec<_>>>()?;
            let mean = mean_curve(&curves)?;
            let label = match (&source, g) {
                (MdSource::Values(_), 1) => format!("the whole run ({walkers} walkers)"),
                (MdSource::Values(_), g) => format!("mean of {g} groups of {} walkers", walkers / g),
                (MdSource::Histograms { .. }, 1) => format!("the whole run ({units} runs, {walkers} walkers)"),
                (MdSource::Histograms { .. }, g) => {
                    format!("mean of {g} groups of {} runs ({} walkers)", units / g, walkers / g)
                }
            };
            parts.push((label, mean, curves));
        }
        let stitched = stitch_curves(&parts.iter().map(|(_, m, _)| m.as_slice()).collect::<Vec<_>>())?;
        rule_curves.push(RuleCurves { rule, bias: kl_reference.rule_bias(rule)?, parts, stitched });
    }
    let evaluations_made = source.evaluations_made();
    let complete = evaluations_made.is_some();
    let mut header = vec![
        format!(
            "# MD: {md_text} ({walkers} walkers, {frames} frames of {steps_per_frame} steps: {:.4e} evaluations \
             histogrammed{})",
            (frames * steps_per_frame * walkers as u64) as f64,
            if let Some(made) = evaluations_made { format!(", {made:.4e} made") } else { ", run incomplete".into() }
        ),
        format!("# groups: {}", groups.iter().map(|g| g.to_string()).collect::<Vec<_>>().join(", ")),
        reference_line(reference_path, &kl_reference),
    ];
    header.push(floor_line(floor.as_ref()));
    Ok(Baseline {
        header,
        stitch_note: "each range from the most groups that reach it".into(),
        info: serde_json::json!({
            "kind": "md", "md": md_dirs, "reference": reference_path, "bins": bins, "walkers": walkers, "frames": frames,
            "steps_per_frame": steps_per_frame, "groups": groups, "kernel_bins": kl_reference.kernel_bins(),
            "smooth_model": kl_reference.smooths_model(), "complete": complete,
            "record": if source.is_histograms() { "histograms" } else { "cv values" },
        }),
        floor,
        end_of_run: evaluations_made.map(|e| EndOfRun { evaluations_made: e }),
        rules: rule_curves,
        exact_reference: false,
        name: "MD",
        title: MD_TITLE.into(),
    })
}

/// The MD record a baseline is read from: CV values (walkers split into groups) or the
/// histograms of independent runs (runs split into groups).
enum MdSource {
    Values(crate::io::cv_run::CvRun),
    Histograms { runs: Vec<crate::io::cv_histograms::CvHistogramRun>, common_marks: Vec<u64> },
}

impl MdSource {
    fn is_histograms(&self) -> bool {
        matches!(self, MdSource::Histograms { .. })
    }

    /// What groups are made of: walkers, or runs.
    fn units(&self) -> usize {
        match self {
            MdSource::Values(run) => run.walkers,
            MdSource::Histograms { runs, .. } => runs.len(),
        }
    }

    fn walkers(&self) -> usize {
        match self {
            MdSource::Values(run) => run.walkers,
            MdSource::Histograms { runs, .. } => runs.iter().map(|r| r.walkers).sum(),
        }
    }

    /// Frames every run holds (for histograms: its last common mark).
    fn frames(&self) -> u64 {
        match self {
            MdSource::Values(run) => run.frames as u64,
            MdSource::Histograms { common_marks, .. } => common_marks.last().copied().unwrap_or(0),
        }
    }

    fn steps_per_frame(&self) -> u64 {
        match self {
            MdSource::Values(run) => run.steps_per_frame,
            MdSource::Histograms { runs, .. } => runs.first().map_or(1, |r| r.steps_per_frame),
        }
    }

    /// Frame counts of the curve: log-spaced for values, the marks every run holds for histograms.
    fn curve_frames(&self, per_decade: usize) -> Vec<usize> {
        match self {
            MdSource::Values(run) => log_spaced_frames(1, run.frames, per_decade),
            MdSource::Histograms { common_marks, .. } => common_marks.iter().map(|&f| f as usize).collect(),
        }
    }

    /// Evaluations the runs made in all, when every run is complete (and, for histograms, all
    /// reached the same frames).
    fn evaluations_made(&self) -> Option<f64> {
        let complete = |description: &serde_json::Value, frames: u64, steps_per_frame: u64| {
            let steps = description["steps"].as_u64().unwrap_or(frames * steps_per_frame);
            (steps / steps_per_frame == frames).then_some(steps)
        };
        match self {
            MdSource::Values(run) => complete(&run.description, run.frames as u64, run.steps_per_frame)
                .map(|steps| (steps * run.walkers as u64) as f64),
            MdSource::Histograms { runs, .. } => runs
                .iter()
                .map(|r| {
                    complete(&r.description, r.frames, r.steps_per_frame)
                        .filter(|_| r.frames == self.frames())
                        .map(|steps| (steps * r.walkers as u64) as f64)
                })
                .sum(),
        }
    }

    /// The curve of group `index` of `groups` equal groups.
    fn group_curve(
        &self,
        reference: &KlReference,
        groups: usize,
        index: usize,
        at_frames: &[usize],
        rule: EmptyBinRule,
    ) -> Result<Vec<CostPoint>> {
        let per_group = self.units() / groups;
        let range = index * per_group..(index + 1) * per_group;
        Ok(match self {
            MdSource::Values(run) => {
                let samples =
                    WalkerSamples { values: &run.values, walkers: run.walkers, steps_per_frame: run.steps_per_frame };
                md_cost_curve(reference, &samples, range, at_frames, rule)?
            }
            MdSource::Histograms { runs, .. } => {
                let marks: Vec<HistogramMarks> = runs[range]
                    .iter()
                    .map(|r| HistogramMarks { marks: &r.marks, walkers: r.walkers, steps_per_frame: r.steps_per_frame })
                    .collect();
                let frames: Vec<u64> = at_frames.iter().map(|&f| f as u64).collect();
                pooled_histogram_cost_curve(reference, &marks, &frames, rule)?
            }
        })
    }
}

/// The CV values of the runs in `dirs`, pooled into one run of all their walkers.
fn values_source(dirs: &[PathBuf], system: Option<&Path>, system_xml: Option<&str>) -> Result<MdSource> {
    let mut runs = Vec::with_capacity(dirs.len());
    for dir in dirs {
        let run = crate::io::cv_run::CvRun::read(dir)?;
        if let (Some(system), Some(xml)) = (system, system_xml) {
            run.check_system(dir, xml, system)?;
        }
        if run.cvs != 2 {
            bail!("{} records {} CVs; the comparison needs the two dihedrals (phi, psi)", dir.display(), run.cvs);
        }
        runs.push(run);
    }
    let run = if runs.len() == 1 {
        runs.pop().context("no MD run")?
    } else {
        crate::io::cv_run::CvRun::pool(runs).context("--md")?
    };
    Ok(MdSource::Values(run))
}

/// The histograms of the runs in `dirs`, which must be poolable, of the CV pair `pair`, on the
/// reference's `bins` x `bins` grid, with walkers alike.
fn histogram_source(
    dirs: &[PathBuf],
    system: Option<&Path>,
    system_xml: Option<&str>,
    bins: usize,
    pair: [usize; 2],
) -> Result<MdSource> {
    let mut runs = Vec::with_capacity(dirs.len());
    for dir in dirs {
        let run = crate::io::cv_histograms::CvHistogramRun::read(dir)?;
        if let (Some(system), Some(xml)) = (system, system_xml) {
            run.check_system(dir, xml, system)?;
        }
        let run = run.only_pair(pair).with_context(|| format!("{}", dir.display()))?;
        if run.settings.bins != bins {
            bail!(
                "{} keeps histograms of {} x {} bins; the reference has {bins} x {bins}",
                dir.display(),
                run.settings.bins,
                run.settings.bins
            );
        }
        runs.push(run);
    }
    crate::io::cv_run::check_poolable(&runs.iter().map(|r| &r.description).collect::<Vec<_>>()).context("--md")?;
    if let Some(r) = runs.iter().find(|r| r.walkers != runs[0].walkers) {
        bail!("--md: runs that keep histograms must have the same walkers ({} and {})", runs[0].walkers, r.walkers);
    }
    let common_marks = crate::io::cv_histograms::CvHistogramRun::common_marks(&runs);
    if common_marks.is_empty() {
        bail!("--md: the runs hold no histogram at a common frame count");
    }
    Ok(MdSource::Histograms { runs, common_marks })
}

fn reference_line(path: &Path, reference: &KlReference) -> String {
    match (reference.kernel_bins() > 0.0, reference.smooths_model()) {
        (false, _) => format!("# reference: {} (unsmoothed)", path.display()),
        (true, true) => format!(
            "# reference: {}; reference and models smoothed with a periodic Gaussian of {} bins",
            path.display(),
            reference.kernel_bins()
        ),
        (true, false) => format!(
            "# reference: {}; reference only smoothed with a periodic Gaussian of {} bins",
            path.display(),
            reference.kernel_bins()
        ),
    }
}

fn floor_line(floor: Option<&HalvesNoiseFloor>) -> String {
    match floor {
        None => "# noise floor: unknown (no halves of the reference)".into(),
        Some(f) if !f.kld_halves.is_finite() => format!(
            "# noise floor: KL(half 1 || half 2) is infinite at kernel {} bins (bins visited by one half only); \
             use --smooth-reference",
            f.kernel_bins
        ),
        Some(f) => format!(
            "# noise floor: KL(half 1 || half 2) = {:.3e} at kernel {} bins: floor of the whole reference about {:.2e} \
             (of one half {:.2e})",
            f.kld_halves, f.kernel_bins, f.floor_whole, f.floor_half
        ),
    }
}

fn reference_floor(args: &CompareArgs, reference_path: &Path, grid: &BinGrid) -> Result<Option<HalvesNoiseFloor>> {
    let halves: Vec<PathBuf> = match args.halves.as_slice() {
        [] => {
            let dir = reference_path.parent().unwrap_or(Path::new("."));
            let default = [dir.join("half1_probabilities.npy"), dir.join("half2_probabilities.npy")];
            if !default.iter().all(|p| p.exists()) {
                return Ok(None);
            }
            default.to_vec()
        }
        [a, b] => vec![a.clone(), b.clone()],
        other => bail!("--halves takes two files, got {}", other.len()),
    };
    let a = crate::io::npy::read_npy(&halves[0])?;
    let b = crate::io::npy::read_npy(&halves[1])?;
    Ok(Some(
        halves_noise_floor(&a.data, &b.data, grid, args.smooth_reference)
            .with_context(|| format!("halves {} and {}", halves[0].display(), halves[1].display()))?,
    ))
}

fn muller_brown_baseline(args: &CompareArgs, rules: &[EmptyBinRule]) -> Result<Baseline> {
    let start: [f64; 2] =
        args.mb_start.as_slice().try_into().map_err(|_| anyhow::anyhow!("--mb-start takes two numbers, X1,X2"))?;
    let config = MbMcConfig {
        runs: args.mb_runs,
        chains: args.mb_chains,
        steps_per_chain: args.mb_steps,
        step_size: args.mb_step_size,
        start,
        seed: args.seed,
        per_decade: args.per_decade,
    };
    let mb = MullerBrown::default();
    let reference = muller_brown_reference(&mb, 100)?;
    let curves = muller_brown_mc_curves(&mb, &reference, &config, rules)?;
    let rule_curves = curves
        .rules
        .iter()
        .zip(curves.mean.iter().zip(&curves.runs))
        .map(|(&rule, (mean, runs))| {
            Ok(RuleCurves {
                rule,
                bias: reference.rule_bias(rule)?,
                parts: vec![(format!("mean of {} runs", config.runs), mean.clone(), runs.clone())],
                stitched: mean.clone(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let header = vec![
        format!(
            "# Müller-Brown Metropolis: {} runs of {} chains x {} proposals ({} evaluations per run), step {}, \
             start ({}, {}), seed {}",
            config.runs,
            config.chains,
            config.steps_per_chain,
            curves.evaluations_per_run,
            config.step_size,
            start[0],
            start[1],
            config.seed
        ),
        format!(
            "# acceptance {:.3}; {:.2e} of the states outside s in [-2.5, 1.1]",
            curves.acceptance_rate, curves.outside_fraction
        ),
        "# reference: exact PMF over s = x1 - x2 by quadrature, 100 bins on [-2.5, 1.1] (no noise floor)".into(),
    ];
    Ok(Baseline {
        header,
        stitch_note: format!("mean of {} runs", config.runs),
        info: serde_json::json!({
            "kind": "muller-brown metropolis", "runs": config.runs, "chains": config.chains,
            "steps_per_chain": config.steps_per_chain, "step_size": config.step_size, "start": start,
            "seed": config.seed, "evaluations_per_run": curves.evaluations_per_run,
            "acceptance_rate": curves.acceptance_rate, "outside_fraction": curves.outside_fraction,
            "reference": "quadrature, 100 bins over s in [-2.5, 1.1]",
        }),
        floor: None,
        end_of_run: None,
        rules: rule_curves,
        exact_reference: true,
        name: "Metropolis MC",
        title: MB_TITLE.into(),
    })
}

/// The baseline saved by an earlier `cgflow compare --out`: its rules (those of `rules`, or all
/// when `rules` is empty), curves, noise floor and end of run.
fn saved_baseline(path: &Path, rules: &[EmptyBinRule]) -> Result<Baseline> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let saved: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))?;
    let bad = |what: &str| anyhow::anyhow!("{}: not the output of `cgflow compare --out` ({what})", path.display());
    // Curves are written as [evaluations, kld] pairs with null for an infinite KLD.
    let curve = |value: &serde_json::Value| -> Result<Vec<CostPoint>> {
        let pairs = value.as_array().ok_or_else(|| bad("a curve is not an array"))?;
        pairs
            .iter()
            .map(|pair| match pair.as_array().map(Vec::as_slice) {
                Some([e, k]) => Ok(CostPoint {
                    evaluations: e.as_f64().ok_or_else(|| bad("a curve point has no evaluation count"))?,
                    kld: k.as_f64().unwrap_or(f64::INFINITY),
                }),
                _ => Err(bad("a curve point is not an [evaluations, kld] pair")),
            })
            .collect()
    };
    let info = saved.get("baseline").cloned().ok_or_else(|| bad("no \"baseline\""))?;
    let saved_rules = saved["rules"].as_array().ok_or_else(|| bad("no \"rules\""))?;
    let mut rule_curves = Vec::new();
    for entry in saved_rules {
        let rule: EmptyBinRule =
            entry["rule"].as_str().ok_or_else(|| bad("a rule without a name"))?.parse().map_err(anyhow::Error::from)?;
        if !rules.is_empty() && !rules.contains(&rule) {
            continue;
        }
        let mut parts = Vec::new();
        for part in entry["parts"].as_array().ok_or_else(|| bad("a rule without \"parts\""))? {
            let label = part["label"].as_str().unwrap_or("curve").to_string();
            let each = part["curves"].as_array().ok_or_else(|| bad("a part without \"curves\""))?;
            parts.push((label, curve(&part["mean"])?, each.iter().map(curve).collect::<Result<Vec<_>>>()?));
        }
        rule_curves.push(RuleCurves {
            rule,
            bias: entry["rule_bias"].as_f64().unwrap_or(f64::INFINITY),
            parts,
            stitched: curve(&entry["stitched"])?,
        });
    }
    if let Some(missing) = rules.iter().find(|r| !rule_curves.iter().any(|c| c.rule == **r)) {
        let held: Vec<&str> = saved_rules.iter().filter_map(|r| r["rule"].as_str()).collect();
        bail!("{} holds no curve under the rule {missing} (it holds {})", path.display(), held.join(", "));
    }
    if rule_curves.is_empty() {
        bail!("{} holds no curves", path.display());
    }
    let floor = saved["noise_floor"].as_object().and_then(|f| {
        let number = |key: &str| f.get(key).map(|v| v.as_f64().unwrap_or(f64::INFINITY));
        Some(HalvesNoiseFloor {
            kld_halves: number("kld_halves")?,
            floor_whole: number("floor_whole_reference")?,
            floor_half: number("floor_one_half")?,
            kernel_bins: f.get("kernel_bins")?.as_f64()?,
        })
    });
    let muller_brown = info["kind"].as_str().is_some_and(|k| k.contains("muller-brown"));
    let header = vec![
        format!(
            "# baseline curves read from {}, made by: {}",
            path.display(),
            saved["command"].as_str().unwrap_or("?")
        ),
        floor_line(floor.as_ref()),
    ];
    Ok(Baseline {
        header,
        stitch_note: "as saved".into(),
        info,
        floor,
        end_of_run: saved["end_of_run_evaluations_made"].as_f64().map(|e| EndOfRun { evaluations_made: e }),
        rules: rule_curves,
        exact_reference: muller_brown,
        name: if muller_brown { "Metropolis MC" } else { "MD" },
        title: if muller_brown { MB_TITLE.into() } else { MD_TITLE.into() },
    })
}

fn pairs(curve: &[CostPoint]) -> Vec<[Option<f64>; 2]> {
    curve.iter().map(|p| [finite_or_null(p.evaluations), finite_or_null(p.kld)]).collect()
}

/// JSON has no infinity: non-finite numbers are written as null.
fn finite_or_null(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

fn speedup_to_json(p: &CostPoint, s: &SpeedupEstimate) -> serde_json::Value {
    let base = serde_json::json!({"evaluations": p.evaluations, "kld": p.kld, "text": s.to_string()});
    let extra = match *s {
        SpeedupEstimate::Interpolated { baseline_evaluations, speedup } => {
            serde_json::json!({"speedup": speedup, "baseline_evaluations": baseline_evaluations})
        }
        SpeedupEstimate::BeyondBaseline { speedup_at_least, baseline_last_evaluations, baseline_lowest_kld } => {
            serde_json::json!({"speedup_at_least": speedup_at_least,
                "baseline_last_evaluations": baseline_last_evaluations, "baseline_lowest_kld": baseline_lowest_kld})
        }
        SpeedupEstimate::BeforeBaseline { speedup_at_most, baseline_first_evaluations } => {
            serde_json::json!({"speedup_at_most": speedup_at_most,
                "baseline_first_evaluations": baseline_first_evaluations})
        }
    };
    let mut merged = base;
    if let (Some(m), Some(e)) = (merged.as_object_mut(), extra.as_object()) {
        m.extend(e.clone());
    }
    merged
}

/// A speedup as a number and what it is: `=`, at least (`>`), at most (`<`).
fn speedup_number(s: &SpeedupEstimate) -> (f64, &'static str) {
    match *s {
        SpeedupEstimate::Interpolated { speedup, .. } => (speedup, "="),
        SpeedupEstimate::BeyondBaseline { speedup_at_least, .. } => (speedup_at_least, ">"),
        SpeedupEstimate::BeforeBaseline { speedup_at_most, .. } => (speedup_at_most, "<"),
    }
}

/// Per method point: the speedup under every rule, "not resolved" where the point's KLD is within
/// [`RESOLUTION_FACTOR`] of that rule's floor, the smallest of the resolved ones (the headline), and
/// the wall-clock speedup at MD's throughput. Prints a table and returns its JSON.
fn summary(
    baseline: &Baseline,
    points: &[MethodPoint],
    md_throughput: Option<f64>,
    label: &str,
) -> Result<serde_json::Value> {
    let reference_floor = baseline.floor.map(|f| f.floor_whole).filter(|f| f.is_finite());
    println!(
        "\n## {label} against {}: speedup at equal KLD under every rule, the smallest of them (the headline), \
         and in wall-clock time",
        baseline.name
    );
    match reference_floor {
        Some(f) => println!(
            "# a rule's floor: the reference's noise floor {f:.2e} plus the rule's own bias; a KLD below {RESOLUTION_FACTOR}x \
             the floor is not resolved"
        ),
        None if baseline.exact_reference => {
            println!("# the reference is exact (no noise floor): each rule's floor is its own bias")
        }
        None => println!("# the reference's noise floor is unknown (no halves): each rule's floor is its own bias only"),
    }
    match md_throughput {
        Some(t) => println!("# MD throughput {t:.0} evaluations/s (same machine)"),
        None => println!("# no --md-throughput: no wall-clock speedups"),
    }
    let names: Vec<String> = baseline.rules.iter().map(|r| r.rule.to_string()).collect();
    println!(
        "{:>12} {:>9} {:>10}  {}  {:>10}  {:>12}",
        "evaluations",
        "wall s",
        "KLD",
        names.iter().map(|n| format!("{n:>20}")).collect::<String>(),
        "smallest",
        "wall-clock"
    );
    let mut rows = Vec::new();
    for p in points {
        let mut per_rule = Vec::new();
        let mut cells = String::new();
        let mut smallest: Option<(f64, &'static str, String)> = None;
        for curves in &baseline.rules {
            let floor = ruler_floor(reference_floor, curves.bias);
            let resolved = resolves(p.point.kld, floor);
            if !resolved {
                cells.push_str(&format!("{:>20}", "not resolved"));
                per_rule.push(serde_json::json!({"rule": curves.rule.to_string(), "floor": floor, "resolved": false}));
                continue;
            }
            let s = speedup_at_equal_kld(&curves.stitched, p.point)?;
            let (value, qualifier) = speedup_number(&s);
            cells.push_str(&format!("{:>20}", format!("{}{value:.3}", if qualifier == "=" { "" } else { qualifier })));
            if smallest.as_ref().map_or(true, |(v, _, _)| value < *v) {
                smallest = Some((value, qualifier, curves.rule.to_string()));
            }
            let mut entry = speedup_to_json(&p.point, &s);
            entry["rule"] = serde_json::json!(curves.rule.to_string());
            entry["floor"] = serde_json::json!(floor);
            entry["resolved"] = serde_json::json!(true);
            per_rule.push(entry);
        }
        let wall = match (&smallest, p.wall_s, md_throughput) {
            (Some((value, qualifier, _)), Some(w), Some(t)) if w > 0.0 => {
                // MD's evaluations to this KLD under the headline rule, at MD's rate, over the method's time.
                let md_seconds = value * p.point.evaluations / t;
                Some((md_seconds / w, *qualifier, md_seconds))
            }
            _ => None,
        };
        let text = |v: Option<(f64, &str)>| match v {
            Some((x, q)) => format!("{}{x:.3}", if q == "=" { "" } else { q }),
            None => "-".into(),
        };
        println!(
            "{:>12.4e} {:>9} {:>10.6}  {cells}  {:>10}  {:>12}",
            p.point.evaluations,
            p.wall_s.map_or("-".into(), |w| format!("{w:.0}")),
            p.point.kld,
            smallest.as_ref().map_or("not resolved".into(), |(v, q, _)| text(Some((*v, q)))),
            text(wall.map(|(x, q, _)| (x, q))),
        );
        rows.push(serde_json::json!({
            "evaluations": p.point.evaluations, "kld": p.point.kld, "wall_s": p.wall_s, "rules": per_rule,
            "smallest": smallest.as_ref().map(|(v, q, r)| serde_json::json!({"speedup": v, "qualifier": q, "rule": r})),
            "wall_clock": wall.map(|(x, q, md)| serde_json::json!({"speedup": x, "qualifier": q, "md_seconds": md})),
        }));
    }
    Ok(serde_json::json!(rows))
}

/// The spread of the independent curves of the first part with more than one (the part with
/// most groups or runs): their lowest and highest KLD at each evaluation count.
struct SpreadBand {
    of: String,
    evaluations: Vec<f64>,
    lowest: Vec<f64>,
    highest: Vec<f64>,
}

fn spread_band(parts: &[CurvePart]) -> Option<SpreadBand> {
    let (label, _, each) = parts.iter().find(|(_, _, each)| each.len() > 1)?;
    let n = each.iter().map(Vec::len).min()?;
    let evaluations: Vec<f64> = each[0][..n].iter().map(|p| p.evaluations).collect();
    let at = |i: usize| each.iter().map(move |c| c[i].kld);
    Some(SpreadBand {
        of: format!("lowest and highest of the {label}"),
        lowest: (0..n).map(|i| at(i).fold(f64::INFINITY, f64::min)).collect(),
        highest: (0..n).map(|i| at(i).fold(f64::NEG_INFINITY, f64::max)).collect(),
        evaluations,
    })
}

fn plot(png: &Path, baseline: &Baseline, method: Option<&[CostPoint]>, method_label: &str) -> Result<()> {
    let mut xs: Vec<Vec<f64>> = Vec::new();
    let mut ys: Vec<Vec<f64>> = Vec::new();
    let mut labels: Vec<String> = Vec::new();
    let mut spreads = Vec::new();
    for (i, curves) in baseline.rules.iter().enumerate() {
        xs.push(curves.stitched.iter().map(|p| p.evaluations).collect());
        ys.push(curves.stitched.iter().map(|p| p.kld).collect());
        let band = spread_band(&curves.parts);
        let note = band.as_ref().map(|_| " (band: range of the independent curves)").unwrap_or_default();
        labels.push(format!("{}, {}{note}", baseline.name, curves.rule));
        spreads.extend(band.map(|b| (i, b)));
    }
    let (lo, hi) = baseline
        .rules
        .iter()
        .flat_map(|c| c.stitched.iter().map(|p| p.evaluations))
        .chain(method.unwrap_or_default().iter().map(|p| p.evaluations))
        .fold((f64::INFINITY, 0.0f64), |(lo, hi), e| (lo.min(e), hi.max(e)));
    if let Some(f) = baseline.floor.filter(|f| f.kld_halves.is_finite() && f.kld_halves > 0.0) {
        xs.push(vec![lo, hi]);
        ys.push(vec![f.floor_whole, f.floor_whole]);
        labels.push(format!("reference noise floor (kernel {} bins)", f.kernel_bins));
    }
    if let Some(points) = method {
        xs.push(points.iter().map(|p| p.evaluations).collect());
        ys.push(points.iter().map(|p| p.kld).collect());
        labels.push(method_label.to_string());
    }
    let series: Vec<crate::io::plot::Series> =
        (0..xs.len()).map(|i| crate::io::plot::Series { label: &labels[i], x: &xs[i], y: &ys[i] }).collect();
    let bands: Vec<crate::io::plot::Band> = spreads
        .iter()
        .map(|(i, b)| crate::io::plot::Band { series: *i, x: &b.evaluations, lower: &b.lowest, upper: &b.highest })
        .collect();
    crate::io::plot::line_plot_bands_png(
        png,
        &baseline.title,
        "energy evaluations",
        "KLD",
        &series,
        &bands,
        true,
        true,
    )?;
    Ok(())
}
