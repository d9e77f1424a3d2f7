//! Rotary position embeddings in the `rotate_half` convention of `transformers` (pairs
//! `(i, i + d/2)`), for the first `dim` dimensions of each head, with the frequency scalings of
//! `transformers.modeling_rope_utils` that the supported checkpoints use: `default`, `linear`,
//! `llama3`, `longrope` (Phi-3's, also spelled `su`), `yarn` (OLMo-3's long-context layers,
//! Qwen3's long-context configs) and `dynamic` (NTK; the default frequencies at the lengths
//! glassbox runs, see below).

use candle_core::Tensor;
use serde_json::Value;

/// Rotary frequencies of one attention layer.
#[derive(Debug, Clone)]
pub(crate) struct Rotary {
    /// One inverse frequency per pair, after any scaling (longrope: the short factors).
    pub(crate) inv_freq: Vec<f64>,
    /// Longrope: the frequencies under the long factors, used when a sequence is longer than
    /// `original` positions (`transformers` decides per forward, by the longest position).
    long: Option<(Vec<f64>, usize)>,
    /// Longrope's attention factor, multiplying cosines and sines (1 elsewhere).
    scaling: f32,
}

/// YaRN frequencies and attention factor, as `transformers` `_compute_yarn_parameters`: each
/// pair's frequency blends the interpolated one (divided by `factor`) and the original by a
/// linear ramp over the pairs between the correction dimensions of `beta_fast` and
/// `beta_slow` rotations in the original context; cosines and sines are multiplied by the
/// attention factor (`0.1 ln(factor) + 1` unless given, or the `mscale` ratio).
/// (`truncate` is read from the layer kind's own parameters; transformers reads it from the
/// top level, which differs only for a per-kind object that sets it.)
fn yarn(
    params: &Value,
    exponents: &[f64],
    theta: f64,
    dim: usize,
    max_positions: usize,
) -> std::result::Result<(Vec<f64>, f64), String> {
    let num = |k: &str| params.get(k).and_then(Value::as_f64);
    let original = num("original_max_position_embeddings")
        .ok_or("rope `yarn` scaling needs `original_max_position_embeddings`")?;
    let factor = num("factor").unwrap_or(max_positions as f64 / original);
    let mscale = |scale: f64, m: f64| {
        if scale <= 1.0 {
            1.0
        } else {
            0.1 * m * scale.ln() + 1.0
        }
    };
    let attention = match (
        num("attention_factor"),
        num("mscale"),
        num("mscale_all_dim"),
    ) {
        (Some(a), _, _) => a,
        (None, Some(m), Some(all)) if m != 0.0 && all != 0.0 => {
            mscale(factor, m) / mscale(factor, all)
        }
        _ => mscale(factor, 1.0),
    };
    // `or` in transformers: a zero or missing beta takes the default.
    let beta = |k: &str, default: f64| num(k).filter(|b| *b != 0.0).unwrap_or(default);
    let (fast, slow) = (beta("beta_fast", 32.0), beta("beta_slow", 1.0));
    let truncate = params
        .get("truncate")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let correction = |rotations: f64| {
        dim as f64 * (original / (rotations * 2.0 * std::f64::consts::PI)).ln() / (2.0 * theta.ln())
    };
    let (mut low, mut high) = (correction(fast), correction(slow));
    if truncate {
        (low, high) = (low.floor(), high.ceil());
    }
    let (low, mut high) = (low.max(0.0), high.min(dim as f64 - 1.0));
    if low == high {
        high += 0.001;
    }
    let inv = exponents
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let original_freq = 1.0 / theta.powf(*e);
            // The share of the interpolated frequency: 0 for the fast-rotating pairs (kept),
            // 1 for the slow ones (divided by `factor`).
            let ramp = ((i as f64 - low) / (high - low)).clamp(0.0, 1.0);
            original_freq / factor * ramp + original_freq * (1.0 - ramp)
        })
        .collect();
    Ok((inv, attention))
}

