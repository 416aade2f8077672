//! Fused rational-quadratic spline kernels (Durkan et al. 2019, "Neural Spline Flows") on plain
//! slices, with hand-derived backward passes, for `f32` and `f64`.
//!
//! # Parameterisation
//!
//! A spline with `K` bins lives on the interval `[-bound, bound]`. Each element carries
//! [`SplineSpec::params_per_dim`] raw (unconstrained) values, laid out as
//!
//! * `raw[0..K]`: bin-width logits `a`,
//! * `raw[K..2K]`: bin-height logits `b`,
//! * `raw[2K..]`: knot-derivative raws: `K - 1` of them (interior knots `d_1 .. d_{K-1}`) with
//!   linear tails, where the boundary derivatives are fixed to `d_0 = d_K = 1`; `K` of them
//!   (`d_0 .. d_{K-1}`, with `d_K = d_0`) for a circular spline.
//!
//! Bin widths (as fractions of the interval) are `w = min_width + (1 - min_width K) softmax(a)`,
//! knots `x_0 = -bound`, `x_k = -bound + 2 bound cumsum(w)`, with the last knot set to exactly
//! `+bound`; heights and `y` knots likewise. Knot derivatives are
//! `d = min_derivative + softplus(raw + c)` with `c = ln(exp(1 - min_derivative) - 1)`, so a raw
//! value of 0 gives `d = 1`: with all raw values zero the map is the identity.
//!
//! With linear tails (`circular == false`) the map is the identity outside `[-bound, bound]`
//! (log-derivative 0, no parameter gradient). A circular spline treats its input as an angle:
//! it is first wrapped into `[-bound, bound)` (period `2 bound`; `bound = pi` for angles) and the
//! map is a bijection of that interval whose outputs are again in `[-bound, bound)`.
//!
//! # Kernels
//!
//! [`transform`] and [`transform_backward`] work on one scalar; [`transform_batch`] and
//! [`transform_backward_batch`] loop over a slice (serially: the caller parallelises). The
//! per-element work uses fixed-size stack arrays and never allocates, which limits the number of
//! bins to [`MAX_BINS`]. No kernel panics: NaN inputs or parameters propagate to NaN outputs, and
//! a spec with an unsupported bin count (or too few raw values) yields NaN.

use crate::error::{Error, Result};
use num_traits::Float;

/// Largest number of bins the kernels support (their per-element workspaces are stack arrays).
pub const MAX_BINS: usize = 32;

/// Default minimal bin width, bin height (as fractions of the interval) and knot derivative.
pub const DEFAULT_MIN: f64 = 1e-3;

/// Shape and constraints of a rational-quadratic spline (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SplineSpec<T> {
    /// Number of bins `K`, in `1..=MAX_BINS`.
    pub bins: usize,
    /// Half-width of the spline interval `[-bound, bound]` (the period is `2 bound` when circular).
    pub bound: T,
    /// Periodic spline on `[-bound, bound)` instead of linear (identity) tails.
    pub circular: bool,
    /// Smallest bin width as a fraction of the interval; `min_width * bins < 1`.
    pub min_width: T,
    /// Smallest bin height as a fraction of the interval; `min_height * bins < 1`.
    pub min_height: T,
    /// Smallest knot derivative, in `[0, 1)`.
    pub min_derivative: T,
}

/// Converts an `f64` constant; NaN where the type cannot hold it (never for `f32`/`f64`).
fn cst<T: Float>(v: f64) -> T {
    T::from(v).unwrap_or_else(T::nan)
}

fn to_f64<T: Float>(v: T) -> f64 {
    v.to_f64().unwrap_or(f64::NAN)
}

impl<T: Float> SplineSpec<T> {
    /// A validated spec: `bins` in `1..=MAX_BINS`, `bound` finite and positive,
    /// `0 <= min_width * bins < 1`, `0 <= min_height * bins < 1` and `0 <= min_derivative < 1`.
    pub fn new(bins: usize, bound: T, circular: bool, min_width: T, min_height: T, min_derivative: T) -> Result<Self> {
        let spec = SplineSpec { bins, bound, circular, min_width, min_height, min_derivative };
        spec.validate()?;
        Ok(spec)
    }

    /// Spline on `[-bound, bound]` with linear (identity) tails and the default minima
    /// ([`DEFAULT_MIN`]). Not validated: see [`SplineSpec::validate`]; the kernels return NaN for a
    /// bin count outside `1..=MAX_BINS`.
    pub fn linear_tails(bins: usize, bound: T) -> Self {
        let m = cst(DEFAULT_MIN);
        SplineSpec { bins, bound, circular: false, min_width: m, min_height: m, min_derivative: m }
    }

    /// Circular spline of angles on `[-pi, pi)` with the default minima ([`DEFAULT_MIN`]). Not
    /// validated: see [`SplineSpec::validate`]; the kernels return NaN for a bin count outside
    /// `1..=MAX_BINS`.
    pub fn circular(bins: usize) -> Self {
        let m = cst(DEFAULT_MIN);
        SplineSpec {
            bins,
            bound: cst(std::f64::consts::PI),
            circular: true,
            min_width: m,
            min_height: m,
            min_derivative: m,
        }
    }

    /// Checks the constraints listed at [`SplineSpec::new`].
    pub fn validate(&self) -> Result<()> {
        if self.bins == 0 || self.bins > MAX_BINS {
            return Err(Error::invalid(format!("spline bins must be in 1..={MAX_BINS}, got {}", self.bins)));
        }
        if !(self.bound > T::zero() && self.bound.is_finite()) {
            return Err(Error::invalid(format!(
                "spline bound must be finite and positive, got {}",
                to_f64(self.bound)
            )));
        }
        let k = cst::<T>(self.bins as f64);
        for (name, m) in [("min_width", self.min_width), ("min_height", self.min_height)] {
            if !(m >= T::zero() && m * k < T::one()) {
                return Err(Error::invalid(format!(
                    "spline {name} must satisfy 0 <= {name} * bins < 1, got {} with {} bins",
                    to_f64(m),
                    self.bins
                )));
            }
        }
        if !(self.min_derivative >= T::zero() && self.min_derivative < T::one()) {
            return Err(Error::invalid(format!(
                "spline min_derivative must be in [0, 1), got {}",
                to_f64(self.min_derivative)
            )));
        }
        Ok(())
    }

