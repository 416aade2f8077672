//! Fused custom candle ops of the flow engine, each with a hand-written backward pass.
//!
//! candle runs every elementwise op serially and allocates a new tensor for each; a sum over the
//! batch dimension (bias gradients) is slower still. The hot parts of a coupling layer are
//! therefore single ops here: the whole spline (or affine) transform of a coupling with its
//! log-determinant, bias + ReLU with the bias gradient, the angle embedding of the conditioner
//! input, and periodic shifts. Matrix products stay candle's (the `gemm` crate).
//!
//! The kernels run on CPU storage (f32 or f64, contiguous). On another device they fail with a
//! clear error: the flow engine's CPU path is the tested one.

use super::spline::{self, SplineSpec};
use candle_core::{backend::BackendStorage, CpuStorage, DType, Layout, Shape, Storage, Tensor};
use num_traits::Float;
use rayon::prelude::*;

type CResult<T> = candle_core::Result<T>;

/// Rows per rayon task: large enough that scheduling is negligible, small enough for 2+ cores.
const ROWS_PER_TASK: usize = 16;

/// Scalar types the kernels run in.
pub trait Real: Float + Send + Sync + candle_core::WithDType + std::iter::Sum + 'static {
    /// The storage's data if it holds this type.
    fn cpu_vec_mut(storage: &mut CpuStorage) -> Option<&mut Vec<Self>>;
}

impl Real for f32 {
    fn cpu_vec_mut(storage: &mut CpuStorage) -> Option<&mut Vec<Self>> {
        match storage {
            CpuStorage::F32(v) => Some(v),
            _ => None,
        }
    }
}

impl Real for f64 {
    fn cpu_vec_mut(storage: &mut CpuStorage) -> Option<&mut Vec<Self>> {
        match storage {
            CpuStorage::F64(v) => Some(v),
            _ => None,
        }
    }
}

fn contiguous_slice<'a, T: Real>(storage: &'a CpuStorage, layout: &Layout, what: &str) -> CResult<&'a [T]> {
    let (start, end) = layout
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg(format!("{what}: expected a contiguous tensor")))?;
    Ok(&storage.as_slice::<T>()?[start..end])
}

fn dims2(layout: &Layout, what: &str) -> CResult<(usize, usize)> {
    layout.shape().dims2().map_err(|_| candle_core::Error::Msg(format!("{what}: expected a 2D tensor")))
}

/// Runs `f` on the contiguous CPU data of `t`.
pub(crate) fn with_cpu_slice<T: Real, R>(t: &Tensor, f: impl FnOnce(&[T]) -> R) -> CResult<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(cpu) => Ok(f(contiguous_slice::<T>(cpu, layout, "tensor")?)),
        _ => Err(candle_core::Error::Msg("the flow engine's fused ops run on the CPU device only".into())),
    }
}

fn to_tensor<T: Real>(data: Vec<T>, shape: (usize, usize), like: &Tensor) -> CResult<Tensor> {
    Tensor::from_vec(data, shape, like.device())
}

/// Dispatches a generic kernel on the dtype of a CPU storage.
macro_rules! dispatch {
    ($storage:expr, $kernel:ident ( $($arg:expr),* )) => {
        match $storage.dtype() {
            DType::F32 => $kernel::<f32>($($arg),*),
            DType::F64 => $kernel::<f64>($($arg),*),
            other => Err(candle_core::Error::Msg(format!("flow ops support f32 and f64, not {other:?}"))),
        }
    };
}

// ---------------------------------------------------------------------------------------------
// Bias + optional ReLU

/// `y = x + b` (row-broadcast bias), optionally followed by ReLU; backward gives the masked
/// gradient for `x` and its column sums for `b` in one pass.
#[derive(Debug, Clone, Copy)]
pub struct BiasAct {
    /// Apply ReLU after the bias.
    pub relu: bool,
}

