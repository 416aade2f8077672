//! A safe Rust API over OpenMM: [`System`], [`Platform`], [`Context`] and [`Integrator`].
//!
//! OpenMM is reached through a small C++ shim (`ffi/`) that catches every C++ exception; all
//! `unsafe` code lives in the private `ffi` submodule. Platforms are plugins: they are loaded once
//! per process from the installation's `lib/plugins` folder (or `OPENMM_PLUGIN_DIR`) the first time
//! anything here needs one.
//!
//! ```no_run
//! use cgflow::openmm::{Context, Integrator, Platform, System};
//! let system = System::from_xml_file("data/alanine_dipeptide/aldp_obc1.xml".as_ref())?;
//! let mut context = Context::new(&system, &Platform::new("Reference")?, Integrator::Verlet)?;
//! let positions_nm = vec![0.0; 3 * system.num_particles()];
//! let (energy_kj, forces) = context.energy_and_forces(&positions_nm)?;
//! # Ok::<(), cgflow::Error>(())
//! ```

mod ffi;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use crate::error::{Error, Result};

/// Environment variable that overrides the plugin directory found at build time.
pub const PLUGIN_DIR_VARIABLE: &str = "OPENMM_PLUGIN_DIR";

/// Environment variable that overrides where the OpenCL-for-CPUs install of `./setup.sh
/// --opencl-cpu` is looked for (a folder holding `libOpenCL.so.1` and `libpocl.so`).
pub const OPENCL_CPU_DIR_VARIABLE: &str = "CGFLOW_OPENCL_CPU_DIR";

/// What loading the plugins found.
#[derive(Debug, Clone)]
pub struct PluginReport {
    /// The directory the plugins came from.
    pub directory: PathBuf,
    /// The OpenCL-for-CPUs install (pocl) loaded before the plugins, if there is one.
    pub opencl_cpu: Option<PathBuf>,
    /// Number of plugin libraries loaded.
    pub loaded: usize,
    /// Plugins that failed to load (for example CUDA without a driver), with OpenMM's reason.
    pub failures: Vec<String>,
}

static PLUGINS: OnceLock<std::result::Result<PluginReport, String>> = OnceLock::new();

/// The plugin directory this process uses: `OPENMM_PLUGIN_DIR` if set, else the installation's
/// `lib/plugins` that cgflow was built against.
pub fn plugin_directory() -> PathBuf {
    match std::env::var_os(PLUGIN_DIR_VARIABLE) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(env!("CGFLOW_OPENMM_PLUGIN_DIR")),
    }
}

/// Where an OpenCL-for-CPUs install is looked for: `CGFLOW_OPENCL_CPU_DIR` if set, else the
/// `opencl` folder beside the OpenMM installation cgflow was built against (`.openmm/opencl`,
/// which `./setup.sh --opencl-cpu` fills).
pub fn opencl_cpu_directory() -> PathBuf {
    match std::env::var_os(OPENCL_CPU_DIR_VARIABLE) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(env!("CGFLOW_OPENCL_CPU_DIR")),
    }
}

/// Makes pocl visible to OpenMM's OpenCL plugin, if `./setup.sh --opencl-cpu` installed it: loads
/// the OpenCL loader globally (the plugin links `libOpenCL.so.1`, which is not on the linker's
/// search path) and names pocl in `OCL_ICD_FILENAMES`, which the loader reads on first use.
/// Returns whether there was an install in `directory`.
fn load_opencl_cpu(directory: &Path) -> std::result::Result<bool, String> {
    let loader = directory.join("libOpenCL.so.1");
    let pocl = directory.join("libpocl.so");
    if !(loader.exists() && pocl.exists()) {
        return Ok(false);
    }
    // pocl finds its own libraries relative to where it was opened from ($ORIGIN), so it must be
    // named by its real path inside the virtual environment, not by the link.
    let pocl = pocl.canonicalize().map_err(|e| format!("{}: {e}", pocl.display()))?;
    let icd = pocl.to_string_lossy().into_owned();
    let icds = match std::env::var("OCL_ICD_FILENAMES") {
        Ok(existing) if existing.split(':').any(|p| p == icd) => existing,
        Ok(existing) if !existing.is_empty() => format!("{existing}:{icd}"),
        _ => icd,
    };
    // Set once, inside the plugin loader's OnceLock, before any OpenCL call: std's environment
    // lock serialises this against other Rust readers.
    std::env::set_var("OCL_ICD_FILENAMES", icds);
    ffi::load_library_global(&loader.to_string_lossy()).map_err(|e| e.to_string())?;
    Ok(true)
}

