//! Histograms over collective coordinates (1D and 2D, periodic or not), conversions between free
//! energies and bin probabilities, and periodic Gaussian smoothing of 2D histograms.
//!
//! Conventions:
//! - A bin `i` of an [`Axis`] covers the half-open interval `[min + i w, min + (i + 1) w)` with
//!   `w = (max - min) / bins`; the right edge `max` itself is *outside* a non-periodic axis.
//! - A periodic axis first wraps any finite sample into `[min, max)`, so `max` lands in bin 0.
//! - 2D arrays are row-major: bin `(ix, iy)` is element `ix * ny + iy`.
//! - Adding a NaN or infinite sample, or a negative / non-finite weight, is an error and leaves the
//!   histogram unchanged; a finite sample outside a non-periodic axis is not binned but its weight is
//!   counted in `outside()`.
//! - Free energies are in kT.

use std::f64::consts::PI;

use crate::error::{Error, Result};

/// One histogram axis: `bins` equal bins over `[min, max)`, optionally periodic with period
/// `max - min`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Axis {
    /// Lower edge (included).
    pub min: f64,
    /// Upper edge (excluded; on a periodic axis identified with `min`).
    pub max: f64,
    /// Number of bins.
    pub bins: usize,
    /// Whether samples are wrapped into `[min, max)` before binning.
    pub periodic: bool,
}

impl Axis {
    /// A non-periodic axis. Errors unless `min < max`, both finite, and `bins > 0`.
    ///
    /// ```
    /// use cgflow::metrics::Axis;
    /// let a = Axis::new(-2.5, 1.1, 100).unwrap();
    /// assert!((a.width() - 0.036).abs() < 1e-12);
    /// assert!(Axis::new(1.0, 1.0, 10).is_err());
    /// assert!(Axis::new(0.0, 1.0, 0).is_err());
    /// ```
    pub fn new(min: f64, max: f64, bins: usize) -> Result<Axis> {
        let axis = Axis { min, max, bins, periodic: false };
        axis.validate()?;
        Ok(axis)
    }

    /// A periodic axis of period `max - min`. Same checks as [`Axis::new`].
    ///
    /// ```
    /// use cgflow::metrics::Axis;
    /// let a = Axis::periodic(0.0, 1.0, 4).unwrap();
    /// assert_eq!(a.bin_of(1.3), Some(1));
    /// assert_eq!(a.bin_of(-0.1), Some(3));
    /// ```
    pub fn periodic(min: f64, max: f64, bins: usize) -> Result<Axis> {
        let axis = Axis { min, max, bins, periodic: true };
        axis.validate()?;
        Ok(axis)
    }

    /// A dihedral-angle axis: periodic over `[-pi, pi)` radians with `bins` bins.
    ///
    /// ```
    /// use cgflow::metrics::Axis;
    /// let a = Axis::dihedral(100).unwrap();
    /// assert_eq!(a.bin_of(std::f64::consts::PI), Some(0));
    /// assert_eq!(a.bin_of(-std::f64::consts::PI), Some(0));
    /// assert_eq!(a.bin_of(3.14), Some(99));
    /// ```
    pub fn dihedral(bins: usize) -> Result<Axis> {
        Axis::periodic(-PI, PI, bins)
    }

    /// Checks the invariants the constructors enforce (for axes built from the public fields):
    /// finite `min < max` and `bins > 0`.
    ///
    /// ```
    /// use cgflow::metrics::Axis;
    /// let bad = Axis { min: 0.0, max: f64::INFINITY, bins: 3, periodic: false };
    /// assert!(bad.validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<()> {
        if !self.min.is_finite() || !self.max.is_finite() {
            return Err(Error::invalid(format!("axis: edges must be finite, got [{}, {})", self.min, self.max)));
        }
        if self.min >= self.max {
            return Err(Error::invalid(format!("axis: need min < max, got [{}, {})", self.min, self.max)));
        }
        if self.bins == 0 {
            return Err(Error::invalid("axis: needs at least one bin"));
        }
        if !self.width().is_finite() || self.width() <= 0.0 {
            return Err(Error::invalid(format!(
                "axis: bin width of [{}, {}) / {} is not usable",
                self.min, self.max, self.bins
            )));
        }
        Ok(())
    }

    /// Bin width `(max - min) / bins`.
    ///
    /// ```
    /// use cgflow::metrics::Axis;
    /// assert_eq!(Axis::new(0.0, 1.0, 4).unwrap().width(), 0.25);
    /// ```
    pub fn width(&self) -> f64 {
        (self.max - self.min) / self.bins as f64
    }

    /// Centre of bin `i`, `min + (i + 1/2) width` (no range check: larger `i` extrapolates).
    ///
    /// ```
    /// use cgflow::metrics::Axis;
    /// let a = Axis::new(0.0, 1.0, 4).unwrap();
    /// assert_eq!(a.centre(0), 0.125);
    /// assert_eq!(a.centre(3), 0.875);
    /// ```
    pub fn centre(&self, i: usize) -> f64 {
        self.min + (i as f64 + 0.5) * self.width()
    }

    /// The centres of all bins, in order.
    ///
    /// ```
    /// use cgflow::metrics::Axis;
    /// assert_eq!(Axis::new(0.0, 1.0, 2).unwrap().centres(), vec![0.25, 0.75]);
    /// ```
    pub fn centres(&self) -> Vec<f64> {
        (0..self.bins).map(|i| self.centre(i)).collect()
    }

    /// Wraps `x` into `[min, max)` on a periodic axis; returns `x` unchanged on a non-periodic one
    /// and for non-finite `x`.
    ///
    /// ```
    /// use cgflow::metrics::Axis;
    /// let a = Axis::periodic(0.0, 2.0, 4).unwrap();
    /// assert_eq!(a.wrap(5.5), 1.5);
    /// assert_eq!(a.wrap(-0.5), 1.5);
    /// assert_eq!(a.wrap(2.0), 0.0);
    /// ```
    pub fn wrap(&self, x: f64) -> f64 {
        if !self.periodic || !x.is_finite() {
            return x;
        }
        let period = self.max - self.min;
        let mut t = (x - self.min).rem_euclid(period);
        // rem_euclid may round a tiny negative remainder up to the period itself.
        if t >= period {
            t = 0.0;
        }
        let wrapped = self.min + t;
        if wrapped >= self.max {
            self.min
        } else {
            wrapped
        }
    }

    /// The bin holding `x`: periodic axes wrap any finite `x` first; non-periodic axes give `None`
    /// outside `[min, max)` (so `max` itself is outside). `None` for NaN and infinite `x`, and on an
    /// axis that fails [`Axis::validate`].
    ///
    /// ```
    /// use cgflow::metrics::Axis;
    /// let a = Axis::new(0.0, 1.0, 4).unwrap();
    /// assert_eq!(a.bin_of(0.0), Some(0));
    /// assert_eq!(a.bin_of(0.25), Some(1));
    /// assert_eq!(a.bin_of(0.999), Some(3));
    /// assert_eq!(a.bin_of(1.0), None);
    /// assert_eq!(a.bin_of(-0.01), None);
    /// ```
    pub fn bin_of(&self, x: f64) -> Option<usize> {
        if !x.is_finite() || self.validate().is_err() {
            return None;
        }
        let x = self.wrap(x);
        if x < self.min || x >= self.max {
            return None;
        }
        let i = ((x - self.min) / (self.max - self.min) * self.bins as f64).floor();
        // Rounding can push a value just below max to index `bins`; it belongs in the last bin.
        Some((i.max(0.0) as usize).min(self.bins - 1))
    }
}

