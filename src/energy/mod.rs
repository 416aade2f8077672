//! Energy models: batches of configurations in, reduced energies u = U/kT and gradients du/dx out.
//!
//! Two contracts:
//! - [`EnergyModel`]: u and du/dx for every configuration. Implemented by [`OpenMmEnergy`] (one
//!   OpenMM Context per worker thread, any System).
//! - [`GradientModel`]: du/dx for every configuration and the *sum* of u over the batch. Every
//!   [`EnergyModel`] is one; [`ReplicaEnergy`] (the copy trick: many copies of the molecule in one
//!   OpenMM System) is only this, because OpenMM reports one energy per force group, not per copy,
//!   so one call cannot give per-copy energies. Gradients are what MD and the gradient of a
//!   reverse-KL loss need; per-configuration energies (importance weights, loss clipping) need an
//!   [`EnergyModel`].
//!
//! Units are converted once, here: positions in nm, OpenMM's kJ/mol and kJ/mol/nm become kT and
//! kT/nm with kT = R T.

pub(crate) mod copy_grid;
pub mod ising;
mod openmm_pool;
mod replica;
pub mod toy;

pub use openmm_pool::{OpenMmEnergy, OpenMmEnergyConfig};
pub use replica::{ReplicaEnergy, ReplicaEnergyConfig};

use crate::error::{Error, Result};

/// A batch of configurations: flat positions `[config][atom][xyz]` in nm, checked to be finite and
/// of the right shape.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    positions_nm: &'a [f64],
    n_atoms: usize,
}

impl<'a> Batch<'a> {
    /// Wraps flat positions of `n_atoms` atoms per configuration. Errors on a length that is not a
    /// multiple of `3 * n_atoms` and on NaN or infinite coordinates (naming the configuration and atom).
    ///
    /// ```
    /// use cgflow::energy::Batch;
    /// let x = [0.0, 0.0, 0.0, 0.1, 0.0, 0.0];
    /// assert_eq!(Batch::new(&x, 2).unwrap().len(), 1);
    /// assert!(Batch::new(&x[..5], 2).is_err());
    /// assert!(Batch::new(&[f64::NAN; 6], 2).is_err());
    /// ```
    pub fn new(positions_nm: &'a [f64], n_atoms: usize) -> Result<Self> {
        if n_atoms == 0 {
            return Err(Error::invalid("a configuration needs at least one atom"));
        }
        if positions_nm.len() % (3 * n_atoms) != 0 {
            return Err(Error::invalid(format!(
                "positions: {} values is not a whole number of configurations of {n_atoms} atoms x 3",
                positions_nm.len()
            )));
        }
        let configs = positions_nm.len() / (3 * n_atoms);
        crate::openmm::check_coordinates(positions_nm, n_atoms, configs, "positions")?;
        Ok(Self { positions_nm, n_atoms })
    }

    /// Number of configurations.
    pub fn len(&self) -> usize {
        self.positions_nm.len() / (3 * self.n_atoms)
    }

    /// Whether the batch holds no configuration.
    pub fn is_empty(&self) -> bool {
        self.positions_nm.is_empty()
    }

    /// Atoms per configuration.
    pub fn n_atoms(&self) -> usize {
        self.n_atoms
    }

    /// All positions, flat.
    pub fn positions_nm(&self) -> &'a [f64] {
        self.positions_nm
    }

    /// The positions of configuration `i`.
    pub fn config(&self, i: usize) -> &'a [f64] {
        let stride = 3 * self.n_atoms;
        &self.positions_nm[i * stride..(i + 1) * stride]
    }
}

/// Per-configuration results of an [`EnergyModel`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Evaluation {
    /// u = U/kT, one per configuration.
    pub reduced_energies: Vec<f64>,
    /// du/dx in 1/nm (kT per nm), flat like the positions.
    pub gradients: Vec<f64>,
}