    /// Raw values per transformed element: `3K - 1` with linear tails, `3K` when circular.
    pub fn params_per_dim(&self) -> usize {
        if self.circular {
            3 * self.bins
        } else {
            (3 * self.bins).saturating_sub(1)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Internals

/// Per-spec constants, computed once per call (or once per batch).
#[derive(Clone, Copy)]
struct Consts<T> {
    bins: usize,
    params: usize,
    ok: bool,
    circular: bool,
    bound: T,
    two_bound: T,
    min_w: T,
    scale_w: T,
    min_h: T,
    scale_h: T,
    min_d: T,
    shift: T,
}

impl<T: Float> Consts<T> {
    fn new(spec: &SplineSpec<T>) -> Self {
        let k = cst::<T>(spec.bins as f64);
        Consts {
            bins: spec.bins,
            params: spec.params_per_dim(),
            ok: spec.bins >= 1 && spec.bins <= MAX_BINS,
            circular: spec.circular,
            bound: spec.bound,
            two_bound: spec.bound + spec.bound,
            min_w: spec.min_width,
            scale_w: T::one() - spec.min_width * k,
            min_h: spec.min_height,
            scale_h: T::one() - spec.min_height * k,
            min_d: spec.min_derivative,
            shift: (T::one() - spec.min_derivative).exp_m1().ln(),
        }
    }

    /// Wraps an angle into `[-bound, bound)`; the identity there (NaN stays NaN).
    fn wrap(&self, x: T) -> T {
        if x >= -self.bound && x < self.bound {
            return x;
        }
        let mut v = x - self.two_bound * ((x + self.bound) / self.two_bound).floor();
        if v >= self.bound {
            v = v - self.two_bound;
        }
        if v < -self.bound {
            v = -self.bound;
        }
        v
    }

    /// Maps an output that rounding put on `+bound` back into `[-bound, bound)` (circular only).
    fn wrap_output(&self, y: T) -> T {
        if self.circular && y >= self.bound {
            y - self.two_bound
        } else {
            y
        }
    }

    /// The input inside the spline interval (wrapped when circular), or `None` in a linear tail.
    fn inside(&self, x: T) -> Option<T> {
        if self.circular {
            Some(self.wrap(x))
        } else if x < -self.bound || x > self.bound {
            None
        } else {
            Some(x)
        }
    }

    /// Raw index of the derivative at knot `k` (`None` for the fixed boundary knots of linear tails).
    fn derivative_index(&self, k: usize) -> Option<usize> {
        let base = 2 * self.bins;
        if self.circular {
            Some(base + if k == self.bins { 0 } else { k })
        } else if k == 0 || k == self.bins {
            None
        } else {
            Some(base + k - 1)
        }
    }

    /// Derivative at knot `k` and its raw index.
    fn derivative(&self, raw: &[T], k: usize) -> (T, Option<usize>) {
        match self.derivative_index(k) {
            Some(i) => (self.min_d + softplus(raw[i] + self.shift), Some(i)),
            None => (T::one(), None),
        }
    }
}

/// `ln(1 + exp(z))` without overflow.
fn softplus<T: Float>(z: T) -> T {
    z.max(T::zero()) + (-z.abs()).exp().ln_1p()
}

/// `1 / (1 + exp(-z))` without overflow (the derivative of [`softplus`]).
fn sigmoid<T: Float>(z: T) -> T {
    if z >= T::zero() {
        T::one() / (T::one() + (-z).exp())
    } else {
        let e = z.exp();
        e / (T::one() + e)
    }
}

/// Writes `softmax(logits)` into `u[..logits.len()]`.
fn softmax<T: Float>(logits: &[T], u: &mut [T; MAX_BINS]) {
    let n = logits.len();
    // `max` skips NaN, but a NaN logit still makes its exp, and so the sum, NaN.
    let m = logits.iter().fold(T::neg_infinity(), |m, &a| m.max(a));
    let mut sum = T::zero();
    for (ui, &a) in u[..n].iter_mut().zip(logits) {
        let e = (a - m).exp();
        *ui = e;
        sum = sum + e;
    }
    let inv = T::one() / sum;
    for ui in &mut u[..n] {
        *ui = *ui * inv;
    }
}

/// Knot layout along one axis: softmax fractions `u`, minimum and scale of the bin fractions.
struct Axis<'a, T> {
    u: &'a [T],
    min: T,
    scale: T,
    bound: T,
    two_bound: T,
}

impl<T: Float> Axis<'_, T> {
    /// The bin `k` with `knot_k <= v < knot_{k+1}` (the last bin for `v >= knot_{K-1}`) and its
    /// two knots.
    fn find(&self, v: T) -> (usize, T, T) {
        let n = self.u.len();
        let mut lo = -self.bound;
        let mut cum = T::zero();
        for (k, &uk) in self.u.iter().enumerate() {
            let hi = if k + 1 == n {
                self.bound
            } else {
                cum = cum + self.min + self.scale * uk;
                -self.bound + self.two_bound * cum
            };
            if v < hi || k + 1 == n {
                return (k, lo, hi);
            }
            lo = hi;
        }
        (0, -self.bound, self.bound)
    }

    /// Knots `k` and `k + 1` (bitwise equal to those [`Axis::find`] returns).
    fn knots(&self, k: usize) -> (T, T) {
        let n = self.u.len();
        let mut cum = T::zero();
        for &uj in &self.u[..k] {
            cum = cum + self.min + self.scale * uj;
        }
        let lo = if k == 0 { -self.bound } else { -self.bound + self.two_bound * cum };
        let hi = if k + 1 == n {
            self.bound
        } else {
            -self.bound + self.two_bound * (cum + self.min + self.scale * self.u[k])
        };
        (lo, hi)
    }

    /// Adds to `g` (the logits' gradient) the gradient of a loss with gradients `g_lo`, `g_hi`
    /// with respect to knots `k` and `k + 1`. The end knots are constants.
    fn backward(&self, k: usize, g_lo: T, g_hi: T, g: &mut [T]) {
        let n = self.u.len();
        let g_hi = if k + 1 == n { T::zero() } else { g_hi };
        // Knot j = -bound + 2 bound sum_{i<j} w_i, so d loss / d w_i is
        // 2 bound (g_lo [i < k] + g_hi [i <= k]).
        let below: T = self.u[..k].iter().fold(T::zero(), |s, &u| s + u);
        let g_before = self.two_bound * (g_lo + g_hi);
        let g_at = self.two_bound * g_hi;
        let mean = self.two_bound * (g_lo * below + g_hi * (below + self.u[k]));
        // w_i = min + scale u_i: d loss / d a_i = scale u_i (g_w_i - sum_j g_w_j u_j).
        for (j, (gj, &uj)) in g.iter_mut().zip(self.u).enumerate() {
            let gw = match j.cmp(&k) {
                std::cmp::Ordering::Less => g_before,
                std::cmp::Ordering::Equal => g_at,
                std::cmp::Ordering::Greater => T::zero(),
            };
            *gj = *gj + self.scale * uj * (gw - mean);
        }
    }
}

/// The rational-quadratic function of one bin in normalised form: `y = y_k + h ratio(xi)`,
/// `dy/dx = s^2 n2 / den^2`, with `s = h / w`.
struct Rq<T> {
    xi: T,
    s: T,
    d0: T,
    d1: T,
    t: T,
    om: T,
    den: T,
    ratio: T,
    n2: T,
    logdet: T,
}

impl<T: Float> Rq<T> {
    fn new(xi: T, s: T, d0: T, d1: T) -> Self {
        let om = T::one() - xi;
        let t = xi * om;
        let den = s + (d0 + d1 - (s + s)) * t;
        let num = s * xi * xi + d0 * t;
        let n2 = d1 * xi * xi + (s + s) * t + d0 * om * om;
        let q = s / den;
        Rq { xi, s, d0, d1, t, om, den, ratio: num / den, n2, logdet: (q * q * n2).ln() }
    }
}

/// Bin of one element with its knots and knot derivatives.
struct Bin<T> {
    k: usize,
    xl: T,
    xh: T,
    yl: T,
    yh: T,
    d0: T,
    d1: T,
    i0: Option<usize>,
    i1: Option<usize>,
}

/// Softmaxes both logit sets into `uw`, `uh` and locates `v` (an `x` when forward, a `y` when
/// inverse).
fn locate<T: Float>(
    c: &Consts<T>,
    raw: &[T],
    v: T,
    inverse: bool,
    uw: &mut [T; MAX_BINS],
    uh: &mut [T; MAX_BINS],
) -> Bin<T> {
    let n = c.bins;
    softmax(&raw[..n], uw);
    softmax(&raw[n..2 * n], uh);
    let ax = Axis { u: &uw[..n], min: c.min_w, scale: c.scale_w, bound: c.bound, two_bound: c.two_bound };
    let ay = Axis { u: &uh[..n], min: c.min_h, scale: c.scale_h, bound: c.bound, two_bound: c.two_bound };
    let (k, xl, xh, yl, yh) = if inverse {
        let (k, yl, yh) = ay.find(v);
        let (xl, xh) = ax.knots(k);
        (k, xl, xh, yl, yh)
    } else {
        let (k, xl, xh) = ax.find(v);
        let (yl, yh) = ay.knots(k);
        (k, xl, xh, yl, yh)
    };
    let (d0, i0) = c.derivative(raw, k);
    let (d1, i1) = c.derivative(raw, k + 1);
    Bin { k, xl, xh, yl, yh, d0, d1, i0, i1 }
}

/// Solves `y = y_k + h ratio(xi)` for `xi` in `[0, 1]` (the numerically stable root).
fn solve_xi<T: Float>(b: &Bin<T>, v: T) -> T {
    let h = b.yh - b.yl;
    let s = h / (b.xh - b.xl);
    let delta = v - b.yl;
    let dd = b.d0 + b.d1 - (s + s);
    let qa = h * (s - b.d0) + delta * dd;
    let qb = h * b.d0 - delta * dd;
    let qc = -s * delta;
    let four = cst::<T>(4.0);
    let mut disc = qb * qb - four * qa * qc;
    if disc < T::zero() {
        disc = T::zero();
    }
    // The root in [0, 1] is 2c / (-b - sqrt(disc)) = (-b + sqrt(disc)) / 2a: the first form has no
    // cancellation for b >= 0, the second none for b < 0 (where then a > 0).
    let mut xi = if qb >= T::zero() { (qc + qc) / (-qb - disc.sqrt()) } else { (disc.sqrt() - qb) / (qa + qa) };
    // Rounding only; comparisons keep NaN.
    if xi < T::zero() {
        xi = T::zero();
    }
    if xi > T::one() {
        xi = T::one();
    }
    xi
}

fn eval<T: Float>(c: &Consts<T>, x: T, raw: &[T], inverse: bool) -> (T, T) {
    if !c.ok || raw.len() < c.params {
        return (T::nan(), T::nan());
    }
    let Some(v) = c.inside(x) else {
        return (x, T::zero());
    };
    let mut uw = [T::zero(); MAX_BINS];
    let mut uh = [T::zero(); MAX_BINS];
    let b = locate(c, raw, v, inverse, &mut uw, &mut uh);
    let w = b.xh - b.xl;
    let h = b.yh - b.yl;
    if inverse {
        let xi = solve_xi(&b, v);
        let rq = Rq::new(xi, h / w, b.d0, b.d1);
        (c.wrap_output(b.xl + w * xi), -rq.logdet)
    } else {
        let rq = Rq::new((v - b.xl) / w, h / w, b.d0, b.d1);
        (c.wrap_output(b.yl + h * rq.ratio), rq.logdet)
    }
}

fn eval_backward<T: Float>(c: &Consts<T>, x: T, raw: &[T], inverse: bool, g_out: T, g_ld: T, graw: &mut [T]) -> T {
    if !c.ok || raw.len() < c.params || graw.len() < c.params {
        return T::nan();
    }
    let Some(v) = c.inside(x) else {
        return g_out;
    };
    let mut uw = [T::zero(); MAX_BINS];
    let mut uh = [T::zero(); MAX_BINS];
    let b = locate(c, raw, v, inverse, &mut uw, &mut uh);
    let w = b.xh - b.xl;
    let h = b.yh - b.yl;
    let s = h / w;
    let xi = if inverse { solve_xi(&b, v) } else { (v - b.xl) / w };
    let rq = Rq::new(xi, s, b.d0, b.d1);
    let two = T::one() + T::one();
    let Rq { xi, s, d0, d1, t, om, den, ratio, n2, .. } = rq;

    // Partial derivatives of ratio (R) and logdet (L) with respect to xi, s, d0, d1.
    let dt = om - xi;
    let dsum = d0 + d1 - two * s;
    let r_xi = s * n2 / (den * den);
    let r_s = (xi * xi - ratio * (T::one() - two * t)) / den;
    let r_d0 = t * (T::one() - ratio) / den;
    let r_d1 = -ratio * t / den;
    let l_xi = two * (d1 * xi + s * dt - d0 * om) / n2 - two * dsum * dt / den;
    let l_s = two / s + two * t / n2 - two * (T::one() - two * t) / den;
    let l_d0 = om * om / n2 - two * t / den;
    let l_d1 = xi * xi / n2 - two * t / den;

    // Gradients with respect to the input, s, the derivatives and (directly) xl, w, yl, h.
    let (g_in, g_s, g_d0, g_d1, mut g_xl, mut g_w, mut g_yl, mut g_h);
    if inverse {
        // out = xl + w xi, logdet = -L, with xi defined implicitly by yl + h R(xi, s, d0, d1) = y.
        let lam = (g_out * w - g_ld * l_xi) / (h * r_xi);
        g_in = lam;
        g_s = -g_ld * l_s - lam * h * r_s;
        g_d0 = -g_ld * l_d0 - lam * h * r_d0;
        g_d1 = -g_ld * l_d1 - lam * h * r_d1;
        g_xl = g_out;
        g_w = g_out * xi;
        g_yl = -lam;
        g_h = -lam * ratio;
    } else {
        // out = yl + h R(xi, s, d0, d1), logdet = L, xi = (x - xl) / w.
        let gh = g_out * h;
        let g_xi = gh * r_xi + g_ld * l_xi;
        g_in = g_xi / w;
        g_s = gh * r_s + g_ld * l_s;
        g_d0 = gh * r_d0 + g_ld * l_d0;
        g_d1 = gh * r_d1 + g_ld * l_d1;
        g_xl = -g_in;
        g_w = -g_in * xi;
        g_yl = g_out;
        g_h = g_out * ratio;
    }
    // s = h / w, w = xh - xl, h = yh - yl.
    g_h = g_h + g_s / w;
    g_w = g_w - g_s * s / w;
    g_xl = g_xl - g_w;
    g_yl = g_yl - g_h;

    let n = c.bins;
    let ax = Axis { u: &uw[..n], min: c.min_w, scale: c.scale_w, bound: c.bound, two_bound: c.two_bound };
    let ay = Axis { u: &uh[..n], min: c.min_h, scale: c.scale_h, bound: c.bound, two_bound: c.two_bound };
    ax.backward(b.k, g_xl, g_w, &mut graw[..n]);
    ay.backward(b.k, g_yl, g_h, &mut graw[n..2 * n]);
    if let Some(i) = b.i0 {
        graw[i] = graw[i] + g_d0 * sigmoid(raw[i] + c.shift);
    }
    if let Some(i) = b.i1 {
        graw[i] = graw[i] + g_d1 * sigmoid(raw[i] + c.shift);
    }
    g_in
}

// ---------------------------------------------------------------------------------------------
// Public kernels

/// Returns (output, log|d output / d input|) of the forward map (`inverse == false`) or the
/// inverse map (`inverse == true`) for one element `x` with raw parameters `raw`
/// (`params_per_dim()` values; see the module documentation for the layout).
///
/// A circular spline wraps `x` into `[-bound, bound)` first. With linear tails the map is the
/// identity outside `[-bound, bound]`. Returns `(NaN, NaN)` for a bin count outside
/// `1..=MAX_BINS` or a `raw` shorter than `params_per_dim()`.
pub fn transform<T: Float + Send + Sync + 'static>(spec: &SplineSpec<T>, x: T, raw: &[T], inverse: bool) -> (T, T) {
    eval(&Consts::new(spec), x, raw, inverse)
}