/// Checks a sample coordinate and its weight.
fn check_sample(value: f64, weight: f64, what: &str) -> Result<()> {
    if !value.is_finite() {
        return Err(Error::invalid(format!("histogram: {what} sample {value} is not finite")));
    }
    if !weight.is_finite() || weight < 0.0 {
        return Err(Error::invalid(format!("histogram: weight {weight} must be finite and non-negative")));
    }
    Ok(())
}

/// Checks stored counts: finite and non-negative.
fn check_counts(counts: &[f64], what: &str) -> Result<()> {
    if let Some((i, c)) = counts.iter().enumerate().find(|(_, c)| !c.is_finite() || **c < 0.0) {
        return Err(Error::invalid(format!("{what}: count {c} in bin {i} must be finite and non-negative")));
    }
    Ok(())
}

/// Normalises non-negative counts to probabilities; errors on an empty or zero total.
fn normalise(counts: &[f64], what: &str) -> Result<Vec<f64>> {
    let total: f64 = counts.iter().sum();
    if !(total.is_finite() && total > 0.0) {
        return Err(Error::invalid(format!("{what}: total weight {total} cannot be normalised")));
    }
    Ok(counts.iter().map(|c| c / total).collect())
}

/// A 1D histogram of (optionally weighted) samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram1d {
    axis: Axis,
    counts: Vec<f64>,
    outside: f64,
}

impl Histogram1d {
    /// An empty histogram over `axis` (validated).
    ///
    /// ```
    /// use cgflow::metrics::{Axis, Histogram1d};
    /// let mut h = Histogram1d::new(Axis::new(0.0, 1.0, 2).unwrap()).unwrap();
    /// h.extend(&[0.1, 0.2, 0.7, 1.5]).unwrap();
    /// assert_eq!(h.counts(), &[2.0, 1.0]);
    /// assert_eq!(h.outside(), 1.0);
    /// assert_eq!(h.probabilities().unwrap(), vec![2.0 / 3.0, 1.0 / 3.0]);
    /// ```
    pub fn new(axis: Axis) -> Result<Histogram1d> {
        axis.validate()?;
        Ok(Histogram1d { axis, counts: vec![0.0; axis.bins], outside: 0.0 })
    }

    /// A histogram with given bin counts (finite, non-negative, one per bin).
    ///
    /// ```
    /// use cgflow::metrics::{Axis, Histogram1d};
    /// let h = Histogram1d::from_counts(Axis::new(0.0, 1.0, 2).unwrap(), vec![1.0, 3.0]).unwrap();
    /// assert_eq!(h.total(), 4.0);
    /// ```
    pub fn from_counts(axis: Axis, counts: Vec<f64>) -> Result<Histogram1d> {
        axis.validate()?;
        if counts.len() != axis.bins {
            return Err(Error::invalid(format!("histogram: {} counts for {} bins", counts.len(), axis.bins)));
        }
        check_counts(&counts, "histogram")?;
        Ok(Histogram1d { axis, counts, outside: 0.0 })
    }

    /// The axis.
    pub fn axis(&self) -> &Axis {
        &self.axis
    }

    /// Adds one sample of weight 1. Errors (leaving the histogram unchanged) on a non-finite `x`.
    ///
    /// ```
    /// use cgflow::metrics::{Axis, Histogram1d};
    /// let mut h = Histogram1d::new(Axis::dihedral(4).unwrap()).unwrap();
    /// h.add(7.0).unwrap(); // wraps to 7 - 2 pi = 0.717 -> bin 2
    /// assert_eq!(h.counts(), &[0.0, 0.0, 1.0, 0.0]);
    /// assert!(h.add(f64::NAN).is_err());
    /// ```
    pub fn add(&mut self, x: f64) -> Result<()> {
        self.add_weighted(x, 1.0)
    }

    /// Adds one sample of weight `w` (finite, non-negative).
    ///
    /// ```
    /// use cgflow::metrics::{Axis, Histogram1d};
    /// let mut h = Histogram1d::new(Axis::new(0.0, 1.0, 2).unwrap()).unwrap();
    /// h.add_weighted(0.9, 2.5).unwrap();
    /// assert_eq!(h.counts(), &[0.0, 2.5]);
    /// assert!(h.add_weighted(0.9, -1.0).is_err());
    /// ```
    pub fn add_weighted(&mut self, x: f64, w: f64) -> Result<()> {
        check_sample(x, w, "x")?;
        match self.axis.bin_of(x) {
            Some(i) => self.counts[i] += w,
            None => self.outside += w,
        }
        Ok(())
    }

