//! Adam with fused updates, global gradient-norm clipping, and learning-rate schedules.
//!
//! candle-nn's optimisers run several serial elementwise ops per parameter tensor and have no
//! clipping; here one pass per tensor reads the gradient, updates both moments and the weights.
//! Moments are kept in f64 whatever the parameter precision.

use super::ops::{with_cpu_slice, Real};
use super::params::ParamStore;
use crate::error::{Error, Result};
use candle_core::{backprop::GradStore, CpuStorage, DType, InplaceOp1, Layout};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::sync::Mutex;

/// Adam hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdamConfig {
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator offset.
    pub eps: f64,
    /// Clip the global gradient norm to this value (None: no clipping).
    pub max_grad_norm: Option<f64>,
}

impl Default for AdamConfig {
    fn default() -> Self {
        Self { beta1: 0.9, beta2: 0.999, eps: 1e-8, max_grad_norm: None }
    }
}

/// Optimiser state: step count and both moments of every parameter.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdamState {
    /// Steps taken.
    pub step: u64,
    /// First moments, one vector per parameter tensor in store order.
    pub m: Vec<Vec<f64>>,
    /// Second moments.
    pub v: Vec<Vec<f64>>,
}

/// What one optimiser step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepReport {
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Scale applied to the gradient by clipping (1: none).
    pub clip_scale: f64,
}

/// Adam (no weight decay).
#[derive(Debug)]
pub struct Adam {
    config: AdamConfig,
    state: AdamState,
}

struct AdamUpdate<'a, T> {
    grad: &'a [T],
    m: Mutex<&'a mut [f64]>,
    v: Mutex<&'a mut [f64]>,
    lr: f64,
    scale: f64,
    config: AdamConfig,
    bias1: f64,
    bias2: f64,
}

impl<T: Real> AdamUpdate<'_, T> {
    fn apply(&self, p: &mut [T]) {
        let mut m = self.m.lock().unwrap_or_else(|e| e.into_inner());
        let mut v = self.v.lock().unwrap_or_else(|e| e.into_inner());
        let (b1, b2) = (self.config.beta1, self.config.beta2);
        const CHUNK: usize = 1 << 14;
        p.par_chunks_mut(CHUNK)
            .zip(self.grad.par_chunks(CHUNK))
            .zip(m.par_chunks_mut(CHUNK))
            .zip(v.par_chunks_mut(CHUNK))
            .for_each(|(((p, g), m), v)| {
                for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                    let g = candle_core::WithDType::to_f64(g) * self.scale;
                    *m = b1 * *m + (1.0 - b1) * g;
                    *v = b2 * *v + (1.0 - b2) * g * g;
                    let update = self.lr * (*m / self.bias1) / ((*v / self.bias2).sqrt() + self.config.eps);
                    *p -= <T as candle_core::WithDType>::from_f64(update);
                }
            });
    }
}

impl<T: Real> InplaceOp1 for AdamUpdate<'_, T> {
    fn name(&self) -> &'static str {
        "adam_update"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        let (start, end) = layout
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg("adam: parameter not contiguous".into()))?;
        let p =
            T::cpu_vec_mut(storage).ok_or_else(|| candle_core::Error::Msg("adam: parameter dtype mismatch".into()))?;
        let p = &mut p[start..end];
        self.apply(p);
        Ok(())
    }
}

/// The scalars of one Adam step (shared by every parameter tensor).
struct AdamUpdateArgs {
    lr: f64,
    scale: f64,
    config: AdamConfig,
    bias1: f64,
    bias2: f64,
}

impl AdamUpdateArgs {
    /// Updates `var` in place from its gradient and moments.
    fn apply_to<T: Real>(
        &self,
        var: &candle_core::Var,
        grad: &[T],
        m: &mut [f64],
        v: &mut [f64],
    ) -> candle_core::Result<()> {
        let op = AdamUpdate {
            grad,
            m: Mutex::new(m),
            v: Mutex::new(v),
            lr: self.lr,
            scale: self.scale,
            config: self.config,
            bias1: self.bias1,
            bias2: self.bias2,
        };
        var.as_tensor().inplace_op1(&op)
    }
}

impl Adam {
    /// A fresh optimiser for the parameters in `store`.
    pub fn new(store: &ParamStore, config: AdamConfig) -> Self {
        let m = store.entries().iter().map(|(_, v)| vec![0.0; v.elem_count()]).collect::<Vec<_>>();
        let v = m.clone();
        Self { config, state: AdamState { step: 0, m, v } }
    }

