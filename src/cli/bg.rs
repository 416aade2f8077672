//! `cgflow bg`: a Boltzmann generator on a toy system, with the seed's figure and the free-energy
//! profile against the exact one.

use crate::flow::bg::{run_bg, BgConfig, BgSystem};
use crate::io::plot::{line_plot_png, panels_png, Panel, Series};
use anyhow::{bail, Context, Result};
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
    /// The 2D Ising model (L x L, periodic, J = 1, h = 0) through its Hubbard-Stratonovich field.
    Ising,
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
    /// Ising: lattice size L.
    #[arg(long, default_value_t = 4)]
    size: usize,
    /// Ising: temperature in units of J / k_B (default: the infinite lattice's critical
    /// temperature, 2 / ln(1 + sqrt 2) = 2.269).
    #[arg(long)]
    temperature: Option<f64>,
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
        SystemArg::Ising => return run_ising(&args),
    };
    if args.temperature.is_some() {
        bail!("--temperature applies to --system ising only");
    }
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

/// Spin configurations tiled into a grid of `per_row` x `per_row` lattices (one unit of space
/// between them) as two point clouds: up spins and down spins. The configurations are taken
/// evenly spaced through `spins`, so that a correlated chain shows its range, not one stretch.
fn tiled_spins(spins: &[i8], size: usize, per_row: usize) -> [(Vec<f64>, Vec<f64>); 2] {
    let mut clouds: [(Vec<f64>, Vec<f64>); 2] = Default::default();
    let shown = per_row * per_row;
    let stride = (spins.len() / (size * size) / shown).max(1);
    for (k, config) in spins.chunks_exact(size * size).step_by(stride).take(shown).enumerate() {
        let (tile_x, tile_y) = ((k % per_row) * (size + 1), (k / per_row) * (size + 1));
        for (i, &s) in config.iter().enumerate() {
            let cloud = &mut clouds[usize::from(s < 0)];
            cloud.0.push((tile_x + i % size) as f64);
            cloud.1.push(-((tile_y + i / size) as f64));
        }
    }
    clouds
}

/// Probabilities of each value among `values` weighted by `weights`, over `levels` (ascending).
fn weighted_levels(values: &[f64], weights: &[f64], levels: &[f64]) -> Vec<f64> {
    let mut p = vec![0.0; levels.len()];
    for (v, w) in values.iter().zip(weights) {
        if let Some(i) = levels.iter().position(|l| (l - v).abs() < 1e-6) {
            p[i] += w;
        }
    }
    let total: f64 = p.iter().sum();
    p.iter().map(|x| x / total).collect()
}