    /// Adds every sample with weight 1; on an error nothing is added.
    ///
    /// ```
    /// use cgflow::metrics::{Axis, Histogram1d};
    /// let mut h = Histogram1d::new(Axis::new(0.0, 1.0, 2).unwrap()).unwrap();
    /// assert!(h.extend(&[0.1, f64::NAN]).is_err());
    /// assert_eq!(h.total(), 0.0);
    /// ```
    pub fn extend(&mut self, xs: &[f64]) -> Result<()> {
        for &x in xs {
            check_sample(x, 1.0, "x")?;
        }
        for &x in xs {
            self.add_weighted(x, 1.0)?;
        }
        Ok(())
    }

    /// Adds every sample `xs[i]` with weight `ws[i]`; on an error nothing is added.
    ///
    /// ```
    /// use cgflow::metrics::{Axis, Histogram1d};
    /// let mut h = Histogram1d::new(Axis::new(0.0, 1.0, 2).unwrap()).unwrap();
    /// h.extend_weighted(&[0.1, 0.6], &[0.5, 1.5]).unwrap();
    /// assert_eq!(h.counts(), &[0.5, 1.5]);
    /// assert!(h.extend_weighted(&[0.1], &[]).is_err());
    /// ```
    pub fn extend_weighted(&mut self, xs: &[f64], ws: &[f64]) -> Result<()> {
        if xs.len() != ws.len() {
            return Err(Error::invalid(format!("histogram: {} samples but {} weights", xs.len(), ws.len())));
        }
        for (&x, &w) in xs.iter().zip(ws) {
            check_sample(x, w, "x")?;
        }
        for (&x, &w) in xs.iter().zip(ws) {
            self.add_weighted(x, w)?;
        }
        Ok(())
    }

    /// Weight in the bins (excludes [`Histogram1d::outside`]).
    pub fn total(&self) -> f64 {
        self.counts.iter().sum()
    }

    /// Weight of samples that fell outside a non-periodic axis (never binned).
    pub fn outside(&self) -> f64 {
        self.outside
    }

    /// Bin counts (weights), one per bin.
    pub fn counts(&self) -> &[f64] {
        &self.counts
    }

    /// Bin counts normalised to sum to 1 (outside samples excluded). Errors when no weight is binned.
    ///
    /// ```
    /// use cgflow::metrics::{Axis, Histogram1d};
    /// let h = Histogram1d::new(Axis::new(0.0, 1.0, 2).unwrap()).unwrap();
    /// assert!(h.probabilities().is_err());
    /// ```
    pub fn probabilities(&self) -> Result<Vec<f64>> {
        normalise(&self.counts, "histogram")
    }

    /// Adds another histogram's counts (and outside weight). Errors unless the axes are identical.
    ///
    /// ```
    /// use cgflow::metrics::{Axis, Histogram1d};
    /// let a = Axis::new(0.0, 1.0, 2).unwrap();
    /// let mut h = Histogram1d::from_counts(a, vec![1.0, 0.0]).unwrap();
    /// h.merge(&Histogram1d::from_counts(a, vec![2.0, 3.0]).unwrap()).unwrap();
    /// assert_eq!(h.counts(), &[3.0, 3.0]);
    /// let other = Histogram1d::new(Axis::new(0.0, 1.0, 3).unwrap()).unwrap();
    /// assert!(h.merge(&other).is_err());
    /// ```
    pub fn merge(&mut self, other: &Histogram1d) -> Result<()> {
        if self.axis != other.axis {
            return Err(Error::invalid(format!("histogram merge: axes differ ({:?} vs {:?})", self.axis, other.axis)));
        }
        for (c, o) in self.counts.iter_mut().zip(&other.counts) {
            *c += o;
        }
        self.outside += other.outside;
        Ok(())
    }
}

/// A 2D histogram of (optionally weighted) samples, counts stored row-major (`ix * ny + iy`).
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram2d {
    x: Axis,
    y: Axis,
    counts: Vec<f64>,
    outside: f64,
}

impl Histogram2d {
    /// An empty histogram over axes `x` and `y` (validated).
    ///
    /// ```
    /// use cgflow::metrics::{Axis, Histogram2d};
    /// let mut h = Histogram2d::new(Axis::dihedral(2).unwrap(), Axis::dihedral(3).unwrap()).unwrap();
    /// h.add(0.5, -3.0).unwrap(); // x bin 1, y bin 0
    /// assert_eq!(h.counts()[1 * 3 + 0], 1.0);
    /// ```
    pub fn new(x: Axis, y: Axis) -> Result<Histogram2d> {
        x.validate()?;
        y.validate()?;
        let n = x.bins.checked_mul(y.bins).ok_or_else(|| Error::invalid("histogram: too many bins"))?;
        Ok(Histogram2d { x, y, counts: vec![0.0; n], outside: 0.0 })
    }

    /// A 100 x 100 (or `bins` x `bins`) periodic histogram over dihedral angles `[-pi, pi)^2`.
    ///
    /// ```
    /// use cgflow::metrics::Histogram2d;
    /// assert_eq!(Histogram2d::dihedral(100).unwrap().counts().len(), 10_000);
    /// ```
    pub fn dihedral(bins: usize) -> Result<Histogram2d> {
        Histogram2d::new(Axis::dihedral(bins)?, Axis::dihedral(bins)?)
    }

    /// A histogram with given row-major counts (finite, non-negative, `nx * ny` of them).
    ///
    /// ```
    /// use cgflow::metrics::{Axis, Histogram2d};
    /// let a = Axis::new(0.0, 1.0, 2).unwrap();
    /// assert!(Histogram2d::from_counts(a, a, vec![1.0; 4]).is_ok());
    /// assert!(Histogram2d::from_counts(a, a, vec![1.0; 3]).is_err());
    /// ```
    pub fn from_counts(x: Axis, y: Axis, counts: Vec<f64>) -> Result<Histogram2d> {
        let mut h = Histogram2d::new(x, y)?;
        if counts.len() != h.counts.len() {
            return Err(Error::invalid(format!("histogram: {} counts for {} bins", counts.len(), h.counts.len())));
        }
        check_counts(&counts, "histogram")?;
        h.counts = counts;
        Ok(h)
    }

    /// The x axis (rows).
    pub fn x_axis(&self) -> &Axis {
        &self.x
    }

    /// The y axis (columns).
    pub fn y_axis(&self) -> &Axis {
        &self.y
    }

