//! Hook points: the TransformerLens names of the places inside a model where activations are
//! read or replaced, shared by every crate (the store, probes, reports and the models).
//!
//! A `HookPoint` is typed end to end: parsed once from the command line or a manifest,
//! written to Parquet as its canonical name, read back with [`FromStr`], which accepts only
//! the canonical spelling so the two round-trip exactly.

use crate::suggest::did_you_mean;
use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

/// A hook name that is not a hook point, or a selection that matched nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookError {
    /// The name is not a hook point (or no available point matches the pattern).
    #[error("unknown hook `{name}`{hint}; `glassbox hooks MODEL` lists the hook points")]
    Unknown {
        /// The name or pattern as given.
        name: String,
        /// " (did you mean `x`?)" when a close name exists, else empty.
        hint: String,
    },
    /// The patterns were all empty.
    #[error("no hooks selected; pass --hooks with at least one name or pattern")]
    NoneSelected,
}

type Result<T> = std::result::Result<T, HookError>;

/// A named point inside a model where activations can be read or replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HookPoint {
    /// Token embeddings, before positions are added.
    Embed,
    /// Position embeddings.
    PosEmbed,
    /// Token-type (segment) embeddings, BERT family.
    TokenTypeEmbed,
    /// The residual stream entering block `i`.
    ResidPre(usize),
    /// The residual stream between attention and MLP of block `i`.
    ResidMid(usize),
    /// The residual stream leaving block `i`.
    ResidPost(usize),
    /// Attention output (after the output projection, before the residual add).
    AttnOut(usize),
    /// MLP output (after the down projection, before the residual add).
    MlpOut(usize),
    /// MLP neurons: the activation function's output.
    MlpPost(usize),
    /// Queries, keys, values, per-head attention outputs; heads flattened into the width.
    AttnQ(usize),
    AttnK(usize),
    AttnV(usize),
    AttnZ(usize),
    /// Attention probabilities (decoders), `[batch, query, heads · keys]`: row `q` holds each
    /// head's distribution over the batch's key positions in turn. Its width depends on the
    /// batch's length, so it is for in-memory hooks (capture, patching), not the store.
    AttnPattern(usize),
    /// The final normalisation's output (decoder models).
    LnFinal,
    /// The unembedding's output `[batch, seq, vocab]` (decoder models), for the logit lens;
    /// a vision classifier's logits (one position).
    Logits,
    /// Vision: the stem's output, positions = feature-map pixels.
    Stem,
    /// Vision: a part of convolutional block `block` of stage `stage`.
    Conv {
        stage: u16,
        block: u16,
        part: ConvPart,
    },
    /// Vision: the convolutional head's output, before pooling.
    Head,
    /// Vision: globally average-pooled features (one position).
    Pooled,
    /// Image–text models: the unit-normalised image embedding in the space shared with text
    /// (one position), where text-defined concepts live.
    Embeds,
}

/// Where inside a convolutional (MBConv/bottleneck) block a hook sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConvPart {
    /// After the 1×1 expansion and its activation.
    Expand,
    /// After the depthwise convolution and its activation.
    Depthwise,
    /// The block's output, after the skip connection.
    Out,
}

impl ConvPart {
    fn name(self) -> &'static str {
        match self {
            ConvPart::Expand => "hook_expand",
            ConvPart::Depthwise => "hook_depthwise",
            ConvPart::Out => "hook_out",
        }
    }
}

impl HookPoint {
    /// The block index, for per-layer hooks.
    pub fn layer(&self) -> Option<usize> {
        use HookPoint::*;
        match *self {
            ResidPre(i) | ResidMid(i) | ResidPost(i) | AttnOut(i) | MlpOut(i) | MlpPost(i)
            | AttnQ(i) | AttnK(i) | AttnV(i) | AttnZ(i) | AttnPattern(i) => Some(i),
            Conv { stage, .. } => Some(stage as usize),
            Embed | PosEmbed | TokenTypeEmbed | LnFinal | Logits | Stem | Head | Pooled
            | Embeds => None,
        }
    }

