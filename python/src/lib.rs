//! `cgflow._cgflow`: the native half of the `cgflow` Python package, a thin layer over the cgflow
//! crate. Arrays cross as little-endian float64 bytes (the Python half turns them into numpy arrays
//! and checks shapes), so that the module needs only the stable ABI. Long calls release the GIL;
//! errors become the Python exceptions the package documents.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cgflow::backmap::{backmap, cg_points_to_radians, BackmapConfig};
use cgflow::energy::{Batch, EnergyModel, OpenMmEnergy, OpenMmEnergyConfig};
use cgflow::flow::molecular::ConditionalMolecularTarget;
use cgflow::flow::molecule_model::{load_molecule_model, model_system, MoleculeModelInfo};
use cgflow::flow::Flow;
use cgflow::openmm::{Platform, System};
use cgflow::units::AngleUnit;
use pyo3::exceptions::{PyFileNotFoundError, PyKeyboardInterrupt, PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use rand::SeedableRng;

/// The Python exception classes the package raises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ErrorClass {
    /// Bad input, malformed files, unknown settings.
    Value,
    /// A file that is not there.
    FileNotFound,
    /// Other file errors.
    Os,
    /// A run stopped at a checkpoint on request (Ctrl-C).
    Interrupt,
    /// Engine failures: OpenMM's exceptions, the tensor engine.
    Runtime,
}

fn class_of(error: &cgflow::Error) -> ErrorClass {
    match error {
        cgflow::Error::InvalidInput(_) | cgflow::Error::Parse { .. } => ErrorClass::Value,
        cgflow::Error::Io { error, .. } if error.kind() == std::io::ErrorKind::NotFound => ErrorClass::FileNotFound,
        cgflow::Error::Io { .. } => ErrorClass::Os,
        cgflow::Error::Stopped(_) => ErrorClass::Interrupt,
        cgflow::Error::OpenMm(_) | cgflow::Error::Tensor(_) => ErrorClass::Runtime,
    }
}

fn make_error(class: ErrorClass, message: String) -> PyErr {
    match class {
        ErrorClass::Value => PyValueError::new_err(message),
        // errno 2 (ENOENT), so that Python's OSError fields are set as for its own open().
        ErrorClass::FileNotFound => PyFileNotFoundError::new_err((2, message)),
        ErrorClass::Os => PyOSError::new_err(message),
        ErrorClass::Interrupt => PyKeyboardInterrupt::new_err(message),
        ErrorClass::Runtime => PyRuntimeError::new_err(message),
    }
}

fn err(error: cgflow::Error) -> PyErr {
    make_error(class_of(&error), error.to_string())
}

/// The exception for a failed command: the class of the first cgflow, I/O or settings error in its
/// chain, with the whole chain as the message. Checks a command makes itself (`bail!`) are about
/// its input, so they are `ValueError`s.
fn command_error(error: &anyhow::Error) -> PyErr {
    let class = error
        .chain()
        .find_map(|cause| {
            if let Some(e) = cause.downcast_ref::<cgflow::Error>() {
                Some(class_of(e))
            } else if let Some(e) = cause.downcast_ref::<std::io::Error>() {
                Some(if e.kind() == std::io::ErrorKind::NotFound { ErrorClass::FileNotFound } else { ErrorClass::Os })
            } else {
                cause.downcast_ref::<serde_json::Error>().map(|_| ErrorClass::Value)
            }
        })
        .unwrap_or(ErrorClass::Value);
    make_error(class, format!("{error:#}"))
}

fn bytes_to_f64(bytes: &[u8], what: &str) -> PyResult<Vec<f64>> {
    if bytes.len() % 8 != 0 {
        return Err(PyValueError::new_err(format!("{what}: {} bytes are not whole float64 values", bytes.len())));
    }
    Ok(bytes.chunks_exact(8).map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])).collect())
}

fn f64_to_bytes<'py>(py: Python<'py>, values: &[f64]) -> Bound<'py, PyBytes> {
    let mut bytes = Vec::with_capacity(8 * values.len());
    for v in values {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    PyBytes::new(py, &bytes)
}