    /// Flat index of the bin holding `(x, y)`, `None` if either coordinate is outside its axis.
    ///
    /// ```
    /// use cgflow::metrics::{Axis, Histogram2d};
    /// let a = Axis::new(0.0, 1.0, 2).unwrap();
    /// let h = Histogram2d::new(a, a).unwrap();
    /// assert_eq!(h.bin_of(0.7, 0.2), Some(2));
    /// assert_eq!(h.bin_of(0.7, 1.2), None);
    /// ```
    pub fn bin_of(&self, x: f64, y: f64) -> Option<usize> {
        Some(self.x.bin_of(x)? * self.y.bins + self.y.bin_of(y)?)
    }

    /// Adds one sample of weight 1. Errors on a non-finite coordinate.
    ///
    /// ```
    /// use cgflow::metrics::Histogram2d;
    /// let mut h = Histogram2d::dihedral(10).unwrap();
    /// assert!(h.add(0.0, f64::NAN).is_err());
    /// ```
    pub fn add(&mut self, x: f64, y: f64) -> Result<()> {
        self.add_weighted(x, y, 1.0)
    }

    /// Adds one sample of weight `w` (finite, non-negative).
    ///
    /// ```
    /// use cgflow::metrics::{Axis, Histogram2d};
    /// let a = Axis::new(0.0, 1.0, 2).unwrap();
    /// let mut h = Histogram2d::new(a, a).unwrap();
    /// h.add_weighted(0.2, 0.8, 3.0).unwrap();
    /// h.add_weighted(2.0, 0.8, 1.0).unwrap();
    /// assert_eq!(h.counts(), &[0.0, 3.0, 0.0, 0.0]);
    /// assert_eq!(h.outside(), 1.0);
    /// ```
    pub fn add_weighted(&mut self, x: f64, y: f64, w: f64) -> Result<()> {
        check_sample(x, w, "x")?;
        check_sample(y, w, "y")?;
        match self.bin_of(x, y) {
            Some(i) => self.counts[i] += w,
            None => self.outside += w,
        }
        Ok(())
    }

    /// Adds samples `(xs[i], ys[i])` with weight 1; on an error nothing is added.
    ///
    /// ```
    /// use cgflow::metrics::Histogram2d;
    /// let mut h = Histogram2d::dihedral(10).unwrap();
    /// h.extend(&[0.0, 1.0], &[0.0, 1.0]).unwrap();
    /// assert_eq!(h.total(), 2.0);
    /// assert!(h.extend(&[0.0], &[]).is_err());
    /// ```
    pub fn extend(&mut self, xs: &[f64], ys: &[f64]) -> Result<()> {
        let ws = vec![1.0; xs.len()];
        self.extend_weighted(xs, ys, &ws)
    }

    /// Adds samples `(xs[i], ys[i])` with weights `ws[i]`; on an error nothing is added.
    ///
    /// ```
    /// use cgflow::metrics::Histogram2d;
    /// let mut h = Histogram2d::dihedral(10).unwrap();
    /// h.extend_weighted(&[0.0, 1.0], &[0.0, 1.0], &[0.25, 0.5]).unwrap();
    /// assert_eq!(h.total(), 0.75);
    /// ```
    pub fn extend_weighted(&mut self, xs: &[f64], ys: &[f64], ws: &[f64]) -> Result<()> {
        if xs.len() != ys.len() || xs.len() != ws.len() {
            return Err(Error::invalid(format!(
                "histogram: {} x values, {} y values and {} weights differ in length",
                xs.len(),
                ys.len(),
                ws.len()
            )));
        }
        for i in 0..xs.len() {
            check_sample(xs[i], ws[i], "x")?;
            check_sample(ys[i], ws[i], "y")?;
        }
        for i in 0..xs.len() {
            self.add_weighted(xs[i], ys[i], ws[i])?;
        }
        Ok(())
    }

    /// Weight in the bins (excludes [`Histogram2d::outside`]).
    pub fn total(&self) -> f64 {
        self.counts.iter().sum()
    }

    /// Weight of samples outside a non-periodic axis (never binned).
    pub fn outside(&self) -> f64 {
        self.outside
    }

    /// Row-major bin counts.
    pub fn counts(&self) -> &[f64] {
        &self.counts
    }

    /// Row-major counts normalised to sum to 1. Errors when no weight is binned.
    ///
    /// ```
    /// use cgflow::metrics::Histogram2d;
    /// let mut h = Histogram2d::dihedral(2).unwrap();
    /// h.extend(&[-1.0, 1.0, 1.0, 1.0], &[-1.0, -1.0, 1.0, 1.0]).unwrap();
    /// assert_eq!(h.probabilities().unwrap(), vec![0.25, 0.0, 0.25, 0.5]);
    /// ```
    pub fn probabilities(&self) -> Result<Vec<f64>> {
        normalise(&self.counts, "histogram")
    }

    /// Adds another histogram's counts (and outside weight). Errors unless both axes are identical.
    ///
    /// ```
    /// use cgflow::metrics::Histogram2d;
    /// let mut h = Histogram2d::dihedral(4).unwrap();
    /// h.add(0.0, 0.0).unwrap();
    /// h.merge(&h.clone()).unwrap();
    /// assert_eq!(h.total(), 2.0);
    /// assert!(h.merge(&Histogram2d::dihedral(5).unwrap()).is_err());
    /// ```
    pub fn merge(&mut self, other: &Histogram2d) -> Result<()> {
        if self.x != other.x || self.y != other.y {
            return Err(Error::invalid("histogram merge: axes differ"));
        }
        for (c, o) in self.counts.iter_mut().zip(&other.counts) {
            *c += o;
        }
        self.outside += other.outside;
        Ok(())
    }
}