/// Loads OpenMM's platform plugins once per process and reports what happened. A missing
/// directory is an error; single plugins that fail to load are listed in the report, and so is an
/// OpenCL-for-CPUs install that fails to load.
pub fn load_plugins() -> Result<PluginReport> {
    PLUGINS
        .get_or_init(|| {
            let opencl_directory = opencl_cpu_directory();
            let (opencl_cpu, opencl_failure) = match load_opencl_cpu(&opencl_directory) {
                Ok(found) => (found.then_some(opencl_directory), None),
                Err(e) => (None, Some(format!("OpenCL for CPUs in {}: {e}", opencl_directory.display()))),
            };
            let directory = plugin_directory();
            let text = directory.to_string_lossy().into_owned();
            let loaded = ffi::load_plugins(&text).map_err(|e| {
                format!(
                    "{e} (set {PLUGIN_DIR_VARIABLE} to the lib/plugins folder of the OpenMM installation, or run ./setup.sh)"
                )
            })?;
            let mut failures = ffi::plugin_load_failures().map_err(|e| e.to_string())?;
            failures.extend(opencl_failure);
            Ok(PluginReport { directory, opencl_cpu, loaded, failures })
        })
        .clone()
        .map_err(Error::OpenMm)
}

/// Records that the host process already loaded OpenMM's plugins into the libOpenMM this process
/// shares with it (Python's `import openmm` loads them from its own `lib/plugins`), so that
/// [`load_plugins`] does not load and register every platform a second time. `failures` are the
/// host's plugin load failures and `loaded` the number it loaded. The OpenCL-for-CPUs install of
/// `./setup.sh --opencl-cpu` is not set up in such a process (the host loaded the OpenCL plugin
/// before cgflow could name pocl to it). Returns false, changing nothing, if the plugins were
/// loaded before.
pub fn adopt_host_plugins(directory: PathBuf, loaded: usize, failures: Vec<String>) -> bool {
    let report = PluginReport { directory, opencl_cpu: None, loaded, failures };
    PLUGINS.set(Ok(report)).is_ok()
}

/// The OpenMM version string (for example "8.6.1").
pub fn version() -> String {
    ffi::openmm_version()
}

/// Names and relative speeds of the available platforms (loads the plugins first).
pub fn available_platforms() -> Result<Vec<(String, f64)>> {
    load_plugins()?;
    Ok(ffi::registered_platforms())
}

/// CPU cores the calling thread may run on.
pub fn allowed_cpus() -> Result<Vec<usize>> {
    ffi::allowed_cpus()
}

/// Pins the calling thread to one CPU core; threads it starts afterwards (OpenMM's CPU-platform
/// workers among them) inherit the pin.
pub fn pin_current_thread(cpu: usize) -> Result<()> {
    ffi::pin_current_thread(cpu)
}

/// A molecular system: particles, their masses and the forces between them.
///
/// Cheap to clone (shared, immutable).
#[derive(Clone)]
pub struct System {
    handle: Arc<ffi::SystemHandle>,
}

impl std::fmt::Debug for System {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("System").field("num_particles", &self.num_particles()).finish()
    }
}

impl System {
    /// Parses a System from OpenMM's XML serialization.
    pub fn from_xml(xml: &str) -> Result<Self> {
        if !xml.contains("<System") {
            return Err(Error::invalid("the text is not a serialized OpenMM System (no <System> element)"));
        }
        Ok(Self { handle: Arc::new(ffi::SystemHandle::from_xml(xml)?) })
    }

    /// Reads a System from an XML file.
    pub fn from_xml_file(path: &Path) -> Result<Self> {
        let xml = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_xml(&xml).map_err(|e| match e {
            Error::OpenMm(m) | Error::InvalidInput(m) => Error::parse(path, m),
            other => other,
        })
    }