fn bias_act_fwd<T: Real>(
    op: &BiasAct,
    s1: &CpuStorage,
    l1: &Layout,
    s2: &CpuStorage,
    l2: &Layout,
) -> CResult<(CpuStorage, Shape)> {
    let (rows, cols) = dims2(l1, "bias_act input")?;
    let x = contiguous_slice::<T>(s1, l1, "bias_act input")?;
    let b = contiguous_slice::<T>(s2, l2, "bias_act bias")?;
    if b.len() != cols {
        return Err(candle_core::Error::Msg(format!("bias of {} values for {cols} columns", b.len())));
    }
    let mut out = vec![T::zero(); rows * cols];
    out.par_chunks_mut(cols * ROWS_PER_TASK).zip(x.par_chunks(cols * ROWS_PER_TASK)).for_each(|(o, xi)| {
        for (orow, xrow) in o.chunks_exact_mut(cols).zip(xi.chunks_exact(cols)) {
            for ((o, &x), &b) in orow.iter_mut().zip(xrow).zip(b) {
                let v = x + b;
                *o = if op.relu && v < T::zero() { T::zero() } else { v };
            }
        }
    });
    Ok((T::to_cpu_storage_owned(out), Shape::from((rows, cols))))
}

fn bias_act_bwd<T: Real>(relu: bool, res: &Tensor, grad: &Tensor) -> CResult<(Tensor, Tensor)> {
    let (rows, cols) = grad.dims2()?;
    let masked: Vec<T> = if relu {
        with_cpu_slice::<T, _>(res, |r| {
            with_cpu_slice::<T, _>(grad, |g| {
                r.iter().zip(g).map(|(&r, &g)| if r > T::zero() { g } else { T::zero() }).collect()
            })
        })??
    } else {
        with_cpu_slice::<T, _>(grad, |g| g.to_vec())?
    };
    let bias_grad = column_sums(&masked, rows, cols);
    Ok((to_tensor(masked, (rows, cols), grad)?, Tensor::from_vec(bias_grad, cols, grad.device())?))
}

/// Rows per block of [`column_sums`]: fixed, so that the order of the additions, and with it the
/// rounding, is the same on every machine and for every thread count.
const COLUMN_SUM_BLOCK_ROWS: usize = 256;

/// Column sums of a row-major matrix: row blocks summed in parallel, then the blocks' sums added
/// in order (a parallel tree reduction would group the additions by how the work was split).
pub(crate) fn column_sums<T: Real>(data: &[T], rows: usize, cols: usize) -> Vec<T> {
    if rows == 0 || cols == 0 {
        return vec![T::zero(); cols];
    }
    let blocks: Vec<Vec<T>> = data
        .par_chunks(COLUMN_SUM_BLOCK_ROWS * cols)
        .map(|chunk| {
            let mut acc = vec![T::zero(); cols];
            for row in chunk.chunks_exact(cols) {
                acc.iter_mut().zip(row).for_each(|(a, &v)| *a += v);
            }
            acc
        })
        .collect();
    let mut total = vec![T::zero(); cols];
    for block in &blocks {
        total.iter_mut().zip(block).for_each(|(a, &b)| *a += b);
    }
    total
}

impl candle_core::CustomOp2 for BiasAct {
    fn name(&self) -> &'static str {
        "bias_act"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> CResult<(CpuStorage, Shape)> {
        dispatch!(s1, bias_act_fwd(self, s1, l1, s2, l2))
    }

    fn bwd(&self, _x: &Tensor, _b: &Tensor, res: &Tensor, grad: &Tensor) -> CResult<(Option<Tensor>, Option<Tensor>)> {
        let (gx, gb) = match grad.dtype() {
            DType::F32 => bias_act_bwd::<f32>(self.relu, res, grad)?,
            _ => bias_act_bwd::<f64>(self.relu, res, grad)?,
        };
        Ok((Some(gx), Some(gb)))
    }
}

// ---------------------------------------------------------------------------------------------
// Conditioner input embedding

/// Selects the conditioning columns of a state; circular ones become (cos, sin) pairs.
#[derive(Debug, Clone)]
pub struct Embed {
    /// (column, circular) of each conditioning dimension, in output order.
    pub columns: Vec<(usize, bool)>,
}

impl Embed {
    /// Output width: one column per real dimension, two per circular one.
    pub fn width(&self) -> usize {
        self.columns.iter().map(|&(_, c)| if c { 2 } else { 1 }).sum()
    }
}

