//! Parity of the vision families with PyTorch `transformers` on tiny random checkpoints
//! (committed fixtures from `scripts/reference_tiny_resnet.py`): every `hidden_states` entry,
//! the pooled features and the logits, within 1e-4.

use candle_core::{Device, Tensor};
use glassbox_models::load_model;
use glassbox_models::LoadOptions;
use glassbox_models::LoadedModel;
use glassbox_models::{resolve, Capture, ConvPart, HookPoint, ImageBatch, ModelSpec};
use std::collections::HashMap;
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

/// NCHW → NHWC values.
fn nhwc(t: &Tensor) -> Vec<f32> {
    t.permute((0, 2, 3, 1))
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn close(name: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{name}: length");
    let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
    let diff = got
        .iter()
        .zip(want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    println!("{name}: max |diff| {diff:.2e} (scale {scale:.2})");
    assert!(
        diff <= 1e-4 * scale,
        "{name}: max |diff| {diff} over scale {scale}"
    );
}

/// A committed fixture: the model, its reference tensors, and its `pixel_values` as a batch of
/// the first `n` images (channels-last).
fn load(name: &str, n: usize) -> (LoadedModel, HashMap<String, Tensor>, ImageBatch) {
    let dir = fixture(name);
    let spec: ModelSpec = dir.to_str().unwrap().parse().unwrap();
    let model = load_model(
        resolve(&spec).unwrap(),
        LoadOptions {
            max_length: None,
            allow_pickle: false,
            ..Default::default()
        },
    )
    .unwrap();
    let reference =
        candle_core::safetensors::load(dir.join("reference.safetensors"), &Device::Cpu).unwrap();
    let pixels = reference["pixel_values"].narrow(0, 0, n).unwrap();
    let (_, _, h, w) = pixels.dims4().unwrap();
    let batch = ImageBatch {
        pixels: nhwc(&pixels),
        batch: n,
        height: h,
        width: w,
    };
    (model, reference, batch)
}

/// Each stage's last block's output (`hidden_states[s + 1]`).
fn last_blocks(depths: &[usize]) -> Vec<HookPoint> {
    depths
        .iter()
        .enumerate()
        .map(|(s, &d)| HookPoint::Conv {
            stage: s as u16,
            block: (d - 1) as u16,
            part: ConvPart::Out,
        })
        .collect()
}

fn check_resnet(name: &str, depths: &[usize]) {
    let (model, reference, batch) = load(name, 2);
    let last_blocks = last_blocks(depths);
    let mut wanted = vec![HookPoint::Stem, HookPoint::Pooled, HookPoint::Logits];
    wanted.extend(&last_blocks);
    let mut capture = Capture::new(wanted);
    let logits = model.model.forward((&batch).into(), &mut capture).unwrap();
    let flat = |t: &Tensor| -> Vec<f32> { t.flatten_all().unwrap().to_vec1().unwrap() };
    close(
        &format!("{name} hidden_states.0"),
        &flat(&capture.captured[&HookPoint::Stem]),
        &nhwc(&reference["hidden_states.0"]),
    );
    for (s, p) in last_blocks.iter().enumerate() {
        close(
            &format!("{name} hidden_states.{}", s + 1),
            &flat(&capture.captured[p]),
            &nhwc(&reference[&format!("hidden_states.{}", s + 1)]),
        );
    }
    close(
        &format!("{name} pooled"),
        &flat(&capture.captured[&HookPoint::Pooled]),
        &flat(&reference["pooled"]),
    );
    close(
        &format!("{name} logits"),
        &flat(&logits),
        &flat(&reference["logits"]),
    );
    assert_eq!(model.model.labels()[4], "class 4");
}

/// Within 1e-4 of the reference's largest magnitude (gradients are small: no floor at 1).
fn close_relative(name: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{name}: length");
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let diff = got
        .iter()
        .zip(want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    println!("{name}: max |diff| {diff:.2e} (scale {scale:.2e})");
    assert!(scale > 0.0, "{name}: an all-zero reference tests nothing");
    assert!(
        diff <= 1e-4 * scale,
        "{name}: max |diff| {diff} over scale {scale}"
    );
}

/// The hand-written backward against PyTorch autograd (`scripts/reference_resnet_gradients.py`):
/// the gradient of Σ seed ⊙ logits at the pixels, the stem and each stage's output.
fn check_resnet_gradients(name: &str, depths: &[usize]) {
    let (model, _, batch) = load(name, 2);
    let grads =
        candle_core::safetensors::load(fixture(name).join("gradients.safetensors"), &Device::Cpu)
            .unwrap();
    let flat = |t: &Tensor| -> Vec<f32> { t.flatten_all().unwrap().to_vec1().unwrap() };
    let seed = flat(&grads["seed"]);
    let last_blocks = last_blocks(depths);
    let mut points = vec![HookPoint::Stem];
    points.extend(&last_blocks);
    let got = model
        .model
        .pixel_gradients(&batch, &points, &seed)
        .expect("resnet has a backward")
        .unwrap();
    close_relative(
        &format!("{name} pixel gradient"),
        &got.pixels,
        &nhwc(&grads["pixels.grad"]),
    );
    for (i, p) in points.iter().enumerate() {
        close_relative(
            &format!("{name} gradient at hidden_states.{i}"),
            &got.hooks[p].1,
            &nhwc(&grads[&format!("hidden_states.{i}.grad")]),
        );
    }
    // TCAV's entry point: the same gradients, summed over positions.
    let tcav = model
        .model
        .hook_gradients((&batch).into(), &points[1..], &seed)
        .unwrap()
        .unwrap();
    let want = nhwc(&grads["hidden_states.1.grad"]);
    let width = model.model.hook_width(points[1]);
    let sums: Vec<f32> = (0..2)
        .flat_map(|b| {
            let per = want.len() / 2;
            let image = &want[b * per..(b + 1) * per];
            (0..width).map(move |c| image.iter().skip(c).step_by(width).sum::<f32>())
        })
        .collect();
    close_relative(
        &format!("{name} gradient sums at hidden_states.1"),
        &tcav.gradient_sums[&points[1]],
        &sums,
    );
}

#[test]
fn resnet_gradients_match_pytorch_autograd() {
    check_resnet_gradients("tiny_resnet", &[2, 1]);
    check_resnet_gradients("tiny_resnet_basic", &[2, 1]);
}

#[test]
fn resnet_bottleneck_matches_transformers() {
    check_resnet("tiny_resnet", &[2, 1]);
}

#[test]
fn resnet_basic_matches_transformers() {
    check_resnet("tiny_resnet_basic", &[2, 1]);
}

/// ViT: `hidden_states[i]` is `blocks.{i}.hook_resid_pre` (the last one the last block's
/// `hook_resid_post`), `last_hidden_state` is `ln_final.hook_normalized`; positions are the
/// `[CLS]` token then the patches, as in transformers.
#[test]
fn vit_matches_transformers() {
    let (model, reference, batch) = load("tiny_vit", 2);
    let wanted = [
        HookPoint::ResidPre(0),
        HookPoint::ResidPre(1),
        HookPoint::ResidPost(1),
        HookPoint::LnFinal,
        HookPoint::Pooled,
    ];
    let mut capture = Capture::new(wanted);
    let logits = model.model.forward((&batch).into(), &mut capture).unwrap();
    let flat = |t: &Tensor| -> Vec<f32> { t.flatten_all().unwrap().to_vec1().unwrap() };
    for (i, p) in wanted[..3].iter().enumerate() {
        close(
            &format!("vit hidden_states.{i}"),
            &flat(&capture.captured[p]),
            &flat(&reference[&format!("hidden_states.{i}")]),
        );
    }
    let last = &reference["last_hidden_state"];
    close(
        "vit last_hidden_state",
        &flat(&capture.captured[&HookPoint::LnFinal]),
        &flat(last),
    );
    close(
        "vit pooled ([CLS])",
        &flat(&capture.captured[&HookPoint::Pooled]),
        &flat(&last.narrow(1, 0, 1).unwrap()),
    );
    close("vit logits", &flat(&logits), &flat(&reference["logits"]));
    assert_eq!(
        capture.captured[&HookPoint::ResidPre(0)].dims(),
        [2, 17, 32]
    );
}

/// Adds `eps · dir` at every position of one hook.
struct Nudge(HookPoint, Vec<f32>, f32);

impl glassbox_models::Hooks for Nudge {
    fn wants(&self, p: HookPoint) -> bool {
        p == self.0
    }
    fn visit(&mut self, _: HookPoint, x: Tensor) -> candle_core::Result<Tensor> {
        let d = Tensor::from_vec(self.1.clone(), (1, 1, self.1.len()), x.device())?;
        x.broadcast_add(&(d * self.2 as f64)?)
    }
}

/// ViT's TCAV gradients (candle autograd through zero probes) against central differences:
/// the model is smooth, so they agree tightly.
#[test]
fn vit_gradients_match_finite_differences() {
    let (model, _, batch) = load("tiny_vit", 1);
    let mut seed = vec![0f32; 5];
    seed[3] = 1.0;
    let points = [
        HookPoint::ResidPre(0),
        HookPoint::MlpPost(0),
        HookPoint::ResidPost(1),
    ];
    let g = model
        .model
        .hook_gradients((&batch).into(), &points, &seed)
        .unwrap()
        .unwrap();
    for p in points {
        let width = model.model.hook_width(p);
        let v: Vec<f32> = (0..width)
            .map(|i| ((i * 37 % 11) as f32 - 5.0) / 10.0)
            .collect();
        let f = |eps: f32| -> f64 {
            let l: Vec<Vec<f32>> = model
                .model
                .forward((&batch).into(), &mut Nudge(p, v.clone(), eps))
                .unwrap()
                .to_vec2()
                .unwrap();
            l[0][3] as f64
        };
        let numeric = (f(1e-2) - f(-1e-2)) / 2e-2;
        let analytic: f64 = g.gradient_sums[&p]
            .iter()
            .zip(&v)
            .map(|(a, b)| *a as f64 * *b as f64)
            .sum();
        println!("{p}: analytic {analytic:.6} numeric {numeric:.6}");
        assert!(
            (analytic - numeric).abs() <= 1e-2 * analytic.abs().max(1e-2),
            "{p}"
        );
    }
}

/// CLIP: the image tower's `hidden_states`, `pooler_output` and normalised embeddings, the
/// text tower's normalised embeddings (token ids as transformers got them), and the zero-shot
/// logits rebuilt from `text_target` (the TCAV `text:` target).
#[test]
fn clip_matches_transformers() {
    let (loaded, reference, batch) = load("tiny_clip", 2);
    let model = &loaded.model;
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("tiny_clip").join("reference.json")).unwrap(),
    )
    .unwrap();
    let prompts: Vec<(String, Vec<u32>)> = json["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let ids = p["input_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i.as_u64().unwrap() as u32)
                .collect();
            (p["text"].as_str().unwrap().to_owned(), ids)
        })
        .collect();
    let wanted = [
        HookPoint::ResidPre(0),
        HookPoint::ResidPre(1),
        HookPoint::ResidPost(1),
        HookPoint::Pooled,
    ];
    let mut capture = Capture::new(wanted);
    let image = model.forward((&batch).into(), &mut capture).unwrap();
    let flat = |t: &Tensor| -> Vec<f32> { t.flatten_all().unwrap().to_vec1().unwrap() };
    for (i, p) in wanted[..3].iter().enumerate() {
        close(
            &format!("clip hidden_states.{i}"),
            &flat(&capture.captured[p]),
            &flat(&reference[&format!("hidden_states.{i}")]),
        );
    }
    close(
        "clip pooler_output",
        &flat(&capture.captured[&HookPoint::Pooled]),
        &flat(&reference["pooler_output"]),
    );
    close(
        "clip image_embeds",
        &flat(&image),
        &flat(&reference["image_embeds"]),
    );
    let image: Vec<Vec<f32>> = image.to_vec2().unwrap();
    let logits: Vec<Vec<f32>> = reference["logits_per_image"].to_vec2().unwrap();
    let want_text: Vec<Vec<f32>> = reference["text_embeds"].to_vec2().unwrap();
    for (t, (text, ids)) in prompts.iter().enumerate() {
        // The tokenizer shipped with the checkpoint gives the same ids (plus end-of-text).
        let tok = loaded.tokenizer.as_ref().expect("tokenizer.json");
        let mut ours = tok.encode(&[text.as_str()]).unwrap()[0].ids.clone();
        ours.push(model.eos_token_id().unwrap());
        assert_eq!(&ours, ids, "{text}");
        let direction = model.text_target(ids).unwrap().unwrap();
        let scale = direction.iter().map(|v| v * v).sum::<f32>().sqrt();
        let unit: Vec<f32> = direction.iter().map(|v| v / scale).collect();
        close(&format!("clip text_embeds[{t}]"), &unit, &want_text[t]);
        for (i, img) in image.iter().enumerate() {
            let logit: f32 = img.iter().zip(&direction).map(|(a, b)| a * b).sum();
            close(
                &format!("clip logits_per_image[{i}][{t}]"),
                &[logit],
                &[logits[i][t]],
            );
        }
    }
}

