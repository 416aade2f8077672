//! An ensemble of small MLPs fitted to free-energy labels: the mean is the PMF, the spread across
//! members its uncertainty.
//!
//! Every member is an MLP with sigmoid hidden layers and a linear output, trained with Adam on the
//! mean squared error to the labels (kT, learned as given: no shift or scaling; optionally weighted
//! per point, see [`PmfEnsemble::fit_weighted`]) on its own random
//! subset of the points. The loss is the sum of the members' MSEs and Adam works elementwise
//! without gradient clipping, so the members are trained exactly as if they were trained one by
//! one.
//!
//! The networks are small (the reference: 4 -> 256 -> 128 -> 32 -> 1), so candle's per-op costs
//! (an allocation and a dispatch per elementwise op, spinning worker threads) would dominate a
//! training step. The forward and backward passes of the whole ensemble are therefore one fused
//! custom op with a hand-written backward pass (the member-wise MSE and its weight gradient), running the members in parallel
//! (rayon, one member per task, so results do not depend on the thread count). All weights live in
//! one parameter `weights` of shape `[members, P]`, packed per member as layer 0 weight
//! (`[in, out]`, row-major), layer 0 bias, layer 1 weight, and so on; [`PmfEnsemble::named_tensors`]
//! gives them per layer. CPU only.
//!
//! Inputs are CG points `s`, turned into features by [`CgFeatures`]: periodic angles become
//! `(cos, sin)` pairs, a real coordinate on an interval is mapped affinely to `[-1, 1]`.

use crate::error::{Error, Result};
use crate::flow::ops::{with_cpu_slice, Real};
use crate::flow::optim::{Adam, AdamConfig};
use crate::flow::params::{Init, ParamBuilder, ParamStore};
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, Device, Layout, Shape, Tensor, Var};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Mutex;

/// Points per forward pass in [`PmfEnsemble::predict`] (bounds the memory of large grids).
const PREDICT_CHUNK: usize = 4096;

/// How a CG point becomes the network input.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum CgFeatures {
    /// `count` periodic angles (radians, any range): each becomes `(cos a, sin a)`, so a point has
    /// `count` values and `2 count` features (alanine dipeptide: `(phi, psi)` ->
    /// `(cos phi, sin phi, cos psi, sin psi)`).
    Angles {
        /// Angles per point.
        count: usize,
    },
    /// One real coordinate, mapped to `2 (s - lo) / (hi - lo) - 1` (`[lo, hi]` -> `[-1, 1]`;
    /// values outside are allowed and extrapolate). Müller-Brown: `[-2.5, 1.1]`.
    Interval {
        /// Coordinate mapped to -1.
        lo: f64,
        /// Coordinate mapped to 1.
        hi: f64,
    },
}

impl CgFeatures {
    /// Values per CG point.
    pub fn point_width(&self) -> usize {
        match *self {
            CgFeatures::Angles { count } => count,
            CgFeatures::Interval { .. } => 1,
        }
    }

    /// Features per CG point (the network's input width).
    pub fn feature_width(&self) -> usize {
        match *self {
            CgFeatures::Angles { count } => 2 * count,
            CgFeatures::Interval { .. } => 1,
        }
    }

    /// Errors unless there is at least one angle, or `lo < hi` with both finite.
    pub fn validate(&self) -> Result<()> {
        match *self {
            CgFeatures::Angles { count: 0 } => Err(Error::invalid("angle features need at least one angle")),
            CgFeatures::Interval { lo, hi } if !(lo.is_finite() && hi.is_finite() && lo < hi) => {
                Err(Error::invalid(format!("interval features need finite lo < hi, got [{lo}, {hi}]")))
            }
            _ => Ok(()),
        }
    }

    /// The features of flat `points` (`point_width` values per point), row after row. Errors on
    /// an empty set, a length that is not a whole number of points, and a non-finite value (the
    /// message names the point).
    ///
    /// ```
    /// use cgflow::pmf::CgFeatures;
    /// let f = CgFeatures::Interval { lo: -2.5, hi: 1.1 }.features(&[-2.5, 1.1, -0.7]).unwrap();
    /// assert_eq!(f, vec![-1.0, 1.0, 0.0]);
    /// let a = CgFeatures::Angles { count: 2 }.features(&[0.0, std::f64::consts::FRAC_PI_2]).unwrap();
    /// assert!((a[0] - 1.0).abs() < 1e-15 && a[1] == 0.0 && a[2].abs() < 1e-15 && a[3] == 1.0);
    /// ```
    pub fn features(&self, points: &[f64]) -> Result<Vec<f64>> {
        self.validate()?;
        let width = self.point_width();
        if points.is_empty() {
            return Err(Error::invalid("no CG points given"));
        }
        if points.len() % width != 0 {
            return Err(Error::invalid(format!(
                "{} values are not a whole number of CG points of width {width}",
                points.len()
            )));
        }
        if let Some(i) = points.iter().position(|v| !v.is_finite()) {
            return Err(Error::invalid(format!(
                "CG point {} has a non-finite value ({}) in column {}",
                i / width,
                points[i],
                i % width
            )));
        }
        Ok(match *self {
            CgFeatures::Angles { .. } => points
                .iter()
                .flat_map(|a| {
                    let (s, c) = a.sin_cos();
                    [c, s]
                })
                .collect(),
            CgFeatures::Interval { lo, hi } => points.iter().map(|s| 2.0 * (s - lo) / (hi - lo) - 1.0).collect(),
        })
    }
}

/// Floating-point precision of the ensemble's weights and arithmetic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PmfPrecision {
    /// 32-bit (the reference's PyTorch default).
    F32,
    /// 64-bit.
    F64,
}

