//! What every classifier head shares, text or vision: its class names as `transformers`
//! configs give them (`id2label`, `num_labels`, else the head's rows, named as `transformers`
//! names unnamed classes), and a text classifier's head as plain numbers for targets that read
//! it off a hook ([`ClassHeadParts`]).

use crate::{HookPoint, ModelError, Result};
use std::path::Path;

/// The classifier's classes a `transformers` config names: `id2label`'s entries, else
/// `num_labels`, else none said. transformers 5 leaves both out of `config.json` when they are
/// its defaults (two classes), so a checkpoint can carry a classifier
/// its config does not mention: [`classes_from_weight`] then reads the count off the weight.
pub(crate) fn config_classes(v: &serde_json::Value) -> usize {
    match v.get("id2label").and_then(|m| m.as_object()) {
        Some(map) => map.len(),
        None => v.get("num_labels").and_then(|n| n.as_u64()).unwrap_or(0) as usize,
    }
}

/// With no classes in the config, the classifier weight's rows (`[classes, width]`) when the
/// checkpoint has one, named `LABEL_0`, … as [`id2label`] names classes a config leaves
/// unnamed.
pub(crate) fn classes_from_weight(
    w: &crate::weights::Weights,
    weight: &str,
    (classes, labels): (&mut usize, &mut Vec<String>),
) {
    if *classes > 0 {
        return;
    }
    if let Some(&rows) = w.tensor(weight).and_then(|t| t.dims().first()) {
        *classes = rows;
        *labels = (0..rows).map(unnamed_class).collect();
    }
}

/// The name `transformers` gives class `i` when `id2label` does not name it (its default
/// `id2label`), so `class:` targets use the names a user sees in `model.config.id2label`.
fn unnamed_class(i: usize) -> String {
    format!("LABEL_{i}")
}

/// Class names from `id2label` (`{"0": "tench", …}`), or `LABEL_{i}` where it names none.
pub(crate) fn id2label(path: &Path, v: &serde_json::Value, n: usize) -> Result<Vec<String>> {
    let mut labels: Vec<String> = (0..n).map(unnamed_class).collect();
    if let Some(map) = v.get("id2label").and_then(|m| m.as_object()) {
        for (k, name) in map {
            let i: usize = k.parse().map_err(|_| ModelError::Config {
                path: path.to_path_buf(),
                message: format!("id2label key `{k}` is not a class index"),
            })?;
            let slot = labels.get_mut(i).ok_or_else(|| ModelError::Config {
                path: path.to_path_buf(),
                message: format!("id2label has class {i} but the model has {n} classes"),
            })?;
            *slot = name.as_str().unwrap_or_default().to_owned();
        }
    }
    Ok(labels)
}

/// The class names of a text classifier's head whose weight `tensor` has `rows` rows: the
/// config's `id2label`, checked against the rows where the config says how many classes.
pub(crate) fn head_labels(
    path: &Path,
    config: &serde_json::Value,
    tensor: &str,
    rows: usize,
) -> Result<Vec<String>> {
    let said = config_classes(config);
    if said > 0 && said != rows {
        return Err(ModelError::Config {
            path: path.to_path_buf(),
            message: format!(
                "the config names {said} classes (id2label/num_labels) but {tensor} has {rows} rows"
            ),
        });
    }
    id2label(path, config, rows)
}

/// A text classifier's class head read off one hook: pool `hook` over each sequence (`pool`),
/// apply the pooler where there is one (BERT's and RoBERTa's `tanh` layer, DistilBERT's ReLU
/// one), then `weight · x + bias`.
#[derive(Debug, Clone)]
pub struct ClassHeadParts {
    /// The hook the head reads.
    pub hook: HookPoint,
    /// How the head pools it over a sequence (`[CLS]`, or the last token).
    pub pool: glassbox_data::Pool,
    pub pooler: Option<Pooler>,
    /// `[classes × width]`, row-major.
    pub weight: Vec<f32>,
    /// One per class.
    pub bias: Vec<f32>,
}

/// The activation after a classifier's dense layer on the first token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolerAct {
    /// BERT's pooler, RoBERTa's classification head.
    Tanh,
    /// DistilBERT's `pre_classifier`.
    Relu,
    /// ELECTRA's classification head (exact, erf GELU).
    Gelu,
}

impl PoolerAct {
    /// The activation on a tensor (differentiable).
    pub fn apply(self, x: &candle_core::Tensor) -> candle_core::Result<candle_core::Tensor> {
        match self {
            PoolerAct::Tanh => x.tanh(),
            PoolerAct::Relu => x.relu(),
            PoolerAct::Gelu => x.gelu_erf(),
        }
    }
}

/// `act(W · x + b)` between the pooled activation and a class head.
#[derive(Debug, Clone)]
pub struct Pooler {
    /// `width × width`, row-major (`[out, in]`, as `nn.Linear` stores it).
    pub weight: Vec<f32>,
    /// One bias per output.
    pub bias: Vec<f32>,
    pub act: PoolerAct,
}

/// Heads named in `architectures` whose outputs are per token, not one per text.
const PER_TOKEN_HEADS: [&str; 2] = ["ForTokenClassification", "ForQuestionAnswering"];

/// The task head of a checkpoint that glassbox does not read, described for a note: a token
/// classifier or a span (question-answering) head (`BertForTokenClassification`,
/// `LlamaForQuestionAnswering`, …) gives outputs per token, not one per text, so such a
/// checkpoint loads as the model under its head — its hidden states — with no classes.
/// Without `architectures`, a decoder's `score` layer with a bias is a token classifier's
/// (`…ForSequenceClassification` builds it without one). `None` for every other checkpoint.
pub(crate) fn unread_task_head(
    config: &serde_json::Value,
    w: &crate::weights::Weights,
) -> Option<String> {
    let named = config
        .get("architectures")
        .and_then(|a| a.as_array())
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str())
        .find(|a| PER_TOKEN_HEADS.iter().any(|head| a.ends_with(head)));
    match named {
        Some(arch) => Some(format!("`{arch}`")),
        None => w
            .tensor("score.bias")
            .is_some()
            .then(|| "a token classifier (a `score` layer with a bias)".to_owned()),
    }
}