/// CLIP's image tower saved alone (`clip_vision_model`, as transformers saves
/// `CLIPVisionModelWithProjection` and — without the `vision_model.` prefix —
/// `CLIPVisionModel`): the tiny CLIP's vision tensors under a
/// vision-only config give the full model's hidden states, pooled `[CLS]` and (with the
/// projection) normalised embeddings; without a text tower it embeds no prompts.
#[test]
fn clip_image_tower_alone_matches_transformers() {
    let src = fixture("tiny_clip");
    let full: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    let tensors =
        candle_core::safetensors::load(src.join("model.safetensors"), &Device::Cpu).unwrap();
    let reference =
        candle_core::safetensors::load(src.join("reference.safetensors"), &Device::Cpu).unwrap();
    let flat = |t: &Tensor| -> Vec<f32> { t.flatten_all().unwrap().to_vec1().unwrap() };
    for projection in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let mut config = full["vision_config"].clone();
        config["model_type"] = "clip_vision_model".into();
        config["projection_dim"] = full["projection_dim"].clone();
        config["architectures"] = serde_json::json!([if projection {
            "CLIPVisionModelWithProjection"
        } else {
            "CLIPVisionModel"
        }]);
        std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
        std::fs::copy(
            src.join("preprocessor_config.json"),
            dir.path().join("preprocessor_config.json"),
        )
        .unwrap();
        let tower: HashMap<String, Tensor> = tensors
            .iter()
            .filter(|(k, _)| {
                k.starts_with("vision_model.") || (projection && *k == "visual_projection.weight")
            })
            // transformers saves `CLIPVisionModel`'s tower without its `vision_model.` prefix.
            .map(|(k, v)| match projection {
                true => (k.clone(), v.clone()),
                false => (k.replacen("vision_model.", "", 1), v.clone()),
            })
            .collect();
        candle_core::safetensors::save(&tower, dir.path().join("model.safetensors")).unwrap();
        let spec: ModelSpec = dir.path().to_str().unwrap().parse().unwrap();
        let loaded = load_model(resolve(&spec).unwrap(), LoadOptions::default()).unwrap();
        let model = &loaded.model;
        assert!(loaded.tokenizer.is_none() && model.eos_token_id().is_none());
        assert!(model.text_target(&[1, 2]).is_none() && model.embed_texts(&[vec![1]]).is_none());
        assert_eq!(model.hook_points().contains(&HookPoint::Embeds), projection);
        let pixels = reference["pixel_values"].narrow(0, 0, 2).unwrap();
        let (_, _, h, w) = pixels.dims4().unwrap();
        let batch = ImageBatch {
            pixels: nhwc(&pixels),
            batch: 2,
            height: h,
            width: w,
        };
        let wanted = [
            HookPoint::ResidPre(0),
            HookPoint::ResidPost(1),
            HookPoint::Pooled,
        ];
        let mut capture = Capture::new(wanted);
        let output = model.forward((&batch).into(), &mut capture).unwrap();
        for (p, name) in wanted
            .iter()
            .zip(["hidden_states.0", "hidden_states.2", "pooler_output"])
        {
            close(
                &format!("{name} (projection {projection})"),
                &flat(&capture.captured[p]),
                &flat(&reference[name]),
            );
        }
        let want = if projection {
            "image_embeds"
        } else {
            "pooler_output"
        };
        close(want, &flat(&output), &flat(&reference[want]));
    }
}

