//! Named, trainable parameters of a model and a builder that creates them with seeded
//! initialisation (candle's own random initialisers cannot be seeded on the CPU).

use candle_core::{DType, Device, Tensor, Var};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// All trainable tensors of a model, by name, in creation order.
#[derive(Debug, Default, Clone)]
pub struct ParamStore {
    entries: Vec<(String, Var)>,
}

impl ParamStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// (name, variable) pairs in creation order.
    pub fn entries(&self) -> &[(String, Var)] {
        &self.entries
    }

    /// The variables in creation order.
    pub fn vars(&self) -> Vec<Var> {
        self.entries.iter().map(|(_, v)| v.clone()).collect()
    }

    /// Total number of scalar parameters.
    pub fn count(&self) -> usize {
        self.entries.iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// The variable called `name`.
    pub fn get(&self, name: &str) -> Option<&Var> {
        self.entries.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    fn push(&mut self, name: String, var: Var) {
        self.entries.push((name, var));
    }
}

/// Creates parameters under a name prefix (like candle-nn's `VarBuilder`, but seeded).
pub struct ParamBuilder<'a> {
    store: &'a mut ParamStore,
    rng: &'a mut ChaCha8Rng,
    prefix: String,
    dtype: DType,
    device: Device,
}

/// How a new parameter tensor is filled.
#[derive(Debug, Clone, Copy)]
pub enum Init {
    /// All zeros (identity initialisation of the last conditioner layer).
    Zeros,
    /// Uniform on [-bound, bound].
    Uniform(f64),
}

impl<'a> ParamBuilder<'a> {
    /// A builder that adds to `store`, drawing initial values from `rng`.
    pub fn new(store: &'a mut ParamStore, rng: &'a mut ChaCha8Rng, dtype: DType, device: &Device) -> Self {
        Self { store, rng, prefix: String::new(), dtype, device: device.clone() }
    }

    /// A builder for a sub-module called `name`.
    pub fn pp(&mut self, name: &str) -> ParamBuilder<'_> {
        let prefix = if self.prefix.is_empty() { name.to_string() } else { format!("{}.{name}", self.prefix) };
        ParamBuilder { store: self.store, rng: self.rng, prefix, dtype: self.dtype, device: self.device.clone() }
    }

    /// The dtype of the parameters.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The device of the parameters.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Creates the parameter `name` of the given shape.
    pub fn var(&mut self, name: &str, shape: &[usize], init: Init) -> candle_core::Result<Var> {
        let n: usize = shape.iter().product();
        let values: Vec<f64> = match init {
            Init::Zeros => vec![0.0; n],
            Init::Uniform(bound) => (0..n).map(|_| self.rng.gen_range(-bound..bound)).collect(),
        };
        let t = Tensor::from_vec(values, shape, &self.device)?.to_dtype(self.dtype)?;
        let var = Var::from_tensor(&t)?;
        let full = if self.prefix.is_empty() { name.to_string() } else { format!("{}.{name}", self.prefix) };
        self.store.push(full, var.clone());
        Ok(var)
    }
}