impl PmfPrecision {
    /// The candle dtype.
    pub fn dtype(self) -> DType {
        match self {
            PmfPrecision::F32 => DType::F32,
            PmfPrecision::F64 => DType::F64,
        }
    }
}

/// Architecture and training of a [`PmfEnsemble`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnsembleConfig {
    /// Networks in the ensemble.
    pub members: usize,
    /// Widths of the sigmoid hidden layers (the output layer is linear, width 1).
    pub hidden: Vec<usize>,
    /// Fraction of the points each member trains on (its own random subset, redrawn every
    /// [`PmfEnsemble::fit`]); the rest is its held-out set.
    pub train_fraction: f64,
    /// Passes over the training subset per [`PmfEnsemble::fit`].
    pub epochs: usize,
    /// Minibatch size (per member).
    pub batch: usize,
    /// Adam learning rate (at the start of every fit; constant unless `final_lr` is set).
    pub lr: f64,
    /// Learning rate at the end of every fit, reached by a cosine decay from `lr` over the fit's
    /// steps (None: constant `lr`). At a constant rate the members end each fit wherever the
    /// last minibatches left them: on the same labels, consecutive fits of the fast preset's
    /// ensemble gave KLDs from 0.0088 to 0.0119. Absent in a settings file: None.
    #[serde(default)]
    pub final_lr: Option<f64>,
    /// Seed of the initial weights, subsets and minibatch order.
    pub seed: u64,
    /// Precision of weights and arithmetic.
    pub precision: PmfPrecision,
}

impl EnsembleConfig {
    /// The reference ensemble: 10 members, hidden layers 256, 128, 32 with sigmoid activations,
    /// each member on 80 % of the points; 2000 epochs of minibatches of 256 (full-batch for up to
    /// 320 points) at learning rate 3e-3.
    ///
    /// The architecture and split are the reference's; the optimiser budget is this crate's
    /// choice. On the Müller-Brown PMF (160 training points per member), large batches at a high
    /// learning rate reached lower errors in fewer steps than small batches at 1e-3: members that
    /// do not place a sigmoid unit at the narrow well or the steep edge early tend to stay in
    /// that local minimum whatever the length of training.
    pub fn reference() -> Self {
        Self {
            members: 10,
            hidden: vec![256, 128, 32],
            train_fraction: 0.8,
            epochs: 2000,
            batch: 256,
            lr: 3e-3,
            final_lr: None,
            seed: 0,
            precision: PmfPrecision::F32,
        }
    }

    /// The reference architecture with a budget for a 2-core CPU: 500 epochs at learning rate
    /// 1e-2 (about 25 ms per full-batch step of 160 points per member there), meant for the
    /// warm-started fits of an active-learning loop.
    pub fn fast() -> Self {
        Self { epochs: 500, lr: 1e-2, ..Self::reference() }
    }

    /// Errors unless members, every hidden width and the batch are positive, `train_fraction` is
    /// in `(0, 1]`, `lr` is finite and positive, and `final_lr` (if set) is positive and at most
    /// `lr`.
    pub fn validate(&self) -> Result<()> {
        if self.members == 0 {
            return Err(Error::invalid("an ensemble needs at least one member"));
        }
        if self.hidden.contains(&0) {
            return Err(Error::invalid(format!("hidden widths must be positive, got {:?}", self.hidden)));
        }
        if !(self.train_fraction > 0.0 && self.train_fraction <= 1.0) {
            return Err(Error::invalid(format!("train fraction {} must be in (0, 1]", self.train_fraction)));
        }
        if self.batch == 0 {
            return Err(Error::invalid("batch size must be positive"));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::invalid(format!("learning rate {} must be finite and positive", self.lr)));
        }
        if let Some(f) = self.final_lr {
            if !(f.is_finite() && f > 0.0 && f <= self.lr) {
                return Err(Error::invalid(format!(
                    "final learning rate {f} must be positive and at most lr {}",
                    self.lr
                )));
            }
        }
        Ok(())
    }
}

/// What one [`PmfEnsemble::fit`] reached.
#[derive(Debug, Clone, PartialEq)]
pub struct FitReport {
    /// Per member: MSE (kT^2) on its training subset after the last epoch.
    pub train_mse: Vec<f64>,
    /// Per member: MSE (kT^2) on the points it did not train on (None when the subset is all of
    /// them).
    pub holdout_mse: Vec<Option<f64>>,
    /// Points each member trained on.
    pub train_points: usize,
    /// Optimiser steps taken (each step updates every member).
    pub steps: usize,
}

// ---------------------------------------------------------------------------------------------
// The networks: packed layout and hand-written kernels

/// Layer widths and where each layer sits in a member's packed parameters.
#[derive(Debug, Clone, PartialEq)]
struct Arch {
    /// Features, hidden widths, 1.
    widths: Vec<usize>,
    /// Start of layer `j`'s weight `[in, out]`; its bias `[out]` follows.
    offsets: Vec<usize>,
    /// Parameters per member.
    size: usize,
}

impl Arch {
    fn new(features: usize, hidden: &[usize]) -> Self {
        let mut widths = vec![features];
        widths.extend_from_slice(hidden);
        widths.push(1);
        let mut offsets = Vec::with_capacity(widths.len() - 1);
        let mut size = 0;
        for w in widths.windows(2) {
            offsets.push(size);
            size += w[0] * w[1] + w[1];
        }
        Self { widths, offsets, size }
    }

    fn layers(&self) -> usize {
        self.widths.len() - 1
    }

    fn inputs(&self) -> usize {
        self.widths[0]
    }

    /// (weight, bias) of layer `j` within one member's parameters.
    fn layer<'a, T>(&self, params: &'a [T], j: usize) -> (&'a [T], &'a [T]) {
        let (i, o, start) = (self.widths[j], self.widths[j + 1], self.offsets[j]);
        (&params[start..start + i * o], &params[start + i * o..start + i * o + o])
    }
}

