//! Normalizing flows on candle: rational-quadratic spline and affine couplings, residual-MLP
//! conditioners, base distributions, and their training by example and by energy; flows saved
//! with their optimiser state ([`checkpoint`]) and conditional molecular flows saved as model
//! files with their molecule ([`molecule_model`]).
//!
//! The hot paths (spline and affine transforms with their log-determinants, bias + ReLU with the
//! bias gradient, angle embeddings) are fused custom ops with hand-written backward passes
//! ([`ops`]); matrix products are candle's.

pub mod base;
pub mod bg;
pub mod checkpoint;
pub mod coupling;
#[allow(clippy::module_inception)]
pub mod flow;
pub mod ising_bg;
pub mod linear;
pub mod mlp;
pub mod molecular;
pub mod molecule_model;
pub mod ops;
pub mod optim;
pub mod params;
pub mod spline;
pub mod train;

pub use base::Base;
pub use flow::{CouplingKind, Flow, FlowSpec, Precision};
