//! [`Walkers`]: many independent Langevin MD runs of one small molecule in a single OpenMM
//! Context, through the copy trick (see [`crate::energy::ReplicaEnergy`]).
//!
//! Every walker is a copy of the molecule with its own position on a cubic grid; nonbonded forces
//! use a cut-off so copies do not interact, and forces on each copy equal those of the NoCutoff
//! system exactly. Copies diffuse (about 0.3 nm per ps under Langevin at 1/ps), so every
//! `recentre_every_steps` steps each copy is translated back to its grid point; a rigid
//! translation changes nothing physical. The grid spacing leaves room for a drift of up to
//! [`MAX_DRIFT_NM`] between recentrings, and a larger drift is an error rather than a silent
//! interaction between walkers.
//!
//! Each walker may carry its own harmonic dihedral restraints (umbrella sampling: one window per
//! walker). One MD step of all walkers counts as one energy evaluation per walker.
//!
//! Checkpoints hold OpenMM's own checkpoint (positions, velocities, the integrator's random state).
//! On the CPU platform with `Threads=1` a run is bit-reproducible from its seed, and a restored run
//! continues bit for bit for a while; but OpenMM rebuilds its neighbour list at the restored
//! positions, so sums are taken in another order than in the uninterrupted run, and the round-off
//! difference grows like any perturbation of a chaotic trajectory. With several CPU threads
//! results vary in the last digits from run to run anyway (about 1e-6 nm after 1000 steps). So
//! resumed runs are equivalent statistically, not bitwise; the number of steps and recorded frames
//! is exact.

use crate::energy::copy_grid::{centroid_and_radius, CopyGrid};
use crate::error::{Error, Result};
use crate::openmm::{Context, Integrator, Platform, System, TorsionRestraint};

/// The largest centroid displacement allowed between two recentrings, in nm.
pub const MAX_DRIFT_NM: f64 = 1.5;

/// Settings of [`Walkers`].
#[derive(Debug, Clone, PartialEq)]
pub struct WalkerConfig {
    /// Number of independent walkers (copies).
    pub walkers: usize,
    /// Bath temperature.
    pub temperature_k: f64,
    /// Langevin friction.
    pub friction_per_ps: f64,
    /// Time step in fs.
    pub step_fs: f64,
    /// Random seed of the integrator and of the initial velocities (must be non-zero to be
    /// reproducible; 0 lets OpenMM choose).
    pub seed: i32,
    /// Nonbonded cut-off of the copy system; each molecule must fit in a sphere of this diameter.
    pub cutoff_nm: f64,
    /// Steps between recentrings of the copies.
    pub recentre_every_steps: u64,
}

impl Default for WalkerConfig {
    /// The reference MD of the papers: 300 K, friction 1/ps, 1 fs (no constraints).
    fn default() -> Self {
        Self {
            walkers: 64,
            temperature_k: 300.0,
            friction_per_ps: 1.0,
            step_fs: 1.0,
            seed: 1,
            cutoff_nm: 2.0,
            recentre_every_steps: 1000,
        }
    }
}

/// Independent Langevin walkers of one molecule in one OpenMM Context.
pub struct Walkers {
    context: Context,
    config: WalkerConfig,
    n_atoms: usize,
    grid: CopyGrid,
    steps_done: u64,
    steps_since_recentre: u64,
}

impl std::fmt::Debug for Walkers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Walkers").field("config", &self.config).field("steps_done", &self.steps_done).finish()
    }
}

/// The state needed to continue a run exactly: OpenMM's checkpoint (positions, velocities,
/// random state) and the step counters.
#[derive(Debug, Clone, PartialEq)]
pub struct WalkerCheckpoint {
    /// OpenMM's binary checkpoint.
    pub openmm: Vec<u8>,
    /// Steps done per walker.
    pub steps_done: u64,
    /// Steps since the last recentring.
    pub steps_since_recentre: u64,
}

