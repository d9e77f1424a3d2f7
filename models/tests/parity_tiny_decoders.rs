//! Parity of the hookable decoders with PyTorch `transformers` on tiny random checkpoints with a
//! byte-level BPE tokenizer (committed fixtures): GPT-2 (`scripts/reference_tiny_gpt2.py`),
//! Llama with grouped-query attention, llama3 RoPE scaling and tied embeddings and Qwen2 with
//! q/k/v biases and an untied head (`scripts/reference_tiny_llama.py`), GPT-NeoX, and the
//! families of `scripts/reference_tiny_families.py`. Token ids, `hidden_states`, the last
//! block's output and the logits, one text at a time and as one right-padded batch
//! (`decoder_parity`); then hook listing, replacement and sliding windows.

mod decoder_parity;

use candle_core::Tensor;
use decoder_parity::*;
use glassbox_models::{Capture, HookPoint, TokenBatch};

#[test]
fn gpt2_matches_transformers_one_text_at_a_time() {
    one_at_a_time("tiny_gpt2", "gpt2");
}

#[test]
fn gpt2_matches_transformers_in_a_padded_batch() {
    padded_batch("tiny_gpt2");
}

/// GPT-2's other options: an untied `lm_head`, scores scaled by 1/(layer + 1), an explicit
/// `n_inner`, a ReLU MLP.
#[test]
fn gpt2_with_an_untied_head_and_layer_scaled_scores_matches_transformers() {
    one_at_a_time("tiny_gpt2_options", "gpt2");
    padded_batch("tiny_gpt2_options");
}

#[test]
fn llama_matches_transformers_one_text_at_a_time() {
    one_at_a_time("tiny_llama", "llama");
}

#[test]
fn llama_matches_transformers_in_a_padded_batch() {
    padded_batch("tiny_llama");
}

#[test]
fn qwen2_with_biases_and_an_untied_head_matches_transformers() {
    one_at_a_time("tiny_qwen2", "llama");
    padded_batch("tiny_qwen2");
}

#[test]
fn neox_with_parallel_blocks_and_partial_rotary_matches_transformers() {
    one_at_a_time("tiny_neox", "gpt_neox");
    padded_batch("tiny_neox");
}

/// GPT-NeoX's other options: sequential blocks, no attention biases, rotary over the whole head,
/// tied unembedding.
#[test]
fn neox_sequential_without_attention_biases_matches_transformers() {
    one_at_a_time("tiny_neox_sequential", "gpt_neox");
    padded_batch("tiny_neox_sequential");
}

/// Gemma-2: sandwich norms (1 + w), √d embeddings, query_pre_attn_scalar, attention and final
/// soft-capping, a sliding window of 4 on layer 0 (every text is longer).
#[test]
fn gemma2_matches_transformers() {
    one_at_a_time("tiny_gemma2", "gemma2");
    padded_batch("tiny_gemma2");
}

/// Gemma-3: per-head q/k norms and local/global rotary bases over sliding and global layers; the
/// config's attention soft-cap is ignored, as `transformers` ignores it.
#[test]
fn gemma3_matches_transformers() {
    one_at_a_time("tiny_gemma3", "gemma3_text");
    padded_batch("tiny_gemma3");
}

/// Qwen3: per-head q/k norms, no biases, head_dim ≠ hidden / heads, an untied head.
#[test]
fn qwen3_matches_transformers() {
    one_at_a_time("tiny_qwen3", "qwen3");
    padded_batch("tiny_qwen3");
}

/// OLMo-2: post-norm blocks and q/k norms over the whole projections.
#[test]
fn olmo2_matches_transformers() {
    one_at_a_time("tiny_olmo2", "olmo2");
    padded_batch("tiny_olmo2");
}

/// OLMo-3: OLMo-2's block with three sliding layers (window 4) per global one, and yarn
/// frequencies (with their attention factor) on the global layer only.
#[test]
fn olmo3_matches_transformers() {
    one_at_a_time("tiny_olmo3", "olmo3");
    padded_batch("tiny_olmo3");
}

/// Phi-3: fused qkv and gate/up projections, longrope (long factors: every text is longer than
/// the original 8 positions), a sliding window of 4.
#[test]
fn phi3_matches_transformers() {
    one_at_a_time("tiny_phi3", "phi3");
    padded_batch("tiny_phi3");
}