    /// Whether the activation's width is fixed by the model (storable as Parquet rows); the
    /// attention pattern's depends on the batch's sequence length.
    pub fn storable(&self) -> bool {
        !matches!(self, HookPoint::AttnPattern(_))
    }

    /// The hook points of a decoder block `i`: a transformer block's plus the attention
    /// pattern, in forward order.
    pub fn decoder_block(i: usize) -> Vec<HookPoint> {
        let mut v = Self::block(i).to_vec();
        v.insert(4, HookPoint::AttnPattern(i));
        v
    }

    /// The hook points of block `i` of a transformer, in forward order.
    pub fn block(i: usize) -> [HookPoint; 10] {
        use HookPoint::*;
        [
            ResidPre(i),
            AttnQ(i),
            AttnK(i),
            AttnV(i),
            AttnZ(i),
            AttnOut(i),
            ResidMid(i),
            MlpPost(i),
            MlpOut(i),
            ResidPost(i),
        ]
    }

    /// Position in the residual stream, for plotting by depth: `hook_resid_pre` of block `i` is
    /// depth `i`, `hook_resid_post` of block `i` is depth `i + 1`.
    pub fn depth(&self) -> f64 {
        use HookPoint::*;
        match *self {
            Embed | PosEmbed | TokenTypeEmbed | Stem => 0.0,
            // Stage `s` spans depth (s, s + 1]; blocks in order inside it (stages have < 10).
            Conv { stage, block, part } => {
                stage as f64 + 0.1 * block as f64 + [0.03, 0.06, 0.09][part as usize]
            }
            Head => 1e5,
            Pooled => 1e5 + 0.5,
            Embeds => 1e6 + 0.5,
            ResidPre(i) => i as f64,
            AttnQ(i) | AttnK(i) | AttnV(i) => i as f64 + 0.2,
            AttnPattern(i) => i as f64 + 0.25,
            AttnZ(i) => i as f64 + 0.3,
            AttnOut(i) => i as f64 + 0.4,
            ResidMid(i) => i as f64 + 0.5,
            MlpPost(i) => i as f64 + 0.7,
            MlpOut(i) => i as f64 + 0.8,
            ResidPost(i) => i as f64 + 1.0,
            // After every block; a large finite value keeps JSON and Parquet happy.
            LnFinal => 1e6,
            Logits => 1e6 + 1.0,
        }
    }
}

impl fmt::Display for HookPoint {
    // Padded as a `str` is, so that `{:<w$}` lines hook names up in tables.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use HookPoint::*;
        let name = match self {
            Embed => "hook_embed".to_owned(),
            PosEmbed => "hook_pos_embed".to_owned(),
            TokenTypeEmbed => "hook_token_type_embed".to_owned(),
            ResidPre(i) => format!("blocks.{i}.hook_resid_pre"),
            ResidMid(i) => format!("blocks.{i}.hook_resid_mid"),
            ResidPost(i) => format!("blocks.{i}.hook_resid_post"),
            AttnOut(i) => format!("blocks.{i}.hook_attn_out"),
            MlpOut(i) => format!("blocks.{i}.hook_mlp_out"),
            MlpPost(i) => format!("blocks.{i}.mlp.hook_post"),
            AttnQ(i) => format!("blocks.{i}.attn.hook_q"),
            AttnK(i) => format!("blocks.{i}.attn.hook_k"),
            AttnV(i) => format!("blocks.{i}.attn.hook_v"),
            AttnZ(i) => format!("blocks.{i}.attn.hook_z"),
            AttnPattern(i) => format!("blocks.{i}.attn.hook_pattern"),
            LnFinal => "ln_final.hook_normalized".to_owned(),
            Logits => "logits".to_owned(),
            Stem => "hook_stem".to_owned(),
            Conv { stage, block, part } => {
                format!("stages.{stage}.blocks.{block}.{}", part.name())
            }
            Head => "hook_head".to_owned(),
            Pooled => "hook_pooled".to_owned(),
            Embeds => "hook_embeds".to_owned(),
        };
        f.pad(&name)
    }
}

