//! Training losses: by example (maximum likelihood), by energy (reverse KL with an external
//! energy model that returns u and du/dx), and their mixture J = J_KL + alpha J_ML, with dropping
//! of the largest per-sample losses and an energy regulariser for the first steps.

use super::flow::Flow;
use super::ops::{with_cpu_slice, Real};
use crate::energy::toy::{evaluate_batch, MullerBrown, Potential};
use crate::error::{Error, Result};
use candle_core::{backend::BackendStorage, CpuStorage, CustomOp1, DType, Layout, Shape, Tensor};
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A target density exp(-u(x)) in the flow's own coordinates, with gradients.
pub trait TargetEnergy: Send + Sync {
    /// Dimensions of x.
    fn dims(&self) -> usize;
    /// Dimensions of the coarse-grained coordinates a conditional target needs with each row
    /// (0: unconditional).
    fn cg_dims(&self) -> usize {
        0
    }
    /// Reduced energies u (one per row) and du/dx (flat like `x`), for `x` flat `[row][dim]` and,
    /// for a conditional target, the CG coordinates `cg` of each row (flat `[row][cg_dims]`).
    /// Non-finite energies are allowed (they are dropped or reported by the loss).
    fn energies_and_gradients(&self, x: &[f64], cg: Option<&[f64]>) -> Result<(Vec<f64>, Vec<f64>)>;
    /// Energy evaluations so far.
    fn evaluations(&self) -> u64;
}

/// A toy [`Potential`] as a training target, counting evaluations.
#[derive(Debug)]
pub struct PotentialTarget<P> {
    potential: P,
    count: AtomicU64,
}

impl<P: Potential> PotentialTarget<P> {
    /// Wraps a potential.
    pub fn new(potential: P) -> Self {
        Self { potential, count: AtomicU64::new(0) }
    }

    /// The potential.
    pub fn potential(&self) -> &P {
        &self.potential
    }
}

impl<P: Potential> TargetEnergy for PotentialTarget<P> {
    fn dims(&self) -> usize {
        self.potential.dim()
    }

    fn energies_and_gradients(&self, x: &[f64], cg: Option<&[f64]>) -> Result<(Vec<f64>, Vec<f64>)> {
        if cg.is_some() {
            return Err(Error::invalid("a toy potential takes no CG coordinates"));
        }
        let out = evaluate_batch(&self.potential, x)?;
        self.count.fetch_add(out.0.len() as u64, Ordering::Relaxed);
        Ok(out)
    }