    /// Number of particles.
    pub fn num_particles(&self) -> usize {
        self.handle.num_particles()
    }

    /// Masses in dalton.
    pub fn masses(&self) -> Result<Vec<f64>> {
        self.handle.masses()
    }

    /// Force names in order (for example `["HarmonicBondForce", ..]`).
    pub fn force_names(&self) -> Result<Vec<String>> {
        self.handle.force_names()
    }

    /// Serializes to OpenMM XML.
    pub fn to_xml(&self) -> Result<String> {
        self.handle.to_xml()
    }

    /// The bond graph: particle pairs of every HarmonicBondForce and CustomBondForce.
    pub fn bonds(&self) -> Result<Vec<(usize, usize)>> {
        self.handle.bonds()
    }

    /// A copy of this System with flat-bottomed harmonic restraints on dihedral angles (an OpenMM
    /// CustomTorsionForce, E = k/2 max(0, d - w)^2 with d the periodic distance from the centre and
    /// w the half-width of the flat bottom).
    pub fn with_torsion_restraints(&self, restraints: &[TorsionRestraint]) -> Result<System> {
        let atoms: Vec<i32> = restraints
            .iter()
            .flat_map(|r| r.atoms)
            .map(|a| i32::try_from(a).map_err(|_| Error::invalid(format!("atom index {a} is too large"))))
            .collect::<Result<_>>()?;
        let k: Vec<f64> = restraints.iter().map(|r| r.k_kj_per_mol_rad2).collect();
        let centre: Vec<f64> = restraints.iter().map(|r| r.centre_rad).collect();
        let width: Vec<f64> = restraints.iter().map(|r| r.flat_half_width_rad).collect();
        Ok(System { handle: Arc::new(self.handle.with_torsion_restraints(&atoms, &k, &centre, &width)?) })
    }

    /// A System of `copies` non-interacting copies of this one for batched evaluation (the copy
    /// trick), and the constant that each copy's energy differs from this system's by, in kJ/mol.
    /// See [`crate::energy::ReplicaEnergy`] for the conditions under which forces are exact.
    pub fn replicate(&self, copies: usize, cutoff_nm: f64) -> Result<(System, f64)> {
        if copies == 0 {
            return Err(Error::invalid("the number of copies must be at least 1"));
        }
        if !(cutoff_nm.is_finite() && cutoff_nm > 0.0) {
            return Err(Error::invalid(format!("cut-off must be a positive length in nm, got {cutoff_nm}")));
        }
        let (handle, offset) = self.handle.replicate(copies, cutoff_nm)?;
        Ok((System { handle: Arc::new(handle) }, offset))
    }
}

/// A (flat-bottomed) harmonic restraint on one dihedral angle: `E = k/2 max(0, d - w)^2`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TorsionRestraint {
    /// The four particles of the dihedral.
    pub atoms: [usize; 4],
    /// Force constant in kJ/mol/rad^2.
    pub k_kj_per_mol_rad2: f64,
    /// Centre in radians.
    pub centre_rad: f64,
    /// Half-width `w` of the flat bottom in radians (0: a plain harmonic restraint).
    pub flat_half_width_rad: f64,
}

impl TorsionRestraint {
    /// A plain harmonic restraint.
    pub fn harmonic(atoms: [usize; 4], k_kj_per_mol_rad2: f64, centre_rad: f64) -> TorsionRestraint {
        TorsionRestraint { atoms, k_kj_per_mol_rad2, centre_rad, flat_half_width_rad: 0.0 }
    }
}

/// An OpenMM platform by name, with platform properties (for example `Threads` on CPU,
/// `Precision` and `DeviceIndex` on CUDA).
#[derive(Debug, Clone, PartialEq)]
pub struct Platform {
    name: String,
    properties: Vec<(String, String)>,
}