/// A capture that asks for the candle-graph forward (as autograd does).
struct GraphCapture(Capture);

impl glassbox_models::Hooks for GraphCapture {
    fn wants(&self, p: HookPoint) -> bool {
        self.0.wants(p)
    }
    fn visit(&mut self, p: HookPoint, x: Tensor) -> candle_core::Result<Tensor> {
        self.0.visit(p, x)
    }
    fn needs_graph(&self) -> bool {
        true
    }
}

/// The transformer towers' fast forward (packed rows, fused kernels) against their graph
/// forward at every storable hook, within 1e-4 of each activation's scale.
#[test]
fn vit_and_clip_fast_and_graph_forwards_agree_at_every_hook() {
    for name in ["tiny_vit", "tiny_clip"] {
        let (loaded, _, batch) = load(name, 2);
        let model = &loaded.model;
        let points: Vec<HookPoint> = model
            .hook_points()
            .into_iter()
            .filter(|p| p.storable())
            .collect();
        let mut fast = Capture::new(points.clone());
        let fast_out = model.forward((&batch).into(), &mut fast).unwrap();
        let mut graph = GraphCapture(Capture::new(points.clone()));
        let graph_out = model.forward((&batch).into(), &mut graph).unwrap();
        let flat = |t: &Tensor| -> Vec<f32> { t.flatten_all().unwrap().to_vec1().unwrap() };
        assert!(points.contains(&HookPoint::AttnQ(0)) && points.contains(&HookPoint::MlpPost(1)));
        for p in &points {
            close(
                &format!("{name} {p} fast vs graph"),
                &flat(&fast.captured[p]),
                &flat(&graph.0.captured[p]),
            );
        }
        close(
            &format!("{name} output"),
            &flat(&fast_out),
            &flat(&graph_out),
        );
    }
}