/// Backward pass of `transform`: given upstream gradients g_out (of the output) and g_logdet (of the
/// log-derivative), returns d loss / d x and ADDS d loss / d raw into graw (length params_per_dim()).
///
/// The derivatives are analytic: through the rational-quadratic formula, the knot sums, the
/// softmaxes and the softplus; for the inverse map by implicit differentiation at fixed output.
/// In a linear tail it returns `g_out` and adds nothing. Returns NaN (adding nothing) for a bin
/// count outside `1..=MAX_BINS` or `raw`/`graw` shorter than `params_per_dim()`.
pub fn transform_backward<T: Float + Send + Sync + 'static>(
    spec: &SplineSpec<T>,
    x: T,
    raw: &[T],
    inverse: bool,
    g_out: T,
    g_logdet: T,
    graw: &mut [T],
) -> T {
    eval_backward(&Consts::new(spec), x, raw, inverse, g_out, g_logdet, graw)
}

/// [`transform`] over a batch: element `i` is `x[i]` with parameters `raw[i*P..(i+1)*P]`
/// (`P = params_per_dim()`), writing `out[i]` and `logdet[i]`. Serial; the caller parallelises.
///
/// Processes as many elements as all slices hold (`min(x.len(), raw.len() / P, out.len(),
/// logdet.len())`); callers pass matching lengths. An unsupported bin count fills `out` and
/// `logdet` with NaN.
pub fn transform_batch<T: Float + Send + Sync + 'static>(
    spec: &SplineSpec<T>,
    x: &[T],
    raw: &[T],
    inverse: bool,
    out: &mut [T],
    logdet: &mut [T],
) {
    let c = Consts::new(spec);
    if !c.ok {
        out.fill(T::nan());
        logdet.fill(T::nan());
        return;
    }
    for (((&xv, r), o), l) in x.iter().zip(raw.chunks_exact(c.params)).zip(out.iter_mut()).zip(logdet.iter_mut()) {
        (*o, *l) = eval(&c, xv, r, inverse);
    }
}

