//! `--compute-dtype bf16` on the shared decoder's tiny checkpoints: the forward with bf16
//! products stays within bf16 rounding of the f32-product forward of the same bf16-held
//! weights at every storable hook, it really differs from it (the bf16 route ran), and the
//! setting is refused where it cannot be honoured.
//!
//! Run under `GLASSBOX_SIMD=avx2`/`scalar` (`just test-simd`) this covers the f32 route that
//! CPUs without AVX-512 BF16 take; at the best level on an AVX-512 BF16 CPU, the
//! `VDPBF16PS` kernel.

mod decoder_parity;

use glassbox_models::{
    load_model, resolve, Capture, ComputeDtype, HookPoint, LoadOptions, LoadedModel, ModelSpec,
    WeightsDtype,
};

const TEXTS: [&str; 3] = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Paris is the capital of",
    "one two three four five six seven eight nine ten eleven twelve",
];

fn load(
    name: &str,
    weights: WeightsDtype,
    compute: ComputeDtype,
) -> glassbox_models::Result<LoadedModel> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name);
    let spec: ModelSpec = dir.to_str().unwrap().parse().unwrap();
    let options = LoadOptions {
        weights_dtype: weights,
        compute_dtype: compute,
        ..LoadOptions::default()
    };
    load_model(resolve(&spec).unwrap(), options)
}

/// Every storable hook of a padded batch of [`TEXTS`], the real tokens' rows concatenated.
fn hooks(model: &LoadedModel) -> Vec<(HookPoint, Vec<f32>)> {
    hooks_where(model, |_| true)
}

/// [`hooks`] at the storable points `keep` accepts.
fn hooks_where(
    model: &LoadedModel,
    keep: impl Fn(HookPoint) -> bool,
) -> Vec<(HookPoint, Vec<f32>)> {
    let batch = decoder_parity::right_padded(model, &TEXTS);
    let points: Vec<HookPoint> = model
        .model
        .hook_points()
        .into_iter()
        .filter(|p| p.storable() && keep(*p))
        .collect();
    let mut capture = Capture::new(points.clone());
    model.model.forward((&batch).into(), &mut capture).unwrap();
    points
        .iter()
        .map(|p| {
            (
                *p,
                decoder_parity::real_rows(&capture.captured[p], &batch.lengths),
            )
        })
        .collect()
}

#[test]
fn bf16_products_stay_within_bf16_rounding_of_f32_products() {
    for name in [
        "tiny_gemma2",
        "tiny_gemma3",
        "tiny_qwen3",
        "tiny_olmo2",
        "tiny_phi3",
        "tiny_llama",
    ] {
        let f32_products = hooks(&load(name, WeightsDtype::Bf16, ComputeDtype::F32).unwrap());
        let bf16_products = hooks(&load(name, WeightsDtype::Bf16, ComputeDtype::Bf16).unwrap());
        let mut largest = 0f32;
        for ((point, exact), (_, rounded)) in f32_products.iter().zip(&bf16_products) {
            let scale = exact.iter().fold(0f32, |m, v| m.max(v.abs()));
            let diff = exact
                .iter()
                .zip(rounded)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            // Rounding a projection's input to bf16 moves each product by ≤ 2⁻⁹ of itself, so
            // block 0's q, k and v (one rounding, of a 32- to 64-wide sum) move by ≤ 2⁻⁹ of their
            // sums of |products|: within 2⁻⁷ of the hook's scale (measured ≤ 2.3e-3). Later hooks
            // carry every earlier rounding through norms, softmax and gated MLPs, which amplify
            // them in these random tiny models (measured ≤ 4.2e-2, at Gemma-2's logits): within
            // 2⁻⁴. A wrong pair order or a lost half of each pair errs by the order of the scale.
            let first = matches!(
                point,
                HookPoint::AttnQ(0) | HookPoint::AttnK(0) | HookPoint::AttnV(0)
            );
            let bound = if first { scale / 128.0 } else { scale / 16.0 };
            assert!(
                diff <= bound,
                "{name} {point}: bf16 products differ by {diff} (scale {scale}, bound {bound})"
            );
            if *point != HookPoint::Embed {
                largest = largest.max(diff / scale.max(f32::MIN_POSITIVE));
            }
        }
        // Activations off the bf16 grid were rounded: some hook after the first projection moved.
        assert!(
            largest > 1e-6,
            "{name}: bf16 products equal f32 products exactly"
        );
    }
}

/// With no hook on the MLP's neurons, bf16 products on AMX pack `act(gate) ⊙ up` straight
/// into the down projection's input (elsewhere both runs take the same route). Every other
/// hook is bit for bit the run that writes the neurons out for their hook.
#[test]
fn packing_the_gated_product_directly_changes_no_bit() {
    let not_neurons = |p: &HookPoint| !matches!(p, HookPoint::MlpPost(_));
    for name in ["tiny_gemma2", "tiny_olmo3", "tiny_phi3", "tiny_llama"] {
        let model = load(name, WeightsDtype::Bf16, ComputeDtype::Bf16).unwrap();
        let written: Vec<_> = hooks(&model)
            .into_iter()
            .filter(|(p, _)| not_neurons(p))
            .collect();
        let fused = hooks_where(&model, |p| not_neurons(&p));
        assert_eq!(written.len(), fused.len());
        for ((point, a), (_, b)) in written.iter().zip(&fused) {
            let same = a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(same && a.len() == b.len(), "{name} {point} differs");
        }
    }
}

#[test]
fn bf16_products_are_refused_where_they_cannot_be_honoured() {
    let f32_family = load("tiny_gpt2", WeightsDtype::Auto, ComputeDtype::Bf16)
        .err()
        .unwrap();
    assert!(
        f32_family
            .to_string()
            .contains("the gpt2 family computes in f32"),
        "{f32_family}"
    );
    let f32_weights = load("tiny_gemma2", WeightsDtype::F32, ComputeDtype::Bf16)
        .err()
        .unwrap();
    assert!(
        f32_weights.to_string().contains("add --weights-dtype bf16"),
        "{f32_weights}"
    );
}