/// Bin probabilities from free energies in kT: `p_i = exp(-F_i) / sum_j exp(-F_j)`, computed
/// stably (the minimum is subtracted first). `+inf` entries get probability 0. Errors on an empty
/// slice, NaN or `-inf` entries, and when every entry is `+inf`.
///
/// ```
/// use cgflow::metrics::probabilities_from_free_energy;
/// let p = probabilities_from_free_energy(&[1000.0, 1000.0 + 2f64.ln(), f64::INFINITY]).unwrap();
/// assert!((p[0] - 2.0 / 3.0).abs() < 1e-12 && (p[1] - 1.0 / 3.0).abs() < 1e-12 && p[2] == 0.0);
/// assert!(probabilities_from_free_energy(&[0.0, f64::NAN]).is_err());
/// ```
pub fn probabilities_from_free_energy(free_energy_kt: &[f64]) -> Result<Vec<f64>> {
    if free_energy_kt.is_empty() {
        return Err(Error::invalid("free energy: no bins"));
    }
    if let Some((i, f)) = free_energy_kt.iter().enumerate().find(|(_, f)| f.is_nan() || **f == f64::NEG_INFINITY) {
        return Err(Error::invalid(format!("free energy: bin {i} is {f}")));
    }
    let min = free_energy_kt.iter().copied().fold(f64::INFINITY, f64::min);
    if min == f64::INFINITY {
        return Err(Error::invalid("free energy: every bin is +inf"));
    }
    let weights: Vec<f64> = free_energy_kt.iter().map(|f| (-(f - min)).exp()).collect();
    let total: f64 = weights.iter().sum();
    Ok(weights.into_iter().map(|w| w / total).collect())
}

/// Free energies in kT from bin probabilities: `F_i = -ln p_i`, shifted so the smallest is 0, `+inf`
/// where `p_i = 0`. Probabilities need not be normalised. Entries should be non-negative and finite:
/// a negative or NaN entry gives NaN in that bin; if no entry is positive every bin is `+inf`.
///
/// ```
/// use cgflow::metrics::free_energy_from_probabilities;
/// let f = free_energy_from_probabilities(&[0.5, 0.25, 0.0]);
/// assert_eq!(f[0], 0.0);
/// assert!((f[1] - 2f64.ln()).abs() < 1e-15);
/// assert_eq!(f[2], f64::INFINITY);
/// ```
pub fn free_energy_from_probabilities(p: &[f64]) -> Vec<f64> {
    let raw: Vec<f64> = p.iter().map(|&pi| if pi == 0.0 { f64::INFINITY } else { -pi.ln() }).collect();
    let min = raw.iter().copied().filter(|f| !f.is_nan()).fold(f64::INFINITY, f64::min);
    if !min.is_finite() {
        return raw;
    }
    raw.into_iter().map(|f| f - min).collect()
}

/// Normalised periodic Gaussian kernel for `n` bins: weight by circular distance `d`
/// (`min(|i - j|, n - |i - j|)`), `exp(-d^2 / (2 sigma^2))` for `d <= 4 sigma`, zero beyond; each
/// bin of the circle appears once, so the kernel never wraps onto itself.
fn periodic_kernel(n: usize, sigma: f64) -> Vec<f64> {
    let cutoff = 4.0 * sigma;
    let mut k: Vec<f64> = (0..n)
        .map(|d| {
            let dist = d.min(n - d) as f64;
            if dist <= cutoff {
                (-0.5 * (dist / sigma).powi(2)).exp()
            } else {
                0.0
            }
        })
        .collect();
    let total: f64 = k.iter().sum();
    for v in &mut k {
        *v /= total;
    }
    k
}

/// Smooths a periodic 2D histogram (row-major, `nx` x `ny`) with a Gaussian kernel of width
/// `sigma_bins` bins in both directions, wrapping around both edges.
///
/// The kernel is separable (x then y) and truncated at 4 sigma or half the period, whichever is
/// smaller (every bin of the circle is counted once). It is normalised to sum to 1, so the total is
/// preserved. `sigma_bins = 0` returns the input unchanged. Errors on a length other than `nx * ny`,
/// zero `nx`/`ny`, a negative or non-finite sigma, or negative / non-finite counts. Cost
/// `O(nx ny (nx + ny))` at most.
///
/// ```
/// use cgflow::metrics::smooth_periodic_2d;
/// let mut c = vec![0.0; 25];
/// c[0] = 1.0; // corner spike spreads across the wrap-around
/// let s = smooth_periodic_2d(&c, 5, 5, 1.0).unwrap();
/// assert!((s.iter().sum::<f64>() - 1.0).abs() < 1e-14);
/// assert!((s[1] - s[4]).abs() < 1e-15 && (s[5] - s[20]).abs() < 1e-15);
/// ```
pub fn smooth_periodic_2d(counts: &[f64], nx: usize, ny: usize, sigma_bins: f64) -> Result<Vec<f64>> {
    if nx == 0 || ny == 0 {
        return Err(Error::invalid("smoothing: the grid needs at least one bin in each direction"));
    }
    if nx.checked_mul(ny) != Some(counts.len()) {
        return Err(Error::invalid(format!("smoothing: {} counts for a {nx} x {ny} grid", counts.len())));
    }
    if !sigma_bins.is_finite() || sigma_bins < 0.0 {
        return Err(Error::invalid(format!("smoothing: sigma {sigma_bins} bins must be finite and non-negative")));
    }
    check_counts(counts, "smoothing")?;
    if sigma_bins == 0.0 {
        return Ok(counts.to_vec());
    }
    let kx = periodic_kernel(nx, sigma_bins);
    let ky = periodic_kernel(ny, sigma_bins);
    // Non-zero kernel offsets only (the kernel is symmetric: kx[d] == kx[n - d]).
    let sx: Vec<(usize, f64)> = kx.iter().copied().enumerate().filter(|(_, w)| *w > 0.0).collect();
    let sy: Vec<(usize, f64)> = ky.iter().copied().enumerate().filter(|(_, w)| *w > 0.0).collect();

    // Along x: out[ix, iy] = sum_d kx[d] in[(ix + d) mod nx, iy].
    let mut along_x = vec![0.0; counts.len()];
    for ix in 0..nx {
        let row = &mut along_x[ix * ny..(ix + 1) * ny];
        for &(d, w) in &sx {
            let src = (ix + d) % nx;
            for (o, c) in row.iter_mut().zip(&counts[src * ny..(src + 1) * ny]) {
                *o += w * c;
            }
        }
    }
    // Along y.
    let mut out = vec![0.0; counts.len()];
    for ix in 0..nx {
        let src = &along_x[ix * ny..(ix + 1) * ny];
        let dst = &mut out[ix * ny..(ix + 1) * ny];
        for (iy, o) in dst.iter_mut().enumerate() {
            *o = sy.iter().map(|&(d, w)| w * src[(iy + d) % ny]).sum();
        }
    }
    Ok(out)
}