fn sigmoid<T: Real>(z: T) -> T {
    T::one() / (T::one() + (-z).exp())
}

/// Rows of a register tile of [`matmul`].
const TILE_ROWS: usize = 4;
/// Columns of a register tile of [`matmul`].
const TILE_COLS: usize = 8;

/// A strided read-only matrix view: element `(i, j)` is `data[i * row_stride + j * col_stride]`.
#[derive(Clone, Copy)]
struct View<'a, T> {
    data: &'a [T],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a, T: Real> View<'a, T> {
    /// A row-major `rows x cols` matrix.
    fn new(data: &'a [T], rows: usize, cols: usize) -> Self {
        Self { data, rows, cols, row_stride: cols, col_stride: 1 }
    }

    /// The transpose (no copy).
    fn t(self) -> Self {
        Self { rows: self.cols, cols: self.rows, row_stride: self.col_stride, col_stride: self.row_stride, ..self }
    }

    fn at(&self, i: usize, j: usize) -> T {
        self.data[i * self.row_stride + j * self.col_stride]
    }
}

/// `out = a b` (`out` row-major, `a.rows x b.cols`; `a.cols == b.rows`).
///
/// Both operands are copied into zero-padded panels (`a` in blocks of [`TILE_ROWS`] rows, `b` in
/// blocks of [`TILE_COLS`] columns), so the inner loop accumulates a whole tile in registers with
/// contiguous loads and no bounds checks, whatever the strides. Every output element sums its
/// products in the order of the inner index, so the result is reproducible.
fn matmul<T: Real>(a: View<T>, b: View<T>, out: &mut [T]) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let (row_blocks, col_blocks) = (m.div_ceil(TILE_ROWS), n.div_ceil(TILE_COLS));
    let mut a_panel = vec![T::zero(); row_blocks * k * TILE_ROWS];
    for (ib, block) in a_panel.chunks_exact_mut(k * TILE_ROWS).enumerate() {
        for (p, slot) in block.chunks_exact_mut(TILE_ROWS).enumerate() {
            for (r, v) in slot.iter_mut().enumerate() {
                let i = ib * TILE_ROWS + r;
                if i < m {
                    *v = a.at(i, p);
                }
            }
        }
    }
    let mut b_panel = vec![T::zero(); col_blocks * k * TILE_COLS];
    for (jb, block) in b_panel.chunks_exact_mut(k * TILE_COLS).enumerate() {
        for (p, slot) in block.chunks_exact_mut(TILE_COLS).enumerate() {
            for (l, v) in slot.iter_mut().enumerate() {
                let j = jb * TILE_COLS + l;
                if j < n {
                    *v = b.at(p, j);
                }
            }
        }
    }
    for (jb, b_block) in b_panel.chunks_exact(k * TILE_COLS).enumerate() {
        for (ib, a_block) in a_panel.chunks_exact(k * TILE_ROWS).enumerate() {
            let mut acc = [[T::zero(); TILE_COLS]; TILE_ROWS];
            for (av, bv) in a_block.chunks_exact(TILE_ROWS).zip(b_block.chunks_exact(TILE_COLS)) {
                for (acc_row, &x) in acc.iter_mut().zip(av) {
                    for (c, &y) in acc_row.iter_mut().zip(bv) {
                        *c += x * y;
                    }
                }
            }
            for (r, acc_row) in acc.iter().enumerate() {
                let i = ib * TILE_ROWS + r;
                if i >= m {
                    break;
                }
                let j0 = jb * TILE_COLS;
                let width = TILE_COLS.min(n - j0);
                out[i * n + j0..i * n + j0 + width].copy_from_slice(&acc_row[..width]);
            }
        }
    }
}

/// `out = act(input W + b)` (`W` is `[in, out]`), with a sigmoid when `sigmoid_act`.
fn dense<T: Real>(input: &[T], weight: &[T], bias: &[T], sigmoid_act: bool, out: &mut Vec<T>) {
    let outputs = bias.len();
    let inputs = weight.len() / outputs;
    let rows = input.len() / inputs;
    out.clear();
    out.resize(rows * outputs, T::zero());
    matmul(View::new(input, rows, inputs), View::new(weight, inputs, outputs), out);
    for o in out.chunks_exact_mut(outputs) {
        for (v, &b) in o.iter_mut().zip(bias) {
            *v += b;
            if sigmoid_act {
                *v = sigmoid(*v);
            }
        }
    }
}

/// Activations of every layer of one member (`acts[0]` the input rows, `acts[L]` the outputs).
fn forward_member<T: Real>(arch: &Arch, params: &[T], input: &[T], acts: &mut Vec<Vec<T>>) {
    let layers = arch.layers();
    acts.resize(layers + 1, Vec::new());
    acts[0].clear();
    acts[0].extend_from_slice(input);
    for j in 0..layers {
        let (w, b) = arch.layer(params, j);
        let (done, rest) = acts.split_at_mut(j + 1);
        dense(&done[j], w, b, j + 1 < layers, &mut rest[0]);
    }
}

