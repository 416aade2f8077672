//! Dense layer y = x W^T + b, with the bias (and an optional ReLU) as one fused op.

use super::ops::BiasAct;
use super::params::{Init, ParamBuilder};
use candle_core::{Tensor, Var};

/// A dense layer: weight `[in, out]` (so the weight gradient x^T g comes out contiguous, with no
/// transpose to copy), bias `[out]`.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Var,
    bias: Var,
}

impl Linear {
    /// PyTorch's default initialisation: weight and bias uniform on +-1/sqrt(in).
    pub fn new(pb: &mut ParamBuilder, inputs: usize, outputs: usize) -> candle_core::Result<Self> {
        let bound = 1.0 / (inputs.max(1) as f64).sqrt();
        Ok(Self {
            weight: pb.var("weight", &[inputs, outputs], Init::Uniform(bound))?,
            bias: pb.var("bias", &[outputs], Init::Uniform(bound))?,
        })
    }

    /// All-zero weights and bias (the output layer of an identity-initialised conditioner).
    pub fn zeros(pb: &mut ParamBuilder, inputs: usize, outputs: usize) -> candle_core::Result<Self> {
        Ok(Self {
            weight: pb.var("weight", &[inputs, outputs], Init::Zeros)?,
            bias: pb.var("bias", &[outputs], Init::Zeros)?,
        })
    }

    /// The dtype of the weights.
    pub fn dtype(&self) -> candle_core::DType {
        self.weight.dtype()
    }

    /// x W + b, followed by ReLU when `relu`.
    pub fn forward(&self, x: &Tensor, relu: bool) -> candle_core::Result<Tensor> {
        x.matmul(self.weight.as_tensor())?.apply_op2(self.bias.as_tensor(), BiasAct { relu })
    }
}
