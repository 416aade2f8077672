//! A normalizing flow: a base distribution and a stack of coupling layers (with periodic shifts
//! of the circular dimensions between them), optionally conditioned on a context vector.

use super::base::Base;
use super::coupling::{CouplingLayer, CouplingPlan};
use super::ops::{with_cpu_slice, PeriodicShift, Transformer};
use super::params::{ParamBuilder, ParamStore};
use crate::error::{Error, Result};
use candle_core::{CustomOp1, DType, Device, Tensor};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Elementwise bijection used by every coupling layer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum CouplingKind {
    /// Rational-quadratic splines: linear tails outside +-`tail_bound` on real dimensions,
    /// circular splines on angles.
    Spline {
        /// Bins per spline.
        bins: usize,
        /// Half-width of the spline interval of real dimensions.
        tail_bound: f64,
    },
    /// Real NVP: y = x exp(s) + t, with |s| soft-clamped to `max_log_scale`.
    Affine {
        /// Bound of the log-scale of one layer.
        max_log_scale: f64,
    },
}

/// Floating-point precision of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// 32-bit throughout.
    F32,
    /// 64-bit throughout (the reference code's setting).
    F64,
    /// 32-bit conditioner networks (weights and matrix products), 64-bit coordinates, spline
    /// transforms and log-densities: the map is exactly invertible to f64 rounding.
    Mixed,
}

impl Precision {
    /// The dtype of states, log-densities and the coupling transforms.
    pub fn dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::F64 | Precision::Mixed => DType::F64,
        }
    }

    /// The dtype of the conditioners' weights and activations.
    pub fn parameter_dtype(self) -> DType {
        match self {
            Precision::F64 => DType::F64,
            Precision::F32 | Precision::Mixed => DType::F32,
        }
    }
}

/// Everything that defines a flow's architecture (saved beside its weights).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowSpec {
    /// Dimensions of the modelled variable.
    pub dims: usize,
    /// Indices of circular dimensions (angles in [-pi, pi)).
    pub circular: Vec<usize>,
    /// Width of the context vector (0: unconditional).
    pub context: usize,
    /// Coupling layers.
    pub layers: usize,
    /// Bijection of the coupling layers.
    pub coupling: CouplingKind,
    /// Hidden units of each conditioner.
    pub hidden: usize,
    /// Residual blocks of each conditioner.
    pub blocks: usize,
    /// A fixed random periodic shift of the circular dimensions after every `shift_every`
    /// layers (0: none).
    pub shift_every: usize,
    /// Seed of masks, shifts and initial weights.
    pub seed: u64,
    /// Precision.
    pub precision: Precision,
}

impl FlowSpec {
    /// The conditional affine flow q(s_perp | s) of Müller-Brown (BRIEF section 3: one fine
    /// coordinate, the CG coordinate as a one-wide context; 2 real-NVP layers of 32 hidden units,
    /// f64).
    pub fn muller_brown_conditional(seed: u64) -> Self {
        Self {
            dims: 1,
            circular: vec![],
            context: 1,
            layers: 2,
            coupling: CouplingKind::Affine { max_log_scale: 4.0 },
            hidden: 32,
            blocks: 1,
            shift_every: 0,
            seed,
            precision: Precision::F64,
        }
    }

    /// The reference conditional flow of alanine dipeptide (58 dims, 10 circular, context
    /// (cos phi, sin phi, cos psi, sin psi), 12 spline couplings of 8 bins, 256 hidden units).
    pub fn aldp_conditional(precision: Precision, seed: u64) -> Self {
        Self {
            dims: 58,
            circular: vec![5, 8, 19, 22, 25, 28, 31, 45, 48, 51],
            context: 4,
            layers: 12,
            coupling: CouplingKind::Spline { bins: 8, tail_bound: 5.0 },
            hidden: 256,
            blocks: 1,
            shift_every: 2,
            seed,
            precision,
        }
    }