/// transformers 5 writes neither `id2label` nor `num_labels` into `config.json` when they are
/// its defaults (a two-class head), yet the checkpoint holds the classifier: with both removed
/// from a fixture's config, the classes come from the classifier weight (named `LABEL_0`, … as transformers names them)
/// and the logits are the reference's.
#[test]
fn a_classifier_the_config_does_not_mention_is_read_from_its_weight() {
    for name in ["tiny_resnet", "tiny_vit"] {
        let dir = tempfile::tempdir().unwrap();
        for file in ["model.safetensors", "preprocessor_config.json"] {
            std::fs::copy(fixture(name).join(file), dir.path().join(file)).unwrap();
        }
        let config = std::fs::read_to_string(fixture(name).join("config.json")).unwrap();
        let mut config: serde_json::Value = serde_json::from_str(&config).unwrap();
        for key in ["id2label", "label2id", "num_labels"] {
            config.as_object_mut().unwrap().remove(key);
        }
        std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
        let spec: ModelSpec = dir.path().to_str().unwrap().parse().unwrap();
        let model = load_model(resolve(&spec).unwrap(), LoadOptions::default()).unwrap();
        let (_, reference, batch) = load(name, 2);
        let logits = model
            .model
            .forward((&batch).into(), &mut Capture::new([]))
            .unwrap();
        let labels: Vec<String> = (0..5).map(|i| format!("LABEL_{i}")).collect();
        assert_eq!(model.model.labels(), labels, "{name}");
        close(
            &format!("{name} logits"),
            &logits.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            &reference["logits"]
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
        );
    }
}