/// Weighted mean squared error `sum w e^2 / sum w` of one member on rows of
/// `[features..., label, weight]`, with its gradient with respect to the member's parameters
/// written to `grad`. With every weight 1 this is the plain mean, bit for bit.
fn member_mse_and_gradient<T: Real>(arch: &Arch, params: &[T], data: &[T], grad: &mut [T]) -> T {
    let f = arch.inputs();
    let width = f + 2;
    let rows = data.len() / width;
    let input: Vec<T> = data.chunks_exact(width).flat_map(|r| r[..f].iter().copied()).collect();
    let mut acts = Vec::new();
    forward_member(arch, params, &input, &mut acts);
    let layers = arch.layers();
    let total_weight = data.chunks_exact(width).fold(T::zero(), |acc, r| acc + r[f + 1]);
    let mut loss = T::zero();
    let mut delta: Vec<T> = Vec::with_capacity(rows);
    for (&y, r) in acts[layers].iter().zip(data.chunks_exact(width)) {
        let (e, w) = (y - r[f], r[f + 1]);
        loss += w * (e * e);
        delta.push(w * (e + e) / total_weight);
    }
    grad.iter_mut().for_each(|g| *g = T::zero());
    for j in (0..layers).rev() {
        let (inputs, outputs) = (arch.widths[j], arch.widths[j + 1]);
        if j + 1 < layers {
            for (d, &a) in delta.iter_mut().zip(&acts[j + 1]) {
                *d = *d * a * (T::one() - a);
            }
        }
        let start = arch.offsets[j];
        let (gw, rest) = grad[start..].split_at_mut(inputs * outputs);
        // dW = x^T dz, db = column sums of dz, dx = dz W^T.
        matmul(View::new(&acts[j], rows, inputs).t(), View::new(&delta, rows, outputs), gw);
        let gb = &mut rest[..outputs];
        for dz in delta.chunks_exact(outputs) {
            for (g, &d) in gb.iter_mut().zip(dz) {
                *g += d;
            }
        }
        if j > 0 {
            let (w, _) = arch.layer(params, j);
            let mut previous = vec![T::zero(); rows * inputs];
            matmul(View::new(&delta, rows, outputs), View::new(w, inputs, outputs).t(), &mut previous);
            delta = previous;
        }
    }
    loss / total_weight
}

/// Per-member weighted mean squared errors `[members]` on member-specific batches
/// `[members, rows, features + 2]` (features, the label, the row's weight) under packed weights
/// `[members, P]`. The forward pass computes the weight gradient too; the backward pass scales it
/// by the incoming gradient (the data get none).
struct EnsembleMse {
    arch: Arch,
    gradient: Mutex<Option<Tensor>>,
}

fn cpu_slice<'a, T: Real>(storage: &'a CpuStorage, layout: &Layout) -> candle_core::Result<&'a [T]> {
    let (start, end) = layout
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("PMF ensemble: expected a contiguous tensor".into()))?;
    Ok(&storage.as_slice::<T>()?[start..end])
}

fn ensemble_mse_fwd<T: Real>(
    op: &EnsembleMse,
    s1: &CpuStorage,
    l1: &Layout,
    s2: &CpuStorage,
    l2: &Layout,
) -> candle_core::Result<(CpuStorage, Shape)> {
    let (members, rows, width) = l1.shape().dims3()?;
    let (m2, p) = l2.shape().dims2()?;
    if members != m2 || width != op.arch.inputs() + 2 || p != op.arch.size || rows == 0 {
        candle_core::bail!(
            "PMF ensemble: data {:?} and weights {:?} do not fit the architecture {:?}",
            l1.shape(),
            l2.shape(),
            op.arch.widths
        );
    }
    let data = cpu_slice::<T>(s1, l1)?;
    let weights = cpu_slice::<T>(s2, l2)?;
    let mut gradient = vec![T::zero(); members * p];
    let losses: Vec<T> = gradient
        .par_chunks_mut(p)
        .zip(data.par_chunks(rows * width))
        .zip(weights.par_chunks(p))
        .map(|((g, d), w)| member_mse_and_gradient(&op.arch, w, d, g))
        .collect();
    let gradient = Tensor::from_vec(gradient, (members, p), &Device::Cpu)?;
    *op.gradient.lock().unwrap_or_else(|e| e.into_inner()) = Some(gradient);
    Ok((T::to_cpu_storage_owned(losses), Shape::from(members)))
}

impl candle_core::CustomOp2 for EnsembleMse {
    fn name(&self) -> &'static str {
        "pmf_ensemble_mse"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        match s2.dtype() {
            DType::F32 => ensemble_mse_fwd::<f32>(self, s1, l1, s2, l2),
            DType::F64 => ensemble_mse_fwd::<f64>(self, s1, l1, s2, l2),
            other => candle_core::bail!("PMF ensemble: f32 or f64 weights, not {other:?}"),
        }
    }

    fn bwd(
        &self,
        _data: &Tensor,
        _weights: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let gradient = self.gradient.lock().unwrap_or_else(|e| e.into_inner()).take();
        let gradient = gradient.ok_or_else(|| candle_core::Error::Msg("PMF ensemble: no stored gradient".into()))?;
        let members = grad.elem_count();
        Ok((None, Some(gradient.broadcast_mul(&grad.reshape((members, 1))?)?)))
    }
}

/// The learning rate of step `step` (from 0) of `total` under a cosine decay from `start` at the
/// first step to `end` at the last (`start` throughout when there is only one step).
fn cosine_lr(start: f64, end: f64, step: usize, total: usize) -> f64 {
    if total < 2 {
        return start;
    }
    let progress = step as f64 / (total - 1) as f64;
    end + 0.5 * (start - end) * (1.0 + (std::f64::consts::PI * progress).cos())
}

// ---------------------------------------------------------------------------------------------
// The ensemble

/// An ensemble of MLPs mapping CG points to free energies (kT).
///
/// Not `Clone`: a copy would share the weight storage. Copy weights through
/// [`PmfEnsemble::named_tensors`] and [`PmfEnsemble::load_tensors`].
#[derive(Debug)]
pub struct PmfEnsemble {
    features: CgFeatures,
    config: EnsembleConfig,
    arch: Arch,
    store: ParamStore,
    weights: Var,
    fits: u64,
    /// Weights as initialised: the output biases start at the label means on the first fit.
    fresh: bool,
}