/// [`transform_backward`] over a batch (layout as in [`transform_batch`]): writes `gx[i]` and
/// OVERWRITES `graw[i*P..(i+1)*P]` with the gradients of element `i`. Serial.
///
/// Processes as many elements as all slices hold; an unsupported bin count fills `gx` and `graw`
/// with NaN.
#[allow(clippy::too_many_arguments)]
pub fn transform_backward_batch<T: Float + Send + Sync + 'static>(
    spec: &SplineSpec<T>,
    x: &[T],
    raw: &[T],
    inverse: bool,
    g_out: &[T],
    g_logdet: &[T],
    gx: &mut [T],
    graw: &mut [T],
) {
    let c = Consts::new(spec);
    if !c.ok {
        gx.fill(T::nan());
        graw.fill(T::nan());
        return;
    }
    let p = c.params;
    let items = x.iter().zip(raw.chunks_exact(p)).zip(g_out).zip(g_logdet);
    for ((((&xv, r), &go), &gl), (g, gr)) in items.zip(gx.iter_mut().zip(graw.chunks_exact_mut(p))) {
        gr.fill(T::zero());
        *g = eval_backward(&c, xv, r, inverse, go, gl, gr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use rand_distr::{Distribution, Normal};
    use std::f64::consts::PI;

    fn kinds(bins: usize) -> [SplineSpec<f64>; 2] {
        [SplineSpec::linear_tails(bins, 3.0), SplineSpec::circular(bins)]
    }

    fn random_raw(rng: &mut ChaCha8Rng, p: usize) -> Vec<f64> {
        let normal = Normal::new(0.0, 2.0).unwrap();
        (0..p).map(|_| normal.sample(rng)).collect()
    }

    fn random_x(rng: &mut ChaCha8Rng, spec: &SplineSpec<f64>) -> f64 {
        if spec.circular {
            rng.gen_range(-PI..PI)
        } else {
            rng.gen_range(-1.2 * spec.bound..1.2 * spec.bound)
        }
    }

    /// Difference a - b, taken modulo the period for circular outputs.
    fn out_diff(spec: &SplineSpec<f64>, a: f64, b: f64) -> f64 {
        let d = a - b;
        if spec.circular {
            d - 2.0 * PI * (d / (2.0 * PI)).round()
        } else {
            d
        }
    }

    /// Knots along one axis, computed independently of the kernels.
    fn knots(spec: &SplineSpec<f64>, logits: &[f64], min: f64) -> Vec<f64> {
        let m = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = logits.iter().map(|a| (a - m).exp()).collect();
        let sum: f64 = e.iter().sum();
        let mut out = vec![-spec.bound];
        let mut cum = 0.0;
        for ei in &e {
            cum += min + (1.0 - min * spec.bins as f64) * ei / sum;
            out.push(-spec.bound + 2.0 * spec.bound * cum);
        }
        out
    }

    #[test]
    fn spec_validation_and_layout() {
        assert!(SplineSpec::<f64>::new(0, 1.0, false, 1e-3, 1e-3, 1e-3).is_err());
        assert!(SplineSpec::<f64>::new(33, 1.0, false, 1e-3, 1e-3, 1e-3).is_err());
        assert!(SplineSpec::<f64>::new(8, 0.0, false, 1e-3, 1e-3, 1e-3).is_err());
        assert!(SplineSpec::<f64>::new(8, f64::INFINITY, false, 1e-3, 1e-3, 1e-3).is_err());
        assert!(SplineSpec::<f64>::new(8, 1.0, false, 0.125, 1e-3, 1e-3).is_err());
        assert!(SplineSpec::<f64>::new(8, 1.0, false, 1e-3, -1e-3, 1e-3).is_err());
        assert!(SplineSpec::<f64>::new(8, 1.0, false, 1e-3, 1e-3, 1.0).is_err());
        assert!(SplineSpec::<f64>::new(8, 1.0, false, 1e-3, 1e-3, f64::NAN).is_err());
        assert!(SplineSpec::<f64>::new(32, 1.0, true, 0.0, 0.0, 0.0).is_ok());
        assert!(SplineSpec::<f32>::linear_tails(8, 5.0).validate().is_ok());
        assert!(SplineSpec::<f32>::circular(MAX_BINS).validate().is_ok());
        assert_eq!(SplineSpec::<f64>::linear_tails(8, 5.0).params_per_dim(), 23);
        assert_eq!(SplineSpec::<f64>::circular(8).params_per_dim(), 24);
        assert_eq!(SplineSpec::<f64>::linear_tails(1, 5.0).params_per_dim(), 2);
        assert_eq!(SplineSpec::<f64>::circular(8).bound, PI);
        // Unsupported bin counts and short parameter slices give NaN, not a panic.
        let bad = SplineSpec::<f64>::linear_tails(0, 1.0);
        assert!(transform(&bad, 0.5, &[], false).0.is_nan());
        let bad = SplineSpec::<f64>::linear_tails(40, 1.0);
        assert!(transform(&bad, 0.5, &[0.0; 119], false).0.is_nan());
        let spec = SplineSpec::<f64>::linear_tails(4, 1.0);
        assert!(transform(&spec, 0.5, &[0.0; 5], false).0.is_nan());
        let mut g = [0.0; 11];
        assert!(transform_backward(&spec, 0.5, &[0.0; 11], false, 1.0, 1.0, &mut g[..3]).is_nan());
        // NaN propagates.
        let (y, ld) = transform(&spec, f64::NAN, &[0.0; 11], false);
        assert!(y.is_nan() && ld.is_nan());
        let mut raw = [0.0; 11];
        raw[2] = f64::NAN;
        let (y, ld) = transform(&spec, 0.3, &raw, true);
        assert!(y.is_nan() && ld.is_nan());
    }

    #[test]
    fn identity_at_zero_params() {
        for bins in [1, 2, 3, 8, 32] {
            for spec in kinds(bins) {
                let raw = vec![0.0; spec.params_per_dim()];
                let xs: Vec<f64> = if spec.circular {
                    (0..101).map(|i| -PI + 2.0 * PI * i as f64 / 101.0).collect()
                } else {
                    (0..=120).map(|i| -4.5 + 9.0 * i as f64 / 120.0).collect()
                };
                for &x in &xs {
                    for inverse in [false, true] {
                        let (y, ld) = transform(&spec, x, &raw, inverse);
                        assert!((y - x).abs() <= 1e-12, "bins {bins} {spec:?} x {x} inverse {inverse}: y {y}");
                        assert!(ld.abs() <= 1e-12, "bins {bins} x {x} inverse {inverse}: logdet {ld}");
                        let mut g = vec![0.0; raw.len()];
                        let gx = transform_backward(&spec, x, &raw, inverse, 0.7, -0.3, &mut g);
                        assert!((gx - 0.7).abs() <= 1e-12, "gx {gx}");
                    }
                }
            }
        }
    }

    /// Round trips x -> forward -> inverse. Inverting a map of slope f' amplifies the rounding
    /// error of its output by 1 / f', so the tolerances scale with the condition `1 + 1 / f'(x)`.
    fn roundtrip<T: Float + Send + Sync + 'static>(tol_x: f64, tol_ld: f64) -> (f64, f64) {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let mut worst = (0.0f64, 0.0f64);
        for bins in [1, 2, 5, 8, 16, 32] {
            for spec64 in kinds(bins) {
                let spec = SplineSpec::<T> {
                    bins,
                    bound: cst(spec64.bound),
                    circular: spec64.circular,
                    min_width: cst(1e-3),
                    min_height: cst(1e-3),
                    min_derivative: cst(1e-3),
                };
                for _ in 0..500 {
                    let raw64 = random_raw(&mut rng, spec.params_per_dim());
                    let raw: Vec<T> = raw64.iter().map(|&r| cst(r)).collect();
                    let x: T = cst(random_x(&mut rng, &spec64));
                    let (y, ld) = transform(&spec, x, &raw, false);
                    let (xb, ldb) = transform(&spec, y, &raw, true);
                    let condition = 1.0 + (-to_f64(ld)).exp();
                    let err = out_diff(&spec64, to_f64(xb), to_f64(x)).abs() / condition;
                    let err_ld = (to_f64(ldb) + to_f64(ld)).abs() / condition;
                    worst = (worst.0.max(err), worst.1.max(err_ld));
                    let (x, y, xb) = (to_f64(x), to_f64(y), to_f64(xb));
                    assert!(err <= tol_x, "bins {bins} circular {}: x {x} -> {y} -> {xb}", spec.circular);
                    assert!(err_ld <= tol_ld, "logdet {} vs inverse {}", to_f64(ld), to_f64(ldb));
                }
            }
        }
        worst
    }

    #[test]
    fn inverse_roundtrip_f64() {
        let worst = roundtrip::<f64>(1e-12, 1e-9);
        assert!(worst.0 > 0.0 && worst.0 < 1e-12, "{worst:?}");
    }

    #[test]
    fn inverse_roundtrip_f32() {
        roundtrip::<f32>(1e-5, 1e-3);
    }

    /// Fourth-order central difference (stencil x +- h, x +- 2h) of `f` at `x`, and a bound on its
    /// rounding error.
    fn central_difference(mut f: impl FnMut(f64) -> f64, x: f64, h: f64) -> (f64, f64) {
        let (p1, m1, p2, m2) = (f(x + h), f(x - h), f(x + 2.0 * h), f(x - 2.0 * h));
        let d = (8.0 * (p1 - m1) - (p2 - m2)) / (12.0 * h);
        let scale = p1.abs().max(m1.abs()).max(p2.abs()).max(m2.abs()).max(1.0);
        (d, 16.0 * f64::EPSILON * scale / h)
    }

    #[test]
    fn logdet_matches_finite_difference() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for bins in [1, 3, 8] {
            for spec in kinds(bins) {
                for _ in 0..300 {
                    let raw = random_raw(&mut rng, spec.params_per_dim());
                    let x =
                        if spec.circular { rng.gen_range(-PI + 1e-3..PI - 1e-3) } else { random_x(&mut rng, &spec) };
                    for inverse in [false, true] {
                        let (y, ld) = transform(&spec, x, &raw, inverse);
                        let f = |v: f64| y + out_diff(&spec, transform(&spec, v, &raw, inverse).0, y);
                        let (fd, rounding) = central_difference(f, x, 1e-6);
                        let exact = ld.exp();
                        assert!(
                            (fd - exact).abs() <= 1e-6 * exact + rounding,
                            "bins {bins} {spec:?} inverse {inverse} x {x}: ln fd {} logdet {ld}",
                            fd.ln()
                        );
                    }
                }
            }
        }
    }

    /// Steps of the finite-difference checks: 1e-6 first; the larger ones only where rounding noise
    /// swamps the smallest. With raw ~ N(0, 2) some bins are ~1e-3 wide and slopes reach ~1e-6,
    /// so the objective's rounding noise at a point can be thousands of ulps, and a fixed step
    /// cannot check every point to 1e-6; a wrong gradient agrees at none of the steps.
    const STEPS: [f64; 4] = [1e-6, 1e-5, 1e-4, 1e-3];

    /// Whether `analytic` matches a fourth-order central difference of `f` at `x` (mixed
    /// tolerance 1e-6) at one of [`STEPS`]; returns the first matching step's index, or the
    /// differences found.
    fn matches_fd(mut f: impl FnMut(f64) -> f64, x: f64, analytic: f64) -> std::result::Result<usize, Vec<f64>> {
        let mut found = Vec::new();
        for (i, &h) in STEPS.iter().enumerate() {
            let (fd, _) = central_difference(&mut f, x, h);
            if (analytic - fd).abs() <= 1e-6 * (1.0 + fd.abs()) {
                return Ok(i);
            }
            found.push(fd);
        }
        Err(found)
    }

    /// Checks `transform_backward` against central differences at `x`; counts the checks that
    /// passed at each of [`STEPS`] in `passed`.
    #[allow(clippy::too_many_arguments)]
    fn check_backward(
        spec: &SplineSpec<f64>,
        x: f64,
        raw: &[f64],
        inverse: bool,
        go: f64,
        gl: f64,
        passed: &mut [usize; 4],
    ) {
        let reference = transform(spec, x, raw, inverse).0;
        let objective = |x: f64, raw: &[f64]| {
            let (o, l) = transform(spec, x, raw, inverse);
            go * (reference + out_diff(spec, o, reference)) + gl * l
        };
        let mut graw = vec![0.0; raw.len()];
        let gx = transform_backward(spec, x, raw, inverse, go, gl, &mut graw);
        match matches_fd(|v| objective(v, raw), x, gx) {
            Ok(i) => passed[i] += 1,
            Err(fd) => panic!("{spec:?} inverse {inverse} x {x}: d/dx analytic {gx} fd {fd:?}"),
        }
        let mut r = raw.to_vec();
        for j in 0..raw.len() {
            let result = matches_fd(
                |v| {
                    r[j] = v;
                    objective(x, &r)
                },
                raw[j],
                graw[j],
            );
            r[j] = raw[j];
            match result {
                Ok(i) => passed[i] += 1,
                Err(fd) => panic!("{spec:?} inverse {inverse} x {x}: d/draw[{j}] analytic {} fd {fd:?}", graw[j]),
            }
        }
        // The per-element backward adds into graw.
        let mut twice = graw.clone();
        transform_backward(spec, x, raw, inverse, go, gl, &mut twice);
        for (a, b) in twice.iter().zip(&graw) {
            assert!((a - 2.0 * b).abs() <= 1e-12 * (1.0 + b.abs()));
        }
    }

    #[test]
    fn backward_matches_finite_difference() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut tails = 0;
        let mut passed = [0; 4];
        for bins in [1, 2, 5, 8] {
            for spec in kinds(bins) {
                for _ in 0..12 {
                    let raw = random_raw(&mut rng, spec.params_per_dim());
                    let n = spec.bins;
                    let xk = knots(&spec, &raw[..n], spec.min_width);
                    let yk = knots(&spec, &raw[n..2 * n], spec.min_height);
                    for inverse in [false, true] {
                        let go = rng.gen_range(-2.0..2.0);
                        let gl = rng.gen_range(-2.0..2.0);
                        let edges = if inverse { &yk } else { &xk };
                        let mut points: Vec<f64> = (0..6)
                            .map(|_| {
                                if spec.circular {
                                    rng.gen_range(-PI + 1e-3..PI - 1e-3)
                                } else {
                                    random_x(&mut rng, &spec)
                                }
                            })
                            .collect();
                        // Near the interior knots, on both sides, but further away than the step.
                        for &e in &edges[1..n] {
                            points.push(e - 1e-4);
                            points.push(e + 1e-4);
                        }
                        if !spec.circular {
                            points.extend([
                                -1.1 * spec.bound,
                                1.05 * spec.bound,
                                -spec.bound + 2e-5,
                                spec.bound - 2e-5,
                            ]);
                        }
                        for &x in &points {
                            check_backward(&spec, x, &raw, inverse, go, gl, &mut passed);
                            if !spec.circular && x.abs() > spec.bound {
                                tails += 1;
                                let mut graw = vec![0.0; raw.len()];
                                let gx = transform_backward(&spec, x, &raw, inverse, go, gl, &mut graw);
                                assert_eq!(gx, go);
                                assert!(graw.iter().all(|&g| g == 0.0));
                                assert_eq!(transform(&spec, x, &raw, inverse), (x, 0.0));
                            }
                        }
                    }
                }
            }
        }
        assert!(tails > 50);
        // Nearly all checks pass at the smallest step.
        let total: usize = passed.iter().sum();
        assert!(passed[0] as f64 >= 0.97 * total as f64, "checks passed per step {STEPS:?}: {passed:?}");
    }

    #[test]
    fn circular_wraparound() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for bins in [1, 4, 8, 32] {
            let spec = SplineSpec::<f64>::circular(bins);
            for _ in 0..50 {
                let raw = random_raw(&mut rng, spec.params_per_dim());
                // Knot 0 maps to itself, and +pi is the same angle as -pi.
                let (y0, ld0) = transform(&spec, -PI, &raw, false);
                assert_eq!(y0, -PI);
                assert_eq!(transform(&spec, PI, &raw, false), (y0, ld0));
                assert_eq!(transform(&spec, -PI, &raw, true).0, -PI);
                // Continuity across the wrap: just below +pi the output is just below +pi.
                let below_pi = f64::from_bits(PI.to_bits() - 1);
                let (y1, ld1) = transform(&spec, below_pi, &raw, false);
                assert!(out_diff(&spec, y1, PI).abs() < 1e-8, "y(pi-) = {y1}");
                // Derivative at -pi from the right equals that at +pi from the left (d_K = d_0) ...
                assert!((ld1 - ld0).abs() < 1e-8, "logdet at -pi {ld0}, at pi- {ld1}");
                // ... and is d_0.
                let d0 = 1e-3 + softplus(raw[2 * bins] + (1.0f64 - 1e-3).exp_m1().ln());
                assert!((ld0 - d0.ln()).abs() < 1e-12);
                // Periodicity in the input, and outputs inside [-pi, pi).
                let x = rng.gen_range(-PI..PI);
                let (y, ld) = transform(&spec, x, &raw, false);
                assert!((-PI..PI).contains(&y));
                // (Shifting by whole periods rounds the input; the tolerances scale with the slope.)
                let slope = ld.exp();
                for shift in [-4.0, -1.0, 1.0, 3.0] {
                    let (ys, lds) = transform(&spec, x + shift * 2.0 * PI, &raw, false);
                    assert!(out_diff(&spec, ys, y).abs() < 1e-12 * (1.0 + slope) && (lds - ld).abs() < 1e-9);
                    let (xs, _) = transform(&spec, y + shift * 2.0 * PI, &raw, true);
                    assert!(out_diff(&spec, xs, x).abs() < 1e-12 * (1.0 + 1.0 / slope), "x {x} y {y} back {xs}");
                }
            }
        }
    }

    #[test]
    fn monotone_on_fine_grid() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        for bins in [2, 8, 32] {
            for spec in kinds(bins) {
                for _ in 0..5 {
                    let raw = random_raw(&mut rng, spec.params_per_dim());
                    let (lo, hi) = if spec.circular { (-PI, PI) } else { (-1.5 * spec.bound, 1.5 * spec.bound) };
                    for inverse in [false, true] {
                        let n = 20_000;
                        let mut prev = f64::NEG_INFINITY;
                        for i in 0..n {
                            let x = lo + (hi - lo) * i as f64 / n as f64;
                            let (y, ld) = transform(&spec, x, &raw, inverse);
                            assert!(y > prev, "{spec:?} inverse {inverse}: not increasing at x {x}: {prev} -> {y}");
                            assert!(ld.is_finite());
                            prev = y;
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn batch_matches_elementwise() {
        let mut rng = ChaCha8Rng::seed_from_u64(13);
        for spec in kinds(6) {
            let p = spec.params_per_dim();
            let n = 257;
            let x: Vec<f64> = (0..n).map(|_| random_x(&mut rng, &spec)).collect();
            let raw = random_raw(&mut rng, n * p);
            let g_out: Vec<f64> = (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let g_ld: Vec<f64> = (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect();
            for inverse in [false, true] {
                let (mut out, mut ld) = (vec![0.0; n], vec![0.0; n]);
                transform_batch(&spec, &x, &raw, inverse, &mut out, &mut ld);
                let mut gx = vec![0.0; n];
                let mut graw = vec![5.0; n * p]; // overwritten, not added to
                transform_backward_batch(&spec, &x, &raw, inverse, &g_out, &g_ld, &mut gx, &mut graw);
                for i in 0..n {
                    let r = &raw[i * p..(i + 1) * p];
                    assert_eq!(transform(&spec, x[i], r, inverse), (out[i], ld[i]));
                    let mut g = vec![0.0; p];
                    assert_eq!(transform_backward(&spec, x[i], r, inverse, g_out[i], g_ld[i], &mut g), gx[i]);
                    assert_eq!(&g[..], &graw[i * p..(i + 1) * p]);
                }
            }
        }
    }

    /// Throughput of the batch kernels (f64, 8 bins, 1e6 elements):
    /// `cargo test --release --lib flow::spline::tests::throughput -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn throughput() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let n = 1_000_000;
        for spec in kinds(8) {
            let p = spec.params_per_dim();
            let x: Vec<f64> = (0..n).map(|_| random_x(&mut rng, &spec)).collect();
            let raw = random_raw(&mut rng, n * p);
            let ones = vec![1.0; n];
            let (mut out, mut ld, mut gx, mut graw) = (vec![0.0; n], vec![0.0; n], vec![0.0; n], vec![0.0; n * p]);
            for inverse in [false, true] {
                let mut best = (f64::INFINITY, f64::INFINITY);
                for _ in 0..3 {
                    let t = std::time::Instant::now();
                    transform_batch(&spec, &x, &raw, inverse, &mut out, &mut ld);
                    best.0 = best.0.min(t.elapsed().as_secs_f64());
                    let t = std::time::Instant::now();
                    transform_backward_batch(&spec, &x, &raw, inverse, &ones, &ones, &mut gx, &mut graw);
                    best.1 = best.1.min(t.elapsed().as_secs_f64());
                }
                println!(
                    "circular {} inverse {inverse}: transform_batch {:.1} ns/element, transform_backward_batch {:.1} ns/element",
                    spec.circular,
                    best.0 * 1e9 / n as f64,
                    best.1 * 1e9 / n as f64
                );
                assert!(out.iter().chain(&ld).chain(&gx).chain(&graw).all(|v| v.is_finite()));
            }
        }
    }
}