fn platform(name: &str, properties: &[(String, String)]) -> PyResult<Platform> {
    let mut platform = Platform::new(name).map_err(err)?;
    for (key, value) in properties {
        platform = platform.with_property(key, value);
    }
    Ok(platform)
}

/// The System from XML text or a file. XML that OpenMM cannot deserialize is bad input, so a
/// `ValueError` (with OpenMM's message), not an engine failure.
fn read_system(system: &str, is_xml: bool) -> PyResult<System> {
    let parsed = if is_xml { System::from_xml(system) } else { System::from_xml_file(Path::new(system)) };
    parsed.map_err(|e| match e {
        cgflow::Error::OpenMm(message) => PyValueError::new_err(format!("not a valid OpenMM System: {message}")),
        other => err(other),
    })
}

/// Batched energies and forces of one OpenMM System (one Context per worker thread).
#[pyclass(module = "cgflow._cgflow")]
struct NativeEnergy {
    model: Mutex<OpenMmEnergy>,
    n_atoms: usize,
    kt_kj_per_mol: f64,
    platform_name: String,
}

fn lock(model: &Mutex<OpenMmEnergy>) -> PyResult<std::sync::MutexGuard<'_, OpenMmEnergy>> {
    model.lock().map_err(|_| PyRuntimeError::new_err("an earlier evaluation panicked; create a new Energy"))
}

#[pymethods]
impl NativeEnergy {
    #[new]
    #[pyo3(signature = (system, is_xml, platform_name, properties, temperature_k, workers))]
    fn new(
        system: &str,
        is_xml: bool,
        platform_name: &str,
        properties: Vec<(String, String)>,
        temperature_k: f64,
        workers: Option<usize>,
    ) -> PyResult<Self> {
        let system = read_system(system, is_xml)?;
        let platform = platform(platform_name, &properties)?;
        let config = OpenMmEnergyConfig { temperature_k, workers, ..OpenMmEnergyConfig::default() };
        let model = OpenMmEnergy::new(&system, &platform, &config).map_err(err)?;
        let kt_kj_per_mol = model.kt_kj_per_mol();
        let platform_name = model.platform_name().to_owned();
        Ok(Self { model: Mutex::new(model), n_atoms: system.num_particles(), kt_kj_per_mol, platform_name })
    }

    /// Atoms per configuration.
    #[getter]
    fn n_atoms(&self) -> usize {
        self.n_atoms
    }

    /// kT in kJ/mol at the temperature of the model.
    #[getter]
    fn kt_kj_per_mol(&self) -> f64 {
        self.kt_kj_per_mol
    }

    /// The platform the contexts run on.
    #[getter]
    fn platform_name(&self) -> String {
        self.platform_name.clone()
    }

    /// Configurations evaluated so far.
    #[getter]
    fn evaluations(&self, py: Python<'_>) -> PyResult<u64> {
        // The lock is taken without the GIL: another thread may hold it for a long evaluation.
        py.allow_threads(|| Ok(EnergyModel::evaluation_count(&*lock(&self.model)?)))
    }

    /// Seconds per call of the Rust API (`OpenMmEnergy::evaluate_kj`, no Python in the loop) on
    /// flat float64 positions, best of `repeats`: the baseline of the package's benchmark.
    fn time_rust_evaluate(&self, py: Python<'_>, positions_nm: &[u8], repeats: usize) -> PyResult<f64> {
        let positions = bytes_to_f64(positions_nm, "positions")?;
        py.allow_threads(|| {
            let batch = Batch::new(&positions, self.n_atoms).map_err(err)?;
            let mut model = lock(&self.model)?;
            let mut best = f64::INFINITY;
            for _ in 0..repeats.max(1) {
                let started = Instant::now();
                model.evaluate_kj(&batch).map_err(err)?;
                best = best.min(started.elapsed().as_secs_f64());
            }
            Ok(best)
        })
    }