fn embed_fwd<T: Real>(op: &Embed, s: &CpuStorage, l: &Layout) -> CResult<(CpuStorage, Shape)> {
    let (rows, cols) = dims2(l, "embed input")?;
    let x = contiguous_slice::<T>(s, l, "embed input")?;
    let width = op.width();
    let mut out = vec![T::zero(); rows * width];
    out.par_chunks_mut(width).zip(x.par_chunks(cols)).for_each(|(o, xr)| {
        let mut k = 0;
        for &(c, circular) in &op.columns {
            if circular {
                let (s, co) = xr[c].sin_cos();
                o[k] = co;
                o[k + 1] = s;
                k += 2;
            } else {
                o[k] = xr[c];
                k += 1;
            }
        }
    });
    Ok((T::to_cpu_storage_owned(out), Shape::from((rows, width))))
}

fn embed_bwd<T: Real>(op: &Embed, x: &Tensor, grad: &Tensor) -> CResult<Tensor> {
    let (rows, cols) = x.dims2()?;
    let width = op.width();
    let gx = with_cpu_slice::<T, _>(x, |x| {
        with_cpu_slice::<T, _>(grad, |g| {
            let mut gx = vec![T::zero(); rows * cols];
            gx.par_chunks_mut(cols).zip(x.par_chunks(cols)).zip(g.par_chunks(width)).for_each(|((gxr, xr), gr)| {
                let mut k = 0;
                for &(c, circular) in &op.columns {
                    if circular {
                        let (s, co) = xr[c].sin_cos();
                        gxr[c] = gxr[c] - s * gr[k] + co * gr[k + 1];
                        k += 2;
                    } else {
                        gxr[c] += gr[k];
                        k += 1;
                    }
                }
            });
            gx
        })
    })??;
    to_tensor(gx, (rows, cols), x)
}

impl candle_core::CustomOp1 for Embed {
    fn name(&self) -> &'static str {
        "embed"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> CResult<(CpuStorage, Shape)> {
        dispatch!(s, embed_fwd(self, s, l))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> CResult<Option<Tensor>> {
        Ok(Some(match x.dtype() {
            DType::F32 => embed_bwd::<f32>(self, x, grad)?,
            _ => embed_bwd::<f64>(self, x, grad)?,
        }))
    }
}

// ---------------------------------------------------------------------------------------------
// Periodic shift

/// Adds fixed offsets (radians) to circular columns and wraps them to [-pi, pi); log-det 0.
#[derive(Debug, Clone)]
pub struct PeriodicShift {
    /// (column, shift in radians).
    pub shifts: Vec<(usize, f64)>,
    /// Subtract instead of add.
    pub inverse: bool,
}

/// Wraps an angle to [-pi, pi).
pub(crate) fn wrap<T: Real>(a: T) -> T {
    let pi = T::from(std::f64::consts::PI).unwrap();
    let two_pi = pi + pi;
    let w = a - two_pi * ((a + pi) / two_pi).floor();
    if w >= pi {
        w - two_pi
    } else {
        w
    }
}

fn shift_fwd<T: Real>(op: &PeriodicShift, s: &CpuStorage, l: &Layout) -> CResult<(CpuStorage, Shape)> {
    let (rows, cols) = dims2(l, "shift input")?;
    let mut out = contiguous_slice::<T>(s, l, "shift input")?.to_vec();
    let sign = if op.inverse { -1.0 } else { 1.0 };
    out.par_chunks_mut(cols).for_each(|row| {
        for &(c, shift) in &op.shifts {
            row[c] = wrap(row[c] + T::from(sign * shift).unwrap());
        }
    });
    Ok((T::to_cpu_storage_owned(out), Shape::from((rows, cols))))
}

impl candle_core::CustomOp1 for PeriodicShift {
    fn name(&self) -> &'static str {
        "periodic_shift"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> CResult<(CpuStorage, Shape)> {
        dispatch!(s, shift_fwd(self, s, l))
    }