impl Platform {
    /// The platform called `name`; an unknown name is an error listing the available ones.
    pub fn new(name: &str) -> Result<Self> {
        let available = available_platforms()?;
        match available.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
            Some((n, _)) => Ok(Self { name: n.clone(), properties: Vec::new() }),
            None => {
                let names: Vec<&str> = available.iter().map(|(n, _)| n.as_str()).collect();
                Err(Error::invalid(format!("unknown OpenMM platform '{name}'; available: {}", names.join(", "))))
            }
        }
    }

    /// The fastest available platform (by OpenMM's speed estimate).
    pub fn fastest() -> Result<Self> {
        let available = available_platforms()?;
        let best = available
            .iter()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .ok_or_else(|| Error::OpenMm("no OpenMM platform is available".into()))?;
        Ok(Self { name: best.0.clone(), properties: Vec::new() })
    }

    /// Adds (or replaces) a platform property.
    pub fn with_property(mut self, key: &str, value: &str) -> Self {
        self.properties.retain(|(k, _)| k != key);
        self.properties.push((key.to_owned(), value.to_owned()));
        self
    }

    /// The platform's name as OpenMM spells it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The properties set so far.
    pub fn properties(&self) -> &[(String, String)] {
        &self.properties
    }

    /// Whether a property has been set.
    pub fn has_property(&self, key: &str) -> bool {
        self.properties.iter().any(|(k, _)| k == key)
    }

    /// On the CPU platform, one OpenMM thread per Context (`Threads=1`) unless `Threads` is
    /// already set: results are then reproducible, and many small Contexts do not fight over
    /// cores. Other platforms are returned unchanged.
    pub fn single_threaded_cpu(self) -> Self {
        if self.name == "CPU" && !self.has_property("Threads") {
            self.with_property("Threads", "1")
        } else {
            self
        }
    }
}

/// Integrators a [`Context`] can own.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Integrator {
    /// Verlet with a 1 fs step: for evaluating energies and forces.
    Verlet,
    /// OpenMM's `LangevinMiddleIntegrator`.
    LangevinMiddle {
        /// Bath temperature.
        temperature_k: f64,
        /// Friction coefficient.
        friction_per_ps: f64,
        /// Time step.
        step_ps: f64,
        /// Random seed (0 lets OpenMM choose).
        seed: i32,
    },
}

impl Integrator {
    fn spec(self) -> ffi::IntegratorSpec {
        match self {
            Integrator::Verlet => ffi::IntegratorSpec {
                kind: ffi::IntegratorKind::CGF_INTEGRATOR_VERLET,
                temperature_k: 0.0,
                friction_per_ps: 0.0,
                step_ps: 0.001,
                seed: 0,
            },
            Integrator::LangevinMiddle { temperature_k, friction_per_ps, step_ps, seed } => ffi::IntegratorSpec {
                kind: ffi::IntegratorKind::CGF_INTEGRATOR_LANGEVIN_MIDDLE,
                temperature_k,
                friction_per_ps,
                step_ps,
                seed,
            },
        }
    }
}

/// The state of a simulation: a System on a Platform with an Integrator.
pub struct Context {
    handle: ffi::ContextHandle,
    platform_name: String,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("platform", &self.platform_name)
            .field("num_particles", &self.num_particles())
            .finish()
    }
}

/// Checks a flat coordinate array: right length and finite.
pub(crate) fn check_coordinates(values: &[f64], num_particles: usize, configs: usize, what: &str) -> Result<()> {
    let expected = configs * num_particles * 3;
    if values.len() != expected {
        return Err(Error::invalid(format!(
            "{what}: expected {configs} x {num_particles} atoms x 3 = {expected} values, got {}",
            values.len()
        )));
    }
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        let atom = (i / 3) % num_particles.max(1);
        let config = i / (3 * num_particles.max(1));
        return Err(Error::invalid(format!(
            "{what}: non-finite value {} at configuration {config}, atom {atom}",
            values[i]
        )));
    }
    Ok(())
}

impl Context {
    /// Creates a context (copies the System).
    pub fn new(system: &System, platform: &Platform, integrator: Integrator) -> Result<Self> {
        load_plugins()?;
        let handle =
            ffi::ContextHandle::create(&system.handle, &platform.name, &platform.properties, integrator.spec())?;
        let platform_name = handle.platform_name()?;
        Ok(Self { handle, platform_name })
    }

