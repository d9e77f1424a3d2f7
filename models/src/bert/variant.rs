//! The post-LayerNorm encoders that share BERT's block: BERT itself, RoBERTa (and XLM-RoBERTa,
//! CamemBERT) and DistilBERT. What differs is naming and the embeddings, not the arithmetic:
//!
//! - RoBERTa (`transformers/models/roberta/modeling_roberta.py`): position ids start after the
//!   padding index (`create_position_ids_from_input_ids`: `padding_idx` + the count of non-pad
//!   tokens so far; a pad token gets `padding_idx`), so `max_position_embeddings − padding_idx
//!   − 1` tokens fit; one token type, always 0 (the tokenizer's type ids are not model inputs);
//!   the classifier is `classifier.dense` → `tanh` → `classifier.out_proj` on `<s>`.
//! - DistilBERT (`transformers/models/distilbert/modeling_distilbert.py`): `dim`, `n_layers`,
//!   `n_heads`, `hidden_dim`, `activation` in its config; `transformer.layer.{i}` with `q_lin`,
//!   `k_lin`, `v_lin`, `out_lin`, `sa_layer_norm`, `ffn.lin1`, `ffn.lin2`,
//!   `output_layer_norm`; no token types (a zero row here, so the sums are BERT's); LayerNorm
//!   ε fixed at 1e-12; the classifier is `pre_classifier` → ReLU → `classifier` on `[CLS]`.
//! - ELECTRA (`transformers/models/electra/modeling_electra.py`; the discriminators, as
//!   `ElectraModel`, `ElectraForPreTraining` — its per-token discriminator head left unread —
//!   or `ElectraForSequenceClassification`): BERT's embeddings and block under `electra.`, no
//!   pooler; the classifier is `classifier.dense` → GELU → `classifier.out_proj` on `[CLS]`.
//!   Embeddings narrower than the stream (`embedding_size` < `hidden_size`: ELECTRA-small and
//!   the generators, with `embeddings_project`) are refused by name.

use crate::batch::TokenBatch;
use crate::class_head::PoolerAct;
use crate::{ModelError, Result};
use std::path::Path;

/// Which of the BERT-block encoders a checkpoint is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Variant {
    #[default]
    Bert,
    Roberta,
    DistilBert,
    Electra,
}

/// The `model_type`s that load as [`Variant`]s.
pub const MODEL_TYPES: &[&str] = &[
    "bert",
    "roberta",
    "xlm-roberta",
    "camembert",
    "distilbert",
    "electra",
];

/// One block's weight names (without `.weight` / `.bias`).
pub(crate) struct BlockNames {
    pub(crate) query: String,
    pub(crate) key: String,
    pub(crate) value: String,
    pub(crate) attn_output: String,
    pub(crate) attn_norm: String,
    pub(crate) intermediate: String,
    pub(crate) output: String,
    pub(crate) output_norm: String,
}

/// Where a sequence classifier's head lives (both at the checkpoint's root unless said), and
/// its activation.
pub(crate) struct HeadNames {
    /// The dense layer on the first token (BERT's pooler).
    pub(crate) dense: &'static str,
    /// Whether `dense` sits under the encoder's prefix (`bert.pooler.dense`).
    pub(crate) dense_prefixed: bool,
    /// The per-class layer; its presence marks a classifier.
    pub(crate) out: &'static str,
    pub(crate) act: PoolerAct,
}

impl Variant {
    /// The variant of a `model_type`, `None` for other families.
    pub fn of(model_type: &str) -> Option<Self> {
        match model_type {
            "bert" => Some(Variant::Bert),
            "roberta" | "xlm-roberta" | "camembert" => Some(Variant::Roberta),
            "distilbert" => Some(Variant::DistilBert),
            "electra" => Some(Variant::Electra),
            _ => None,
        }
    }