    fn bwd(&self, _x: &Tensor, _res: &Tensor, grad: &Tensor) -> CResult<Option<Tensor>> {
        Ok(Some(grad.clone()))
    }
}

// ---------------------------------------------------------------------------------------------
// Coupling transforms

/// The elementwise bijection of a coupling layer, for one transformed dimension.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Transformer {
    /// Rational-quadratic spline on [-bound, bound] with linear tails, or circular on [-pi, pi).
    Spline {
        /// Bins.
        bins: usize,
        /// Half-width of the spline interval (pi for circular).
        bound: f64,
        /// Circular (periodic) spline.
        circular: bool,
    },
    /// y = x exp(s) + t with s = c tanh(raw / c) (soft-clamped log-scale).
    Affine {
        /// Bound c of the log-scale.
        max_log_scale: f64,
    },
}

impl Transformer {
    /// Raw conditioner outputs this transformer consumes.
    pub fn params(&self) -> usize {
        match *self {
            Transformer::Spline { bins, circular, .. } => {
                if circular {
                    3 * bins
                } else {
                    3 * bins - 1
                }
            }
            Transformer::Affine { .. } => 2,
        }
    }

    fn spline_spec<T: Real>(&self) -> Option<SplineSpec<T>> {
        match *self {
            Transformer::Spline { bins, bound, circular } => {
                let spec = if circular {
                    SplineSpec::<T>::circular(bins)
                } else {
                    SplineSpec::<T>::linear_tails(bins, T::from(bound).unwrap())
                };
                Some(spec)
            }
            Transformer::Affine { .. } => None,
        }
    }
}

/// One coupling step: the transformed columns of a state pass through their transformers with
/// parameters from the conditioner, the other columns pass unchanged. Output: `[B, D + 1]`, the
/// new state and, in the last column, the summed log|det| of the step.
#[derive(Debug, Clone)]
pub struct Coupling {
    /// (column, transformer, offset of its parameters in the conditioner output).
    pub columns: Vec<(usize, Transformer, usize)>,
    /// Apply the inverse map.
    pub inverse: bool,
}

impl Coupling {
    /// Width of the conditioner output.
    pub fn params(&self) -> usize {
        self.columns.iter().map(|(_, t, _)| t.params()).sum()
    }
}

struct Prepared<T: Real> {
    column: usize,
    offset: usize,
    params: usize,
    kind: PreparedKind<T>,
}

enum PreparedKind<T: Real> {
    Spline(SplineSpec<T>),
    Affine(T),
}

fn prepare<T: Real>(op: &Coupling) -> CResult<Vec<Prepared<T>>> {
    op.columns
        .iter()
        .map(|&(column, t, offset)| {
            let kind = match t {
                Transformer::Affine { max_log_scale } => PreparedKind::Affine(T::from(max_log_scale).unwrap()),
                _ => PreparedKind::Spline(
                    t.spline_spec::<T>().ok_or_else(|| candle_core::Error::Msg("spline spec".into()))?,
                ),
            };
            Ok(Prepared { column, offset, params: t.params(), kind })
        })
        .collect()
}

/// log-scale s = c tanh(raw / c) and ds/draw.
fn soft_clamp<T: Real>(raw: T, c: T) -> (T, T) {
    let th = (raw / c).tanh();
    (c * th, T::one() - th * th)
}

fn affine<T: Real>(x: T, raw: &[T], c: T, inverse: bool) -> (T, T) {
    let (s, _) = soft_clamp(raw[0], c);
    if inverse {
        ((x - raw[1]) * (-s).exp(), -s)
    } else {
        (x * s.exp() + raw[1], s)
    }
}

fn affine_backward<T: Real>(x: T, raw: &[T], c: T, inverse: bool, g_out: T, g_ld: T, graw: &mut [T]) -> T {
    let (s, ds) = soft_clamp(raw[0], c);
    if inverse {
        let e = (-s).exp();
        let out = (x - raw[1]) * e;
        graw[0] += (-g_out * out - g_ld) * ds;
        graw[1] -= g_out * e;
        g_out * e
    } else {
        let e = s.exp();
        graw[0] += (g_out * x * e + g_ld) * ds;
        graw[1] += g_out;
        g_out * e
    }
}

