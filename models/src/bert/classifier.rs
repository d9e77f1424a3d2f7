//! `BertForSequenceClassification`'s head, mirroring `BertPooler` and the classifier in
//! `transformers/models/bert/modeling_bert.py`: the last hidden state of `[CLS]` (position 0)
//! through a dense layer and `tanh`, then one linear logit per class. Checkpoints without a
//! classifier (a plain `BertModel`, sentence-transformers) have no head, and their pooler is
//! never read.

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
    /// Class names, index = logit: `id2label`, else `LABEL_0`, … as `transformers` names them.
    pub(crate) labels: Vec<String>,
}

impl ClassHead {
    /// The head when the checkpoint has a `classifier.weight` (beside the `bert.` model), else
    /// `None`. `config` is the checkpoint's `config.json` (for `id2label`).
    pub(crate) fn load(
        path: &Path,
        config: &serde_json::Value,
        w: &Weights,
        hidden: usize,
    ) -> Result<Option<Self>> {
        let Some(rows) = w
            .tensor("classifier.weight")
            .and_then(|t| t.dims().first().copied())
        else {
            return Ok(None);
        };
        let labels = crate::class_head::head_labels(path, config, "classifier.weight", rows)?;
        let missing = |name: &str| ModelError::MissingTensor {
            path: w.path().to_path_buf(),
            name: format!("{name} (a sequence classifier reads [CLS] through the pooler)"),
        };
        Ok(Some(Self {
            pooler_weight: w
                .has("pooler.dense.weight")
                .then(|| w.get("pooler.dense.weight", &[hidden, hidden]))
                .ok_or_else(|| missing("pooler.dense.weight"))??,
            pooler_bias: w.get("pooler.dense.bias", &[hidden])?,
            weight: w
                .get_root("classifier.weight", &[rows, hidden])?
                .ok_or_else(|| missing("classifier.weight"))?,
            bias: w
                .get_root("classifier.bias", &[rows])?
                .ok_or_else(|| missing("classifier.bias"))?,
            labels,
        }))
    }

    /// The head as numbers: the last block's output at `[CLS]`, the pooler, the classifier.
    pub(crate) fn parts(&self, layers: usize) -> Result<crate::class_head::ClassHeadParts> {
        let flat = |t: &Tensor| -> Result<Vec<f32>> { Ok(t.flatten_all()?.to_vec1()?) };
        Ok(crate::class_head::ClassHeadParts {
            hook: crate::HookPoint::ResidPost(layers - 1),
            pool: glassbox_data::Pool::Cls,
            pooler: Some((flat(&self.pooler_weight)?, flat(&self.pooler_bias)?)),
            weight: flat(&self.weight)?,
            bias: flat(&self.bias)?,
        })
    }

    /// `[batch, seq, hidden]` last hidden states → `[batch, classes]` logits (differentiable).
    pub(crate) fn forward(&self, last: &Tensor) -> candle_core::Result<Tensor> {
        let cls = last.narrow(1, 0, 1)?.squeeze(1)?;
        let pooled = cls
            .matmul(&self.pooler_weight.t()?)?
            .broadcast_add(&self.pooler_bias)?
            .tanh()?;
        pooled.matmul(&self.weight.t()?)?.broadcast_add(&self.bias)
    }
}
