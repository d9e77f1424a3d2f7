//! `x · Wᵀ` as a candle custom op whose backward gives the input's gradient only.
//!
//! candle-core 0.11 differentiates `matmul` with respect to both operands whether or not one
//! needs it (`backprop.rs`, `Op::Matmul`). Here a weight never does — attributions, target
//! gradients and attribution patching differentiate with respect to inputs or activations —
//! so every linear layer of a differentiable forward paid a weight-gradient GEMM, a third of
//! its backward work, for nothing (docs/perf/attribution.md). This op computes the product
//! with the same GEMM kernel and returns `None` for the weight's gradient.

use super::gemm::{matmul, View};
use candle_core::{CpuStorage, CustomOp2, DType, Device, Layout, Result, Shape, Tensor};

struct InputGradLinear;

impl CustomOp2 for InputGradLinear {
    fn name(&self) -> &'static str {
        "linear-input-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (m, k) = l1.shape().dims2()?;
        let (n, k2) = l2.shape().dims2()?;
        if k != k2 {
            candle_core::bail!("linear: input width {k} against weight width {k2}");
        }
        let (CpuStorage::F32(x), CpuStorage::F32(w)) = (s1, s2) else {
            candle_core::bail!("linear: f32 only");
        };
        let (Some((xa, xb)), Some((wa, wb))) = (l1.contiguous_offsets(), l2.contiguous_offsets())
        else {
            candle_core::bail!("linear: contiguous operands only");
        };
        let mut out = vec![0f32; m * n];
        matmul(
            (m, k, n),
            &mut out,
            View::rows(0, n),
            &x[xa..xb],
            View::rows(0, k),
            &w[wa..wb],
            View::transposed(0, k),
            1.0,
            false,
            rayon::current_num_threads(),
        );
        Ok((CpuStorage::F32(out), Shape::from((m, n))))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        w: &Tensor,
        _out: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(grad.matmul(w)?), None))
    }
}

/// `x · Wᵀ` for `x` `[rows, in]` and `weight` `[out, in]`: the custom op on the CPU in f32,
/// candle's `matmul` elsewhere (other dtypes or devices).
pub fn linear_no_weight_grad(x: &Tensor, weight: &Tensor) -> Result<Tensor> {
    if matches!(x.device(), Device::Cpu) && x.dtype() == DType::F32 && weight.dtype() == DType::F32
    {
        x.contiguous()?
            .apply_op2(&weight.contiguous()?, InputGradLinear)
    } else {
        x.matmul(&weight.t()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    #[test]
    fn values_and_input_gradient_equal_matmul_and_the_weight_gets_none() {
        let dev = Device::Cpu;
        let xs: Vec<f32> = (0..5 * 7)
            .map(|i| ((i * 37 % 11) as f32 - 5.0) / 3.0)
            .collect();
        let ws: Vec<f32> = (0..3 * 7)
            .map(|i| ((i * 13 % 7) as f32 - 3.0) / 2.0)
            .collect();
        let w = Tensor::from_vec(ws, (3, 7), &dev).unwrap();
        let x = Var::from_tensor(&Tensor::from_vec(xs, (5, 7), &dev).unwrap()).unwrap();
        let ours = linear_no_weight_grad(x.as_tensor(), &w).unwrap();
        let reference = x.as_tensor().matmul(&w.t().unwrap()).unwrap();
        let diff = (&ours - &reference)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-5);
        // d/dx of Σ (x·Wᵀ)·c for a fixed c is c·W.
        let c = Tensor::from_vec((0..15).map(|i| i as f32 - 7.0).collect(), (5, 3), &dev).unwrap();
        let g_ours = (ours * &c).unwrap().sum_all().unwrap().backward().unwrap();
        let g_ref = (reference * &c)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let (a, b) = (
            g_ours.get(x.as_tensor()).unwrap(),
            g_ref.get(x.as_tensor()).unwrap(),
        );
        let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-5);
        assert!(g_ours.get(&w).is_none(), "no weight gradient");
    }
}