/// Smooths a 1D histogram with a Gaussian kernel of width `sigma_bins` bins.
///
/// On a periodic line the kernel wraps around (as [`smooth_periodic_2d`] does in each direction).
/// On an interval each bin spreads its count over the bins within 4 sigma that lie inside the
/// interval, with weights `exp(-d^2 / (2 sigma^2))` renormalised over those bins, so nothing leaks
/// past the ends and the total is preserved in both cases. `sigma_bins = 0` returns the input.
/// Errors on an empty slice, a negative or non-finite sigma, or negative / non-finite counts.
///
/// ```
/// use cgflow::metrics::histogram::smooth_1d;
/// // A spike in the first bin of an interval: weights 1 and exp(-1/2) (bins 2, 3 lie beyond
/// // 4 sigma = 1), normalised: nothing leaks past the left end.
/// let s = smooth_1d(&[1.0, 0.0, 0.0, 0.0], false, 0.25).unwrap();
/// let w = (-8.0f64).exp();
/// assert!((s[0] - 1.0 / (1.0 + w)).abs() < 1e-15 && (s[1] - w / (1.0 + w)).abs() < 1e-15);
/// assert_eq!(s[3], 0.0);
/// // Periodic: the spike spreads to both neighbours, the last bin included.
/// let s = smooth_1d(&[1.0, 0.0, 0.0, 0.0], true, 0.5).unwrap();
/// assert!((s[1] - s[3]).abs() < 1e-15 && s[3] > 0.0);
/// ```
pub fn smooth_1d(counts: &[f64], periodic: bool, sigma_bins: f64) -> Result<Vec<f64>> {
    if counts.is_empty() {
        return Err(Error::invalid("smoothing: no bins"));
    }
    if periodic {
        return smooth_periodic_2d(counts, 1, counts.len(), sigma_bins);
    }
    if !sigma_bins.is_finite() || sigma_bins < 0.0 {
        return Err(Error::invalid(format!("smoothing: sigma {sigma_bins} bins must be finite and non-negative")));
    }
    check_counts(counts, "smoothing")?;
    if sigma_bins == 0.0 {
        return Ok(counts.to_vec());
    }
    let n = counts.len();
    let reach = ((4.0 * sigma_bins).floor() as usize).min(n - 1);
    let weight = |d: usize| (-0.5 * (d as f64 / sigma_bins).powi(2)).exp();
    let mut out = vec![0.0; n];
    for (i, &c) in counts.iter().enumerate() {
        if c == 0.0 {
            continue;
        }
        let (lo, hi) = (i.saturating_sub(reach), (i + reach).min(n - 1));
        let total: f64 = (lo..=hi).map(|j| weight(i.abs_diff(j))).sum();
        for (j, o) in out.iter_mut().enumerate().take(hi + 1).skip(lo) {
            *o += c * weight(i.abs_diff(j)) / total;
        }
    }
    Ok(out)
}

/// The shape of a set of histogram bins, as far as smoothing needs it: a line of bins (periodic
/// or not) or a periodic 2D grid stored row-major.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinGrid {
    /// `bins` bins along one coordinate.
    Line {
        /// Number of bins.
        bins: usize,
        /// Whether the last bin neighbours the first.
        periodic: bool,
    },
    /// `nx` x `ny` bins periodic in both directions (e.g. (phi, psi)), row-major.
    Periodic2d {
        /// Bins along the first coordinate (rows).
        nx: usize,
        /// Bins along the second coordinate (columns).
        ny: usize,
    },
}

impl BinGrid {
    /// The `bins` x `bins` grid over `[-pi, pi)^2` of the (phi, psi) PMF.
    ///
    /// ```
    /// use cgflow::metrics::BinGrid;
    /// assert_eq!(BinGrid::dihedral(100).size(), 10_000);
    /// ```
    pub fn dihedral(bins: usize) -> BinGrid {
        BinGrid::Periodic2d { nx: bins, ny: bins }
    }

    /// The number of bins.
    ///
    /// ```
    /// use cgflow::metrics::BinGrid;
    /// assert_eq!(BinGrid::Line { bins: 100, periodic: false }.size(), 100);
    /// ```
    pub fn size(&self) -> usize {
        match *self {
            BinGrid::Line { bins, .. } => bins,
            BinGrid::Periodic2d { nx, ny } => nx.saturating_mul(ny),
        }
    }