impl FromStr for HookPoint {
    type Err = HookError;

    fn from_str(s: &str) -> Result<Self> {
        use HookPoint::*;
        let unknown = || HookError::Unknown {
            name: s.to_owned(),
            hint: did_you_mean(s, EXAMPLE_NAMES.iter().copied()),
        };
        match s {
            "hook_embed" => return Ok(Embed),
            "hook_pos_embed" => return Ok(PosEmbed),
            "hook_token_type_embed" => return Ok(TokenTypeEmbed),
            "ln_final.hook_normalized" => return Ok(LnFinal),
            "logits" => return Ok(Logits),
            "hook_stem" => return Ok(Stem),
            "hook_head" => return Ok(Head),
            "hook_pooled" => return Ok(Pooled),
            "hook_embeds" => return Ok(Embeds),
            _ => {}
        }
        if let Some(rest) = s.strip_prefix("stages.") {
            let mut parts = rest.splitn(4, '.');
            let (stage, word, block, name) =
                (parts.next(), parts.next(), parts.next(), parts.next());
            let index = |t: Option<&str>| -> Option<u16> {
                let t = t?;
                let canonical = !t.is_empty()
                    && t.bytes().all(|b| b.is_ascii_digit())
                    && !(t.len() > 1 && t.starts_with('0'));
                canonical.then(|| t.parse().ok()).flatten()
            };
            let part = match name {
                Some("hook_expand") => Some(ConvPart::Expand),
                Some("hook_depthwise") => Some(ConvPart::Depthwise),
                Some("hook_out") => Some(ConvPart::Out),
                _ => None,
            };
            return match (index(stage), word, index(block), part) {
                (Some(stage), Some("blocks"), Some(block), Some(part)) => {
                    Ok(Conv { stage, block, part })
                }
                _ => Err(unknown()),
            };
        }
        let rest = s.strip_prefix("blocks.").ok_or_else(unknown)?;
        let (index, name) = rest.split_once('.').ok_or_else(unknown)?;
        // Reject "+1", "01" and the like so Display/FromStr round-trip exactly.
        let digits = !index.is_empty() && index.bytes().all(|b| b.is_ascii_digit());
        if !digits || (index.len() > 1 && index.starts_with('0')) {
            return Err(unknown());
        }
        let i: usize = index.parse().map_err(|_| unknown())?;
        Ok(match name {
            "hook_resid_pre" => ResidPre(i),
            "hook_resid_mid" => ResidMid(i),
            "hook_resid_post" => ResidPost(i),
            "hook_attn_out" => AttnOut(i),
            "hook_mlp_out" => MlpOut(i),
            "mlp.hook_post" => MlpPost(i),
            "attn.hook_q" => AttnQ(i),
            "attn.hook_k" => AttnK(i),
            "attn.hook_v" => AttnV(i),
            "attn.hook_z" => AttnZ(i),
            "attn.hook_pattern" => AttnPattern(i),
            _ => return Err(unknown()),
        })
    }
}

/// Names used for did-you-mean hints when parsing a hook without a model at hand.
const EXAMPLE_NAMES: &[&str] = &[
    "hook_embed",
    "hook_pos_embed",
    "hook_token_type_embed",
    "ln_final.hook_normalized",
    "blocks.0.hook_resid_pre",
    "blocks.0.hook_resid_mid",
    "blocks.0.hook_resid_post",
    "blocks.0.hook_attn_out",
    "blocks.0.hook_mlp_out",
    "blocks.0.mlp.hook_post",
    "blocks.0.attn.hook_q",
    "blocks.0.attn.hook_k",
    "blocks.0.attn.hook_v",
    "blocks.0.attn.hook_z",
    "blocks.0.attn.hook_pattern",
    "logits",
    "hook_stem",
    "stages.0.blocks.0.hook_expand",
    "stages.0.blocks.0.hook_depthwise",
    "stages.0.blocks.0.hook_out",
    "hook_head",
    "hook_pooled",
    "hook_embeds",
];

