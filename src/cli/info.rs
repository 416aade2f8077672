//! `cgflow info`: what OpenMM installation cgflow uses and which platforms it offers.

use anyhow::Result;
use clap::Args;

/// Arguments of `cgflow info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// Runs `cgflow info`.
pub fn run(args: InfoArgs) -> Result<()> {
    let report = crate::openmm::load_plugins()?;
    let platforms = crate::openmm::available_platforms()?;
    if args.json {
        let value = serde_json::json!({
            "openmm_version": crate::openmm::version(),
            "plugin_directory": report.directory,
            "plugins_loaded": report.loaded,
            "opencl_cpu": report.opencl_cpu,
            "plugin_load_failures": report.failures,
            "platforms": platforms.iter().map(|(n, s)| serde_json::json!({"name": n, "speed": s})).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    println!("OpenMM {}", crate::openmm::version());
    println!("plugin directory: {} ({} loaded)", report.directory.display(), report.loaded);
    if let Some(dir) = &report.opencl_cpu {
        println!("OpenCL for CPUs (pocl): {}", dir.display());
    }
    println!("platforms:");
    for (name, speed) in &platforms {
        println!("  {name:<10} speed {speed}");
    }
    if !report.failures.is_empty() {
        println!("plugins that did not load:");
        for failure in &report.failures {
            println!("  {failure}");
        }
        if report.opencl_cpu.is_none() && report.failures.iter().any(|f| f.contains("libOpenCL.so")) {
            println!("(no OpenCL driver here; ./setup.sh --opencl-cpu installs one for the CPU)");
        }
    }
    Ok(())
}