/// `cgflow bg --system ising`: the generator, its reweighted estimates against the exact values,
/// configurations against Metropolis ones, and the energy and |M| distributions.
fn run_ising(args: &BgArgs) -> Result<()> {
    use crate::flow::ising_bg::{run_ising_bg, IsingBgConfig};
    let temperature = args.temperature.unwrap_or(2.0 / (1.0 + std::f64::consts::SQRT_2).ln());
    let mut config = IsingBgConfig::fast(args.size, temperature);
    config.seed = args.seed;
    config.ml_steps = args.ml_steps.unwrap_or(config.ml_steps);
    config.mixed_steps = args.mixed_steps.unwrap_or(config.mixed_steps);
    config.alpha = args.alpha.unwrap_or(config.alpha);
    config.eval_samples = args.eval_samples.unwrap_or(config.eval_samples);
    config.validate()?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let bar = indicatif::ProgressBar::new((config.ml_steps + config.mixed_steps) as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} training steps  loss {msg}  ETA {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let started = std::time::Instant::now();
    let out = run_ising_bg(&config, &mut |step, _, loss| {
        bar.set_position(step as u64);
        bar.set_message(format!("{loss:.3}"));
    })?;
    bar.finish_and_clear();
    let wall_s = started.elapsed().as_secs_f64();
    let (l, n) = (config.size, config.size * config.size);
    let ising = crate::energy::ising::Ising::new(l, config.coupling_j, config.field_h)?;

    // Per generated sample: its energy and |M|, and its normalised weight.
    let largest = out.log_weights.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let weights: Vec<f64> = out.log_weights.iter().map(|w| (w - largest).exp()).collect();
    let energies: Vec<f64> =
        out.generated_spins.chunks_exact(n).map(|s| ising.energy(s)).collect::<crate::Result<_>>()?;
    let abs_m: Vec<f64> =
        out.generated_spins.chunks_exact(n).map(|s| s.iter().map(|&v| f64::from(v)).sum::<f64>().abs()).collect();
    let mc_energies: Vec<f64> = out.mc_spins.chunks_exact(n).map(|s| ising.energy(s)).collect::<crate::Result<_>>()?;
    let mc_abs_m: Vec<f64> =
        out.mc_spins.chunks_exact(n).map(|s| s.iter().map(|&v| f64::from(v)).sum::<f64>().abs()).collect();
    let mut e_levels: Vec<f64> = energies.iter().chain(&mc_energies).copied().collect();
    let mut m_levels: Vec<f64> = abs_m.iter().chain(&mc_abs_m).copied().collect();
    if let Some(exact) = &out.exact {
        e_levels.extend(exact.energy_probabilities.iter().map(|p| p.0));
        m_levels.extend(exact.abs_magnetisation_probabilities.iter().map(|p| p.0 as f64));
    }
    for levels in [&mut e_levels, &mut m_levels] {
        levels.sort_by(f64::total_cmp);
        levels.dedup_by(|a, b| (*a - *b).abs() < 1e-6);
    }
    let ones = vec![1.0; mc_energies.len()];
    let e_reweighted = weighted_levels(&energies, &weights, &e_levels);
    let e_mc = weighted_levels(&mc_energies, &ones, &e_levels);
    let m_reweighted = weighted_levels(&abs_m, &weights, &m_levels);
    let m_mc = weighted_levels(&mc_abs_m, &ones, &m_levels);
    let exact_at = |levels: &[f64], known: Vec<(f64, f64)>| -> Vec<f64> {
        levels.iter().map(|l| known.iter().find(|k| (k.0 - l).abs() < 1e-6).map_or(0.0, |k| k.1)).collect()
    };
    let exact_e = out
        .exact
        .as_ref()
        .filter(|x| !x.energy_probabilities.is_empty())
        .map(|x| exact_at(&e_levels, x.energy_probabilities.clone()));
    let exact_m =
        out.exact.as_ref().filter(|x| !x.abs_magnetisation_probabilities.is_empty()).map(|x| {
            exact_at(&m_levels, x.abs_magnetisation_probabilities.iter().map(|&(m, p)| (m as f64, p)).collect())
        });

    let per_row = if l <= 4 { 6 } else { 4 };
    let [(mc_up_x, mc_up_y), (mc_down_x, mc_down_y)] = tiled_spins(&out.mc_spins, l, per_row);
    let [(g_up_x, g_up_y), (g_down_x, g_down_y)] = tiled_spins(&out.generated_spins, l, per_row);
    let mut e_series = vec![
        Series { label: "Metropolis", x: &e_levels, y: &e_mc },
        Series { label: "generator, reweighted", x: &e_levels, y: &e_reweighted },
    ];
    let mut m_series = vec![
        Series { label: "Metropolis", x: &m_levels, y: &m_mc },
        Series { label: "generator, reweighted", x: &m_levels, y: &m_reweighted },
    ];
    if let Some(p) = &exact_e {
        e_series.push(Series { label: "exact", x: &e_levels, y: p });
    }
    if let Some(p) = &exact_m {
        m_series.push(Series { label: "exact", x: &m_levels, y: p });
    }
    let figure = args.out.join("generator.png");
    let title = format!("Ising Boltzmann generator: L = {l}, T = {temperature:.4}");
    let mc_groups =
        [Series { label: "up", x: &mc_up_x, y: &mc_up_y }, Series { label: "down", x: &mc_down_x, y: &mc_down_y }];
    let g_groups =
        [Series { label: "up", x: &g_up_x, y: &g_up_y }, Series { label: "down", x: &g_down_x, y: &g_down_y }];
    panels_png(
        &figure,
        &title,
        &[
            Panel::Scatter {
                title: "Metropolis configurations",
                x_label: "",
                y_label: "",
                groups: &mc_groups,
                x_range: None,
                y_range: None,
            },
            Panel::Scatter {
                title: "generated configurations (unweighted)",
                x_label: "",
                y_label: "",
                groups: &g_groups,
                x_range: None,
                y_range: None,
            },
            Panel::Lines {
                title: "energy distribution",
                x_label: "E / J",
                y_label: "probability",
                series: &e_series,
                log_x: false,
                log_y: false,
            },
            Panel::Lines {
                title: "|M| distribution",
                x_label: "|M|",
                y_label: "probability",
                series: &m_series,
                log_x: false,
                log_y: false,
            },
        ],
    )?;
    let e = &out.estimates;
    let against = |estimate: &crate::flow::ising_bg::Estimate, exact: Option<f64>| {
        let exact = exact.filter(|x| x.is_finite());
        serde_json::json!({
            "estimate": estimate.value, "standard_error": estimate.standard_error, "exact": exact,
            "error": exact.map(|x| estimate.value - x),
            "z": exact.map(|x| (estimate.value - x) / estimate.standard_error),
        })
    };
    let exact = out.exact.as_ref();
    let report = serde_json::json!({
        "config": config,
        "ess": e.ess,
        "samples": e.samples,
        "mean_energy": against(&e.mean_energy, exact.map(|x| x.mean_energy)),
        "mean_abs_magnetisation": against(&e.mean_abs_magnetisation, exact.map(|x| x.mean_abs_magnetisation)),
        "free_energy": against(&e.free_energy, exact.map(|x| x.free_energy)),
        "log_z": against(&e.log_z, exact.map(|x| x.log_z)),
        "exact_from": if n <= crate::energy::ising::MAX_ENUMERATED_SITES {
            "enumeration"
        } else if l <= crate::energy::ising::MAX_TRANSFER_SIZE {
            "Kaufman's closed form (ln Z, <E>) and the transfer matrix (|M|)"
        } else {
            "Kaufman's closed form (ln Z, <E>); no exact <|M|>"
        },
        "energy_evaluations": out.evaluations,
        "wall_s": wall_s,
        "final_loss": out.history.last().map(|h| h.1),
    });
    let report_path = args.out.join("report.json");
    std::fs::write(&report_path, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", report_path.display()))?;
    println!("bg ising L = {l}, T = {temperature:.4}: ESS {:.0} of {} samples, {wall_s:.1} s", e.ess, e.samples);
    let line =
        |name: &str, est: &crate::flow::ising_bg::Estimate, exact: Option<f64>| match exact.filter(|x| x.is_finite()) {
            Some(x) => println!(
                "  {name:<7} {:>12.5} +- {:.5}   exact {x:>12.5}   z {:+.2}",
                est.value,
                est.standard_error,
                (est.value - x) / est.standard_error
            ),
            None => println!("  {name:<7} {:>12.5} +- {:.5}   (no exact value)", est.value, est.standard_error),
        };
    line("<E>", &e.mean_energy, exact.map(|x| x.mean_energy));
    line("<|M|>", &e.mean_abs_magnetisation, exact.map(|x| x.mean_abs_magnetisation));
    line("F", &e.free_energy, exact.map(|x| x.free_energy));
    println!("wrote {}, {}", figure.display(), report_path.display());
    Ok(())
}
