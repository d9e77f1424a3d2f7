//! Checkpoints of GPT-2-shaped families (GPT-Neo, OPT) folded into GPT-2's names and layouts at
//! load, so that they run on GPT-2's blocks: `nn.Linear` weights (`[out, in]`) transposed to
//! Conv1D's `[in, out]`, separate q/k/v projections fused into `c_attn = [q | k | v]`, absent
//! biases and LayerNorm affines as zeros and ones (what they compute).

use crate::weights::Weights;
use crate::Result;
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

/// GPT-2-named tensors being gathered from another family's checkpoint.
#[derive(Default)]
pub(crate) struct Gpt2Layout {
    tensors: HashMap<String, Tensor>,
}

impl Gpt2Layout {
    /// `from` as is, under GPT-2's name `to`.
    pub(crate) fn copy(
        &mut self,
        w: &Weights,
        from: &str,
        to: &str,
        shape: &[usize],
    ) -> Result<()> {
        self.tensors.insert(to.to_owned(), w.get(from, shape)?);
        Ok(())
    }

    /// Rows `skip..` of `from` (`[rows, width]`) under `to` (OPT's position table, whose first
    /// two rows no position reads).
    pub(crate) fn rows_from(
        &mut self,
        w: &Weights,
        (from, to): (&str, &str),
        skip: usize,
        (rows, width): (usize, usize),
    ) -> Result<()> {
        let t = w.get(from, &[rows + skip, width])?.narrow(0, skip, rows)?;
        self.tensors.insert(to.to_owned(), t.contiguous()?);
        Ok(())
    }

    /// The LayerNorm `from` as GPT-2's `to`; without an affine (`affine` false), ones and zeros.
    pub(crate) fn layer_norm(
        &mut self,
        w: &Weights,
        from: &str,
        to: &str,
        d: usize,
        affine: bool,
    ) -> Result<()> {
        if affine {
            self.copy(w, &format!("{from}.weight"), &format!("{to}.weight"), &[d])?;
            self.copy(w, &format!("{from}.bias"), &format!("{to}.bias"), &[d])
        } else {
            self.tensors.insert(
                format!("{to}.weight"),
                Tensor::ones(d, DType::F32, &Device::Cpu)?,
            );
            self.tensors.insert(format!("{to}.bias"), zeros(d)?);
            Ok(())
        }
    }

    /// The `nn.Linear` `from` (`[output, input]`, a bias where `biased`) as GPT-2's Conv1D `to`.
    pub(crate) fn linear(
        &mut self,
        w: &Weights,
        (from, to): (&str, &str),
        (input, output): (usize, usize),
        biased: bool,
    ) -> Result<()> {
        let weight = w.get(&format!("{from}.weight"), &[output, input])?;
        self.tensors
            .insert(format!("{to}.weight"), weight.t()?.contiguous()?);
        let bias = match biased {
            true => w.get(&format!("{from}.bias"), &[output])?,
            false => zeros(output)?,
        };
        self.tensors.insert(format!("{to}.bias"), bias);
        Ok(())
    }

    /// Separate `nn.Linear` query, key and value projections `[q, k, v]` (`d → d` each) as
    /// GPT-2's fused `to` (`c_attn`).
    pub(crate) fn fused_qkv(
        &mut self,
        w: &Weights,
        qkv: [&str; 3],
        to: &str,
        d: usize,
        biased: bool,
    ) -> Result<()> {
        let mut weights = Vec::with_capacity(3);
        let mut biases = Vec::with_capacity(3);
        for from in qkv {
            weights.push(w.get(&format!("{from}.weight"), &[d, d])?.t()?);
            biases.push(match biased {
                true => w.get(&format!("{from}.bias"), &[d])?,
                false => zeros(d)?,
            });
        }
        self.tensors.insert(
            format!("{to}.weight"),
            Tensor::cat(&weights, 1)?.contiguous()?,
        );
        self.tensors
            .insert(format!("{to}.bias"), Tensor::cat(&biases, 0)?);
        Ok(())
    }

    /// An untied output head, where the checkpoint has one.
    pub(crate) fn head(&mut self, w: &Weights, shape: &[usize]) -> Result<()> {
        if let Some(head) = w.get_root("lm_head.weight", shape)? {
            self.tensors.insert("lm_head.weight".into(), head);
        }
        Ok(())
    }

    /// The gathered tensors as weights read from `path`.
    pub(crate) fn into_weights(self, path: &Path) -> Weights {
        Weights::from_tensors(path, self.tensors)
    }
}

fn zeros(n: usize) -> Result<Tensor> {
    Ok(Tensor::zeros(n, DType::F32, &Device::Cpu)?)
}