    /// A lower bound on the flow's parameter count, without building it: each coupling layer's
    /// conditioner reads every untransformed dimension and the context through `hidden` units,
    /// writes the parameters of every transformed dimension (at least half the dimensions,
    /// rounded down, or the one dimension of a one-dimensional flow; 2 per dimension for affine couplings, `3 bins - 1` or more for splines) from
    /// them, and has two `hidden x hidden` matrices per residual block. Saturates instead of
    /// overflowing, so a hostile spec gives a huge bound, which a reader compares with the size
    /// of the weights file before allocating anything.
    ///
    /// ```
    /// use cgflow::flow::flow::{Flow, FlowSpec, Precision};
    /// let spec = FlowSpec { hidden: 32, layers: 4, ..FlowSpec::aldp_conditional(Precision::F32, 1) };
    /// let flow = Flow::new(&spec, &candle_core::Device::Cpu).unwrap();
    /// let built = flow.params().count() as u128;
    /// assert!(spec.min_parameters() <= built && built < spec.min_parameters() * 11 / 10);
    /// ```
    pub fn min_parameters(&self) -> u128 {
        let (dims, context, hidden) = (self.dims as u128, self.context as u128, self.hidden as u128);
        // A one-dimensional flow transforms its dimension given the context alone.
        let transformed = if dims == 1 { 1 } else { dims / 2 };
        let per_transformed: u128 = match self.coupling {
            CouplingKind::Affine { .. } => 2,
            CouplingKind::Spline { bins, .. } => (3 * bins as u128).saturating_sub(1),
        };
        let reads = dims.saturating_sub(transformed).saturating_add(context);
        let per_layer = hidden
            .saturating_mul(reads.saturating_add(transformed.saturating_mul(per_transformed)))
            .saturating_add(hidden.saturating_mul(hidden).saturating_mul(2).saturating_mul(self.blocks as u128));
        per_layer.saturating_mul(self.layers as u128)
    }

    /// Checks that the spec describes a buildable flow.
    pub fn validate(&self) -> Result<()> {
        if self.dims == 0 || self.layers == 0 || self.hidden == 0 {
            return Err(Error::invalid("a flow needs dims, layers and hidden units > 0"));
        }
        if let Some(&c) = self.circular.iter().find(|&&c| c >= self.dims) {
            return Err(Error::invalid(format!("circular dimension {c} does not exist ({} dims)", self.dims)));
        }
        if self.dims == 1 && self.context == 0 {
            return Err(Error::invalid("a one-dimensional flow needs a context"));
        }
        match self.coupling {
            CouplingKind::Spline { bins, tail_bound } => {
                if !((2..=32).contains(&bins) && tail_bound > 0.0 && tail_bound.is_finite()) {
                    return Err(Error::invalid("spline couplings need 2..=32 bins and a positive tail bound"));
                }
            }
            CouplingKind::Affine { max_log_scale } => {
                if !(max_log_scale > 0.0 && max_log_scale.is_finite()) {
                    return Err(Error::invalid("affine couplings need a positive max_log_scale"));
                }
                if !self.circular.is_empty() {
                    return Err(Error::invalid("affine couplings cannot transform circular dimensions"));
                }
            }
        }
        Ok(())
    }
}

enum FlowLayer {
    Coupling(CouplingLayer),
    Shift { forward: Arc<Box<dyn CustomOp1 + Send + Sync>>, inverse: Arc<Box<dyn CustomOp1 + Send + Sync>> },
}

/// A (conditional) normalizing flow x = F(z; c) with z from [`Base`].
pub struct Flow {
    spec: FlowSpec,
    layers: Vec<FlowLayer>,
    base: Base,
    params: ParamStore,
    device: Device,
}

impl std::fmt::Debug for Flow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flow").field("spec", &self.spec).field("parameters", &self.params.count()).finish()
    }
}

