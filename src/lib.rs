//! # cgflow
//!
//! Learned generative models on top of OpenMM energies: batched all-atom energies and forces from
//! any serialized OpenMM System ([`openmm`], [`energy`]), file formats ([`io`]), internal
//! coordinates ([`coords`]), normalizing flows ([`flow`]), coarse-grained active learning ([`al`],
//! [`pmf`]), MD ([`md`]) and the metrics that compare them ([`metrics`]). The `cgflow` command line
//! ([`cli`]) is part of the library, so that the Python package runs the same commands.
//!
//! Units: positions in nm, energies in kJ/mol at the OpenMM boundary and in kT (reduced, `u`)
//! everywhere else; names carry the unit where it is not kT.

#![warn(missing_docs)]

pub mod al;
pub mod backmap;
pub mod chem;
pub mod cli;
pub mod coords;
pub mod energy;
pub mod error;
pub mod flow;
pub mod io;
pub mod md;
pub mod metrics;
pub mod openmm;
pub mod pmf;
pub mod run_control;
pub mod units;

pub use error::{Error, Result};