    /// Number of particles.
    pub fn num_particles(&self) -> usize {
        self.handle.num_particles()
    }

    /// The platform's name.
    pub fn platform_name(&self) -> &str {
        &self.platform_name
    }

    /// The value of a platform property in this context.
    pub fn platform_property(&self, key: &str) -> Result<String> {
        self.handle.platform_property(key)
    }

    /// Potential energy (kJ/mol) and forces (kJ/mol/nm) of one configuration (nm).
    pub fn energy_and_forces(&mut self, positions_nm: &[f64]) -> Result<(f64, Vec<f64>)> {
        let mut energy = [0.0];
        let mut forces = vec![0.0; positions_nm.len()];
        self.evaluate_batch(positions_nm, &mut energy, Some(&mut forces))?;
        Ok((energy[0], forces))
    }

    /// Evaluates `energies_kj.len()` configurations, one OpenMM evaluation each, in one call into
    /// the shim. Positions must be finite; `forces_kj_per_nm` may be `None` to skip forces.
    pub fn evaluate_batch(
        &mut self,
        positions_nm: &[f64],
        energies_kj: &mut [f64],
        forces_kj_per_nm: Option<&mut [f64]>,
    ) -> Result<()> {
        check_coordinates(positions_nm, self.num_particles(), energies_kj.len(), "positions")?;
        self.handle.evaluate_batch(positions_nm, energies_kj, forces_kj_per_nm)
    }

    /// Sets the positions (nm).
    pub fn set_positions(&mut self, positions_nm: &[f64]) -> Result<()> {
        check_coordinates(positions_nm, self.num_particles(), 1, "positions")?;
        self.handle.set_positions(positions_nm)
    }

    /// Sets the velocities (nm/ps).
    pub fn set_velocities(&mut self, velocities: &[f64]) -> Result<()> {
        check_coordinates(velocities, self.num_particles(), 1, "velocities")?;
        self.handle.set_velocities(velocities)
    }

    /// Draws Maxwell-Boltzmann velocities.
    pub fn set_velocities_to_temperature(&mut self, temperature_k: f64, seed: i32) -> Result<()> {
        self.handle.set_velocities_to_temperature(temperature_k, seed)
    }

    /// Advances the integrator.
    pub fn step(&mut self, steps: usize) -> Result<()> {
        let steps = i32::try_from(steps).map_err(|_| Error::invalid("too many steps for one call"))?;
        self.handle.step(steps)
    }

    /// Current positions (nm).
    pub fn positions(&mut self) -> Result<Vec<f64>> {
        let mut out = vec![0.0; 3 * self.num_particles()];
        self.handle.get_state(Some(&mut out), None, None, None, None, None)?;
        Ok(out)
    }

    /// Current velocities (nm/ps).
    pub fn velocities(&mut self) -> Result<Vec<f64>> {
        let mut out = vec![0.0; 3 * self.num_particles()];
        self.handle.get_state(None, Some(&mut out), None, None, None, None)?;
        Ok(out)
    }

    /// Potential and kinetic energy (kJ/mol) of the current state.
    pub fn energies(&mut self) -> Result<(f64, f64)> {
        let (mut potential, mut kinetic) = (0.0, 0.0);
        self.handle.get_state(None, None, None, Some(&mut potential), Some(&mut kinetic), None)?;
        Ok((potential, kinetic))
    }

    /// An OpenMM checkpoint of the context: positions, velocities, time and the integrator's random
    /// state (binary, valid for the same System and platform).
    pub fn checkpoint(&mut self) -> Result<Vec<u8>> {
        self.handle.create_checkpoint()
    }

    /// Restores a checkpoint from [`Context::checkpoint`].
    pub fn load_checkpoint(&mut self, bytes: &[u8]) -> Result<()> {
        self.handle.load_checkpoint(bytes)
    }

    /// Simulated time (ps).
    pub fn time_ps(&mut self) -> Result<f64> {
        let mut time = 0.0;
        self.handle.get_state(None, None, None, None, None, Some(&mut time))?;
        Ok(time)
    }
}