/// Alternating masks: for each pair of layers a random half of the dimensions, then the rest.
fn masks(dims: usize, layers: usize, rng: &mut ChaCha8Rng) -> Vec<Vec<usize>> {
    if dims == 1 {
        return vec![vec![0]; layers];
    }
    let mut out = Vec::with_capacity(layers);
    let mut perm: Vec<usize> = (0..dims).collect();
    while out.len() < layers {
        perm.shuffle(rng);
        let (a, b) = perm.split_at(dims / 2);
        let (mut a, mut b) = (a.to_vec(), b.to_vec());
        a.sort_unstable();
        b.sort_unstable();
        out.push(a);
        if out.len() < layers {
            out.push(b);
        }
    }
    out
}

impl Flow {
    /// Builds a flow with fresh (identity) weights from `spec`.
    pub fn new(spec: &FlowSpec, device: &Device) -> Result<Self> {
        spec.validate()?;
        if !device.is_cpu() {
            return Err(Error::invalid(
                "the flow engine's fused kernels (splines, couplings, bias) run on the CPU only; \
                 use Device::Cpu",
            ));
        }
        let mut structure_rng = ChaCha8Rng::seed_from_u64(spec.seed ^ 0x5eed_5eed_5eed_5eed);
        let mut weight_rng = ChaCha8Rng::seed_from_u64(spec.seed);
        let mut params = ParamStore::new();
        let mut pb = ParamBuilder::new(&mut params, &mut weight_rng, spec.precision.parameter_dtype(), device);
        let base = Base::new(spec.dims, &spec.circular);
        let circular = base.circular().to_vec();
        let (real, angle) = match spec.coupling {
            CouplingKind::Spline { bins, tail_bound } => (
                Transformer::Spline { bins, bound: tail_bound, circular: false },
                Transformer::Spline { bins, bound: std::f64::consts::PI, circular: true },
            ),
            CouplingKind::Affine { max_log_scale } => {
                (Transformer::Affine { max_log_scale }, Transformer::Affine { max_log_scale })
            }
        };
        let mut layers = Vec::new();
        for (i, transformed) in masks(spec.dims, spec.layers, &mut structure_rng).into_iter().enumerate() {
            let plan = CouplingPlan {
                dims: spec.dims,
                circular: circular.clone(),
                transformed,
                real,
                angle,
                context: spec.context,
                hidden: spec.hidden,
                blocks: spec.blocks,
            };
            layers.push(FlowLayer::Coupling(CouplingLayer::new(&mut pb.pp(&format!("layer{i}")), &plan)?));
            let shift_here = spec.shift_every > 0 && (i + 1) % spec.shift_every == 0 && i + 1 < spec.layers;
            if shift_here && !spec.circular.is_empty() {
                let shifts: Vec<(usize, f64)> = spec
                    .circular
                    .iter()
                    .map(|&c| (c, structure_rng.gen_range(-std::f64::consts::PI..std::f64::consts::PI)))
                    .collect();
                layers.push(FlowLayer::Shift {
                    forward: Arc::new(Box::new(PeriodicShift { shifts: shifts.clone(), inverse: false })),
                    inverse: Arc::new(Box::new(PeriodicShift { shifts, inverse: true })),
                });
            }
        }
        Ok(Self { spec: spec.clone(), layers, base, params, device: device.clone() })
    }

    /// The architecture.
    pub fn spec(&self) -> &FlowSpec {
        &self.spec
    }

    /// The trainable parameters.
    pub fn params(&self) -> &ParamStore {
        &self.params
    }

    /// The base distribution.
    pub fn base(&self) -> &Base {
        &self.base
    }

    /// The device the flow lives on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The dtype of the flow's tensors.
    pub fn dtype(&self) -> DType {
        self.spec.precision.dtype()
    }