impl PmfEnsemble {
    /// A fresh ensemble with PyTorch's default initialisation (weights and biases of a layer
    /// uniform on `+-1/sqrt(fan_in)`), drawn from `config.seed`. Errors on an invalid
    /// configuration or features, and on a device other than the CPU.
    pub fn new(features: CgFeatures, config: EnsembleConfig, device: &Device) -> Result<Self> {
        features.validate()?;
        config.validate()?;
        if !device.is_cpu() {
            return Err(Error::invalid("the PMF ensemble runs on the CPU device only"));
        }
        let arch = Arch::new(features.feature_width(), &config.hidden);
        let (m, p) = (config.members, arch.size);
        let mut store = ParamStore::new();
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let dtype = config.precision.dtype();
        let mut pb = ParamBuilder::new(&mut store, &mut rng, dtype, device);
        // Uniform on [-1, 1), then each layer scaled by its bound.
        let weights = pb.var("weights", &[m, p], Init::Uniform(1.0))?;
        let mut bounds = vec![0.0; p];
        for j in 0..arch.layers() {
            let (i, o, start) = (arch.widths[j], arch.widths[j + 1], arch.offsets[j]);
            bounds[start..start + i * o + o].fill(1.0 / (i as f64).sqrt());
        }
        let bounds = Tensor::from_vec(bounds, (1, p), device)?.to_dtype(dtype)?;
        weights.set(&weights.as_tensor().broadcast_mul(&bounds)?)?;
        Ok(Self { features, config, arch, store, weights, fits: 0, fresh: true })
    }

    /// The feature map.
    pub fn features(&self) -> &CgFeatures {
        &self.features
    }

    /// The configuration.
    pub fn config(&self) -> &EnsembleConfig {
        &self.config
    }

    /// Networks in the ensemble.
    pub fn members(&self) -> usize {
        self.config.members
    }

    /// Scalar parameters per member.
    pub fn parameters_per_member(&self) -> usize {
        self.arch.size
    }

    /// Completed calls of [`PmfEnsemble::fit`].
    pub fn fits(&self) -> u64 {
        self.fits
    }

    /// Restores the fit counter of a saved ensemble (with [`PmfEnsemble::load_tensors`]), so that
    /// the next fit draws the same subsets as it would have in the run that saved it.
    pub fn set_fits(&mut self, fits: u64) {
        self.fits = fits;
    }

    /// The trainable parameters as the optimiser sees them: one tensor `weights` of shape
    /// `[members, P]`, member `i` in row `i`, packed as layer 0 weight (`[in, out]`, row-major),
    /// layer 0 bias, layer 1 weight, and so on. For checkpoints, [`PmfEnsemble::named_tensors`]
    /// gives the same values per layer.
    pub fn params(&self) -> &ParamStore {
        &self.store
    }

    /// The weights per layer, ready for `candle_core::safetensors::save`: `layer{j}.weight` of
    /// shape `[members, in, out]` and `layer{j}.bias` of shape `[members, out]` for the layers
    /// `j = 0, 1, ...` (the last one linear with one output). Errors only if candle fails.
    pub fn named_tensors(&self) -> Result<HashMap<String, Tensor>> {
        let m = self.config.members;
        let w = self.weights.as_tensor();
        let mut out = HashMap::new();
        for j in 0..self.arch.layers() {
            let (i, o, start) = (self.arch.widths[j], self.arch.widths[j + 1], self.arch.offsets[j]);
            out.insert(format!("layer{j}.weight"), w.narrow(1, start, i * o)?.reshape((m, i, o))?);
            out.insert(format!("layer{j}.bias"), w.narrow(1, start + i * o, o)?.contiguous()?);
        }
        Ok(out)
    }

    /// Overwrites every weight from `tensors`, laid out as [`PmfEnsemble::named_tensors`] gives
    /// them (converted to this ensemble's dtype). Errors, changing nothing, when a tensor is
    /// missing, has the wrong shape or a non-float dtype, or is not one of this ensemble's.
    pub fn load_tensors(&mut self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        let m = self.config.members;
        let dtype = self.config.precision.dtype();
        let mut expected = Vec::with_capacity(2 * self.arch.layers());
        for j in 0..self.arch.layers() {
            let (i, o) = (self.arch.widths[j], self.arch.widths[j + 1]);
            expected.push((format!("layer{j}.weight"), vec![m, i, o]));
            expected.push((format!("layer{j}.bias"), vec![m, o]));
        }
        if let Some(extra) = tensors.keys().find(|k| !expected.iter().any(|(n, _)| n == *k)) {
            return Err(Error::invalid(format!("{extra:?} is not a weight of this PMF ensemble")));
        }
        let mut pieces = Vec::with_capacity(expected.len());
        for (name, shape) in &expected {
            let t = tensors.get(name).ok_or_else(|| Error::invalid(format!("PMF ensemble weight {name:?} missing")))?;
            if t.dims() != shape.as_slice() {
                return Err(Error::invalid(format!(
                    "PMF ensemble weight {name:?} has shape {:?}, expected {shape:?}",
                    t.dims()
                )));
            }
            if !t.dtype().is_float() {
                return Err(Error::invalid(format!("PMF ensemble weight {name:?} has dtype {:?}", t.dtype())));
            }
            pieces.push(t.to_device(&Device::Cpu)?.to_dtype(dtype)?.reshape((m, ()))?);
        }
        let packed = Tensor::cat(&pieces, 1)?.contiguous()?;
        self.weights.set(&packed)?;
        self.fresh = false;
        Ok(())
    }