    fn evaluations(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// Müller-Brown as the conditional target of the fine coordinate s_perp = x1 + x2 given the CG
/// coordinate s = x1 - x2: u(s_perp | s) = beta V(x1, x2), x1 = (s + s_perp)/2, x2 = (s_perp - s)/2.
/// (The Jacobian of that map is the constant 1/2, which shifts every free energy equally.)
#[derive(Debug, Default)]
pub struct MullerBrownConditional {
    mb: MullerBrown,
    count: AtomicU64,
}

impl MullerBrownConditional {
    /// At the potential's beta.
    pub fn new(mb: MullerBrown) -> Self {
        Self { mb, count: AtomicU64::new(0) }
    }
}

impl TargetEnergy for MullerBrownConditional {
    fn dims(&self) -> usize {
        1
    }

    fn cg_dims(&self) -> usize {
        1
    }

    fn energies_and_gradients(&self, x: &[f64], cg: Option<&[f64]>) -> Result<(Vec<f64>, Vec<f64>)> {
        let cg = cg.ok_or_else(|| Error::invalid("Müller-Brown conditional target needs the CG coordinate s"))?;
        if cg.len() != x.len() {
            return Err(Error::invalid(format!("{} CG values for {} rows", cg.len(), x.len())));
        }
        let beta = self.mb.beta();
        let mut u = Vec::with_capacity(x.len());
        let mut g = Vec::with_capacity(x.len());
        for (&sp, &s) in x.iter().zip(cg) {
            let [x1, x2] = MullerBrown::from_cg(s, sp);
            let (v, grad) = MullerBrown::potential_and_gradient(x1, x2);
            u.push(beta * v);
            g.push(beta * 0.5 * (grad[0] + grad[1]));
        }
        self.count.fetch_add(x.len() as u64, Ordering::Relaxed);
        Ok((u, g))
    }

    fn evaluations(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// Regularised energy: u below `cut`, `cut + ln(1 + u - cut)` above it (finite gradients for
/// samples far from physical early in training). Returns (value, d value / d u).
pub fn regularize_energy(u: f64, cut: Option<f64>) -> (f64, f64) {
    match cut {
        Some(c) if u > c => {
            let d = 1.0 + (u - c);
            (c + d.ln(), 1.0 / d)
        }
        _ => (u, 1.0),
    }
}

/// Custom op: rows of x -> regularised energies `[B]`, backward through the model's du/dx.
struct EnergyOp {
    target: Arc<dyn TargetEnergy>,
    cg: Option<Vec<f64>>,
    cut: Option<f64>,
    /// d u_reg / dx of the last forward call, flat.
    gradient: Mutex<Vec<f64>>,
    /// Raw energies of the last forward call.
    raw: Mutex<Vec<f64>>,
}

fn energy_fwd<T: Real>(op: &EnergyOp, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
    let (rows, cols) = l.shape().dims2()?;
    let (start, end) =
        l.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg("energy: non-contiguous".into()))?;
    let x: Vec<f64> = s.as_slice::<T>()?[start..end].iter().map(|&v| candle_core::WithDType::to_f64(v)).collect();
    let (u, mut g) = op
        .target
        .energies_and_gradients(&x, op.cg.as_deref())
        .map_err(|e| candle_core::Error::Msg(format!("energy model: {e}")))?;
    if u.len() != rows || g.len() != rows * cols {
        return Err(candle_core::Error::Msg("energy model returned the wrong number of values".into()));
    }
    let mut out = Vec::with_capacity(rows);
    for (i, &ui) in u.iter().enumerate() {
        let (value, slope) = regularize_energy(ui, op.cut);
        g[i * cols..(i + 1) * cols].iter_mut().for_each(|v| *v *= slope);
        out.push(T::from_f64(value));
    }
    *op.gradient.lock().unwrap_or_else(|e| e.into_inner()) = g;
    *op.raw.lock().unwrap_or_else(|e| e.into_inner()) = u;
    Ok((T::to_cpu_storage_owned(out), Shape::from(rows)))
}

fn energy_bwd<T: Real>(op: &EnergyOp, x: &Tensor, grad: &Tensor) -> candle_core::Result<Tensor> {
    let (rows, cols) = x.dims2()?;
    let g = op.gradient.lock().unwrap_or_else(|e| e.into_inner());
    let upstream: Vec<T> = with_cpu_slice::<T, _>(grad, |s| s.to_vec())?;
    let mut out = vec![T::zero(); rows * cols];
    for i in 0..rows {
        let w = upstream[i];
        // A dropped sample has upstream 0; its du/dx may be non-finite and must not leak.
        if w != T::zero() {
            for d in 0..cols {
                out[i * cols + d] = w * T::from_f64(g[i * cols + d]);
            }
        }
    }
    Tensor::from_vec(out, (rows, cols), x.device())
}

impl CustomOp1 for EnergyOp {
    fn name(&self) -> &'static str {
        "target_energy"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        match s.dtype() {
            DType::F32 => energy_fwd::<f32>(self, s, l),
            DType::F64 => energy_fwd::<f64>(self, s, l),
            other => Err(candle_core::Error::Msg(format!("energy: unsupported dtype {other:?}"))),
        }
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(match x.dtype() {
            DType::F32 => energy_bwd::<f32>(self, x, grad)?,
            _ => energy_bwd::<f64>(self, x, grad)?,
        }))
    }
}

/// Settings of the energy term.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnergyLossConfig {
    /// Drop this many of the largest per-sample losses of each batch (non-finite ones first).
    pub drop_top_k: usize,
    /// Regularise energies above this value (kT), linear below and logarithmic above.
    pub regularize_above: Option<f64>,
}

/// What a loss evaluation saw.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LossReport {
    /// The loss value.
    pub loss: f64,
    /// Mean raw energy of the kept samples (energy losses).
    pub mean_energy: f64,
    /// Samples dropped (largest losses).
    pub dropped: usize,
    /// Samples whose energy was not finite (always among the dropped when possible).
    pub non_finite: usize,
}

/// J_ML = -mean log q(x | c) over a batch of data.
pub fn ml_loss(flow: &Flow, x: &Tensor, context: Option<&Tensor>) -> Result<(Tensor, LossReport)> {
    let loss = flow.log_prob(x, context)?.mean_all()?.neg()?;
    let value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    Ok((loss, LossReport { loss: value, ..LossReport::default() }))
}

