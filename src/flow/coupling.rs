//! Coupling layers: a conditioner network reads some dimensions (and the context) and sets the
//! parameters of elementwise bijections of the others.

use super::mlp::ResidualMlp;
use super::ops::{Coupling, Embed, Transformer};
use super::params::ParamBuilder;
use candle_core::{CustomOp1, CustomOp2, Tensor};
use std::sync::Arc;

/// One coupling layer.
#[derive(Clone)]
pub struct CouplingLayer {
    dims: usize,
    embed: Option<Arc<Box<dyn CustomOp1 + Send + Sync>>>,
    forward_op: Arc<Box<dyn CustomOp2 + Send + Sync>>,
    inverse_op: Arc<Box<dyn CustomOp2 + Send + Sync>>,
    conditioner: ResidualMlp,
    transformed: Vec<usize>,
}

impl std::fmt::Debug for CouplingLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CouplingLayer").field("dims", &self.dims).field("transformed", &self.transformed).finish()
    }
}

/// What a coupling layer transforms and how.
#[derive(Debug, Clone)]
pub struct CouplingPlan {
    /// Dimensions of the state.
    pub dims: usize,
    /// Which dimensions are circular.
    pub circular: Vec<bool>,
    /// Dimensions this layer transforms (the others condition).
    pub transformed: Vec<usize>,
    /// Transformer of a real dimension.
    pub real: Transformer,
    /// Transformer of a circular dimension.
    pub angle: Transformer,
    /// Context features.
    pub context: usize,
    /// Conditioner hidden units.
    pub hidden: usize,
    /// Conditioner residual blocks.
    pub blocks: usize,
}

impl CouplingLayer {
    /// Builds the layer and its conditioner.
    pub fn new(pb: &mut ParamBuilder, plan: &CouplingPlan) -> candle_core::Result<Self> {
        let mut is_transformed = vec![false; plan.dims];
        plan.transformed.iter().for_each(|&t| is_transformed[t] = true);
        let conditioning: Vec<(usize, bool)> =
            (0..plan.dims).filter(|&d| !is_transformed[d]).map(|d| (d, plan.circular[d])).collect();
        let mut offset = 0;
        let columns: Vec<(usize, Transformer, usize)> = plan
            .transformed
            .iter()
            .map(|&d| {
                let t = if plan.circular[d] { plan.angle } else { plan.real };
                let entry = (d, t, offset);
                offset += t.params();
                entry
            })
            .collect();
        let embed = Embed { columns: conditioning };
        let inputs = embed.width();
        if inputs == 0 && plan.context == 0 {
            candle_core::bail!("a coupling layer needs conditioning dimensions or a context");
        }
        let conditioner =
            ResidualMlp::new(&mut pb.pp("conditioner"), inputs, plan.context, plan.hidden, plan.blocks, offset)?;
        let embed: Option<Arc<Box<dyn CustomOp1 + Send + Sync>>> =
            if inputs > 0 { Some(Arc::new(Box::new(embed))) } else { None };
        Ok(Self {
            dims: plan.dims,
            embed,
            forward_op: Arc::new(Box::new(Coupling { columns: columns.clone(), inverse: false })),
            inverse_op: Arc::new(Box::new(Coupling { columns, inverse: true })),
            conditioner,
            transformed: plan.transformed.clone(),
        })
    }

    /// Dimensions this layer transforms.
    pub fn transformed(&self) -> &[usize] {
        &self.transformed
    }

    /// Applies the layer (or its inverse) to `x` `[B, dims]`; returns the new state and the
    /// log|det| of the step `[B]`.
    pub fn apply(&self, x: &Tensor, context: Option<&Tensor>, inverse: bool) -> candle_core::Result<(Tensor, Tensor)> {
        // The conditioner may run in a lower precision than the state (Precision::Mixed).
        let dtype = self.conditioner.dtype();
        let inputs = match &self.embed {
            Some(op) => Some(x.apply_op1_arc(op.clone())?.to_dtype(dtype)?),
            None => None,
        };
        let context = match context {
            Some(c) => Some(c.to_dtype(dtype)?),
            None => None,
        };
        let raw = self.conditioner.forward(inputs.as_ref(), context.as_ref())?.to_dtype(x.dtype())?;
        let op = if inverse { &self.inverse_op } else { &self.forward_op };
        let out = x.apply_op2_arc(&raw, op.clone())?;
        Ok((out.narrow(1, 0, self.dims)?.contiguous()?, out.narrow(1, self.dims, 1)?.squeeze(1)?))
    }
}