    /// Sets each member's output bias to the mean label of its training subset.
    fn start_output_bias_at_label_means(
        &mut self,
        subsets: &[Vec<usize>],
        n_train: usize,
        labels: &[f64],
    ) -> Result<()> {
        let last = self.arch.layers() - 1;
        let bias_at = self.arch.offsets[last] + self.arch.widths[last];
        let mut w = self.weights.as_tensor().to_dtype(DType::F64)?.to_vec2::<f64>()?;
        for (row, subset) in w.iter_mut().zip(subsets) {
            row[bias_at] = subset[..n_train].iter().map(|&r| labels[r]).sum::<f64>() / n_train as f64;
        }
        let w = Tensor::new(w, &Device::Cpu)?.to_dtype(self.config.precision.dtype())?;
        self.weights.set(&w)?;
        self.fresh = false;
        Ok(())
    }

    /// Outputs `[members][points]` (member-major) for features `[n, feature_width]`.
    fn member_outputs(&self, feats: &[f64], n: usize) -> Result<Vec<f64>> {
        match self.config.precision {
            PmfPrecision::F32 => self.member_outputs_as::<f32>(feats, n),
            PmfPrecision::F64 => self.member_outputs_as::<f64>(feats, n),
        }
    }

    fn member_outputs_as<T: Real>(&self, feats: &[f64], n: usize) -> Result<Vec<f64>> {
        let arch = &self.arch;
        let fw = arch.inputs();
        let x: Vec<T> = feats.iter().map(|&v| <T as candle_core::WithDType>::from_f64(v)).collect();
        let out = with_cpu_slice::<T, _>(self.weights.as_tensor(), |w| {
            let mut out = vec![0.0; self.config.members * n];
            out.par_chunks_mut(n).zip(w.par_chunks(arch.size)).for_each(|(o, params)| {
                let mut acts = Vec::new();
                for (xc, oc) in x.chunks(PREDICT_CHUNK * fw).zip(o.chunks_mut(PREDICT_CHUNK)) {
                    forward_member(arch, params, xc, &mut acts);
                    for (d, &v) in oc.iter_mut().zip(&acts[arch.layers()]) {
                        *d = candle_core::WithDType::to_f64(v);
                    }
                }
            });
            out
        })?;
        Ok(out)
    }

    /// The ensemble mean (the PMF, kT) and the population standard deviation across members
    /// (divided by the number of members, not one less; 0 for a single member) at flat `points`
    /// (one row of [`CgFeatures::point_width`] values per point). Errors as
    /// [`CgFeatures::features`] does (an empty set included).
    pub fn predict(&self, points: &[f64]) -> Result<(Vec<f64>, Vec<f64>)> {
        let feats = self.features.features(points)?;
        let n = points.len() / self.features.point_width();
        let outputs = self.member_outputs(&feats, n)?;
        let m = self.config.members;
        let mut mean = vec![0.0; n];
        let mut std = vec![0.0; n];
        for k in 0..n {
            let mu = (0..m).map(|i| outputs[i * n + k]).sum::<f64>() / m as f64;
            let var = (0..m).map(|i| (outputs[i * n + k] - mu).powi(2)).sum::<f64>() / m as f64;
            mean[k] = mu;
            std[k] = var.sqrt();
        }
        Ok((mean, std))
    }

    /// The ensemble mean's 2D marginal PMF (kT, minimum 0; `bins` x `bins`, `[bin of i][bin of
    /// j]`) of the angles `pair` of a PMF over `[-pi, pi)^dims`, the other angles integrated out
    /// on `other_bins` midpoints each ([`crate::metrics::marginal::marginal_probabilities`]).
    pub fn marginal_pmf(&self, dims: usize, pair: (usize, usize), bins: usize, other_bins: usize) -> Result<Vec<f64>> {
        let p = crate::metrics::marginal::marginal_probabilities(dims, pair, bins, other_bins, 65_536, |points| {
            Ok(self.predict(points)?.0)
        })?;
        let mut pmf: Vec<f64> = p.iter().map(|&q| -q.ln()).collect();
        let min = pmf.iter().copied().fold(f64::INFINITY, f64::min);
        pmf.iter_mut().for_each(|v| *v -= min);
        Ok(pmf)
    }

    /// The ensemble mean at `points`, shifted so that its minimum over these points is 0 (a PMF
    /// on a grid, ready to compare with a reference). Errors as [`PmfEnsemble::predict`].
    pub fn pmf_on_grid(&self, points: &[f64]) -> Result<Vec<f64>> {
        let (mut mean, _) = self.predict(points)?;
        let min = mean.iter().copied().fold(f64::INFINITY, f64::min);
        mean.iter_mut().for_each(|v| *v -= min);
        Ok(mean)
    }

    /// Trains every member for `config.epochs` epochs on `labels` (kT, one per point, learned as
    /// given) at flat `points`, continuing from the current weights (a warm start across
    /// active-learning iterations) with a fresh Adam optimiser. Full-batch training is
    /// `batch >= round(train_fraction n)`.
    ///
    /// On the first fit of a new ensemble (not one restored with [`PmfEnsemble::load_tensors`]),
    /// each member's output bias is first set to the mean label of its training subset: labels
    /// of several kT are otherwise reached only by a slow drift of the output layer, during which
    /// the sigmoid units tend to saturate and members get stuck.
    ///
    /// Each member draws its own random subset of `round(train_fraction n)` points (at least
    /// one), different in every call (the draws depend on the seed and the number of earlier
    /// fits), and reports its MSE on it and on the rest. Errors on an empty set, a length of
    /// `points` that does not match the labels and the feature width, a non-finite point or
    /// label (the message names its index), and a non-finite gradient (the step that met it is
    /// not applied).
    pub fn fit(&mut self, points: &[f64], labels: &[f64]) -> Result<FitReport> {
        self.fit_weighted(points, labels, &vec![1.0; labels.len()])
    }