/// Results of a [`GradientModel`]: per-configuration gradients and the batch's total energy.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GradientEvaluation {
    /// Sum of u = U/kT over the configurations of the batch.
    pub total_reduced_energy: f64,
    /// du/dx in 1/nm (kT per nm), flat like the positions.
    pub gradients: Vec<f64>,
}

/// A model that returns u and du/dx for every configuration.
pub trait EnergyModel: Send {
    /// Atoms per configuration.
    fn n_atoms(&self) -> usize;
    /// Evaluates a batch.
    fn evaluate(&mut self, batch: &Batch) -> Result<Evaluation>;
    /// Configurations evaluated so far (each configuration of each batch counts once).
    fn evaluation_count(&self) -> u64;
}

/// A model that returns du/dx for every configuration and the sum of u over the batch.
pub trait GradientModel: Send {
    /// Atoms per configuration.
    fn n_atoms(&self) -> usize;
    /// Evaluates a batch.
    fn evaluate_gradients(&mut self, batch: &Batch) -> Result<GradientEvaluation>;
    /// Configurations evaluated so far.
    fn evaluation_count(&self) -> u64;
}

impl<M: EnergyModel> GradientModel for M {
    fn n_atoms(&self) -> usize {
        EnergyModel::n_atoms(self)
    }

    fn evaluate_gradients(&mut self, batch: &Batch) -> Result<GradientEvaluation> {
        let evaluation = self.evaluate(batch)?;
        Ok(GradientEvaluation {
            total_reduced_energy: evaluation.reduced_energies.iter().sum(),
            gradients: evaluation.gradients,
        })
    }

    fn evaluation_count(&self) -> u64 {
        EnergyModel::evaluation_count(self)
    }
}

/// Checks that a batch has the model's atom count.
pub(crate) fn check_batch(batch: &Batch, n_atoms: usize) -> Result<()> {
    if batch.n_atoms() != n_atoms {
        return Err(Error::invalid(format!(
            "the model has {n_atoms} atoms but the batch has {} per configuration",
            batch.n_atoms()
        )));
    }
    Ok(())
}

/// Converts OpenMM output (kJ/mol, kJ/mol/nm) to reduced units in place: u = U/kT, du/dx = -F/kT.
/// Non-finite values (overlapping atoms give infinite energies) pass through unchanged in sign
/// convention; callers that feed them into learning decide what to do with them.
pub(crate) fn to_reduced(energies_kj: &mut [f64], forces_to_gradients: &mut [f64], kt_kj_per_mol: f64) {
    let inverse = 1.0 / kt_kj_per_mol;
    energies_kj.iter_mut().for_each(|e| *e *= inverse);
    forces_to_gradients.iter_mut().for_each(|f| *f *= -inverse);
}

/// What to do with configurations whose energy or forces are not finite (coincident atoms, an
/// exploded structure), as bgflow's OpenMM bridge offers: refuse them, warn and go on, or go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum NonFinitePolicy {
    /// An error that names the configurations.
    #[default]
    Error,
    /// Keep the values, and say which configurations they are.
    Warn,
    /// Keep the values silently.
    Ignore,
}

/// The configurations (0-based) whose energy, or any force component (`3 * atoms` per
/// configuration), is NaN or infinite.
///
/// ```
/// use cgflow::energy::non_finite_configurations;
/// let energies = [1.0, f64::NAN, 2.0];
/// let forces = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, f64::INFINITY, 0.0];
/// assert_eq!(non_finite_configurations(&energies, &forces, 1), vec![1, 2]);
/// ```
pub fn non_finite_configurations(energies: &[f64], forces: &[f64], atoms: usize) -> Vec<usize> {
    let stride = 3 * atoms;
    energies
        .iter()
        .enumerate()
        .filter(|&(i, e)| {
            !e.is_finite() || forces.get(i * stride..(i + 1) * stride).is_some_and(|f| f.iter().any(|x| !x.is_finite()))
        })
        .map(|(i, _)| i)
        .collect()
}