/// The samples behind one evaluation of [`kl_loss`]: with them every energy
/// evaluation of training by energy is also an importance sample (weight exp(-energy) / q).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct KlSamples {
    /// The samples F(z), flat `[row][dim]`, in f64.
    pub x: Vec<f64>,
    /// ln q(x) of each row under the flow that drew it.
    pub log_q: Vec<f64>,
    /// The target's energy of each row before regularisation (kT; may be non-finite).
    pub energy: Vec<f64>,
}

/// J_KL = mean over z of [u(F(z)) + log q(F(z))] (the reverse KL divergence up to the constant
/// log Z), for `n` base samples; `context` has `n` rows for a conditional flow. Also returns the
/// samples, their log-densities under the flow and their raw energies.
///
/// For a conditional target, `cg` holds the CG coordinates of each of the `n` rows (flat, the
/// target's `cg_dims` per row) and `context` the flow's context features of the same rows.
#[allow(clippy::too_many_arguments)]
pub fn kl_loss<R: Rng>(
    flow: &Flow,
    target: Arc<dyn TargetEnergy>,
    n: usize,
    context: Option<&Tensor>,
    cg: Option<&[f64]>,
    config: &EnergyLossConfig,
    rng: &mut R,
) -> Result<(Tensor, LossReport, KlSamples)> {
    if target.dims() != flow.spec().dims {
        return Err(Error::invalid(format!("target has {} dims, the flow {}", target.dims(), flow.spec().dims)));
    }
    match (target.cg_dims(), cg) {
        (0, None) => {}
        (0, Some(_)) => return Err(Error::invalid("CG coordinates given to an unconditional target")),
        (d, Some(c)) if c.len() == d * n => {}
        (d, _) => return Err(Error::invalid(format!("the target needs {d} CG coordinates for each of {n} rows"))),
    }
    let (x, log_q) = flow.sample(n, context, rng)?;
    let op = Arc::new(EnergyOp {
        target,
        cg: cg.map(|c| c.to_vec()),
        cut: config.regularize_above,
        gradient: Mutex::new(vec![]),
        raw: Mutex::new(vec![]),
    });
    let op_dyn: Arc<Box<dyn CustomOp1 + Send + Sync>> = Arc::new(Box::new(EnergyOpHandle(op.clone())));
    let u = x.apply_op1_arc(op_dyn)?;
    let per_sample = (u + &log_q)?;
    let values: Vec<f64> = per_sample.to_dtype(DType::F64)?.to_vec1()?;
    let raw = op.raw.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let non_finite = values.iter().filter(|v| !v.is_finite()).count();
    let mut order: Vec<usize> = (0..n).collect();
    // Largest first; non-finite values count as largest.
    order.sort_by(|&a, &b| {
        let key = |v: f64| if v.is_finite() { v } else { f64::INFINITY };
        key(values[b]).total_cmp(&key(values[a]))
    });
    let drop = config.drop_top_k.max(non_finite).min(n.saturating_sub(1));
    if non_finite > drop {
        return Err(Error::invalid(format!("{non_finite} of {n} samples have a non-finite energy")));
    }
    let mut keep = vec![1.0f64; n];
    order.iter().take(drop).for_each(|&i| keep[i] = 0.0);
    let kept = (n - drop) as f64;
    let mask = Tensor::from_vec(keep.clone(), n, flow.device())?.to_dtype(flow.dtype())?;
    let zeros = Tensor::zeros(n, flow.dtype(), flow.device())?;
    let safe = mask.ne(0.0)?.where_cond(&per_sample, &zeros)?;
    let loss = (safe.sum_all()? / kept)?;
    let value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    let mean_energy = raw.iter().zip(&keep).filter(|(_, &k)| k > 0.0).map(|(u, _)| u).sum::<f64>() / kept;
    let samples = KlSamples {
        x: x.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?,
        log_q: log_q.to_dtype(DType::F64)?.to_vec1()?,
        energy: raw,
    };
    Ok((loss, LossReport { loss: value, mean_energy, dropped: drop, non_finite }, samples))
}

/// Shares one [`EnergyOp`] between the graph and the caller (who reads the raw energies).
struct EnergyOpHandle(Arc<EnergyOp>);

impl CustomOp1 for EnergyOpHandle {
    fn name(&self) -> &'static str {
        "target_energy"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        self.0.cpu_fwd(s, l)
    }

    fn bwd(&self, x: &Tensor, res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        self.0.bwd(x, res, grad)
    }
}
