//! Pieces shared by the model families: LayerNorm and the MLP activations, in candle ops that
//! support autograd.

use crate::weights::Weights;
use crate::Result;
use candle_core::Tensor;

/// The activation function named by a config (`hidden_act`, `activation_function`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Activation {
    GeluErf,
    GeluTanh,
    Relu,
}

impl Activation {
    pub(crate) fn parse(name: &str) -> std::result::Result<Self, String> {
        match name {
            "gelu" => Ok(Activation::GeluErf),
            "gelu_new" | "gelu_pytorch_tanh" => Ok(Activation::GeluTanh),
            "relu" => Ok(Activation::Relu),
            other => Err(format!(
                "hidden_act `{other}` is not supported; use gelu, gelu_new, gelu_pytorch_tanh or relu"
            )),
        }
    }
    pub(crate) fn apply(self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Activation::GeluErf => x.gelu_erf(),
            Activation::GeluTanh => x.gelu(),
            Activation::Relu => x.relu(),
        }
    }
}

/// LayerNorm with f64 statistics, from primitive ops so autograd flows through.
pub(crate) struct LayerNorm {
    pub(crate) weight: Tensor,
    pub(crate) bias: Tensor,
    pub(crate) eps: f32,
}

impl LayerNorm {
    pub(crate) fn load(w: &Weights, prefix: &str, size: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: w.get_any(
                &[&format!("{prefix}.weight"), &format!("{prefix}.gamma")],
                &[size],
            )?,
            bias: w.get_any(
                &[&format!("{prefix}.bias"), &format!("{prefix}.beta")],
                &[size],
            )?,
            eps: eps as f32,
        })
    }
    /// Statistics in f64 (like the fast kernel), from primitive ops so autograd flows through.
    pub(crate) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        use candle_core::{DType, D};
        let x64 = x.to_dtype(DType::F64)?;
        let centred = x64.broadcast_sub(&x64.mean_keepdim(D::Minus1)?)?;
        let variance = centred.sqr()?.mean_keepdim(D::Minus1)?;
        centred
            .broadcast_div(&(variance + self.eps as f64)?.sqrt()?)?
            .to_dtype(x.dtype())?
            .broadcast_mul(&self.weight)?
            .broadcast_add(&self.bias)
    }
}