    pub fn family(self) -> &'static str {
        match self {
            Variant::Bert => "bert",
            Variant::Roberta => "roberta",
            Variant::DistilBert => "distilbert",
            Variant::Electra => "electra",
        }
    }

    /// Prefixes the encoder's tensors may sit under (a task model's, or none).
    pub fn prefixes(self) -> &'static [&'static str] {
        match self {
            Variant::Bert => &["", "bert.", "model."],
            Variant::Roberta => &["", "roberta.", "model."],
            Variant::DistilBert => &["", "distilbert.", "model."],
            Variant::Electra => &["", "electra.", "model."],
        }
    }

    /// Whether the model has a token-type table and hook (DistilBERT has neither).
    pub fn has_token_types(self) -> bool {
        self != Variant::DistilBert
    }

    pub(crate) fn block_names(self, i: usize) -> BlockNames {
        match self {
            Variant::Bert | Variant::Roberta | Variant::Electra => {
                let p = format!("encoder.layer.{i}");
                BlockNames {
                    query: format!("{p}.attention.self.query"),
                    key: format!("{p}.attention.self.key"),
                    value: format!("{p}.attention.self.value"),
                    attn_output: format!("{p}.attention.output.dense"),
                    attn_norm: format!("{p}.attention.output.LayerNorm"),
                    intermediate: format!("{p}.intermediate.dense"),
                    output: format!("{p}.output.dense"),
                    output_norm: format!("{p}.output.LayerNorm"),
                }
            }
            Variant::DistilBert => {
                let p = format!("transformer.layer.{i}");
                BlockNames {
                    query: format!("{p}.attention.q_lin"),
                    key: format!("{p}.attention.k_lin"),
                    value: format!("{p}.attention.v_lin"),
                    attn_output: format!("{p}.attention.out_lin"),
                    attn_norm: format!("{p}.sa_layer_norm"),
                    intermediate: format!("{p}.ffn.lin1"),
                    output: format!("{p}.ffn.lin2"),
                    output_norm: format!("{p}.output_layer_norm"),
                }
            }
        }
    }

    pub(crate) fn head_names(self) -> HeadNames {
        match self {
            Variant::Bert => HeadNames {
                dense: "pooler.dense",
                dense_prefixed: true,
                out: "classifier",
                act: PoolerAct::Tanh,
            },
            Variant::Roberta => HeadNames {
                dense: "classifier.dense",
                dense_prefixed: false,
                out: "classifier.out_proj",
                act: PoolerAct::Tanh,
            },
            Variant::DistilBert => HeadNames {
                dense: "pre_classifier",
                dense_prefixed: false,
                out: "classifier",
                act: PoolerAct::Relu,
            },
            Variant::Electra => HeadNames {
                dense: "classifier.dense",
                dense_prefixed: false,
                out: "classifier.out_proj",
                act: PoolerAct::Gelu,
            },
        }
    }

    /// DistilBERT's config keys renamed to BERT's (`dim` → `hidden_size`, …), with its fixed
    /// LayerNorm ε and one (zero) token type; other variants unchanged.
    pub(crate) fn bert_config(
        self,
        path: &Path,
        mut value: serde_json::Value,
    ) -> Result<serde_json::Value> {
        if self == Variant::Electra {
            let width = |k: &str| value.get(k).and_then(|v| v.as_u64());
            if let (Some(e), Some(h)) = (width("embedding_size"), width("hidden_size")) {
                if e != h {
                    return Err(ModelError::Config {
                        path: path.to_path_buf(),
                        message: format!(
                            "embedding_size {e} differs from hidden_size {h} (ELECTRA-small and the generators project their embeddings up with embeddings_project), which is not supported; the ELECTRA discriminators with equal widths (base, large) are"
                        ),
                    });
                }
            }
        }
        if self != Variant::DistilBert {
            return Ok(value);
        }
        let obj = value.as_object_mut().ok_or_else(|| ModelError::Config {
            path: path.to_path_buf(),
            message: "config.json is not a JSON object".into(),
        })?;
        for (theirs, ours) in [
            ("dim", "hidden_size"),
            ("n_layers", "num_hidden_layers"),
            ("n_heads", "num_attention_heads"),
            ("hidden_dim", "intermediate_size"),
            ("activation", "hidden_act"),
        ] {
            if let Some(v) = obj.remove(theirs) {
                obj.entry(ours).or_insert(v);
            }
        }
        obj.insert("type_vocab_size".into(), 1.into());
        obj.insert("layer_norm_eps".into(), 1e-12.into());
        Ok(value)
    }

    /// Position rows per token: BERT's and DistilBERT's count from 0; RoBERTa's from
    /// `pad + 1`, counting non-pad tokens (a pad token, or a slot past the text, gets `pad`).
    /// `[batch][seq]`, as the batch is padded.
    pub(crate) fn position_ids(self, batch: &TokenBatch, pad: u32) -> Result<Vec<Vec<u32>>> {
        let ids = batch.input_ids.to_vec2::<u32>()?;
        Ok(ids
            .iter()
            .zip(&batch.lengths)
            .map(|(row, &n)| match self {
                Variant::Bert | Variant::DistilBert | Variant::Electra => {
                    (0..row.len() as u32).collect()
                }
                Variant::Roberta => roberta_positions(row, n, pad),
            })
            .collect())
    }

    /// Token-type rows per token: the tokenizer's for BERT, 0 otherwise (RoBERTa's model reads
    /// no type ids; DistilBERT's zero row). `[batch][seq]`.
    pub(crate) fn type_ids(self, batch: &TokenBatch) -> Result<Vec<Vec<u32>>> {
        let types = batch.type_ids.to_vec2::<u32>()?;
        Ok(match self {
            Variant::Bert | Variant::Electra => types,
            _ => types.iter().map(|r| vec![0; r.len()]).collect(),
        })
    }

    /// Position rows used before the first token's (RoBERTa: `pad + 1`), i.e. how many fewer
    /// tokens than `max_position_embeddings` fit.
    pub(crate) fn reserved_positions(self, pad: u32) -> usize {
        match self {
            Variant::Roberta => pad as usize + 1,
            _ => 0,
        }
    }
}