    /// Energies (kJ/mol) and forces (kJ/mol/nm) of flat float64 positions (nm), as bytes; with
    /// `reduced`, u = U/kT and du/dx (1/nm) instead.
    fn evaluate<'py>(
        &self,
        py: Python<'py>,
        positions_nm: &[u8],
        reduced: bool,
    ) -> PyResult<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)> {
        let positions = bytes_to_f64(positions_nm, "positions")?;
        let (energies, forces) = py.allow_threads(|| -> PyResult<(Vec<f64>, Vec<f64>)> {
            let batch = Batch::new(&positions, self.n_atoms).map_err(err)?;
            let mut model = lock(&self.model)?;
            if reduced {
                let evaluation = EnergyModel::evaluate(&mut *model, &batch).map_err(err)?;
                Ok((evaluation.reduced_energies, evaluation.gradients))
            } else {
                model.evaluate_kj(&batch).map_err(err)
            }
        })?;
        Ok((f64_to_bytes(py, &energies), f64_to_bytes(py, &forces)))
    }
}

/// A saved conditional molecular model (`cgflow al` writes one to `<run>/model`).
#[pyclass(module = "cgflow._cgflow")]
struct NativeModel {
    flow: Mutex<Flow>,
    info: MoleculeModelInfo,
    dir: PathBuf,
}

#[pymethods]
impl NativeModel {
    #[new]
    fn new(dir: &str) -> PyResult<Self> {
        let dir = PathBuf::from(dir);
        if !dir.is_dir() {
            return Err(PyFileNotFoundError::new_err((2, format!("no model folder {}", dir.display()))));
        }
        let (flow, info) = load_molecule_model(&dir, &candle_core::Device::Cpu).map_err(err)?;
        Ok(Self { flow: Mutex::new(flow), info, dir })
    }

    /// Atoms per structure.
    #[getter]
    fn n_atoms(&self) -> usize {
        self.info.n_atoms
    }

    /// CG coordinates per point.
    #[getter]
    fn cg_dims(&self) -> PyResult<usize> {
        Ok(self.info.molecule().map_err(err)?.cg_dims())
    }

    /// Temperature the model was trained at, in K.
    #[getter]
    fn temperature_k(&self) -> f64 {
        self.info.temperature_k
    }

    /// Backmaps flat CG points; returns a dict of bytes (float64) and numbers, see the Python half.
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (cg, degrees, n, seed, max_energy_kt, max_rounds, system, platform_name, properties))]
    fn backmap<'py>(
        &self,
        py: Python<'py>,
        cg: &[u8],
        degrees: bool,
        n: usize,
        seed: u64,
        max_energy_kt: Option<f64>,
        max_rounds: usize,
        system: Option<String>,
        platform_name: &str,
        properties: Vec<(String, String)>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let values = bytes_to_f64(cg, "cg")?;
        let platform = platform(platform_name, &properties)?;
        let result = py.allow_threads(|| -> PyResult<cgflow::backmap::Backmapped> {
            let system = model_system(&self.dir, system.as_deref().map(Path::new)).map_err(err)?;
            self.info.check_system(&system).map_err(err)?;
            let molecule = self.info.molecule().map_err(err)?;
            let unit = if degrees { AngleUnit::Degrees } else { AngleUnit::Radians };
            let cg_rad = cg_points_to_radians(&values, molecule.cg_dims(), unit).map_err(err)?;
            let energy_config =
                OpenMmEnergyConfig { temperature_k: self.info.temperature_k, ..OpenMmEnergyConfig::default() };
            let energy = OpenMmEnergy::new(&system, &platform, &energy_config).map_err(err)?;
            let target = ConditionalMolecularTarget::new(molecule, Box::new(energy)).map_err(err)?;
            let config = BackmapConfig {
                samples_per_point: n,
                max_energy_kt,
                max_rounds,
                temperature_k: self.info.temperature_k,
                ..BackmapConfig::default()
            };
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let flow = self.flow.lock().map_err(|_| PyRuntimeError::new_err("the model is unusable after a panic"))?;
            backmap(&flow, &target, &cg_rad, &config, &mut rng).map_err(err)
        })?;
        let out = PyDict::new(py);
        out.set_item("n_atoms", result.n_atoms)?;
        out.set_item("positions_nm", f64_to_bytes(py, &result.positions_nm))?;
        out.set_item("cg_index", result.cg_index.clone())?;
        out.set_item("cg_achieved_rad", f64_to_bytes(py, &result.cg_achieved_rad))?;
        out.set_item("reduced_energies", f64_to_bytes(py, &result.reduced_energies))?;
        out.set_item("energies_kj_per_mol", f64_to_bytes(py, &result.energies_kj_per_mol))?;
        out.set_item("log_weights", f64_to_bytes(py, &result.log_weights))?;
        out.set_item("weights", f64_to_bytes(py, &result.normalized_weights))?;
        out.set_item("evaluations", result.evaluations)?;
        out.set_item("rejected_chirality", result.rejected_chirality)?;
        out.set_item("rejected_energy", result.rejected_energy)?;
        let ess: Vec<f64> = result.points.iter().map(|p| p.ess).collect();
        let free_energy: Vec<f64> = result.points.iter().map(|p| p.free_energy_kt).collect();
        out.set_item("point_ess", ess)?;
        out.set_item("point_free_energy_kt", free_energy)?;
        Ok(out)
    }
}

