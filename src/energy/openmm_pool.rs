//! [`OpenMmEnergy`]: one OpenMM Context per worker thread, one configuration per OpenMM call.
//!
//! Works for any System. Each worker thread is pinned to its own core before its Context is
//! created, so the CPU platform's own worker thread (which inherits the pin) runs on the same core
//! as its caller. Measured on the 2-core development machine: one ALDP evaluation on the CPU
//! platform costs about 1 ms unpinned and about 0.27 ms pinned, because OpenMM wakes its worker
//! thread several times per evaluation and a wake-up across cores is slow on a virtual machine.

use super::{check_batch, to_reduced, Batch, EnergyModel, Evaluation};
use crate::error::{Error, Result};
use crate::openmm::{self, Context, Integrator, Platform, System};
use crate::units::kt_kj_per_mol;

/// Settings of an [`OpenMmEnergy`].
#[derive(Debug, Clone)]
pub struct OpenMmEnergyConfig {
    /// Temperature that defines kT.
    pub temperature_k: f64,
    /// Worker threads (each with its own Context); `None` = one per allowed CPU core.
    pub workers: Option<usize>,
    /// Pin each worker to its own core (the CPU platform only; ignored on others).
    pub pin_threads: bool,
}

impl Default for OpenMmEnergyConfig {
    fn default() -> Self {
        Self { temperature_k: 300.0, workers: None, pin_threads: true }
    }
}

struct Worker {
    context: Context,
    cpu: Option<usize>,
}

/// Energies and gradients from OpenMM, one Context per worker thread.
pub struct OpenMmEnergy {
    workers: Vec<Worker>,
    n_atoms: usize,
    kt_kj_per_mol: f64,
    count: u64,
}

impl std::fmt::Debug for OpenMmEnergy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenMmEnergy")
            .field("workers", &self.workers.len())
            .field("n_atoms", &self.n_atoms)
            .field("kt_kj_per_mol", &self.kt_kj_per_mol)
            .finish()
    }
}

fn pin(cpu: Option<usize>) {
    if let Some(cpu) = cpu {
        // Pinning is an optimisation: where the OS refuses it, the evaluation is still correct.
        let _ = openmm::pin_current_thread(cpu);
    }
}

impl OpenMmEnergy {
    /// Creates the workers' contexts on `platform`. On the CPU platform each context gets
    /// `Threads=1` unless the platform already sets `Threads`.
    pub fn new(system: &System, platform: &Platform, config: &OpenMmEnergyConfig) -> Result<Self> {
        if !(config.temperature_k.is_finite() && config.temperature_k > 0.0) {
            return Err(Error::invalid(format!("temperature must be positive, got {} K", config.temperature_k)));
        }
        let cpus = openmm::allowed_cpus().unwrap_or_default();
        let n_workers = config.workers.unwrap_or(cpus.len().max(1));
        if n_workers == 0 {
            return Err(Error::invalid("at least one worker is needed"));
        }
        let platform = platform.clone().single_threaded_cpu();
        // Only the CPU platform gains: elsewhere the driver's own threads would inherit the pin
        // (pocl's OpenCL-on-CPU thread pool, started by the first context, would then share one
        // core: the copy trick on it ran at 95 us per configuration, against 62-69 us unpinned).
        let pin_threads = config.pin_threads && platform.name() == "CPU";
        let assigned: Vec<Option<usize>> = (0..n_workers)
            .map(|i| if pin_threads && !cpus.is_empty() { Some(cpus[i % cpus.len()]) } else { None })
            .collect();
        // Each context is created on a thread pinned to its worker's core; see the module docs.
        let contexts: Vec<Result<Context>> = std::thread::scope(|scope| {
            let handles: Vec<_> = assigned
                .iter()
                .map(|&cpu| {
                    let platform = &platform;
                    scope.spawn(move || {
                        pin(cpu);
                        Context::new(system, platform, Integrator::Verlet)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err(Error::OpenMm("context creation thread panicked".into()))))
                .collect()
        });
        let mut workers = Vec::with_capacity(n_workers);
        for (context, cpu) in contexts.into_iter().zip(assigned) {
            workers.push(Worker { context: context?, cpu });
        }
        Ok(Self {
            workers,
            n_atoms: system.num_particles(),
            kt_kj_per_mol: kt_kj_per_mol(config.temperature_k),
            count: 0,
        })
    }

    /// Number of worker threads.
    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// kT in kJ/mol.
    pub fn kt_kj_per_mol(&self) -> f64 {
        self.kt_kj_per_mol
    }

    /// The platform the contexts run on.
    pub fn platform_name(&self) -> &str {
        self.workers[0].context.platform_name()
    }

    /// Evaluates in OpenMM's units: energies (kJ/mol) and forces (kJ/mol/nm). Counts the batch.
    pub fn evaluate_kj(&mut self, batch: &Batch) -> Result<(Vec<f64>, Vec<f64>)> {
        check_batch(batch, self.n_atoms)?;
        let n = batch.len();
        let stride = 3 * self.n_atoms;
        let mut energies = vec![0.0; n];
        let mut forces = vec![0.0; n * stride];
        if n == 0 {
            return Ok((energies, forces));
        }
        let active = self.workers.len().min(n);
        // Contiguous, balanced chunks: worker w takes configurations [start_w, start_{w+1}).
        let bounds: Vec<usize> = (0..=active).map(|w| w * n / active).collect();
        let results: Vec<Result<()>> = std::thread::scope(|scope| {
            let mut handles = Vec::with_capacity(active);
            let mut energy_rest: &mut [f64] = &mut energies;
            let mut force_rest: &mut [f64] = &mut forces;
            for (w, worker) in self.workers.iter_mut().take(active).enumerate() {
                let size = bounds[w + 1] - bounds[w];
                let (e, e_next) = std::mem::take(&mut energy_rest).split_at_mut(size);
                let (f, f_next) = std::mem::take(&mut force_rest).split_at_mut(size * stride);
                energy_rest = e_next;
                force_rest = f_next;
                let positions = &batch.positions_nm()[bounds[w] * stride..bounds[w + 1] * stride];
                handles.push(scope.spawn(move || {
                    pin(worker.cpu);
                    worker.context.evaluate_batch(positions, e, Some(f))
                }));
            }
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err(Error::OpenMm("evaluation thread panicked".into()))))
                .collect()
        });
        results.into_iter().collect::<Result<Vec<()>>>()?;
        self.count += n as u64;
        Ok((energies, forces))
    }
}

impl EnergyModel for OpenMmEnergy {
    fn n_atoms(&self) -> usize {
        self.n_atoms
    }

    fn evaluate(&mut self, batch: &Batch) -> Result<Evaluation> {
        let (mut energies, mut forces) = self.evaluate_kj(batch)?;
        to_reduced(&mut energies, &mut forces, self.kt_kj_per_mol);
        Ok(Evaluation { reduced_energies: energies, gradients: forces })
    }

    fn evaluation_count(&self) -> u64 {
        self.count
    }
}