/// Qwen2 with `use_sliding_window` from layer 1 on: layer 0 global, layer 1 over 4 tokens
/// (the shared decoder, which takes a window per layer), q/k/v biases.
#[test]
fn qwen2_with_windows_on_some_layers_matches_transformers() {
    one_at_a_time("tiny_qwen2_windows", "llama");
    padded_batch("tiny_qwen2_windows");
}

/// GPT-Neo: unscaled attention scores, its local layer over a window of 4 tokens (texts of
/// 20–45), bias-free q/k/v folded into GPT-2's fused layout at load.
#[test]
fn gpt_neo_with_global_and_local_layers_matches_transformers() {
    one_at_a_time("tiny_gpt_neo", "gpt_neo");
    padded_batch("tiny_gpt_neo");
}

/// OPT: the position table's two offset rows, biased q/k/v and `nn.Linear` layouts folded into
/// GPT-2's at load, ReLU.
#[test]
fn opt_matches_transformers() {
    one_at_a_time("tiny_opt", "opt");
    padded_batch("tiny_opt");
}

/// Mistral with a sliding window of 4 tokens over texts of 20–45: computed, not refused.
#[test]
fn mistral_sliding_window_matches_transformers() {
    one_at_a_time("tiny_mistral", "llama");
    padded_batch("tiny_mistral");
}

#[test]
fn decoders_list_transformerlens_hooks() {
    for (name, mlp, k_width) in [
        ("tiny_gpt2", 128, 32),
        ("tiny_llama", 64, 16),
        ("tiny_neox", 128, 32),
    ] {
        let model = load(&fixture(name));
        let names: Vec<String> = model
            .model
            .hook_points()
            .iter()
            .map(|h| h.to_string())
            .collect();
        for want in [
            "hook_embed",
            "blocks.0.hook_resid_pre",
            "blocks.1.attn.hook_z",
            "blocks.1.mlp.hook_post",
            "blocks.1.hook_resid_post",
            "ln_final.hook_normalized",
        ] {
            assert!(
                names.iter().any(|n| n == want),
                "{name}: {want} missing from {names:?}"
            );
        }
        assert_eq!(model.model.hook_width(HookPoint::MlpPost(0)), mlp, "{name}");
        assert_eq!(
            model.model.hook_width(HookPoint::AttnK(0)),
            k_width,
            "{name}: key heads flattened"
        );
    }
}

/// Zeroes some hooks' activations and captures others: hook replacement in causal LMs.
struct ZeroAndCapture {
    zero: Vec<HookPoint>,
    capture: Capture,
}

impl glassbox_models::Hooks for ZeroAndCapture {
    fn wants(&self, point: HookPoint) -> bool {
        self.zero.contains(&point) || self.capture.wants(point)
    }
    fn visit(&mut self, point: HookPoint, x: Tensor) -> candle_core::Result<Tensor> {
        let x = if self.zero.contains(&point) {
            x.zeros_like()?
        } else {
            x
        };
        self.capture.visit(point, x)
    }
}

#[test]
fn decoders_expose_patterns_logits_and_accept_replacements() {
    for name in [
        "tiny_gpt2",
        "tiny_gpt2_options",
        "tiny_llama",
        "tiny_neox",
        "tiny_gemma2",
        "tiny_gemma3",
        "tiny_qwen3",
        "tiny_olmo2",
        "tiny_olmo3",
        "tiny_phi3",
        "tiny_mistral",
        "tiny_gpt_neo",
        "tiny_opt",
    ] {
        let model = load(&fixture(name));
        let refs = references(&fixture(name));
        let encoded = model
            .tokenizer()
            .unwrap()
            .encode(&[refs[1].text.as_str()])
            .unwrap();
        let t = encoded[0].ids.len();
        let batch = TokenBatch::from_encoded(&[&encoded[0]], model.pad_id, &model.device).unwrap();
        let wanted = [
            HookPoint::AttnPattern(1),
            HookPoint::Logits,
            HookPoint::ResidPre(1),
        ];
        let mut capture = Capture::new(wanted);
        model.model.forward((&batch).into(), &mut capture).unwrap();
        // The pattern: causal rows that sum to one per head.
        let pattern: Vec<Vec<Vec<f32>>> = capture.captured[&HookPoint::AttnPattern(1)]
            .to_vec3()
            .unwrap();
        let heads = pattern[0][0].len() / t;
        for (q, row) in pattern[0].iter().enumerate() {
            for h in 0..heads {
                let probs = &row[h * t..(h + 1) * t];
                assert!(
                    (probs.iter().sum::<f32>() - 1.0).abs() < 1e-5,
                    "{name}: head {h} row {q}"
                );
                assert!(probs[q + 1..].iter().all(|&p| p == 0.0), "{name}: causal");
            }
        }
        // The logits hook is the unembedding of the final norm (the reference's logits).
        let logits: Vec<Vec<Vec<f32>>> = capture.captured[&HookPoint::Logits].to_vec3().unwrap();
        assert!(
            max_diff(&logits[0], &refs[1].logits) <= 1e-4,
            "{name}: logits hook"
        );
        // Replacement: with block 0's attention and MLP outputs zeroed, the residual stream
        // entering block 1 is the embeddings (parallel or sequential blocks alike).
        let mut patch = ZeroAndCapture {
            zero: vec![HookPoint::AttnOut(0), HookPoint::MlpOut(0)],
            capture: Capture::new([HookPoint::ResidPre(0), HookPoint::ResidPre(1)]),
        };
        model.model.forward((&batch).into(), &mut patch).unwrap();
        let rows = |p: HookPoint| -> Vec<Vec<f32>> {
            let all: Vec<Vec<Vec<f32>>> = patch.capture.captured[&p].to_vec3().unwrap();
            all[0].clone()
        };
        assert!(
            max_diff(&rows(HookPoint::ResidPre(1)), &rows(HookPoint::ResidPre(0))) <= 1e-6,
            "{name}: replacements flow downstream"
        );
        let unpatched: Vec<Vec<Vec<f32>>> =
            capture.captured[&HookPoint::ResidPre(1)].to_vec3().unwrap();
        assert!(
            max_diff(&unpatched[0], &rows(HookPoint::ResidPre(1))) > 1e-2,
            "{name}: and the patch changed something"
        );
    }
}