fn coupling_fwd<T: Real>(
    op: &Coupling,
    s1: &CpuStorage,
    l1: &Layout,
    s2: &CpuStorage,
    l2: &Layout,
) -> CResult<(CpuStorage, Shape)> {
    let (rows, cols) = dims2(l1, "coupling input")?;
    let (prow, pcols) = dims2(l2, "coupling parameters")?;
    if prow != rows || pcols != op.params() {
        return Err(candle_core::Error::Msg(format!(
            "coupling parameters of shape [{prow}, {pcols}], expected [{rows}, {}]",
            op.params()
        )));
    }
    let x = contiguous_slice::<T>(s1, l1, "coupling input")?;
    let raw = contiguous_slice::<T>(s2, l2, "coupling parameters")?;
    let prepared = prepare::<T>(op)?;
    let width = cols + 1;
    let mut out = vec![T::zero(); rows * width];
    out.par_chunks_mut(width).zip(x.par_chunks(cols)).zip(raw.par_chunks(pcols)).for_each(|((o, xr), pr)| {
        o[..cols].copy_from_slice(xr);
        let mut logdet = T::zero();
        for p in &prepared {
            let params = &pr[p.offset..p.offset + p.params];
            let (y, ld) = match &p.kind {
                PreparedKind::Spline(spec) => spline::transform(spec, xr[p.column], params, op.inverse),
                PreparedKind::Affine(c) => affine(xr[p.column], params, *c, op.inverse),
            };
            o[p.column] = y;
            logdet += ld;
        }
        o[cols] = logdet;
    });
    Ok((T::to_cpu_storage_owned(out), Shape::from((rows, width))))
}

fn coupling_bwd<T: Real>(op: &Coupling, x: &Tensor, raw: &Tensor, grad: &Tensor) -> CResult<(Tensor, Tensor)> {
    let (rows, cols) = x.dims2()?;
    let pcols = op.params();
    let prepared = prepare::<T>(op)?;
    let width = cols + 1;
    let mut gx = vec![T::zero(); rows * cols];
    let mut graw = vec![T::zero(); rows * pcols];
    with_cpu_slice::<T, _>(x, |x| {
        with_cpu_slice::<T, _>(raw, |raw| {
            with_cpu_slice::<T, _>(grad, |g| {
                gx.par_chunks_mut(cols)
                    .zip(graw.par_chunks_mut(pcols))
                    .zip(x.par_chunks(cols))
                    .zip(raw.par_chunks(pcols))
                    .zip(g.par_chunks(width))
                    .for_each(|((((gxr, gpr), xr), pr), gr)| {
                        gxr.copy_from_slice(&gr[..cols]);
                        let g_ld = gr[cols];
                        for p in &prepared {
                            let params = &pr[p.offset..p.offset + p.params];
                            let gparams = &mut gpr[p.offset..p.offset + p.params];
                            let xv = xr[p.column];
                            let go = gr[p.column];
                            gxr[p.column] = match &p.kind {
                                PreparedKind::Spline(spec) => {
                                    spline::transform_backward(spec, xv, params, op.inverse, go, g_ld, gparams)
                                }
                                PreparedKind::Affine(c) => {
                                    affine_backward(xv, params, *c, op.inverse, go, g_ld, gparams)
                                }
                            };
                        }
                    })
            })
        })
    })???;
    Ok((to_tensor(gx, (rows, cols), x)?, to_tensor(graw, (rows, pcols), raw)?))
}

impl candle_core::CustomOp2 for Coupling {
    fn name(&self) -> &'static str {
        "coupling"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> CResult<(CpuStorage, Shape)> {
        if s1.dtype() != s2.dtype() {
            return Err(candle_core::Error::Msg("coupling: state and parameters differ in dtype".into()));
        }
        dispatch!(s1, coupling_fwd(self, s1, l1, s2, l2))
    }

    fn bwd(&self, x: &Tensor, raw: &Tensor, _res: &Tensor, grad: &Tensor) -> CResult<(Option<Tensor>, Option<Tensor>)> {
        let (gx, graw) = match x.dtype() {
            DType::F32 => coupling_bwd::<f32>(self, x, raw, grad)?,
            _ => coupling_bwd::<f64>(self, x, raw, grad)?,
        };
        Ok((Some(gx), Some(graw)))
    }
}