    /// [`PmfEnsemble::fit`] on the weighted mean squared error `sum w e^2 / sum w` of each
    /// minibatch: `weights` (one per point, finite and positive, any scale) are inverse label
    /// variances, so that noisy labels pull less. An importance-sampled label from `ESS`
    /// effective samples has a variance of about `1 / ESS` kT^2, hence weights = ESS. Equal
    /// weights give exactly [`PmfEnsemble::fit`]. The report's MSEs stay unweighted. Errors as
    /// `fit` does, and on a weight count that does not match the labels or a weight that is not
    /// finite and positive (the message names its index).
    pub fn fit_weighted(&mut self, points: &[f64], labels: &[f64], weights: &[f64]) -> Result<FitReport> {
        if weights.len() != labels.len() {
            return Err(Error::invalid(format!("{} labels need as many weights, got {}", labels.len(), weights.len())));
        }
        if let Some(i) = weights.iter().position(|w| !(w.is_finite() && *w > 0.0)) {
            return Err(Error::invalid(format!("weight {i} is {}; weights must be finite and positive", weights[i])));
        }
        if labels.is_empty() {
            return Err(Error::invalid("no labels given"));
        }
        let width = self.features.point_width();
        if points.len() != labels.len() * width {
            return Err(Error::invalid(format!(
                "{} labels need {} point values ({width} per point), got {}",
                labels.len(),
                labels.len() * width,
                points.len()
            )));
        }
        if let Some(i) = labels.iter().position(|v| !v.is_finite()) {
            return Err(Error::invalid(format!("label {i} is {}", labels[i])));
        }
        let feats = self.features.features(points)?;
        let n = labels.len();
        let m = self.config.members;
        let fw = self.features.feature_width();
        let dtype = self.config.precision.dtype();
        let batch = self.config.batch;
        let n_train = ((self.config.train_fraction * n as f64).round() as usize).clamp(1, n);

        let mut rng = ChaCha8Rng::seed_from_u64(self.config.seed);
        rng.set_stream(self.fits + 1);
        let mut subsets: Vec<Vec<usize>> = (0..m)
            .map(|_| {
                let mut perm: Vec<usize> = (0..n).collect();
                perm.shuffle(&mut rng);
                perm
            })
            .collect();

        if self.fresh {
            self.start_output_bias_at_label_means(&subsets, n_train, labels)?;
        }
        let mut adam = Adam::new(&self.store, AdamConfig::default());
        let steps_per_epoch = n_train.div_ceil(batch);
        let total_steps = self.config.epochs * steps_per_epoch;
        let lr_at = |step: usize| match self.config.final_lr {
            None => self.config.lr,
            Some(end) => cosine_lr(self.config.lr, end, step, total_steps),
        };
        let mut steps = 0;
        let mut buffer = Vec::with_capacity(m * batch.min(n_train) * (fw + 2));
        for _ in 0..self.config.epochs {
            for perm in subsets.iter_mut() {
                perm[..n_train].shuffle(&mut rng);
            }
            for k in 0..steps_per_epoch {
                let (lo, hi) = (k * batch, ((k + 1) * batch).min(n_train));
                buffer.clear();
                for perm in &subsets {
                    for &r in &perm[lo..hi] {
                        buffer.extend_from_slice(&feats[r * fw..(r + 1) * fw]);
                        buffer.push(labels[r]);
                        buffer.push(weights[r]);
                    }
                }
                let data = Tensor::from_slice(&buffer, (m, hi - lo, fw + 2), &Device::Cpu)?.to_dtype(dtype)?;
                let op = EnsembleMse { arch: self.arch.clone(), gradient: Mutex::new(None) };
                let losses = data.apply_op2(self.weights.as_tensor(), op)?;
                let grads = losses.sum_all()?.backward()?;
                adam.step(&self.store, &grads, lr_at(steps))?;
                steps += 1;
            }
        }
        self.fits += 1;

        let outputs = self.member_outputs(&feats, n)?;
        let mse = |member: usize, rows: &[usize]| -> Option<f64> {
            if rows.is_empty() {
                return None;
            }
            let sum: f64 = rows.iter().map(|&r| (outputs[member * n + r] - labels[r]).powi(2)).sum();
            Some(sum / rows.len() as f64)
        };
        let train_mse = subsets.iter().enumerate().map(|(i, p)| mse(i, &p[..n_train]).unwrap_or(0.0)).collect();
        let holdout_mse = subsets.iter().enumerate().map(|(i, p)| mse(i, &p[n_train..])).collect();
        Ok(FitReport { train_mse, holdout_mse, train_points: n_train, steps })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    fn random(n: usize, rng: &mut ChaCha8Rng) -> Vec<f64> {
        (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect()
    }

    #[test]
    fn pmf_matmul_matches_the_naive_product_for_odd_shapes_and_transposes() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for &(m, k, n) in &[(1, 1, 1), (3, 5, 7), (4, 8, 8), (9, 17, 13), (33, 2, 1)] {
            let a = random(m * k, &mut rng);
            let b = random(k * n, &mut rng);
            let mut expected = vec![0.0; m * n];
            for i in 0..m {
                for j in 0..n {
                    expected[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum::<f64>();
                }
            }
            let mut out = vec![f64::NAN; m * n];
            matmul(View::new(&a, m, k), View::new(&b, k, n), &mut out);
            let err = out.iter().zip(&expected).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
            assert!(err < 1e-14, "{m}x{k}x{n}: {err}");
            // (b^T a^T)^T = a b: the transposed views read the same data.
            let mut out_t = vec![f64::NAN; n * m];
            matmul(View::new(&b, k, n).t(), View::new(&a, m, k).t(), &mut out_t);
            for i in 0..m {
                for j in 0..n {
                    assert!((out_t[j * m + i] - expected[i * n + j]).abs() < 1e-14);
                }
            }
        }
    }

    #[test]
    fn pmf_member_gradient_equals_finite_differences() {
        let arch = Arch::new(3, &[5, 4]);
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let params: Vec<f64> = random(arch.size, &mut rng).iter().map(|v| 2.0 * v).collect();
        // Rows of three features, a label and a weight.
        let data: Vec<f64> = (0..7 * 5)
            .map(|i| match i % 5 {
                3 => rng.gen_range(0.0..5.0),
                4 => rng.gen_range(0.2..3.0),
                _ => rng.gen_range(-1.0..1.0),
            })
            .collect();
        let mut grad = vec![0.0; arch.size];
        let loss = member_mse_and_gradient(&arch, &params, &data, &mut grad);
        let mut scratch = vec![0.0; arch.size];
        for i in 0..arch.size {
            let h = 1e-6;
            let (mut plus, mut minus) = (params.clone(), params.clone());
            plus[i] += h;
            minus[i] -= h;
            let fd = (member_mse_and_gradient(&arch, &plus, &data, &mut scratch)
                - member_mse_and_gradient(&arch, &minus, &data, &mut scratch))
                / (2.0 * h);
            assert!((fd - grad[i]).abs() < 1e-7 * fd.abs().max(1.0), "parameter {i}: {} vs {fd}", grad[i]);
        }
        // The loss itself: the weighted mean of squared errors of the forward pass.
        let input: Vec<f64> = data.chunks_exact(5).flat_map(|r| r[..3].to_vec()).collect();
        let mut acts = Vec::new();
        forward_member(&arch, &params, &input, &mut acts);
        let weighted: f64 = acts[3].iter().zip(data.chunks_exact(5)).map(|(y, r)| r[4] * (y - r[3]).powi(2)).sum();
        let total: f64 = data.chunks_exact(5).map(|r| r[4]).sum();
        assert!((loss - weighted / total).abs() < 1e-14);
        // Unit weights give the plain mean exactly; doubling every weight changes nothing.
        let unit: Vec<f64> = data.iter().enumerate().map(|(i, &v)| if i % 5 == 4 { 1.0 } else { v }).collect();
        let plain = acts[3].iter().zip(data.chunks_exact(5)).map(|(y, r)| (y - r[3]).powi(2)).sum::<f64>() / 7.0;
        assert_eq!(member_mse_and_gradient(&arch, &params, &unit, &mut scratch), plain);
        let doubled: Vec<f64> = data.iter().enumerate().map(|(i, &v)| if i % 5 == 4 { 2.0 * v } else { v }).collect();
        assert!((member_mse_and_gradient(&arch, &params, &doubled, &mut scratch) - loss).abs() < 1e-14);
    }

    #[test]
    fn pmf_cosine_learning_rate_runs_from_start_to_end() {
        assert_eq!(cosine_lr(1e-2, 1e-4, 0, 101), 1e-2);
        assert!((cosine_lr(1e-2, 1e-4, 100, 101) - 1e-4).abs() < 1e-18);
        // Halfway: the mean of the two; a quarter of the way: end + (start - end) (1 + cos(pi/4)) / 2.
        assert!((cosine_lr(1e-2, 1e-4, 50, 101) - 0.5 * (1e-2 + 1e-4)).abs() < 1e-15);
        let quarter = 1e-4 + (1e-2 - 1e-4) * (1.0 + std::f64::consts::FRAC_1_SQRT_2) / 2.0;
        assert!((cosine_lr(1e-2, 1e-4, 25, 101) - quarter).abs() < 1e-15);
        assert_eq!(cosine_lr(1e-2, 1e-4, 0, 1), 1e-2);
    }

    #[test]
    fn pmf_custom_op_gradient_reaches_the_weights() {
        let features = CgFeatures::Interval { lo: 0.0, hi: 1.0 };
        let config = EnsembleConfig { members: 3, hidden: vec![4], epochs: 1, ..EnsembleConfig::fast() };
        let config = EnsembleConfig { precision: PmfPrecision::F64, ..config };
        let ens = PmfEnsemble::new(features, config, &Device::Cpu).unwrap();
        let p = ens.parameters_per_member();
        let data =
            Tensor::from_vec(vec![0.5, 1.0, 1.0, -0.5, 2.0, 1.0, 0.0, 0.0, 1.0], (3, 1, 3), &Device::Cpu).unwrap();
        let op = EnsembleMse { arch: ens.arch.clone(), gradient: Mutex::new(None) };
        let losses = data.apply_op2(ens.weights.as_tensor(), op).unwrap();
        // Weight member 1's loss by 3: its gradient triples, the others' are unweighted.
        let scale = Tensor::new(&[1.0, 3.0, 1.0], &Device::Cpu).unwrap();
        let grads = (losses * scale).unwrap().sum_all().unwrap().backward().unwrap();
        let g = grads.get(ens.weights.as_tensor()).unwrap().to_vec2::<f64>().unwrap();
        let w = ens.weights.as_tensor().to_vec2::<f64>().unwrap();
        for (m, (rows, scale)) in
            [([0.5, 1.0, 1.0], 1.0), ([-0.5, 2.0, 1.0], 3.0), ([0.0, 0.0, 1.0], 1.0)].iter().enumerate()
        {
            let mut expected = vec![0.0; p];
            member_mse_and_gradient(&ens.arch, &w[m], rows, &mut expected);
            for (a, b) in g[m].iter().zip(&expected) {
                assert!((a - scale * b).abs() < 1e-15);
            }
        }
    }
}