/// The fast forward (packed tokens, fused kernels) and the candle-graph forward agree at every
/// storable hook point, on a padded batch, with and without replacements at the query and
/// value columns and the MLP.
#[test]
fn fast_and_graph_forwards_agree_at_every_hook() {
    // The prenorm families, and the shared decoder's (sliding windows, soft-caps, sandwich and
    // q/k norms, fused projections split at load).
    for name in [
        "tiny_gpt2",
        "tiny_llama",
        "tiny_qwen2",
        "tiny_neox",
        "tiny_neox_sequential",
        "tiny_mistral",
        "tiny_gemma2",
        "tiny_gemma3",
        "tiny_qwen3",
        "tiny_olmo2",
        "tiny_olmo3",
        "tiny_qwen2_windows",
        "tiny_phi3",
        "tiny_gpt_neo",
        "tiny_opt",
    ] {
        let model = load(&fixture(name));
        let batch = reference_batch(&model, &fixture(name));
        let all: Vec<HookPoint> = model
            .model
            .hook_points()
            .into_iter()
            .filter(|p| p.storable())
            .collect();
        // Without q/k/v hooks the fast forward leaves their bias and rotation to attention's
        // per-example loop; with them it applies both before the hooks.
        let no_qkv: Vec<HookPoint> = all
            .iter()
            .copied()
            .filter(|p| {
                !matches!(
                    p,
                    HookPoint::AttnQ(_) | HookPoint::AttnK(_) | HookPoint::AttnV(_)
                )
            })
            .collect();
        let replaced = vec![
            HookPoint::AttnQ(0),
            HookPoint::AttnV(1),
            HookPoint::MlpPost(0),
        ];
        for (points, zero) in [(all.clone(), vec![]), (all, replaced), (no_qkv, vec![])] {
            let mut runs = Vec::new();
            for differentiable in [false, true] {
                let mut hooks = ZeroAndCapture {
                    zero: zero.clone(),
                    capture: Capture::new(points.clone()),
                };
                let out = if differentiable {
                    model
                        .model
                        .forward_differentiable((&batch).into(), &mut hooks)
                } else {
                    model.model.forward((&batch).into(), &mut hooks)
                }
                .unwrap();
                runs.push((hooks.capture, out));
            }
            let real_rows = |t: &Tensor| -> Vec<Vec<f32>> {
                let all: Vec<Vec<Vec<f32>>> = t.to_vec3().unwrap();
                all.iter()
                    .zip(&batch.lengths)
                    .flat_map(|(rows, &n)| rows[..n].to_vec())
                    .collect()
            };
            for p in &points {
                let (fast, graph) = (&runs[0].0.captured[p], &runs[1].0.captured[p]);
                let d = max_diff(&real_rows(fast), &real_rows(graph));
                assert!(d <= 1e-4, "{name} {p} (zeroed {zero:?}): fast vs graph {d}");
            }
            let d = max_diff(&real_rows(&runs[0].1), &real_rows(&runs[1].1));
            assert!(
                d <= 1e-4,
                "{name} output (zeroed {zero:?}): fast vs graph {d}"
            );
        }
    }
}