    fn check_input(&self, x: &Tensor, context: Option<&Tensor>, what: &str) -> Result<usize> {
        let (rows, cols) =
            x.dims2().map_err(|_| Error::invalid(format!("{what} must be a 2D tensor [batch, dims]")))?;
        if cols != self.spec.dims {
            return Err(Error::invalid(format!("{what} has {cols} columns, the flow has {} dims", self.spec.dims)));
        }
        if x.dtype() != self.dtype() {
            return Err(Error::invalid(format!("{what} is {:?}, the flow is {:?}", x.dtype(), self.dtype())));
        }
        match (context, self.spec.context) {
            (None, 0) => {}
            (None, n) => return Err(Error::invalid(format!("the flow needs a context of width {n}"))),
            (Some(c), n) => {
                let (cr, cc) =
                    c.dims2().map_err(|_| Error::invalid("the context must be a 2D tensor [batch, width]"))?;
                if cc != n || cr != rows {
                    return Err(Error::invalid(format!(
                        "context of shape [{cr}, {cc}], expected [{rows}, {n}] (batch {rows}, context width {n})"
                    )));
                }
                if c.dtype() != self.dtype() {
                    return Err(Error::invalid("the context and the flow differ in dtype"));
                }
                check_finite(c, "context")?;
            }
        }
        check_finite(x, what)?;
        Ok(rows)
    }

    /// The generative direction x = F(z; c): returns x and log|det dx/dz| `[B]`.
    pub fn forward(&self, z: &Tensor, context: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        self.check_input(z, context, "z")?;
        self.apply_layers(z, context, false)
    }

    /// The density direction z = F^-1(x; c): returns z and log|det dz/dx| `[B]`.
    pub fn inverse(&self, x: &Tensor, context: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        self.check_input(x, context, "x")?;
        self.apply_layers(x, context, true)
    }

    /// Runs the layers in order (or their inverses in reverse order), summing the log-dets.
    fn apply_layers(&self, input: &Tensor, context: Option<&Tensor>, inverse: bool) -> Result<(Tensor, Tensor)> {
        let mut state = input.clone();
        let mut logdet: Option<Tensor> = None;
        let layers: Box<dyn Iterator<Item = &FlowLayer>> =
            if inverse { Box::new(self.layers.iter().rev()) } else { Box::new(self.layers.iter()) };
        for layer in layers {
            match layer {
                FlowLayer::Coupling(c) => {
                    let (y, ld) = c.apply(&state, context, inverse)?;
                    state = y;
                    logdet = Some(match logdet {
                        Some(l) => (l + ld)?,
                        None => ld,
                    });
                }
                FlowLayer::Shift { forward, inverse: backward } => {
                    let op = if inverse { backward } else { forward };
                    state = state.apply_op1_arc(op.clone())?;
                }
            }
        }
        let logdet = logdet.ok_or_else(|| Error::invalid("flow without layers"))?;
        Ok((state, logdet))
    }

    /// log q(x | c) of each row `[B]`.
    pub fn log_prob(&self, x: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        let (z, logdet) = self.inverse(x, context)?;
        Ok((self.base.log_prob(&z)? + logdet)?)
    }

    /// Draws `n` samples x with their log q(x | c); `context` has `n` rows when the flow is
    /// conditional.
    pub fn sample<R: Rng>(&self, n: usize, context: Option<&Tensor>, rng: &mut R) -> Result<(Tensor, Tensor)> {
        let z = self.base.sample(n, rng, self.dtype(), &self.device)?;
        let log_base = self.base.log_prob(&z)?;
        let (x, logdet) = self.forward(&z, context)?;
        Ok((x, (log_base - logdet)?))
    }
}

/// Fails with a clear message if `t` holds NaN or infinite values.
pub fn check_finite(t: &Tensor, what: &str) -> Result<()> {
    let bad = match t.dtype() {
        DType::F32 => with_cpu_slice::<f32, _>(t, |s| s.iter().position(|v| !v.is_finite()))?,
        DType::F64 => with_cpu_slice::<f64, _>(t, |s| s.iter().position(|v| !v.is_finite()))?,
        other => return Err(Error::invalid(format!("{what}: unsupported dtype {other:?}"))),
    };
    match bad {
        Some(i) => {
            let cols = t.dims().last().copied().unwrap_or(1).max(1);
            Err(Error::invalid(format!("{what}: non-finite value at row {}, column {}", i / cols, i % cols)))
        }
        None => Ok(()),
    }
}