    /// The optimiser state (for checkpoints).
    pub fn state(&self) -> &AdamState {
        &self.state
    }

    /// Restores a saved state; fails if it does not match the parameters.
    pub fn set_state(&mut self, store: &ParamStore, state: AdamState) -> Result<()> {
        let sizes: Vec<usize> = store.entries().iter().map(|(_, v)| v.elem_count()).collect();
        let ok = state.m.len() == sizes.len()
            && state.v.len() == sizes.len()
            && state.m.iter().zip(&state.v).zip(&sizes).all(|((m, v), &n)| m.len() == n && v.len() == n);
        if !ok {
            return Err(Error::invalid("optimiser state does not match the model's parameters"));
        }
        self.state = state;
        Ok(())
    }

    /// The configuration.
    pub fn config(&self) -> &AdamConfig {
        &self.config
    }

    /// Global L2 norm of the gradients of `store` in `grads` (missing gradients count as 0).
    pub fn grad_norm(store: &ParamStore, grads: &GradStore) -> Result<f64> {
        // Fixed chunks summed in order: the same result whatever the thread count, so clipping
        // (and a resumed run) stays bit-reproducible.
        fn sum_squares<T: Real>(s: &[T]) -> f64 {
            let partial: Vec<f64> = s
                .par_chunks(1 << 14)
                .map(|c| c.iter().map(|&x| candle_core::WithDType::to_f64(x).powi(2)).sum::<f64>())
                .collect();
            partial.iter().sum()
        }
        let mut sum = 0.0;
        for (_, var) in store.entries() {
            if let Some(g) = grads.get(var.as_tensor()) {
                sum += match g.dtype() {
                    DType::F32 => with_cpu_slice::<f32, _>(g, sum_squares)?,
                    _ => with_cpu_slice::<f64, _>(g, sum_squares)?,
                };
            }
        }
        Ok(sum.sqrt())
    }

    /// One step with learning rate `lr`. A non-finite gradient norm leaves the weights
    /// untouched and is returned as an error, so NaNs never reach the weights.
    pub fn step(&mut self, store: &ParamStore, grads: &GradStore, lr: f64) -> Result<StepReport> {
        let grad_norm = Self::grad_norm(store, grads)?;
        if !grad_norm.is_finite() {
            return Err(Error::invalid(format!("non-finite gradient (norm {grad_norm}); step skipped")));
        }
        let clip_scale = match self.config.max_grad_norm {
            Some(max) if grad_norm > max => max / grad_norm,
            _ => 1.0,
        };
        self.state.step += 1;
        let t = self.state.step as i32;
        let bias1 = 1.0 - self.config.beta1.powi(t);
        let bias2 = 1.0 - self.config.beta2.powi(t);
        let args = AdamUpdateArgs { lr, scale: clip_scale, config: self.config, bias1, bias2 };
        for (i, (_, var)) in store.entries().iter().enumerate() {
            let Some(g) = grads.get(var.as_tensor()) else { continue };
            let (m, v) = (&mut self.state.m[i], &mut self.state.v[i]);
            match var.dtype() {
                DType::F32 => with_cpu_slice::<f32, _>(g, |grad| args.apply_to(var, grad, m, v))??,
                _ => with_cpu_slice::<f64, _>(g, |grad| args.apply_to(var, grad, m, v))??,
            }
        }
        Ok(StepReport { grad_norm, clip_scale })
    }
}

/// Learning rate as a function of the step: linear warm-up, then constant or cosine decay.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// Peak learning rate.
    pub lr: f64,
    /// Steps of linear warm-up from 0.
    pub warmup_steps: u64,
    /// Cosine decay to `final_lr` over this many steps after warm-up (None: constant).
    pub cosine_steps: Option<u64>,
    /// Learning rate at the end of the cosine decay.
    pub final_lr: f64,
}

impl Schedule {
    /// A constant learning rate.
    pub fn constant(lr: f64) -> Self {
        Self { lr, warmup_steps: 0, cosine_steps: None, final_lr: lr }
    }

    /// The learning rate of (0-based) step `step`.
    pub fn lr_at(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return self.lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        match self.cosine_steps {
            Some(n) if n > 0 => {
                let t = ((step - self.warmup_steps) as f64 / n as f64).min(1.0);
                self.final_lr + 0.5 * (self.lr - self.final_lr) * (1.0 + (std::f64::consts::PI * t).cos())
            }
            _ => self.lr,
        }
    }
}
