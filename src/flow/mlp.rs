//! Residual MLP conditioner: the network that maps a coupling layer's conditioning inputs (and an
//! optional context) to the parameters of its transformers.

use super::linear::Linear;
use super::params::ParamBuilder;
use candle_core::Tensor;

/// `h = W_in [x, c]; per block: h = h + W_2 relu(W_1 [relu(h), c]); out = W_out relu(h)`, with
/// `W_out` zero at initialisation so a fresh flow is the identity.
#[derive(Debug, Clone)]
pub struct ResidualMlp {
    input: Linear,
    blocks: Vec<(Linear, Linear)>,
    output: Linear,
    context: usize,
}

impl ResidualMlp {
    /// A conditioner with `inputs` input features, `context` context features, `hidden` units,
    /// `blocks` residual blocks and `outputs` outputs.
    pub fn new(
        pb: &mut ParamBuilder,
        inputs: usize,
        context: usize,
        hidden: usize,
        blocks: usize,
        outputs: usize,
    ) -> candle_core::Result<Self> {
        let input = Linear::new(&mut pb.pp("input"), inputs + context, hidden)?;
        let blocks = (0..blocks)
            .map(|b| {
                let mut pb = pb.pp(&format!("block{b}"));
                Ok((
                    Linear::new(&mut pb.pp("0"), hidden + context, hidden)?,
                    Linear::new(&mut pb.pp("1"), hidden, hidden)?,
                ))
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let output = Linear::zeros(&mut pb.pp("output"), hidden, outputs)?;
        Ok(Self { input, blocks, output, context })
    }

    /// The dtype of the weights.
    pub fn dtype(&self) -> candle_core::DType {
        self.output.dtype()
    }

    /// Conditioner outputs for inputs `[B, inputs]` (None when the layer has no conditioning
    /// inputs) and context `[B, context]`.
    pub fn forward(&self, inputs: Option<&Tensor>, context: Option<&Tensor>) -> candle_core::Result<Tensor> {
        let x = match (inputs, context) {
            (Some(x), Some(c)) if self.context > 0 => Tensor::cat(&[x, c], 1)?,
            (Some(x), _) => x.clone(),
            (None, Some(c)) => c.clone(),
            (None, None) => candle_core::bail!("conditioner without inputs or context"),
        };
        let mut h = self.input.forward(&x, false)?;
        for (first, second) in &self.blocks {
            let t = h.relu()?;
            let t = match context {
                Some(c) if self.context > 0 => Tensor::cat(&[&t, c], 1)?,
                _ => t,
            };
            let t = second.forward(&first.forward(&t, true)?, false)?;
            h = (h + t)?;
        }
        self.output.forward(&h.relu()?, false)
    }
}