/// Set while a command runs: the stop request and the progress are per process.
static COMMAND_RUNNING: AtomicBool = AtomicBool::new(false);

/// Runs one `cgflow` subcommand (its words after `cgflow`) on a worker thread with the GIL
/// released. Every `poll_s` seconds it checks for Ctrl-C, which asks the command to stop at its next
/// checkpoint (the call then raises `KeyboardInterrupt` once the command has stopped), and calls
/// `progress(phase, done, total)` when the progress changed.
#[pyfunction]
#[pyo3(signature = (words, progress=None, poll_s=0.2))]
fn run_command(py: Python<'_>, words: Vec<String>, progress: Option<PyObject>, poll_s: f64) -> PyResult<()> {
    if COMMAND_RUNNING.swap(true, Ordering::SeqCst) {
        return Err(PyRuntimeError::new_err("another cgflow command is running in this process"));
    }
    cgflow::run_control::reset();
    let (sender, receiver) = std::sync::mpsc::channel();
    let worker = std::thread::Builder::new().name("cgflow-command".into()).spawn(move || {
        // A panic is a bug; it is reported as a RuntimeError instead of taking the interpreter down.
        let result = std::panic::catch_unwind(|| cgflow::cli::run_words(&words));
        let _ = sender.send(result);
    });
    let outcome = match worker {
        Ok(_) => wait_for_command(py, receiver, progress.as_ref(), poll_s),
        Err(e) => Err(PyRuntimeError::new_err(format!("starting the command thread: {e}"))),
    };
    COMMAND_RUNNING.store(false, Ordering::SeqCst);
    outcome
}

type CommandOutcome = std::thread::Result<Result<(), cgflow::cli::HostRunError>>;

