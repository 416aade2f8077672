//! [`InternalCoordinates`]: a Z-matrix plus its normalisation, applied to batches. This is the
//! bridge a flow over molecules needs: Cartesian x (nm) <-> flow-space z, with
//! ln|det dx/dz| and the pull-back of an energy gradient du/dx to du/dz.
//!
//! The density of z under a Boltzmann distribution is `ln p(z) = -u(x(z)) + ln|det dx/dz|`; its
//! gradient is `-pullback(du/dx) + d ln|det dx/dz| / dz`, both of which [`InternalCoordinates::pullback`] returns.

use super::normalize::{Normalization, Scales};
use super::zmatrix::{CoordinateKind, ZMatrix};
use crate::error::{Error, Result};

/// A Z-matrix with its normalisation.
#[derive(Debug, Clone, PartialEq)]
pub struct InternalCoordinates {
    zmatrix: ZMatrix,
    normalization: Normalization,
    periodic: Vec<bool>,
}

/// Results of [`InternalCoordinates::pullback`].
#[derive(Debug, Clone, PartialEq)]
pub struct Pullback {
    /// du/dz per configuration, flat (configs x dim).
    pub grad_z: Vec<f64>,
    /// d ln|det dx/dz| / dz per configuration, flat.
    pub grad_log_det: Vec<f64>,
}

/// Batches at least this large are split across threads (thread start-up costs tens of us).
const CONFIGS_PER_THREAD: usize = 128;

/// Runs `work` over contiguous ranges of `n` configurations, in parallel when the batch is large,
/// handing each call the matching parts of the output buffers (each given with its per-configuration
/// length). The first error wins.
fn for_chunks<const K: usize, F>(n: usize, outputs: [(&mut [f64], usize); K], work: F) -> Result<()>
where
    F: Fn(std::ops::Range<usize>, [&mut [f64]; K]) -> Result<()> + Sync,
{
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get()).min(n / CONFIGS_PER_THREAD).max(1);
    let strides = outputs.each_ref().map(|(_, stride)| *stride);
    let mut rest = outputs.map(|(buffer, _)| buffer);
    if threads == 1 {
        return work(0..n, rest);
    }
    std::thread::scope(|scope| {
        let mut handles = Vec::with_capacity(threads);
        for t in 0..threads {
            let range = (t * n / threads)..((t + 1) * n / threads);
            let mut parts: [&mut [f64]; K] = std::array::from_fn(|_| <&mut [f64]>::default());
            for k in 0..K {
                let (head, tail) = std::mem::take(&mut rest[k]).split_at_mut(range.len() * strides[k]);
                parts[k] = head;
                rest[k] = tail;
            }
            let work = &work;
            handles.push(scope.spawn(move || work(range, parts)));
        }
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(Error::invalid("a worker thread panicked"))))
            .collect::<Result<Vec<()>>>()
            .map(|_| ())
    })
}

fn in_config<T>(i: usize, result: Result<T>) -> Result<T> {
    result.map_err(|e| match e {
        Error::InvalidInput(m) => Error::invalid(format!("configuration {i}: {m}")),
        other => other,
    })
}

impl InternalCoordinates {
    /// Combines a Z-matrix and a matching normalisation.
    pub fn new(zmatrix: ZMatrix, normalization: Normalization) -> Result<Self> {
        if normalization.len() != zmatrix.n_internal() {
            return Err(Error::invalid("the normalisation does not match the Z-matrix"));
        }
        let periodic = zmatrix.kinds().iter().map(|k| *k == CoordinateKind::Dihedral).collect();
        Ok(Self { zmatrix, normalization, periodic })
    }

    /// Normalisation around a reference structure `x_ref` (nm): its internal coordinates become z = 0.
    pub fn around_structure(zmatrix: ZMatrix, x_ref: &[f64], scales: Scales, circular: &[usize]) -> Result<Self> {
        let mut q = vec![0.0; zmatrix.n_internal()];
        zmatrix.to_internal(x_ref, &mut q)?;
        let normalization = Normalization::new(&zmatrix, q, scales, circular)?;
        Self::new(zmatrix, normalization)
    }

    /// The Z-matrix.
    pub fn zmatrix(&self) -> &ZMatrix {
        &self.zmatrix
    }

    /// The normalisation.
    pub fn normalization(&self) -> &Normalization {
        &self.normalization
    }

    /// Number of atoms.
    pub fn n_atoms(&self) -> usize {
        self.zmatrix.n_atoms()
    }

