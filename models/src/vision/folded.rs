//! Convolutions with their batch norms folded in, and handing channels-last activations to
//! hooks — shared by the convolutional families.

use super::conv::Nhwc;
use crate::borrowed::Borrowed;
use crate::hooks::{HookPoint, Hooks};
use crate::weights::Weights;
use crate::{ModelError, Result};
use candle_core::{Device, Tensor};

/// A 1×1 or depthwise convolution with its batch norm folded in.
pub struct Folded {
    /// `[out, in]` for 1×1, `[k, k, c]` taps for depthwise, `[out, k, k, in]` for dense.
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

/// Folds `bn` (`weight`, `bias`, `running_mean`, `running_var`) into a convolution whose
/// weight rows are `rows` long per output channel.
pub fn fold(w: &Weights, conv: Tensor, bn: &str, out: usize, eps: f64) -> Result<Folded> {
    let get = |n: &str| -> Result<Vec<f32>> { Ok(w.get(&format!("{bn}.{n}"), &[out])?.to_vec1()?) };
    let (gamma, beta, mean, var) = (
        get("weight")?,
        get("bias")?,
        get("running_mean")?,
        get("running_var")?,
    );
    let mut weight: Vec<f32> = conv.flatten_all()?.to_vec1()?;
    let rows = weight.len() / out;
    let mut bias = vec![0f32; out];
    for o in 0..out {
        let scale = gamma[o] as f64 / (var[o] as f64 + eps).sqrt();
        weight[o * rows..(o + 1) * rows]
            .iter_mut()
            .for_each(|v| *v = (*v as f64 * scale) as f32);
        bias[o] = (beta[o] as f64 - mean[o] as f64 * scale) as f32;
    }
    Ok(Folded { weight, bias })
}

/// Hands `x` (`[batch, pixels, c]`) to the hooks if they want `point`, and continues with
/// what they return (a patched activation must keep the shape).
pub fn visit(hooks: &mut dyn Hooks, point: HookPoint, x: &mut Vec<f32>, shape: Nhwc) -> Result<()> {
    *x = match hold(hooks, point, std::mem::take(x), shape)? {
        Held::Owned(v) => v,
        Held::Hooked(t) => t.flatten_all()?.to_vec1()?,
    };
    Ok(())
}

/// An activation the forward goes on reading after its hook: its own buffer, or the tensor the
/// hooks returned, read in place. [`visit`] copies the returned tensor back into a buffer; for
/// EfficientNet's attribution tape (every hook kept) that copy was 8% of integrated gradients'
/// time.
pub(crate) enum Held {
    Owned(Vec<f32>),
    Hooked(Tensor),
}

impl Held {
    /// The values, borrowed for as long as the view lives.
    pub(crate) fn view(&self) -> Result<HeldView<'_>> {
        Ok(match self {
            Held::Owned(v) => HeldView::Slice(v),
            Held::Hooked(t) => HeldView::Borrowed(Borrowed::of(t)?),
        })
    }
}

/// [`Held::view`]'s borrow.
pub(crate) enum HeldView<'a> {
    Slice(&'a [f32]),
    Borrowed(Borrowed<'a>),
}

impl HeldView<'_> {
    pub(crate) fn slice(&self) -> Result<&[f32]> {
        match self {
            HeldView::Slice(s) => Ok(s),
            HeldView::Borrowed(b) => b.slice(),
        }
    }
}

/// [`visit`] without the copy back: the hooks' tensor itself when it is a contiguous f32 CPU
/// tensor, else its values copied.
pub(crate) fn hold(
    hooks: &mut dyn Hooks,
    point: HookPoint,
    x: Vec<f32>,
    shape: Nhwc,
) -> Result<Held> {
    if !hooks.wants(point) {
        return Ok(Held::Owned(x));
    }
    let dims = (shape.batch, shape.pixels(), shape.channels);
    let back = hooks.visit(point, Tensor::from_vec(x, dims, &Device::Cpu)?)?;
    if back.dims() != [dims.0, dims.1, dims.2] {
        return Err(ModelError::Invalid(format!(
            "hook `{point}` returned shape {:?}, expected {dims:?}",
            back.dims()
        )));
    }
    let in_place = Borrowed::of(&back).is_ok();
    Ok(if in_place {
        Held::Hooked(back)
    } else {
        Held::Owned(back.flatten_all()?.to_vec1()?)
    })
}