    /// Gaussian smoothing over this grid with `sigma_bins` bins in every direction
    /// ([`smooth_1d`] or [`smooth_periodic_2d`]); the total is preserved. Errors when `values` does
    /// not have [`BinGrid::size`] entries and as those functions do.
    ///
    /// ```
    /// use cgflow::metrics::BinGrid;
    /// let s = BinGrid::dihedral(4).smooth(&[1.0; 16], 1.0).unwrap();
    /// assert!(s.iter().all(|v| (v - 1.0).abs() < 1e-14));
    /// assert!(BinGrid::dihedral(4).smooth(&[1.0; 15], 1.0).is_err());
    /// ```
    pub fn smooth(&self, values: &[f64], sigma_bins: f64) -> Result<Vec<f64>> {
        if values.len() != self.size() || values.is_empty() {
            return Err(Error::invalid(format!(
                "smoothing: {} values for a grid of {} bins",
                values.len(),
                self.size()
            )));
        }
        match *self {
            BinGrid::Line { periodic, .. } => smooth_1d(values, periodic, sigma_bins),
            BinGrid::Periodic2d { nx, ny } => smooth_periodic_2d(values, nx, ny, sigma_bins),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn axis_bins_edges_and_centres() {
        let a = Axis::new(-2.5, 1.1, 100).unwrap();
        assert!(close(a.width(), 0.036, 1e-15));
        assert_eq!(a.bin_of(-2.5), Some(0));
        assert_eq!(a.bin_of(-2.5 + 0.036 * 10.5), Some(10));
        assert_eq!(a.bin_of(1.0999999), Some(99));
        assert_eq!(a.bin_of(1.1), None);
        assert_eq!(a.bin_of(-2.5000001), None);
        assert_eq!(a.bin_of(f64::INFINITY), None);
        assert!(close(a.centre(0), -2.482, 1e-14));
        assert!(close(a.centre(99), 1.082, 1e-14));
        // Every centre falls in its own bin.
        for i in 0..100 {
            assert_eq!(a.bin_of(a.centre(i)), Some(i));
        }
        assert!(Axis::new(f64::NAN, 1.0, 3).is_err());
        assert!(Axis::periodic(2.0, 1.0, 3).is_err());
        // An axis built from public fields that is invalid never panics.
        let bad = Axis { min: 0.0, max: 1.0, bins: 0, periodic: true };
        assert_eq!(bad.bin_of(0.5), None);
        assert!(Histogram1d::new(bad).is_err());
    }

    #[test]
    fn periodic_axis_wraps() {
        let a = Axis::dihedral(100).unwrap();
        assert_eq!(a.bin_of(PI), Some(0));
        assert_eq!(a.bin_of(-PI), Some(0));
        assert_eq!(a.bin_of(3.0 * PI), Some(0));
        // 2 pi / 100 = 0.0628...; -pi + 0.1 is in bin 1; +2 pi and -4 pi give the same bin.
        assert_eq!(a.bin_of(-PI + 0.1), Some(1));
        assert_eq!(a.bin_of(-PI + 0.1 + 2.0 * PI), Some(1));
        assert_eq!(a.bin_of(-PI + 0.1 - 4.0 * PI), Some(1));
        assert_eq!(a.bin_of(PI - 1e-9), Some(99));
        assert_eq!(a.bin_of(-0.01), Some(49));
        assert_eq!(a.bin_of(0.0), Some(50));
        assert!(close(a.wrap(4.0), 4.0 - 2.0 * PI, 1e-15));
        let w = a.wrap(-PI - 1e-17);
        assert!((-PI..PI).contains(&w));
    }

    #[test]
    fn histogram1d_counts_outside_and_errors() {
        let mut h = Histogram1d::new(Axis::new(0.0, 4.0, 4).unwrap()).unwrap();
        h.extend(&[0.5, 1.5, 1.7, 3.9, 4.0, -1.0]).unwrap();
        h.add_weighted(2.5, 0.5).unwrap();
        assert_eq!(h.counts(), &[1.0, 2.0, 0.5, 1.0]);
        assert_eq!(h.outside(), 2.0);
        assert_eq!(h.total(), 4.5);
        let p = h.probabilities().unwrap();
        assert!(close(p[1], 2.0 / 4.5, 1e-15));
        assert!(h.add(f64::NAN).is_err());
        assert!(h.add(f64::INFINITY).is_err());
        assert!(h.add_weighted(1.0, f64::NAN).is_err());
        assert!(h.extend(&[1.0, f64::NEG_INFINITY]).is_err());
        assert_eq!(h.total(), 4.5);
        let mut g = h.clone();
        g.merge(&h).unwrap();
        assert_eq!(g.counts(), &[2.0, 4.0, 1.0, 2.0]);
        assert_eq!(g.outside(), 4.0);
        assert!(Histogram1d::from_counts(*h.axis(), vec![1.0, -1.0, 0.0, 0.0]).is_err());
    }

    #[test]
    fn histogram2d_layout_and_merge() {
        let x = Axis::new(0.0, 2.0, 2).unwrap();
        let y = Axis::periodic(0.0, 3.0, 3).unwrap();
        let mut h = Histogram2d::new(x, y).unwrap();
        // (x bin 1, y bin 2) -> 1 * 3 + 2 = 5; y = 3.5 wraps to 0.5 -> bin 0.
        h.add(1.5, 2.5).unwrap();
        h.add(0.5, 3.5).unwrap();
        h.add(2.5, 0.0).unwrap();
        assert_eq!(h.counts(), &[1.0, 0.0, 0.0, 0.0, 0.0, 1.0]);
        assert_eq!(h.outside(), 1.0);
        assert_eq!(h.probabilities().unwrap(), vec![0.5, 0.0, 0.0, 0.0, 0.0, 0.5]);
        let mut g = Histogram2d::new(x, y).unwrap();
        g.merge(&h).unwrap();
        g.merge(&h).unwrap();
        assert_eq!(g.total(), 4.0);
        assert!(g.merge(&Histogram2d::new(y, x).unwrap()).is_err());
        assert!(h.extend(&[0.1, 0.2], &[0.1]).is_err());
        assert!(h.add(0.1, f64::NAN).is_err());
        assert_eq!(h.total(), 2.0);
    }

    #[test]
    fn free_energy_probability_round_trip() {
        let p = probabilities_from_free_energy(&[0.0, 2f64.ln(), f64::INFINITY, 3f64.ln()]).unwrap();
        // exp(-F) = 1, 1/2, 0, 1/3 -> total 11/6.
        assert!(close(p[0], 6.0 / 11.0, 1e-15));
        assert!(close(p[1], 3.0 / 11.0, 1e-15));
        assert_eq!(p[2], 0.0);
        assert!(close(p[3], 2.0 / 11.0, 1e-15));
        // Large F must not underflow everything.
        let p = probabilities_from_free_energy(&[5000.0, 5001.0]).unwrap();
        assert!(close(p[0], 1.0 / (1.0 + (-1f64).exp()), 1e-15));
        assert!(probabilities_from_free_energy(&[]).is_err());
        assert!(probabilities_from_free_energy(&[f64::INFINITY; 3]).is_err());
        assert!(probabilities_from_free_energy(&[0.0, f64::NEG_INFINITY]).is_err());
        let f = free_energy_from_probabilities(&[0.1, 0.4, 0.0, 0.5]);
        assert!(close(f[0], 5f64.ln(), 1e-14));
        assert!(close(f[1], (5.0f64 / 4.0).ln(), 1e-14));
        assert_eq!(f[2], f64::INFINITY);
        assert_eq!(f[3], 0.0);
        assert!(free_energy_from_probabilities(&[0.0, 0.0]).iter().all(|f| *f == f64::INFINITY));
        assert!(free_energy_from_probabilities(&[0.5, -0.1])[1].is_nan());
    }

    #[test]
    fn smoothing_preserves_total_and_spreads_symmetrically() {
        let (nx, ny) = (12, 10);
        let mut c = vec![0.0; nx * ny];
        c[6 * ny + 5] = 10.0;
        c[2 * ny + 3] = 4.0;
        let s = smooth_periodic_2d(&c, nx, ny, 1.0).unwrap();
        assert!(close(s.iter().sum::<f64>(), 14.0, 1e-12));

        // Single spike: out(ix, iy) = 10 kx[dx] ky[dy] with k[d] = exp(-d^2/2) / Z over the circle.
        let mut spike = vec![0.0; nx * ny];
        spike[6 * ny + 5] = 10.0;
        let s = smooth_periodic_2d(&spike, nx, ny, 1.0).unwrap();
        // Z for 12 bins: d = 0, +-1..+-4 (4 = 4 sigma included), d = 5, 6 beyond the cutoff.
        let g = |d: f64| (-0.5 * d * d).exp();
        let zx = 1.0 + 2.0 * (g(1.0) + g(2.0) + g(3.0) + g(4.0));
        let zy = zx; // 10 bins: d up to 5, only <= 4 kept, +-1..+-4 all distinct
        assert!(close(s[6 * ny + 5], 10.0 / (zx * zy), 1e-14));
        assert!(close(s[7 * ny + 6], 10.0 * g(1.0) * g(1.0) / (zx * zy), 1e-14));
        assert!(close(s[8 * ny + 5], 10.0 * g(2.0) / (zx * zy), 1e-14));
        for d in 1..5 {
            assert!(close(s[(6 + d) * ny + 5], s[(6 - d) * ny + 5], 1e-15));
            assert!(close(s[6 * ny + 5 + d], s[6 * ny + 5 - d], 1e-15));
        }
        assert_eq!(s[11 * ny + 5], 0.0); // dx = 5 > 4 sigma
        assert_eq!(s[6 * ny], 0.0); // dy = 5 > 4 sigma (and == n/2, not double counted)
    }

    #[test]
    fn smoothing_wraps_around_edges() {
        let (nx, ny) = (8, 8);
        let mut c = vec![0.0; nx * ny];
        c[0] = 1.0;
        let s = smooth_periodic_2d(&c, nx, ny, 0.7).unwrap();
        assert!(close(s.iter().sum::<f64>(), 1.0, 1e-14));
        assert!(close(s[ny], s[7 * ny], 1e-16)); // x = +1 and x = -1 (wrapped)
        assert!(close(s[1], s[7], 1e-16)); // y = +1 and y = -1 (wrapped)
        assert!(close(s[7 * ny + 7], s[ny + 1], 1e-16)); // diagonal across the corner
        assert!(s[7 * ny + 7] > 0.0);
        // Wide kernel on a small grid: the cutoff is half the period, every bin counted once, so a
        // spike becomes uniform (kernel 1/3 per bin in each direction).
        let s = smooth_periodic_2d(&[9.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], 3, 3, 1e6).unwrap();
        for v in &s {
            assert!(close(*v, 1.0, 1e-9));
        }
    }

    #[test]
    fn smoothing_sigma_zero_and_errors() {
        let c: Vec<f64> = (0..12).map(|i| i as f64).collect();
        assert_eq!(smooth_periodic_2d(&c, 3, 4, 0.0).unwrap(), c);
        assert!(smooth_periodic_2d(&c, 3, 3, 1.0).is_err());
        assert!(smooth_periodic_2d(&c, 3, 4, -1.0).is_err());
        assert!(smooth_periodic_2d(&c, 3, 4, f64::NAN).is_err());
        assert!(smooth_periodic_2d(&c, 0, 4, 1.0).is_err());
        let mut bad = c.clone();
        bad[3] = -1.0;
        assert!(smooth_periodic_2d(&bad, 3, 4, 1.0).is_err());
        // A uniform field stays uniform.
        let s = smooth_periodic_2d(&[2.0; 12], 3, 4, 1.3).unwrap();
        assert!(s.iter().all(|v| close(*v, 2.0, 1e-14)));
    }

    #[test]
    fn smoothing_on_an_interval_keeps_the_mass_inside() {
        // sigma 1, 10 bins; a spike in bin 1: neighbours at d = 0..4 inside, except d = -2..-4.
        let mut c = vec![0.0; 10];
        c[1] = 2.0;
        let s = smooth_1d(&c, false, 1.0).unwrap();
        let g = |d: f64| (-0.5 * d * d).exp();
        let z = g(1.0) + 1.0 + g(1.0) + g(2.0) + g(3.0) + g(4.0); // bins 0..=5
        assert!(close(s[1], 2.0 / z, 1e-15));
        assert!(close(s[0], 2.0 * g(1.0) / z, 1e-15) && close(s[0], s[2], 1e-15));
        assert!(close(s[5], 2.0 * g(4.0) / z, 1e-15));
        assert_eq!(s[6], 0.0);
        assert!(close(s.iter().sum::<f64>(), 2.0, 1e-14));
        // A spike in the middle of a long line is the plain (untruncated) kernel.
        let mut c = vec![0.0; 20];
        c[10] = 1.0;
        let s = smooth_1d(&c, false, 1.0).unwrap();
        let z = 1.0 + 2.0 * (g(1.0) + g(2.0) + g(3.0) + g(4.0));
        assert!(close(s[12], g(2.0) / z, 1e-15));
        // Periodic lines agree with the 2D periodic smoothing of a single row.
        let c: Vec<f64> = (0..12).map(|i| (i * i % 7) as f64).collect();
        assert_eq!(smooth_1d(&c, true, 1.5).unwrap(), smooth_periodic_2d(&c, 1, 12, 1.5).unwrap());
        assert_eq!(smooth_1d(&c, false, 0.0).unwrap(), c);
        assert!(smooth_1d(&[], false, 1.0).is_err());
        assert!(smooth_1d(&[1.0, -1.0], false, 1.0).is_err());
        assert!(smooth_1d(&[1.0], false, f64::INFINITY).is_err());
        let grid = BinGrid::Line { bins: 12, periodic: false };
        assert_eq!(grid.smooth(&c, 1.5).unwrap(), smooth_1d(&c, false, 1.5).unwrap());
        assert!(grid.smooth(&c[..11], 1.5).is_err());
    }
}
