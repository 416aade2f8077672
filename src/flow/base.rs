//! Base distributions: standard normal on real dimensions, uniform on [-pi, pi) on circular ones.

use candle_core::{DType, Device, Tensor};
use rand::Rng;
use rand_distr::StandardNormal;

const LN_2PI: f64 = 1.837_877_066_409_345_5;

/// Product of N(0, 1) on real dimensions and U[-pi, pi) on circular ones.
#[derive(Debug, Clone)]
pub struct Base {
    circular: Vec<bool>,
    gaussian_mask: Vec<f64>,
}

impl Base {
    /// A base over `dims` dimensions of which those in `circular` are angles.
    pub fn new(dims: usize, circular: &[usize]) -> Self {
        let mut flags = vec![false; dims];
        circular.iter().filter(|&&c| c < dims).for_each(|&c| flags[c] = true);
        let gaussian_mask = flags.iter().map(|&c| if c { 0.0 } else { 1.0 }).collect();
        Self { circular: flags, gaussian_mask }
    }

    /// Dimensions.
    pub fn dims(&self) -> usize {
        self.circular.len()
    }

    /// Which dimensions are circular.
    pub fn circular(&self) -> &[bool] {
        &self.circular
    }

    /// Draws `n` samples `[n, dims]`.
    pub fn sample<R: Rng>(&self, n: usize, rng: &mut R, dtype: DType, device: &Device) -> candle_core::Result<Tensor> {
        let mut values = Vec::with_capacity(n * self.dims());
        for _ in 0..n {
            for &c in &self.circular {
                values.push(if c {
                    rng.gen_range(-std::f64::consts::PI..std::f64::consts::PI)
                } else {
                    rng.sample::<f64, _>(StandardNormal)
                });
            }
        }
        Tensor::from_vec(values, (n, self.dims()), device)?.to_dtype(dtype)
    }

    /// Log-density of each row of `z` `[B, dims]`, as `[B]`. Circular coordinates are assumed to
    /// lie in [-pi, pi) (the flow keeps them there).
    pub fn log_prob(&self, z: &Tensor) -> candle_core::Result<Tensor> {
        let n_gauss = self.gaussian_mask.iter().sum::<f64>();
        let n_circ = self.dims() as f64 - n_gauss;
        let constant = -0.5 * n_gauss * LN_2PI - n_circ * std::f64::consts::TAU.ln();
        let mask = Tensor::from_vec(self.gaussian_mask.clone(), (1, self.dims()), z.device())?.to_dtype(z.dtype())?;
        (z.sqr()?.broadcast_mul(&mask)?.sum(1)? * -0.5)? + constant
    }
}