fn wait_for_command(
    py: Python<'_>,
    mut receiver: std::sync::mpsc::Receiver<CommandOutcome>,
    progress: Option<&PyObject>,
    poll_s: f64,
) -> PyResult<()> {
    let poll = Duration::from_secs_f64(if poll_s.is_finite() && poll_s > 0.0 { poll_s } else { 0.2 });
    // Set once the command was asked to stop: by Ctrl-C, or because the progress callback raised.
    let mut interrupted: Option<PyErr> = None;
    let mut last_progress = None;
    let mut last_report = Instant::now();
    let mut report = |py: Python<'_>, force: bool| -> PyResult<()> {
        let Some(callback) = progress else { return Ok(()) };
        let now = cgflow::run_control::progress();
        if now != last_progress && (force || last_report.elapsed() >= poll) {
            if let Some(p) = &now {
                callback.call1(py, (p.phase.clone(), p.done, p.total))?;
            }
            last_progress = now;
            last_report = Instant::now();
        }
        Ok(())
    };
    loop {
        // The receiver is Send but not Sync: it moves into the GIL-free closure and back.
        let (received, back) = py.allow_threads(move || (receiver.recv_timeout(poll), receiver));
        receiver = back;
        match received {
            Ok(outcome) => {
                if interrupted.is_none() {
                    // The last progress, so that a callback sees the run's end.
                    if let Err(e) = report(py, true) {
                        interrupted = Some(e);
                    }
                }
                return finish_command(py, outcome, interrupted);
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err(PyRuntimeError::new_err("the command thread ended without a result"));
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
        if interrupted.is_none() {
            let signal = py.check_signals().and_then(|()| report(py, false));
            if let Err(e) = signal {
                // Ctrl-C, or an exception from the callback: the command stops at its next
                // checkpoint and the exception is raised once it has (the command keeps the
                // thread until then, so no second command can start beside it).
                cgflow::run_control::request_stop();
                eprintln!("cgflow: stopping at the next checkpoint (the run can be resumed)");
                interrupted = Some(e);
            }
        }
    }
}

/// The result of a finished command. After a stop request (`interrupted`): the stop is raised as
/// that exception (with the command's "stopped" message when it stopped at a checkpoint), unless the
/// command failed for another reason, which is then raised instead.
fn finish_command(py: Python<'_>, outcome: CommandOutcome, interrupted: Option<PyErr>) -> PyResult<()> {
    let result = match outcome {
        Ok(Ok(())) => Ok(()),
        Ok(Err(cgflow::cli::HostRunError::Usage(message))) => Err(PyValueError::new_err(message)),
        Ok(Err(cgflow::cli::HostRunError::Failed(e))) => {
            let stopped =
                e.chain().any(|c| matches!(c.downcast_ref::<cgflow::Error>(), Some(cgflow::Error::Stopped(_))));
            if stopped && interrupted.as_ref().is_some_and(|i| i.is_instance_of::<PyKeyboardInterrupt>(py)) {
                return Err(PyKeyboardInterrupt::new_err(format!("{e:#}")));
            }
            if stopped {
                // Stopped because the progress callback raised: raise what it raised.
                return Err(interrupted.unwrap_or_else(|| command_error(&e)));
            }
            Err(command_error(&e))
        }
        Err(payload) => Err(PyRuntimeError::new_err(format!(
            "the command panicked (a bug in cgflow; please report it): {}",
            panic_message(payload.as_ref())
        ))),
    };
    match (result, interrupted) {
        (Err(e), _) => Err(e),
        (Ok(()), Some(stop)) => Err(stop),
        (Ok(()), None) => Ok(()),
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}

/// The options of subcommand `name`: (long name, takes a value, repeatable) each.
#[pyfunction]
fn command_options(name: &str) -> PyResult<Vec<(String, bool, bool)>> {
    let options = cgflow::cli::subcommand_options(name)
        .ok_or_else(|| PyValueError::new_err(format!("cgflow has no command '{name}'")))?;
    Ok(options.into_iter().map(|o| (o.long, o.takes_value, o.repeatable)).collect())
}

/// Tells the Rust core that `import openmm` already loaded `loaded` plugins from `directory` into
/// the shared libOpenMM (so they are not registered twice). Returns whether this took effect.
#[pyfunction]
fn adopt_host_plugins(directory: String, loaded: usize, failures: Vec<String>) -> bool {
    cgflow::openmm::adopt_host_plugins(PathBuf::from(directory), loaded, failures)
}

/// Names of the platforms registered in the libOpenMM this module uses.
#[pyfunction]
fn platforms() -> PyResult<Vec<String>> {
    Ok(cgflow::openmm::available_platforms().map_err(err)?.into_iter().map(|(name, _)| name).collect())
}

/// The version of the libOpenMM this module uses.
#[pyfunction]
fn openmm_version() -> String {
    cgflow::openmm::version()
}

/// The native module.
#[pymodule]
fn _cgflow(m: &Bound<'_, PyModule>) -> PyResult<()> {
    cgflow::cli::configure_flow_threads();
    m.add_class::<NativeEnergy>()?;
    m.add_class::<NativeModel>()?;
    m.add_function(wrap_pyfunction!(run_command, m)?)?;
    m.add_function(wrap_pyfunction!(command_options, m)?)?;
    m.add_function(wrap_pyfunction!(adopt_host_plugins, m)?)?;
    m.add_function(wrap_pyfunction!(platforms, m)?)?;
    m.add_function(wrap_pyfunction!(openmm_version, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