/// Selects hook points by comma-separated glob patterns (`*` matches any run of characters,
/// `?` one character). Every pattern must match at least one of `available`; the result keeps
/// `available`'s order and has no duplicates.
pub fn select(patterns: &[String], available: &[HookPoint]) -> Result<Vec<HookPoint>> {
    let names: Vec<String> = available.iter().map(ToString::to_string).collect();
    let mut chosen = BTreeSet::new();
    for pattern in patterns.iter().flat_map(|p| p.split(',')).map(str::trim) {
        if pattern.is_empty() {
            continue;
        }
        let mut matched = false;
        for (i, name) in names.iter().enumerate() {
            if glob_match(pattern, name) {
                chosen.insert(i);
                matched = true;
            }
        }
        if !matched {
            return Err(HookError::Unknown {
                name: pattern.to_owned(),
                hint: unmatched_hint(pattern, available, &names),
            });
        }
    }
    if chosen.is_empty() {
        return Err(HookError::NoneSelected);
    }
    Ok(chosen.into_iter().map(|i| available[i]).collect())
}

/// Why `pattern` matched none of a model's hooks: a block the model does not have (a
/// did-you-mean would offer `blocks.1` for `blocks.12` of a 6-block model), a near name, or
/// else what the model's names look like (a text model's name asked of a CNN).
fn unmatched_hint(pattern: &str, available: &[HookPoint], names: &[String]) -> String {
    if let (Ok(asked), Some(blocks)) = (pattern.parse::<HookPoint>(), block_count(available)) {
        if block_of(&asked).is_some_and(|l| l >= blocks) {
            return block_range(available);
        }
    }
    let near = did_you_mean(pattern, names.iter().map(String::as_str));
    if !near.is_empty() || names.is_empty() {
        return near;
    }
    let shown: Vec<&str> = match names {
        [a, b, c, .., last] => vec![a, b, c, "…", last],
        all => all.iter().map(String::as_str).collect(),
    };
    format!(
        " (this model's {} hooks look like {})",
        names.len(),
        shown
            .iter()
            .map(|n| if *n == "…" {
                "…".to_owned()
            } else {
                format!("`{n}`")
            })
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// The transformer block a hook sits in (`None` outside blocks, and for CNN stages).
fn block_of(hook: &HookPoint) -> Option<usize> {
    match hook {
        HookPoint::Conv { .. } => None,
        other => other.layer(),
    }
}

/// How many transformer blocks `hooks` span (`None`: no block hooks).
fn block_count(hooks: &[HookPoint]) -> Option<usize> {
    hooks.iter().filter_map(block_of).max().map(|l| l + 1)
}

/// " (the model has N blocks, blocks.0 to blocks.N−1)" for a message about a block the model
/// lacks, from its hooks; empty when they have no blocks.
pub fn block_range(hooks: &[HookPoint]) -> String {
    block_count(hooks)
        .map(|n| format!(" (the model has {n} blocks, blocks.0 to blocks.{})", n - 1))
        .unwrap_or_default()
}

/// The hooks' names joined by ", " (for messages).
pub fn join(hooks: &[HookPoint]) -> String {
    hooks
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Glob matching with `*` (any run, including empty) and `?` (exactly one character).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

impl serde::Serialize for HookPoint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for HookPoint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unmatched_hook_says_what_the_model_has() {
        let text: Vec<HookPoint> = (0..6).map(HookPoint::ResidPost).collect();
        let hint = |p: &str, hooks: &[HookPoint]| match select(&[p.to_owned()], hooks) {
            Err(HookError::Unknown { hint, .. }) => hint,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            hint("blocks.12.hook_resid_post", &text),
            " (the model has 6 blocks, blocks.0 to blocks.5)"
        );
        assert_eq!(
            hint("blocks.0.hook_resid_pots", &text),
            " (did you mean `blocks.0.hook_resid_post`?)"
        );
        let cnn: Vec<HookPoint> = [HookPoint::Stem, HookPoint::Head]
            .into_iter()
            .chain((0..3).map(|stage| HookPoint::Conv {
                stage,
                block: 0,
                part: ConvPart::Out,
            }))
            .collect();
        assert_eq!(
            hint("blocks.3.hook_resid_post", &cnn),
            " (this model's 5 hooks look like `hook_stem`, `hook_head`, `stages.0.blocks.0.hook_out`, …, `stages.2.blocks.0.hook_out`)"
        );
    }

    fn all_points(layers: usize) -> Vec<HookPoint> {
        use HookPoint::*;
        let mut v = vec![Embed, PosEmbed, TokenTypeEmbed];
        for i in 0..layers {
            v.extend(HookPoint::block(i));
        }
        v.push(LnFinal);
        v.extend([Stem, Head, Pooled, Logits, Embeds]);
        for part in [ConvPart::Expand, ConvPart::Depthwise, ConvPart::Out] {
            v.push(Conv {
                stage: 3,
                block: 12,
                part,
            });
        }
        v
    }

    #[test]
    fn display_from_str_round_trip() {
        for p in all_points(12) {
            let s = p.to_string();
            assert_eq!(s.parse::<HookPoint>().unwrap(), p, "{s}");
            // Widths pad like a string's (tables line hooks up with `{:<w$}`).
            assert_eq!(format!("{p:<40}|"), format!("{s:<40}|"));
        }
    }

    #[test]
    fn non_canonical_names_are_rejected() {
        for bad in [
            "blocks.01.hook_resid_post",
            "blocks.+1.hook_resid_post",
            "blocks..hook_resid_post",
            "resid_post",
            "stages.01.blocks.0.hook_out",
            "stages.1.blocks.0.hook_in",
            "stages.1.block.0.hook_out",
        ] {
            assert!(bad.parse::<HookPoint>().is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_name_suggests_the_closest() {
        let err = "blocks.0.hook_resid_pots"
            .parse::<HookPoint>()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("did you mean `blocks.0.hook_resid_post`"),
            "{err}"
        );
    }

    #[test]
    fn glob_selection() {
        let pts = all_points(3);
        let sel = select(&["blocks.*.hook_resid_post".into()], &pts).unwrap();
        assert_eq!(
            sel,
            vec![
                HookPoint::ResidPost(0),
                HookPoint::ResidPost(1),
                HookPoint::ResidPost(2)
            ]
        );
        let sel = select(
            &["blocks.0.hook_resid_pre,blocks.?.hook_resid_post".into()],
            &pts,
        )
        .unwrap();
        assert_eq!(sel.len(), 4);
        assert_eq!(sel[0], HookPoint::ResidPre(0));
        let err = select(&["blocks.*.hook_resid_psot".into()], &pts)
            .unwrap_err()
            .to_string();
        assert!(err.contains("did you mean"), "{err}");
        assert!(select(&["blocks.9.hook_resid_post".into()], &pts).is_err());
    }

    #[test]
    fn serde_uses_the_canonical_name() {
        let p = HookPoint::ResidPost(3);
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(json, "\"blocks.3.hook_resid_post\"");
        assert_eq!(serde_json::from_str::<HookPoint>(&json).unwrap(), p);
        assert!(serde_json::from_str::<HookPoint>("\"blocks.3.resid\"").is_err());
    }

    #[test]
    fn glob_edge_cases() {
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b", "aXXc"));
        assert!(glob_match("blocks.1?.hook_*", "blocks.10.hook_mlp_out"));
        assert!(!glob_match("blocks.1?.hook_*", "blocks.1.hook_mlp_out"));
    }
}