impl Walkers {
    /// Builds the walkers of `system` from `start` (nm): one structure used for every walker, or
    /// one per walker. `restraints(walker)` gives the dihedral restraints of a walker in the
    /// molecule's own atom indices (empty for plain MD).
    pub fn new(
        system: &System,
        platform: &Platform,
        config: &WalkerConfig,
        start: &[f64],
        restraints: impl Fn(usize) -> Vec<TorsionRestraint>,
    ) -> Result<Self> {
        if config.walkers == 0 {
            return Err(Error::invalid("at least one walker is needed"));
        }
        if !(config.step_fs > 0.0 && config.temperature_k > 0.0 && config.friction_per_ps >= 0.0) {
            return Err(Error::invalid("MD needs a positive step, a positive temperature and friction >= 0"));
        }
        if config.recentre_every_steps == 0 {
            return Err(Error::invalid("recentre_every_steps must be at least 1"));
        }
        let n_atoms = system.num_particles();
        let stride = 3 * n_atoms;
        if start.len() != stride && start.len() != stride * config.walkers {
            return Err(Error::invalid(format!(
                "start positions: expected one structure ({stride} values) or one per walker ({}), got {}",
                stride * config.walkers,
                start.len()
            )));
        }
        crate::openmm::check_coordinates(start, n_atoms, start.len() / stride, "start positions")?;
        let (copies, _) = system.replicate(config.walkers, config.cutoff_nm)?;
        let mut all = Vec::new();
        for w in 0..config.walkers {
            for r in restraints(w) {
                if let Some(&bad) = r.atoms.iter().find(|&&a| a >= n_atoms) {
                    return Err(Error::invalid(format!(
                        "restraint of walker {w}: atom {bad} does not exist (the molecule has {n_atoms} atoms)"
                    )));
                }
                all.push(TorsionRestraint { atoms: r.atoms.map(|a| a + w * n_atoms), ..r });
            }
        }
        let copies = if all.is_empty() { copies } else { copies.with_torsion_restraints(&all)? };
        let integrator = Integrator::LangevinMiddle {
            temperature_k: config.temperature_k,
            friction_per_ps: config.friction_per_ps,
            step_ps: config.step_fs * 1e-3,
            seed: config.seed,
        };
        let mut context = Context::new(&copies, platform, integrator)?;
        let grid = CopyGrid::new(config.walkers, 2.0 * config.cutoff_nm + 2.0 * MAX_DRIFT_NM);
        let mut positions = vec![0.0; stride * config.walkers];
        for w in 0..config.walkers {
            let source = if start.len() == stride { start } else { &start[w * stride..(w + 1) * stride] };
            if 2.0 * centroid_and_radius(source).1 >= config.cutoff_nm {
                return Err(Error::invalid(format!(
                    "start structure of walker {w} does not fit in a sphere of the cut-off diameter {} nm",
                    config.cutoff_nm
                )));
            }
            grid.place(w, source, &mut positions[w * stride..(w + 1) * stride]);
        }
        context.set_positions(&positions)?;
        context.set_velocities_to_temperature(config.temperature_k, config.seed)?;
        Ok(Self { context, config: config.clone(), n_atoms, grid, steps_done: 0, steps_since_recentre: 0 })
    }

    /// Atoms per walker.
    pub fn n_atoms(&self) -> usize {
        self.n_atoms
    }

    /// Number of walkers.
    pub fn walkers(&self) -> usize {
        self.config.walkers
    }

    /// Steps done by each walker.
    pub fn steps_done(&self) -> u64 {
        self.steps_done
    }

    /// Energy evaluations so far: one per step per walker.
    pub fn evaluations(&self) -> u64 {
        self.steps_done * self.config.walkers as u64
    }

    /// Advances every walker by `steps`, recentring on schedule.
    pub fn step(&mut self, steps: u64) -> Result<()> {
        let mut left = steps;
        while left > 0 {
            let until_recentre = self.config.recentre_every_steps - self.steps_since_recentre;
            let chunk = left.min(until_recentre).min(i32::MAX as u64);
            self.context.step(chunk as usize)?;
            self.steps_done += chunk;
            self.steps_since_recentre += chunk;
            left -= chunk;
            if self.steps_since_recentre == self.config.recentre_every_steps {
                self.recentre()?;
            }
        }
        Ok(())
    }

    fn recentre(&mut self) -> Result<()> {
        let stride = 3 * self.n_atoms;
        let mut positions = self.context.positions()?;
        for w in 0..self.config.walkers {
            let slice = &mut positions[w * stride..(w + 1) * stride];
            let (c, radius) = centroid_and_radius(slice);
            let g = self.grid.point(w);
            let drift = ((c[0] - g[0]).powi(2) + (c[1] - g[1]).powi(2) + (c[2] - g[2]).powi(2)).sqrt();
            if drift > MAX_DRIFT_NM || 2.0 * radius >= self.config.cutoff_nm {
                return Err(Error::OpenMm(format!(
                    "walker {w} drifted {drift:.2} nm (limit {MAX_DRIFT_NM}) or grew to radius {radius:.2} nm: \
                     recentre more often"
                )));
            }
            let copy = slice.to_vec();
            self.grid.place(w, &copy, slice);
        }
        self.context.set_positions(&positions)?;
        self.steps_since_recentre = 0;
        Ok(())
    }

    /// Current positions of all walkers (walkers x atoms x 3, nm; each walker translated somewhere
    /// on the grid).
    pub fn positions(&mut self) -> Result<Vec<f64>> {
        self.context.positions()
    }

    /// Everything needed to continue exactly where the run is.
    pub fn checkpoint(&mut self) -> Result<WalkerCheckpoint> {
        Ok(WalkerCheckpoint {
            openmm: self.context.checkpoint()?,
            steps_done: self.steps_done,
            steps_since_recentre: self.steps_since_recentre,
        })
    }

    /// Restores a checkpoint of walkers built with the same system, platform and configuration.
    pub fn restore(&mut self, checkpoint: &WalkerCheckpoint) -> Result<()> {
        self.context.load_checkpoint(&checkpoint.openmm)?;
        self.steps_done = checkpoint.steps_done;
        self.steps_since_recentre = checkpoint.steps_since_recentre;
        Ok(())
    }
}
