//! `BertForSequenceClassification`'s head, mirroring `BertPooler` and the classifier in
//! `transformers/models/bert/modeling_bert.py`: the last hidden state of `[CLS]` (position 0)
//! through a dense layer and `tanh`, then one linear logit per class. RoBERTa's
//! (`RobertaClassificationHead`: `classifier.dense`, `tanh`, `classifier.out_proj`) and
//! DistilBERT's (`pre_classifier`, ReLU, `classifier`) have the same shape ([`Variant::head_names`]).
//! Checkpoints without a classifier (a plain `BertModel`, sentence-transformers) have no head,
//! and their pooler is never read.

use super::Variant;
use crate::class_head::{Pooler, PoolerAct};
use crate::weights::Weights;
use crate::{ModelError, Result};
use candle_core::Tensor;
use std::path::Path;

/// The pooler and classifier of a sequence-classification checkpoint.
pub(crate) struct ClassHead {
    pooler_weight: Tensor,
    pooler_bias: Tensor,
    weight: Tensor,
    bias: Tensor,
    act: PoolerAct,
    /// Class names, index = logit: `id2label`, else `LABEL_0`, … as `transformers` names them.
    pub(crate) labels: Vec<String>,
}

impl ClassHead {
    /// The head when the checkpoint has the variant's per-class layer (`classifier.weight`
    /// beside the `bert.` model; `classifier.out_proj.weight` for RoBERTa), else `None` (also for
    /// a token classifier's, see [`crate::class_head::unread_task_head`]).
    /// `config` is the checkpoint's `config.json` (for `id2label`).
    pub(crate) fn load(
        path: &Path,
        config: &serde_json::Value,
        w: &Weights,
        hidden: usize,
        variant: Variant,
    ) -> Result<Option<Self>> {
        let names = variant.head_names();
        let out_weight = format!("{}.weight", names.out);
        let Some(rows) = w
            .tensor(&out_weight)
            .and_then(|t| t.dims().first().copied())
        else {
            return Ok(None);
        };
        // A token classifier's per-class layer reads every token, not the pooled first one.
        if crate::class_head::unread_task_head(config, w).is_some() {
            return Ok(None);
        }
        let labels = crate::class_head::head_labels(path, config, &out_weight, rows)?;
        let missing = |name: &str| ModelError::MissingTensor {
            path: w.path().to_path_buf(),
            name: format!("{name} (a sequence classifier reads its first token through it)"),
        };
        let dense = |part: &str, shape: &[usize]| -> Result<Tensor> {
            let name = format!("{}.{part}", names.dense);
            let t = if names.dense_prefixed {
                w.has(&name).then(|| w.get(&name, shape)).transpose()?
            } else {
                w.get_root(&name, shape)?
            };
            t.ok_or_else(|| missing(&name))
        };
        let out = |part: &str, shape: &[usize]| -> Result<Tensor> {
            let name = format!("{}.{part}", names.out);
            w.get_root(&name, shape)?.ok_or_else(|| missing(&name))
        };
        Ok(Some(Self {
            pooler_weight: dense("weight", &[hidden, hidden])?,
            pooler_bias: dense("bias", &[hidden])?,
            weight: out("weight", &[rows, hidden])?,
            bias: out("bias", &[rows])?,
            act: names.act,
            labels,
        }))
    }

    /// The head as numbers: the last block's output at `[CLS]`, the pooler, the classifier.
    pub(crate) fn parts(&self, layers: usize) -> Result<crate::class_head::ClassHeadParts> {
        let flat = |t: &Tensor| -> Result<Vec<f32>> { Ok(t.flatten_all()?.to_vec1()?) };
        Ok(crate::class_head::ClassHeadParts {
            hook: crate::HookPoint::ResidPost(layers - 1),
            pool: glassbox_data::Pool::Cls,
            pooler: Some(Pooler {
                weight: flat(&self.pooler_weight)?,
                bias: flat(&self.pooler_bias)?,
                act: self.act,
            }),
            weight: flat(&self.weight)?,
            bias: flat(&self.bias)?,
        })
    }

    /// `[batch, seq, hidden]` last hidden states → `[batch, classes]` logits (differentiable).
    pub(crate) fn forward(&self, last: &Tensor) -> candle_core::Result<Tensor> {
        let cls = last.narrow(1, 0, 1)?.squeeze(1)?;
        let pooled = self.act.apply(
            &cls.matmul(&self.pooler_weight.t()?)?
                .broadcast_add(&self.pooler_bias)?,
        )?;
        pooled.matmul(&self.weight.t()?)?.broadcast_add(&self.bias)
    }
}
