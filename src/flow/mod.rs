//! Normalizing flows on candle: rational-quadratic spline and affine couplings, residual-MLP
//! conditioners, base distributions, and their training by example and by energy.
//!
//! The hot paths (spline and affine transforms with their log-determinants, bias + ReLU with the
//! bias gradient, angle embeddings) are fused custom ops with hand-written backward passes
//! ([`ops`]); matrix products are candle's.

pub mod base;
pub mod bg;
pub mod coupling;
#[allow(clippy::module_inception)]
pub mod flow;
pub mod ising_bg;
pub mod linear;
pub mod mlp;
pub mod molecular;
pub mod ops;
pub mod optim;
pub mod params;
pub mod spline;
pub mod train;

pub use base::Base;
pub use flow::{CouplingKind, Flow, FlowSpec, Precision};