/// RoBERTa's position rows for one padded row of ids with `n` real tokens.
fn roberta_positions(row: &[u32], n: usize, pad: u32) -> Vec<u32> {
    let mut seen = 0;
    row.iter()
        .enumerate()
        .map(|(p, &id)| {
            if p < n && id != pad {
                seen += 1;
                pad + seen
            } else {
                pad
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roberta_positions_count_real_tokens_after_the_pad_row() {
        // pad = 1: the first token's row is 2; a pad id inside the text and the padded tail
        // take row 1 and do not advance the count (create_position_ids_from_input_ids).
        assert_eq!(
            roberta_positions(&[0, 7, 1, 9, 2, 1, 1], 5, 1),
            [2, 3, 1, 4, 5, 1, 1]
        );
        assert_eq!(Variant::Roberta.reserved_positions(1), 2);
        assert_eq!(Variant::Bert.reserved_positions(1), 0);
    }

    #[test]
    fn electra_with_projected_embeddings_is_refused_by_name() {
        let path = Path::new("config.json");
        let small = serde_json::json!({
            "vocab_size": 10, "embedding_size": 4, "hidden_size": 8, "num_hidden_layers": 1,
            "num_attention_heads": 2, "intermediate_size": 16, "max_position_embeddings": 16,
        });
        let e = super::super::BertConfig::from_json_as(path, small.clone(), Variant::Electra)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("embedding_size 4") && e.contains("embeddings_project"),
            "{e}"
        );
        let mut base = small;
        base["embedding_size"] = 8.into();
        super::super::BertConfig::from_json_as(path, base, Variant::Electra).unwrap();
    }

    #[test]
    fn distilbert_configs_read_as_bert_ones() {
        let path = Path::new("config.json");
        let value = serde_json::json!({
            "dim": 32, "n_layers": 2, "n_heads": 4, "hidden_dim": 64, "activation": "gelu",
            "vocab_size": 10, "max_position_embeddings": 16,
        });
        let cfg = super::super::BertConfig::from_json_as(path, value, Variant::DistilBert).unwrap();
        assert_eq!(
            (
                cfg.hidden_size,
                cfg.num_hidden_layers,
                cfg.num_attention_heads
            ),
            (32, 2, 4)
        );
        assert_eq!((cfg.intermediate_size, cfg.type_vocab_size), (64, 1));
        assert_eq!((cfg.layer_norm_eps, cfg.max_tokens()), (1e-12, 16));
        // RoBERTa's first token row is pad + 1: a table of pad + 1 rows fits nothing.
        let value = serde_json::json!({
            "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
            "intermediate_size": 16, "vocab_size": 10, "max_position_embeddings": 2,
            "pad_token_id": 1,
        });
        let e = super::super::BertConfig::from_json_as(path, value, Variant::Roberta)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("max_position_embeddings 2") && e.contains("pad_token_id + 1"),
            "{e}"
        );
    }
}