/// The rotary fields that divide or exponentiate: a base, factor or context of 0 (or below)
/// gives infinite or NaN angles, and a partial factor above 1 more rotated dimensions than a
/// head has. Each is named with its value.
fn check_ranges(params: &Value) -> std::result::Result<(), String> {
    const POSITIVE: [&str; 8] = [
        "rope_theta",
        "factor",
        "original_max_position_embeddings",
        "low_freq_factor",
        "high_freq_factor",
        "attention_factor",
        "beta_fast",
        "beta_slow",
    ];
    for key in POSITIVE {
        let Some(value) = params.get(key).filter(|v| !v.is_null()) else {
            continue;
        };
        if !value.as_f64().is_some_and(|v| v.is_finite() && v > 0.0) {
            return Err(format!(
                "rope `{key}` = {value}; it must be a finite positive number"
            ));
        }
    }
    if let Some(value) = params.get("partial_rotary_factor").filter(|v| !v.is_null()) {
        if !value.as_f64().is_some_and(|v| (0.0..=1.0).contains(&v)) {
            return Err(format!(
                "partial_rotary_factor = {value}; it is the fraction of each head's dimensions \
                 that rotate, so it must lie in [0, 1]"
            ));
        }
    }
    Ok(())
}

impl Rotary {
    /// Frequencies from a `rope_parameters`-style object (`rope_theta`, `rope_type` default,
    /// linear, llama3 or longrope with their fields, `partial_rotary_factor`) for heads of
    /// `head_dim`; `max_positions` is the config's `max_position_embeddings` (longrope derives
    /// its attention factor from it when the object has no `factor`).
    pub(crate) fn from_params(
        params: &Value,
        head_dim: usize,
        max_positions: usize,
    ) -> std::result::Result<Self, String> {
        check_ranges(params)?;
        let num = |k: &str| params.get(k).and_then(Value::as_f64);
        let theta = num("rope_theta").unwrap_or(10_000.0);
        let partial = num("partial_rotary_factor").unwrap_or(1.0);
        let dim = (head_dim as f64 * partial) as usize;
        // transformers computes the exponents in f32.
        let exponents: Vec<f64> = (0..dim / 2)
            .map(|i| ((2 * i) as f32 / dim as f32) as f64)
            .collect();
        let mut inv: Vec<f64> = exponents.iter().map(|e| 1.0 / theta.powf(*e)).collect();
        let kind = params
            .get("rope_type")
            .or_else(|| params.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("default");
        let mut rotary = Rotary {
            inv_freq: Vec::new(),
            long: None,
            scaling: 1.0,
        };
        match kind {
            "default" => {}
            "linear" => {
                let factor = num("factor").ok_or("rope `linear` scaling needs `factor`")?;
                inv.iter_mut().for_each(|f| *f /= factor);
            }
            "llama3" => {
                let need = |k: &str| num(k).ok_or(format!("rope `llama3` scaling needs `{k}`"));
                let (factor, low, high, old) = (
                    need("factor")?,
                    need("low_freq_factor")?,
                    need("high_freq_factor")?,
                    need("original_max_position_embeddings")?,
                );
                let (low_wavelen, high_wavelen) = (old / low, old / high);
                for f in inv.iter_mut() {
                    let wavelen = 2.0 * std::f64::consts::PI / *f;
                    if wavelen > low_wavelen {
                        *f /= factor;
                    } else if wavelen >= high_wavelen {
                        let smooth = (old / wavelen - low) / (high - low);
                        *f = (1.0 - smooth) * *f / factor + smooth * *f;
                    }
                }
            }
            // transformers `_compute_longrope_parameters`: per-pair factors divide the
            // frequencies, short ones up to the original context, long ones beyond it.
            "longrope" | "su" => {
                let factors = |k: &str| -> std::result::Result<Vec<f64>, String> {
                    let v: Vec<f64> = params
                        .get(k)
                        .and_then(Value::as_array)
                        .ok_or(format!("rope `longrope` scaling needs `{k}`"))?
                        .iter()
                        .filter_map(Value::as_f64)
                        .collect();
                    if v.len() != dim / 2 {
                        return Err(format!(
                            "rope `longrope` `{k}` has {} entries, but heads rotate {} pairs",
                            v.len(),
                            dim / 2
                        ));
                    }
                    Ok(v)
                };
                let (short, long) = (factors("short_factor")?, factors("long_factor")?);
                let original = num("original_max_position_embeddings")
                    .ok_or("rope `longrope` scaling needs `original_max_position_embeddings`")?;
                let factor = num("factor").unwrap_or(max_positions as f64 / original);
                rotary.scaling = match num("attention_factor") {
                    Some(a) => a as f32,
                    None if factor <= 1.0 => 1.0,
                    None => (1.0 + factor.ln() / original.ln()).sqrt() as f32,
                };
                let scaled = |factors: &[f64]| -> Vec<f64> {
                    exponents
                        .iter()
                        .zip(factors)
                        .map(|(e, s)| 1.0 / (s * theta.powf(*e)))
                        .collect()
                };
                inv = scaled(&short);
                rotary.long = Some((scaled(&long), original as usize));
            }
            // transformers `_compute_dynamic_ntk_parameters` rescales the base only for
            // sequences longer than `max_position_embeddings`; at or below it (and glassbox
            // refuses longer inputs, `check_positions`) the base is unchanged.
            "dynamic" => {
                num("factor").ok_or("rope `dynamic` scaling needs `factor`")?;
            }
            "yarn" => {
                let (yarn, attention) = yarn(params, &exponents, theta, dim, max_positions)?;
                inv = yarn;
                rotary.scaling = attention as f32;
            }
            other => {
                return Err(format!(
                    "rope type `{other}` is not supported; supported: default, linear, llama3, longrope, yarn, dynamic"
                ))
            }
        }
        rotary.inv_freq = inv;
        Ok(rotary)
    }

    /// The frequencies a sequence of `seq` positions rotates by.
    fn frequencies(&self, seq: usize) -> &[f64] {
        match &self.long {
            Some((long, original)) if seq > *original => long,
            _ => &self.inv_freq,
        }
    }

    /// Cosine and sine of each position's angle per pair, `[seq, half]` each (position-major),
    /// the angles in f32 as `transformers` computes them; the fast forward's tables too.
    /// Each pair's frequency divided by its factor (llama.cpp's `rope_freqs`, as ggml's rope
    /// divides its angles), one factor per pair.
    pub(crate) fn divide_frequencies(
        &mut self,
        factors: &[f64],
    ) -> std::result::Result<(), String> {
        if factors.len() != self.inv_freq.len() || self.long.is_some() {
            return Err(format!(
                "rope_freqs holds {} factors where the heads rotate {} pairs{}",
                factors.len(),
                self.inv_freq.len(),
                if self.long.is_some() {
                    " (with longrope scaling, which it cannot combine with)"
                } else {
                    ""
                }
            ));
        }
        for (f, d) in self.inv_freq.iter_mut().zip(factors) {
            *f /= d;
        }
        Ok(())
    }

    pub(crate) fn tables(&self, seq: usize) -> (Vec<f32>, Vec<f32>) {
        let freqs = self.frequencies(seq);
        let half = freqs.len();
        let (mut cos, mut sin) = (
            Vec::with_capacity(seq * half),
            Vec::with_capacity(seq * half),
        );
        for p in 0..seq {
            for f in freqs {
                let angle = (p as f32) * (*f as f32);
                cos.push(angle.cos() * self.scaling);
                sin.push(angle.sin() * self.scaling);
            }
        }
        (cos, sin)
    }

    /// `x` is `[b, heads, t, head_dim]`; positions are `0..t`.
    pub(crate) fn apply(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        use candle_core::D;
        let (_, _, t, head_dim) = x.dims4()?;
        let half = self.inv_freq.len();
        let dim = 2 * half;
        // `rotate_half` pairs i with i + half, so both halves of a head take the same angles.
        let (cos, sin) = self.tables(t);
        let cos = Tensor::from_vec(cos, (1, 1, t, half), x.device())?;
        let sin = Tensor::from_vec(sin, (1, 1, t, half), x.device())?;
        let cos = Tensor::cat(&[&cos, &cos], D::Minus1)?;
        let sin = Tensor::cat(&[&sin, &sin], D::Minus1)?;
        let rot = x.narrow(D::Minus1, 0, dim)?;
        let x1 = rot.narrow(D::Minus1, 0, half)?;
        let x2 = rot.narrow(D::Minus1, half, half)?;
        let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
        let out = (rot.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?)?;
        if dim == head_dim {
            Ok(out)
        } else {
            Tensor::cat(
                &[&out, &x.narrow(D::Minus1, dim, head_dim - dim)?],
                D::Minus1,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Phi-3's longrope: short factors up to the original context, long ones past it, and the
    /// attention factor √(1 + ln(max/original) / ln(original)) on cosines and sines.
    #[test]
    fn longrope_switches_factors_with_the_sequence_length() {
        let params = json!({"rope_type": "longrope", "rope_theta": 10000.0,
            "short_factor": [1.0, 2.0], "long_factor": [4.0, 8.0],
            "original_max_position_embeddings": 8});
        let r = Rotary::from_params(&params, 4, 128).unwrap();
        let factor = (1.0f64 + (16f64).ln() / (8f64).ln()).sqrt() as f32;
        let (cos_short, sin_short) = r.tables(8);
        let (_, sin_long) = r.tables(9);
        assert!(
            (cos_short[0] - factor).abs() < 1e-6,
            "position 0: cos = factor"
        );
        // Position 1, pair 1: angle 1 / (2 · 100) short, 1 / (8 · 100) long.
        assert!((sin_short[3] - factor * (0.005f32).sin()).abs() < 1e-7);
        assert!((sin_long[3] - factor * (0.00125f32).sin()).abs() < 1e-7);
        let wrong = json!({"rope_type": "longrope", "short_factor": [1.0],
            "long_factor": [1.0, 1.0], "original_max_position_embeddings": 8});
        let e = Rotary::from_params(&wrong, 4, 128).unwrap_err();
        assert!(e.contains("short_factor") && e.contains("2 pairs"), "{e}");
    }

    /// YaRN on 4 pairs, base 10,000, an original context of 8, factor 4: the correction range
    /// is pairs [0, 1] (β_fast = 32 → −1.4, floored, clamped to 0; β_slow = 1 → 0.1, ceiled),
    /// so pair 0 keeps its frequency and pairs 1–3 are divided by 4; cosines and sines carry
    /// 0.1 ln 4 + 1.
    #[test]
    fn yarn_keeps_fast_pairs_and_interpolates_slow_ones() {
        let params = json!({"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
            "original_max_position_embeddings": 8});
        let r = Rotary::from_params(&params, 8, 32).unwrap();
        let plain = Rotary::from_params(&json!({"rope_theta": 10000.0}), 8, 32).unwrap();
        assert_eq!(r.inv_freq[0], plain.inv_freq[0]);
        for i in 1..4 {
            assert!(
                (r.inv_freq[i] - plain.inv_freq[i] / 4.0).abs() < 1e-15,
                "pair {i}"
            );
        }
        assert!((r.scaling - (0.1 * 4f32.ln() + 1.0)).abs() < 1e-6);
        // An explicit attention factor wins; without `factor`, max / original.
        let given = json!({"rope_type": "yarn", "attention_factor": 1.5,
            "original_max_position_embeddings": 8});
        let r = Rotary::from_params(&given, 8, 32).unwrap();
        assert_eq!(r.scaling, 1.5);
        assert!((r.inv_freq[3] - plain.inv_freq[3] / 4.0).abs() < 1e-15);
        let missing = json!({"rope_type": "yarn", "factor": 4.0});
        let e = Rotary::from_params(&missing, 8, 32).unwrap_err();
        assert!(e.contains("original_max_position_embeddings"), "{e}");
    }

    /// Dynamic NTK rescales the base only past `max_position_embeddings`, which glassbox
    /// never runs: the default frequencies.
    #[test]
    fn bases_factors_and_partial_factors_out_of_range_are_named() {
        let refused = |params: Value| Rotary::from_params(&params, 8, 32).err().unwrap();
        let e = refused(json!({"rope_theta": 0.0}));
        assert!(e.contains("`rope_theta` = 0.0"), "{e}");
        let e = refused(json!({"rope_type": "linear", "factor": -2.0}));
        assert!(e.contains("`factor` = -2.0"), "{e}");
        let e = refused(json!({"partial_rotary_factor": 1.5}));
        assert!(e.contains("partial_rotary_factor = 1.5"), "{e}");
        let e = refused(json!({"rope_type": "yarn", "factor": 4.0, "beta_fast": "32"}));
        assert!(e.contains("`beta_fast` = \"32\""), "{e}");
        assert!(Rotary::from_params(&json!({"partial_rotary_factor": 0.0}), 8, 32).is_ok());
    }

    #[test]
    fn dynamic_ntk_is_the_default_within_the_context() {
        let dynamic = json!({"rope_type": "dynamic", "rope_theta": 500.0, "factor": 2.0});
        let r = Rotary::from_params(&dynamic, 8, 32).unwrap();
        let plain = Rotary::from_params(&json!({"rope_theta": 500.0}), 8, 32).unwrap();
        assert_eq!(r.inv_freq, plain.inv_freq);
        let e = Rotary::from_params(&json!({"rope_type": "ntk-by-parts"}), 8, 32).unwrap_err();
        assert!(e.contains("ntk-by-parts") && e.contains("yarn"), "{e}");
    }
}
