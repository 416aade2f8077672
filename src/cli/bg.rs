//! `cgflow bg`: a Boltzmann generator on a toy system, with the seed's figure and the free-energy
//! profile against the exact one.

use anyhow::{bail, Context, Result};
use cgflow::flow::bg::{run_bg, BgConfig, BgSystem};
use cgflow::io::plot::{line_plot_png, panels_png, Panel, Series};
use clap::{Args, ValueEnum};
use std::path::PathBuf;

/// Toy systems of the second seed.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum SystemArg {
    /// Noé's double well.
    DoubleWell,
    /// Harmonic oscillator in a box.
    HarmonicBox,
    /// Müller-Brown at beta = 0.1.
    MullerBrown,
}

/// Arguments of `cgflow bg`.
#[derive(Debug, Args)]
pub struct BgArgs {
    /// The toy system.
    #[arg(long)]
    system: SystemArg,
    /// Output folder (PNGs and report.json).
    #[arg(long, value_name = "DIR", default_value = "runs/bg")]
    out: PathBuf,
    /// Random seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Steps of training by example (default: the fast preset).
    #[arg(long)]
    ml_steps: Option<usize>,
    /// Steps of training by example + energy (default: the fast preset).
    #[arg(long)]
    mixed_steps: Option<usize>,
    /// Weight alpha of the example term in J = J_KL + alpha J_ML.
    #[arg(long)]
    alpha: Option<f64>,
    /// Generator samples used for reweighting.
    #[arg(long)]
    eval_samples: Option<usize>,
}

fn split(points: &[f64]) -> (Vec<f64>, Vec<f64>) {
    (points.iter().step_by(2).copied().collect(), points.iter().skip(1).step_by(2).copied().collect())
}

/// Runs `cgflow bg`.
pub fn run(args: BgArgs) -> Result<()> {
    super::configure_flow_threads();
    let system = match args.system {
        SystemArg::DoubleWell => BgSystem::DoubleWell,
        SystemArg::HarmonicBox => BgSystem::HarmonicBox,
        SystemArg::MullerBrown => BgSystem::MullerBrown,
    };
    let mut config = BgConfig::fast(system);
    config.seed = args.seed;
    config.ml_steps = args.ml_steps.unwrap_or(config.ml_steps);
    config.mixed_steps = args.mixed_steps.unwrap_or(config.mixed_steps);
    config.alpha = args.alpha.unwrap_or(config.alpha);
    config.eval_samples = args.eval_samples.unwrap_or(config.eval_samples);
    if !(config.alpha.is_finite() && config.alpha >= 0.0) {
        bail!("--alpha must be finite and non-negative");
    }
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let bar = indicatif::ProgressBar::new((config.ml_steps + config.mixed_steps) as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} training steps  loss {msg}  ETA {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let out = run_bg(&config, &mut |step, _, loss| {
        bar.set_position(step as u64);
        bar.set_message(format!("{loss:.3}"));
    })?;
    bar.finish_and_clear();

    let (dx1, dx2) = split(&out.data_x);
    let (dz1, dz2) = split(&out.data_z);
    let (fz1, fz2) = split(&out.fresh_z.iter().take(4000).copied().collect::<Vec<_>>());
    let (fx1, fx2) = split(&out.fresh_x.iter().take(4000).copied().collect::<Vec<_>>());
    let figure = args.out.join("generator.png");
    panels_png(
        &figure,
        &format!("Boltzmann generator: {system:?}"),
        &[
            Panel::Scatter {
                title: "training samples x",
                x_label: "x1",
                y_label: "x2",
                groups: &[Series { label: "", x: &dx1, y: &dx2 }],
                x_range: None,
                y_range: None,
            },
            Panel::Scatter {
                title: "their images z = F^-1(x)",
                x_label: "z1",
                y_label: "z2",
                groups: &[Series { label: "", x: &dz1, y: &dz2 }],
                x_range: Some((-4.0, 4.0)),
                y_range: Some((-4.0, 4.0)),
            },
            Panel::Scatter {
                title: "fresh samples z",
                x_label: "z1",
                y_label: "z2",
                groups: &[Series { label: "", x: &fz1, y: &fz2 }],
                x_range: Some((-4.0, 4.0)),
                y_range: Some((-4.0, 4.0)),
            },
            Panel::Scatter {
                title: "their images x = F(z)",
                x_label: "x1",
                y_label: "x2",
                groups: &[Series { label: "", x: &fx1, y: &fx2 }],
                x_range: None,
                y_range: None,
            },
        ],
    )?;
    let p = &out.profile;
    let profile_png = args.out.join("free_energy.png");
    let coordinate = if system == BgSystem::MullerBrown { "s = x1 - x2" } else { "x1" };
    line_plot_png(
        &profile_png,
        "Free energy along the reaction coordinate",
        coordinate,
        "F / kT",
        &[
            Series { label: "exact (quadrature)", x: &p.centres, y: &p.exact_kt },
            Series { label: "reweighted generator", x: &p.centres, y: &p.estimate_kt },
        ],
        false,
        false,
    )?;
    let report = serde_json::json!({
        "config": config,
        "ess": out.ess,
        "samples": out.log_weights.len(),
        "well_ratio": out.well_ratio.map(|(e, x)| serde_json::json!({"estimate": e, "exact": x})),
        "energy_evaluations": out.evaluations,
        "final_loss": out.history.last().map(|h| h.1),
        "profile": p,
    });
    let report_path = args.out.join("report.json");
    std::fs::write(&report_path, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", report_path.display()))?;
    println!(
        "bg {system:?}: ESS {:.0} of {} samples; {} energy evaluations",
        out.ess,
        out.log_weights.len(),
        out.evaluations
    );
    if let Some((estimate, exact)) = out.well_ratio {
        println!("well ratio left/right: {estimate:.2} (exact {exact:.2})");
    }
    println!("wrote {}, {}, {}", figure.display(), profile_png.display(), report_path.display());
    Ok(())
}
