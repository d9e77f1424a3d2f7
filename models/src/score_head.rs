//! The `score` head of a decoder sequence classifier (`LlamaForSequenceClassification`,
//! `GPT2ForSequenceClassification`, … — `GenericForSequenceClassification` in
//! `transformers/modeling_layers.py`): one bias-free linear logit per class, read at each
//! sequence's last token after the final norm. Checkpoints without `score.weight` (causal LMs)
//! have none.

use crate::weights::Weights;
use crate::{ModelError, Result};
use candle_core::Tensor;
use std::path::Path;

/// A decoder's sequence-classification head (read by the registry, handed to the family with
/// [`crate::HookedModel::attach_score_head`]).
pub struct ScoreHead {
    /// `[classes, hidden]`.
    weight: Tensor,
    /// Class names, index = logit: `id2label`, else `LABEL_0`, ….
    labels: Vec<String>,
}

impl ScoreHead {
    /// The head when the checkpoint stores `score.weight` beside the base model, else `None`
    /// (also for a token classifier's `score`, see [`crate::class_head::unread_task_head`]).
    /// `config` is the checkpoint's `config.json` (for `id2label`).
    pub(crate) fn load(
        path: &Path,
        config: &serde_json::Value,
        w: &Weights,
    ) -> Result<Option<Self>> {
        let Some(&[rows, hidden]) = w.tensor("score.weight").map(|t| t.dims()) else {
            return Ok(None);
        };
        if crate::class_head::unread_task_head(config, w).is_some() {
            return Ok(None);
        }
        let labels = crate::class_head::head_labels(path, config, "score.weight", rows)?;
        let weight = w
            .get_root("score.weight", &[rows, hidden])?
            .expect("present: its shape was just read");
        Ok(Some(Self { weight, labels }))
    }

    /// The head as numbers: the final norm's output at the last token, then `score`.
    pub(crate) fn parts(&self) -> Result<crate::class_head::ClassHeadParts> {
        let rows = self.weight.dim(0)?;
        Ok(crate::class_head::ClassHeadParts {
            hook: crate::HookPoint::LnFinal,
            pool: glassbox_data::Pool::Last,
            pooler: None,
            weight: self.weight.flatten_all()?.to_vec1()?,
            bias: vec![0.0; rows],
        })
    }

    /// Class names, index = logit.
    pub(crate) fn labels(&self) -> &[String] {
        &self.labels
    }

    /// `[batch, seq, hidden]` final-norm states → `[batch, classes]` logits at each sequence's
    /// last real token (`lengths`), differentiably.
    pub(crate) fn forward(&self, normed: &Tensor, lengths: &[usize]) -> Result<Tensor> {
        let (b, t, _) = normed.dims3()?;
        if lengths.len() != b || lengths.iter().any(|&n| n == 0 || n > t) {
            return Err(ModelError::Invalid(format!(
                "sequence lengths {lengths:?} do not fit a batch of {b} × {t} tokens"
            )));
        }
        let last: Vec<Tensor> = lengths
            .iter()
            .enumerate()
            .map(|(i, &n)| normed.get(i)?.get(n - 1))
            .collect::<candle_core::Result<_>>()?;
        Ok(Tensor::stack(&last, 0)?.matmul(&self.weight.t()?)?)
    }
}

/// A decoder's hooks without `logits` when it has no language-model head: a sequence
/// classifier (vocabulary logits would come from the tied embedding, not from the model) or a
/// base checkpoint saved without its head.
pub(crate) fn hooks_of(
    mut points: Vec<crate::HookPoint>,
    has_lm_head: bool,
) -> Vec<crate::HookPoint> {
    if !has_lm_head {
        points.retain(|p| *p != crate::HookPoint::Logits);
    }
    points
}

/// The `HookedModel` methods of a decoder that may carry a [`ScoreHead`] in a `score` field:
/// its classes, its logits, its head as numbers, and taking the head from the registry (or
/// dropping its LM head, an `Option` in an `unembed` field).
macro_rules! score_head_methods {
    () => {
        fn labels(&self) -> &[String] {
            self.score.as_ref().map_or(&[], |h| h.labels())
        }

        fn classify(&self, last_hidden: &Tensor, lengths: &[usize]) -> Option<Result<Tensor>> {
            Some(self.score.as_ref()?.forward(last_hidden, lengths))
        }

        fn class_head_parts(&self) -> Option<Result<crate::class_head::ClassHeadParts>> {
            Some(self.score.as_ref()?.parts())
        }

        fn attach_score_head(&mut self, head: crate::score_head::ScoreHead) -> bool {
            self.score = Some(head);
            true
        }

        fn drop_lm_head(&mut self) {
            self.unembed = None;
        }
    };
}
pub(crate) use score_head_methods;