/// Sliding-window layers attend to the last 4 tokens only (the fixtures' window); global layers
/// see the whole prefix.
#[test]
fn sliding_layers_attend_within_their_window() {
    for (name, sliding, global) in [
        ("tiny_gemma2", 0, Some(1)),
        ("tiny_gemma3", 2, Some(1)),
        ("tiny_mistral", 1, None),
    ] {
        let model = load(&fixture(name));
        let refs = references(&fixture(name));
        let encoded = model
            .tokenizer()
            .unwrap()
            .encode(&[refs[0].text.as_str()])
            .unwrap();
        let t = encoded[0].ids.len();
        let batch = TokenBatch::from_encoded(&[&encoded[0]], model.pad_id, &model.device).unwrap();
        let mut points = vec![HookPoint::AttnPattern(sliding)];
        points.extend(global.map(HookPoint::AttnPattern));
        let mut capture = Capture::new(points);
        model.model.forward((&batch).into(), &mut capture).unwrap();
        let reach = |layer: usize| -> usize {
            let p: Vec<Vec<Vec<f32>>> = capture.captured[&HookPoint::AttnPattern(layer)]
                .to_vec3()
                .unwrap();
            let heads = p[0][0].len() / t;
            // The farthest key any query attends to with positive weight.
            (0..t)
                .flat_map(|q| (0..heads).map(move |h| (q, h)))
                .map(|(q, h)| {
                    let row = &p[0][q][h * t..(h + 1) * t];
                    (0..=q)
                        .filter(|&k| row[k] > 0.0)
                        .map(|k| q - k)
                        .max()
                        .unwrap()
                })
                .max()
                .unwrap()
        };
        assert_eq!(
            reach(sliding),
            3,
            "{name}: layer {sliding} slides over 4 tokens"
        );
        if let Some(g) = global {
            assert_eq!(reach(g), t - 1, "{name}: layer {g} is global");
        }
    }
}

/// Gemma-3 as its 4B-and-larger checkpoints ship: linear rotary scaling on the global layers
/// only, two local layers per global one, a final soft-cap.
#[test]
fn gemma3_with_scaled_global_rotary_matches_transformers() {
    one_at_a_time("tiny_gemma3_scaled", "gemma3_text");
    padded_batch("tiny_gemma3_scaled");
}

/// Phi-3 as Phi-4-mini ships: rotary over 3/4 of each head with longrope factors for those
/// pairs, tied embeddings, no window.
#[test]
fn phi3_with_partial_rotary_matches_transformers() {
    one_at_a_time("tiny_phi3_partial", "phi3");
    padded_batch("tiny_phi3_partial");
}

/// The forward from a block (patching and steering at a later block) on every family of the
/// shared decoder and on tiny Qwen2 with per-layer windows (which runs on it): the blocks
/// before the start do not run, and the later hooks and the output equal the full forward's,
/// bit for bit (same kernels on the same packed rows).
#[test]
fn shared_decoder_forward_from_a_block_matches_the_full_forward() {
    for name in [
        "tiny_gemma2",
        "tiny_gemma3",
        "tiny_qwen3",
        "tiny_olmo2",
        "tiny_olmo3",
        "tiny_phi3",
        "tiny_qwen2_windows",
    ] {
        let model = load(&fixture(name));
        let batch = reference_batch(&model, &fixture(name));
        let start = 1;
        let after = HookPoint::ResidPost(start);
        let mut capture = Capture::new([HookPoint::ResidPre(start), after]);
        let full = model.model.forward((&batch).into(), &mut capture).unwrap();
        let resid = capture.captured[&HookPoint::ResidPre(start)].clone();
        let mut later = Capture::new([HookPoint::ResidPre(0), after]);
        let from = model
            .model
            .forward_from(&batch, start, &resid, &mut later)
            .unwrap_or_else(|| panic!("{name}: the shared decoder has a forward from a block"))
            .unwrap();
        assert!(
            !later.captured.contains_key(&HookPoint::ResidPre(0)),
            "{name}: blocks before the start do not run"
        );
        let real = |t: &Tensor| real_rows(t, &batch.lengths);
        assert_eq!(real(&full), real(&from), "{name}: output");
        assert_eq!(
            real(&capture.captured[&after]),
            real(&later.captured[&after]),
            "{name}: {after}"
        );
    }
}
