//! `cgflow compare`: the MD cost curve of a `cgflow md` run against a reference distribution:
//! KL divergence of the growing (phi, psi) histogram against the number of energy evaluations,
//! averaged over independent groups of walkers.

use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use clap::Args;

use cgflow::metrics::cost_curve::{evaluations_to_reach, log_spaced_frames, md_cost_curve, mean_curve, WalkerSamples};
use cgflow::metrics::divergence::EmptyBinRule;

/// Arguments of `cgflow compare`.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Reference probabilities on the bins x bins (phi, psi) grid (.npy), e.g. from `cgflow umbrella`.
    #[arg(long, value_name = "NPY")]
    reference: PathBuf,
    /// Output folder of a `cgflow md` run of alanine dipeptide (cv.f32 and cv.json).
    #[arg(long, value_name = "DIR")]
    md: PathBuf,
    /// The System the run must have used; a CV file from another system is refused.
    #[arg(long, value_name = "XML")]
    system: Option<PathBuf>,
    /// Split the walkers into this many independent runs and average their curves.
    #[arg(long, default_value_t = 4)]
    groups: usize,
    /// Pseudo-count added to every bin of the MD histogram before normalising (the empty-bin rule).
    #[arg(long, default_value_t = 1.0)]
    pseudo_count: f64,
    /// Points per decade of evaluations.
    #[arg(long, default_value_t = 5)]
    per_decade: usize,
    /// Also plot the curves (log-log) to this PNG.
    #[arg(long, value_name = "PNG")]
    plot: Option<PathBuf>,
    /// Write the curve as JSON here.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

/// Runs `cgflow compare`.
pub fn run(args: CompareArgs) -> Result<()> {
    let reference = cgflow::io::npy::read_npy(&args.reference)?;
    let bins = match reference.shape.as_slice() {
        [a, b] if a == b => *a,
        other => bail!("{}: expected a square (bins, bins) array, got shape {other:?}", args.reference.display()),
    };
    let description_path = args.md.join("cv.json");
    let description: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&description_path)
            .with_context(|| format!("reading {}", description_path.display()))?,
    )
    .with_context(|| format!("{} is not valid JSON", description_path.display()))?;
    if let Some(system) = &args.system {
        let xml = std::fs::read_to_string(system).with_context(|| format!("reading {}", system.display()))?;
        let fingerprint = cgflow::io::fingerprint(&xml);
        if description["system_fingerprint"] != serde_json::json!(fingerprint) {
            bail!(
                "{} was recorded with another system (fingerprint {}, {} has {fingerprint})",
                description_path.display(),
                description["system_fingerprint"],
                system.display()
            );
        }
    }
    let cvs = description["cvs"].as_array().map_or(0, Vec::len);
    if cvs != 2 {
        bail!("{} records {cvs} CVs; the comparison needs the two dihedrals (phi, psi)", description_path.display());
    }
    let walkers = description["walkers"].as_u64().context("cv.json lacks 'walkers'")? as usize;
    let steps_per_frame = description["steps_per_frame"].as_u64().context("cv.json lacks 'steps_per_frame'")?;
    let frames_expected = description["frames"].as_u64().context("cv.json lacks 'frames'")? as usize;
    let cv_path = args.md.join("cv.f32");
    let bytes = std::fs::read(&cv_path).with_context(|| format!("reading {}", cv_path.display()))?;
    let frame_bytes = walkers * 2 * 4;
    if bytes.len() % frame_bytes != 0 || bytes.len() / frame_bytes < frames_expected {
        bail!(
            "{} is truncated: {} bytes is not the {frames_expected} whole frames of {frame_bytes} bytes that cv.json announces",
            cv_path.display(),
            bytes.len()
        );
    }
    let values: Vec<f32> = bytes[..frames_expected * frame_bytes]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    if args.groups == 0 || args.groups > walkers {
        bail!("--groups must be between 1 and the number of walkers ({walkers})");
    }
    let samples = WalkerSamples { values: &values, walkers, steps_per_frame };
    let frames = log_spaced_frames(1, frames_expected, args.per_decade);
    let rule = EmptyBinRule::PseudoCount(args.pseudo_count);
    let per_group = walkers / args.groups;
    let curves = (0..args.groups)
        .map(|g| md_cost_curve(&reference.data, bins, &samples, g * per_group..(g + 1) * per_group, &frames, rule))
        .collect::<cgflow::Result<Vec<_>>>()?;
    let mean = mean_curve(&curves)?;
    println!(
        "# MD cost curve: {} groups of {per_group} walkers, pseudo-count {} per bin",
        args.groups, args.pseudo_count
    );
    println!("{:>16} {:>12}", "evaluations", "KLD");
    for p in &mean {
        println!("{:>16.0} {:>12.5}", p.evaluations, p.kld);
    }
    let at = |e: f64| -> Option<f64> {
        mean.windows(2).find(|w| w[0].evaluations <= e && w[1].evaluations >= e).map(|w| {
            let t = (e.ln() - w[0].evaluations.ln()) / (w[1].evaluations.ln() - w[0].evaluations.ln());
            (w[0].kld.ln() + t * (w[1].kld.ln() - w[0].kld.ln())).exp()
        })
    };
    let milestones: Vec<serde_json::Value> =
        [1e6, 1e7, 1e8].iter().map(|&e| serde_json::json!({"evaluations": e, "kld": at(e)})).collect();
    for m in &milestones {
        println!("KLD at {} evaluations: {}", m["evaluations"], m["kld"]);
    }
    if let Some(kld) = [0.1, 0.03, 0.01].iter().find_map(|&k| evaluations_to_reach(&mean, k).map(|e| (k, e))) {
        println!("first KLD threshold reached: {} after {:.3e} evaluations", kld.0, kld.1);
    }
    if let Some(png) = &args.plot {
        let xs: Vec<Vec<f64>> =
            curves.iter().chain([&mean]).map(|c| c.iter().map(|p| p.evaluations).collect()).collect();
        let ys: Vec<Vec<f64>> = curves.iter().chain([&mean]).map(|c| c.iter().map(|p| p.kld).collect()).collect();
        let labels: Vec<String> =
            (0..curves.len()).map(|g| format!("MD group {}", g + 1)).chain(["MD mean".to_string()]).collect();
        let series: Vec<cgflow::io::plot::Series> =
            (0..xs.len()).map(|i| cgflow::io::plot::Series { label: &labels[i], x: &xs[i], y: &ys[i] }).collect();
        cgflow::io::plot::line_plot_png(
            png,
            "KL divergence to the reference vs energy evaluations",
            "energy evaluations",
            "KLD",
            &series,
            true,
            true,
        )?;
    }
    if let Some(out) = &args.out {
        let value = serde_json::json!({
            "command": std::env::args().collect::<Vec<_>>().join(" "),
            "groups": args.groups, "walkers_per_group": per_group, "pseudo_count": args.pseudo_count,
            "mean": mean.iter().map(|p| [p.evaluations, p.kld]).collect::<Vec<_>>(),
            "curves": curves.iter().map(|c| c.iter().map(|p| [p.evaluations, p.kld]).collect::<Vec<_>>()).collect::<Vec<_>>(),
            "milestones": milestones,
        });
        std::fs::write(out, serde_json::to_string_pretty(&value)?)
            .with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}