    /// Number of flow-space coordinates (3 n - 6).
    pub fn dim(&self) -> usize {
        self.zmatrix.n_internal()
    }

    fn configs(&self, len: usize, per: usize, what: &str) -> Result<usize> {
        if per == 0 || len % per != 0 {
            return Err(Error::invalid(format!(
                "{what}: {len} values is not a whole number of configurations of {per}"
            )));
        }
        Ok(len / per)
    }

    /// x (configs x atoms x 3, nm) -> z (configs x dim), with ln|det dz/dx| per configuration.
    pub fn forward(&self, x: &[f64]) -> Result<(Vec<f64>, Vec<f64>)> {
        let stride = 3 * self.n_atoms();
        let n = self.configs(x.len(), stride, "positions")?;
        let d = self.dim();
        let mut z = vec![0.0; n * d];
        let mut log_det = vec![0.0; n];
        for_chunks(n, [(&mut z, d), (&mut log_det, 1)], |range, [z, log_det]| {
            let mut q = vec![0.0; d];
            for (j, i) in range.enumerate() {
                let ld = in_config(i, self.zmatrix.to_internal(&x[i * stride..(i + 1) * stride], &mut q))?;
                self.normalization.normalize(&q, &self.periodic, &mut z[j * d..(j + 1) * d]);
                log_det[j] = ld - self.normalization.log_det_dq_dz();
            }
            Ok(())
        })?;
        Ok((z, log_det))
    }

    /// z (configs x dim) -> x (configs x atoms x 3, nm, in the anchor frame), with ln|det dx/dz|.
    pub fn inverse(&self, z: &[f64]) -> Result<(Vec<f64>, Vec<f64>)> {
        let d = self.dim();
        let n = self.configs(z.len(), d, "flow coordinates")?;
        let stride = 3 * self.n_atoms();
        let mut x = vec![0.0; n * stride];
        let mut log_det = vec![0.0; n];
        for_chunks(n, [(&mut x, stride), (&mut log_det, 1)], |range, [x, log_det]| {
            let mut q = vec![0.0; d];
            for (j, i) in range.enumerate() {
                let zi = &z[i * d..(i + 1) * d];
                if let Some(k) = zi.iter().position(|v| !v.is_finite()) {
                    return Err(Error::invalid(format!(
                        "configuration {i}: non-finite flow coordinate {} at {k}",
                        zi[k]
                    )));
                }
                self.normalization.denormalize(zi, &mut q);
                let ld = in_config(i, self.zmatrix.to_cartesian(&q, &mut x[j * stride..(j + 1) * stride]))?;
                log_det[j] = ld + self.normalization.log_det_dq_dz();
            }
            Ok(())
        })?;
        Ok((x, log_det))
    }

    /// Pulls an energy gradient back to flow space: given z, x = x(z) (from [`Self::inverse`]) and
    /// du/dx, returns du/dz and d ln|det dx/dz| / dz.
    pub fn pullback(&self, z: &[f64], x: &[f64], grad_x: &[f64]) -> Result<Pullback> {
        let d = self.dim();
        let stride = 3 * self.n_atoms();
        let n = self.configs(z.len(), d, "flow coordinates")?;
        if x.len() != n * stride || grad_x.len() != n * stride {
            return Err(Error::invalid(format!("positions and gradients must hold {n} configurations")));
        }
        let mut grad_z = vec![0.0; n * d];
        let mut grad_log_det = vec![0.0; n * d];
        let scale = self.normalization.scales();
        for_chunks(n, [(&mut grad_z, d), (&mut grad_log_det, d)], |range, [grad_z, grad_log_det]| {
            let mut q = vec![0.0; d];
            let mut scratch = Vec::with_capacity(self.n_atoms());
            for (j, i) in range.enumerate() {
                self.normalization.denormalize_unwrapped(&z[i * d..(i + 1) * d], &mut q);
                let (xi, gi) = (&x[i * stride..(i + 1) * stride], &grad_x[i * stride..(i + 1) * stride]);
                let gz = &mut grad_z[j * d..(j + 1) * d];
                let gl = &mut grad_log_det[j * d..(j + 1) * d];
                in_config(i, self.zmatrix.pullback_with(&q, xi, gi, gz, Some(&mut *gl), &mut scratch))?;
                for k in 0..d {
                    gz[k] *= scale[k];
                    gl[k] *= scale[k];
                }
            }
            Ok(())
        })?;
        Ok(Pullback { grad_z, grad_log_det })
    }
}
