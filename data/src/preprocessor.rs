//! Hugging Face image-processor steps as glassbox runs them: `preprocessor_config.json` read
//! the way its processor class reads it (which sizes are shorter edges, ConvNeXt's
//! `crop_pct`), then resize, centre crop, rescale and normalise per channel.

use crate::{DataError, Result};
use image::imageops::FilterType;
use image::{ImageBuffer, Pixel, RgbImage};
use std::path::Path;

/// Hugging Face image-processor steps, in order. Recorded in the manifest of image runs, so
/// later stages and the report can show an image as the model saw it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Preprocessor {
    /// Resize so the shorter edge has this many pixels (aspect kept); `None` = no resize.
    pub shortest_edge: Option<u32>,
    /// Resize to exactly `(height, width)` instead (ViT-style processors).
    pub resize_to: Option<(u32, u32)>,
    /// Centre crop to `(height, width)`.
    pub crop: Option<(u32, u32)>,
    /// A second centre crop after `crop`: `ConvNextImageProcessor` crops `size` × `size` for its
    /// `crop_pct` and then, where `do_center_crop` is set, `crop_size`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub second_crop: Option<(u32, u32)>,
    pub rescale_factor: f32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    #[serde(with = "filter_name")]
    pub filter: FilterType,
}

/// The processor class a `preprocessor_config.json` names (`image_processor_type`, or
/// `feature_extractor_type` in older files), without its `ImageProcessor`/`FeatureExtractor`
/// suffix.
fn processor_kind(v: &serde_json::Value) -> &str {
    v.as_object().map_or("", processor_kind_of)
}

fn processor_kind_of(v: &serde_json::Map<String, serde_json::Value>) -> &str {
    let name = ["image_processor_type", "feature_extractor_type"]
        .iter()
        .find_map(|k| v.get(*k).and_then(|x| x.as_str()))
        .unwrap_or("");
    let name = name.strip_suffix("Fast").unwrap_or(name);
    name.strip_suffix("ImageProcessor")
        .or_else(|| name.strip_suffix("FeatureExtractor"))
        .unwrap_or(name)
}

/// The processor class `transformers`' `AutoImageProcessor` maps a vision `model_type` to
/// (`IMAGE_PROCESSOR_MAPPING_NAMES`), for the families glassbox loads.
fn auto_processor(model_type: &str) -> Option<&'static str> {
    match model_type {
        "resnet" | "convnext" => Some("ConvNext"),
        "vit" => Some("ViT"),
        "clip" | "clip_vision_model" => Some("CLIP"),
        _ => None,
    }
}

/// The resampling filter a processor class uses when its file names none: bicubic for
/// ConvNeXt's and CLIP's, bilinear for the others (ViT's).
fn default_resample(v: &serde_json::Value) -> u64 {
    match processor_kind(v) {
        "ConvNext" | "CLIP" | "ChineseCLIP" | "Bit" => 3,
        _ => 2,
    }
}

/// `ConvNextImageProcessor` (ResNet and ConvNeXt checkpoints): `crop_pct` applies.
fn convnext_processor(v: &serde_json::Value) -> bool {
    processor_kind(v) == "ConvNext" || v.get("crop_pct").is_some()
}

/// Processors whose bare-number `size` is the shorter edge (`default_to_square=False` in their
/// `get_size_dict`), not a square.
fn shortest_edge_processor(v: &serde_json::Value) -> bool {
    convnext_processor(v)
        || matches!(
            processor_kind(v),
            "CLIP" | "ChineseCLIP" | "Bit" | "MobileNetV1" | "MobileNetV2" | "LevIT"
        )
}

/// `FilterType` by name (the `image` crate's type has no serde).
mod filter_name {
    use super::FilterType;
    use serde::{Deserialize, Deserializer, Serializer};

    const NAMES: [(FilterType, &str); 5] = [
        (FilterType::Nearest, "nearest"),
        (FilterType::Triangle, "bilinear"),
        (FilterType::CatmullRom, "bicubic"),
        (FilterType::Gaussian, "gaussian"),
        (FilterType::Lanczos3, "lanczos3"),
    ];

    pub fn serialize<S: Serializer>(f: &FilterType, s: S) -> Result<S::Ok, S::Error> {
        let name = NAMES
            .iter()
            .find(|(x, _)| x == f)
            .map_or("bilinear", |(_, n)| n);
        s.serialize_str(name)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<FilterType, D::Error> {
        let name = String::deserialize(d)?;
        NAMES
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(f, _)| *f)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown resampling filter `{name}`")))
    }
}

impl Preprocessor {
    /// Pixels as they are: no resize or crop, 0–255 scaled to 0–1, no normalisation.
    pub fn identity() -> Self {
        Self {
            shortest_edge: None,
            resize_to: None,
            crop: None,
            second_crop: None,
            rescale_factor: 1.0 / 255.0,
            mean: [0.0; 3],
            std: [1.0; 3],
            filter: FilterType::Triangle,
        }
    }

    /// Reads `preprocessor_config.json` (`size`, `crop_size`, `do_*`, `rescale_factor`,
    /// `image_mean`, `image_std`, `resample`: 2 bilinear, 3 bicubic).
    pub fn from_json_file(path: &Path) -> Result<Self> {
        Self::from_json_file_for(path, None)
    }

    /// As [`Self::from_json_file`], for a checkpoint whose `config.json` has `model_type`: a
    /// file that names no processor class is read as the class `transformers`'
    /// `AutoImageProcessor` picks for that model type (ResNet's is ConvNeXt's).
    pub fn from_json_file_for(path: &Path, model_type: Option<&str>) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(DataError::io(path))?;
        let mut v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| DataError::Invalid {
                path: path.to_path_buf(),
                message: format!("not valid JSON: {e}"),
            })?;
        if let (Some(kind), serde_json::Value::Object(m)) =
            (model_type.and_then(auto_processor), &mut v)
        {
            if processor_kind_of(m).is_empty() {
                m.insert(
                    "image_processor_type".into(),
                    format!("{kind}ImageProcessor").into(),
                );
            }
        }
        let bad = |message: String| DataError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let flag = |k: &str, default: bool| v.get(k).and_then(|x| x.as_bool()).unwrap_or(default);
        let num =
            |x: &serde_json::Value, k: &str| x.get(k).and_then(|n| n.as_u64()).map(|n| n as u32);
        let hw = |x: Option<&serde_json::Value>| -> Option<(u32, u32)> {
            let x = x?;
            if let Some(n) = x.as_u64() {
                return Some((n as u32, n as u32));
            }
            Some((num(x, "height")?, num(x, "width")?))
        };
        let (mut shortest_edge, mut resize_to, mut second_crop) = (None, None, None);
        let mut crop =
            if flag("do_center_crop", false) {
                Some(hw(v.get("crop_size")).ok_or_else(|| {
                    bad("do_center_crop is set but `crop_size` is missing".into())
                })?)
            } else {
                None
            };
        if flag("do_resize", true) {
            let size = v.get("size");
            // A bare number means the shorter edge for the processors that `transformers`
            // builds with `default_to_square=False`, a square for the others (ViT).
            let edge = size.and_then(|s| num(s, "shortest_edge")).or_else(|| {
                shortest_edge_processor(&v).then(|| size?.as_u64().map(|n| n as u32))?
            });
            match edge {
                // `ConvNextImageProcessor`: below 384 px, resize the shorter edge to
                // size / crop_pct, then centre-crop size × size; from 384 on, a square resize.
                Some(n) if convnext_processor(&v) => {
                    let crop_pct = v.get("crop_pct").and_then(|x| x.as_f64()).unwrap_or(224.0 / 256.0);
                    if !(crop_pct > 0.0 && crop_pct <= 1.0) {
                        return Err(bad(format!("crop_pct {crop_pct} must lie in (0, 1]")));
                    }
                    if n < 384 {
                        shortest_edge = Some((n as f64 / crop_pct) as u32);
                        // Its own crop first, then `do_center_crop`'s (if set).
                        second_crop = crop.take();
                        crop = Some((n, n));
                    } else {
                        resize_to = Some((n, n));
                    }
                }
                Some(n) => shortest_edge = Some(n),
                None => {
                    resize_to = Some(hw(size).ok_or_else(|| {
                        bad("do_resize is set but `size` has neither `shortest_edge` nor `height`/`width`".into())
                    })?)
                }
            }
        }
        let triple = |k: &str, default: [f32; 3]| -> Result<[f32; 3]> {
            match v.get(k) {
                None => Ok(default),
                Some(x) => {
                    let a: Vec<f32> = x
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|n| n.as_f64())
                                .map(|n| n as f32)
                                .collect()
                        })
                        .unwrap_or_default();
                    <[f32; 3]>::try_from(a).map_err(|_| bad(format!("`{k}` must be three numbers")))
                }
            }
        };
        let (mean, std) = if flag("do_normalize", true) {
            (
                triple("image_mean", [0.5; 3])?,
                triple("image_std", [0.5; 3])?,
            )
        } else {
            ([0.0; 3], [1.0; 3])
        };
        if std.contains(&0.0) {
            return Err(bad("`image_std` has a zero".into()));
        }
        let rescale_factor = if flag("do_rescale", true) {
            v.get("rescale_factor")
                .and_then(|x| x.as_f64())
                .unwrap_or(1.0 / 255.0) as f32
        } else {
            1.0
        };
        let resample = v.get("resample").and_then(|x| x.as_u64());
        let filter = match resample.unwrap_or_else(|| default_resample(&v)) {
            0 => FilterType::Nearest,
            3 => FilterType::CatmullRom,
            _ => FilterType::Triangle,
        };
        Ok(Self {
            shortest_edge,
            resize_to,
            crop,
            second_crop,
            rescale_factor,
            mean,
            std,
            filter,
        })
    }

    /// The output size `(height, width)`.
    pub fn output_size(&self) -> Option<(u32, u32)> {
        self.second_crop.or(self.crop).or(self.resize_to)
    }

    /// The size `(width, height)` an image of `(width, height)` has after the resize: the
    /// shorter edge set and the longer one truncated as `transformers`'
    /// `get_resize_output_image_size` computes it (`int(edge * long / short)`), or the fixed size.
    pub fn resized_size(&self, (w, h): (u32, u32)) -> (u32, u32) {
        if let Some(edge) = self.shortest_edge {
            if w <= h {
                (edge, (h as u64 * edge as u64 / w as u64) as u32)
            } else {
                ((w as u64 * edge as u64 / h as u64) as u32, edge)
            }
        } else if let Some((h, w)) = self.resize_to {
            (w, h)
        } else {
            (w, h)
        }
    }

    /// The offset `(x, y)` of the centre crops in the resized image of `(width, height)`.
    pub fn crop_offset(&self, (w, h): (u32, u32)) -> (u32, u32) {
        let (mut x, mut y, mut w, mut h) = (0, 0, w, h);
        for (ch, cw) in [self.crop, self.second_crop].into_iter().flatten() {
            let (cw, ch) = (cw.min(w), ch.min(h));
            x += (w - cw) / 2;
            y += (h - ch) / 2;
            (w, h) = (cw, ch);
        }
        (x, y)
    }

    /// The geometric steps alone (resize, centre crop) with `filter`, for any pixel type: the
    /// image's own filter for pixels, nearest for segmentation masks so they stay binary.
    pub fn resize_and_crop<P>(
        &self,
        img: &ImageBuffer<P, Vec<P::Subpixel>>,
        filter: FilterType,
        source: &Path,
    ) -> Result<ImageBuffer<P, Vec<P::Subpixel>>>
    where
        P: Pixel + 'static,
        P::Subpixel: 'static,
    {
        let mut img = std::borrow::Cow::Borrowed(img);
        if self.shortest_edge.is_some() || self.resize_to.is_some() {
            let (nw, nh) = self.resized_size(img.dimensions());
            img = std::borrow::Cow::Owned(image::imageops::resize(&*img, nw, nh, filter));
        }
        for (ch, cw) in [self.crop, self.second_crop].into_iter().flatten() {
            let (w, h) = img.dimensions();
            if w < cw || h < ch {
                return Err(DataError::Invalid {
                    path: source.to_path_buf(),
                    message: format!(
                        "image is {w}×{h}, smaller than the {cw}×{ch} crop and the preprocessor does not resize; enlarge it or set `size` in preprocessor_config.json"
                    ),
                });
            }
            let (x, y) = ((w - cw) / 2, (h - ch) / 2);
            img =
                std::borrow::Cow::Owned(image::imageops::crop_imm(&*img, x, y, cw, ch).to_image());
        }
        Ok(img.into_owned())
    }

    /// Resizes, crops and normalises; returns `height × width × 3` values (channels last).
    /// Images smaller than the crop are upscaled by the resize; with no resize configured
    /// they are an error naming the file.
    pub fn apply(&self, img: &RgbImage, source: &Path) -> Result<(Vec<f32>, u32, u32)> {
        let img = self.resize_and_crop(img, self.filter, source)?;
        let (w, h) = img.dimensions();
        let mut out = Vec::with_capacity((w * h * 3) as usize);
        for p in img.pixels() {
            for c in 0..3 {
                out.push((p.0[c] as f32 * self.rescale_factor - self.mean[c]) / self.std[c]);
            }
        }
        Ok((out, h, w))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn write_json(dir: &Path, v: serde_json::Value) -> PathBuf {
        let p = dir.join("preprocessor_config.json");
        std::fs::write(&p, v.to_string()).unwrap();
        p
    }

    /// The geometry `transformers` gives each processor kind's `size`.
    #[test]
    fn sizes_mean_what_each_processor_kind_makes_of_them() {
        let dir = tempfile::tempdir().unwrap();
        let read = |v: serde_json::Value| {
            Preprocessor::from_json_file(&write_json(dir.path(), v)).unwrap()
        };
        // ResNet's ConvNext processor: shorter edge to int(224 / 0.875) = 256, crop 224.
        let p = read(
            serde_json::json!({"feature_extractor_type": "ConvNextFeatureExtractor",
            "crop_pct": 0.875, "size": 224, "resample": 3}),
        );
        assert_eq!(
            (p.shortest_edge, p.resize_to, p.crop),
            (Some(256), None, Some((224, 224)))
        );
        // … from 384 px on, a square resize and no crop.
        let p = read(
            serde_json::json!({"image_processor_type": "ConvNextImageProcessor",
            "size": {"shortest_edge": 384}}),
        );
        assert_eq!(
            (p.shortest_edge, p.resize_to, p.crop),
            (None, Some((384, 384)), None)
        );
        // CLIP's bare 224 is the shorter edge; ViT's is a square.
        let p = read(
            serde_json::json!({"feature_extractor_type": "CLIPFeatureExtractor",
            "size": 224, "do_center_crop": true, "crop_size": 224}),
        );
        assert_eq!(
            (p.shortest_edge, p.resize_to, p.crop),
            (Some(224), None, Some((224, 224)))
        );
        let p = read(serde_json::json!({"image_processor_type": "ViTImageProcessor", "size": 224}));
        assert_eq!((p.shortest_edge, p.resize_to), (None, Some((224, 224))));
        // The longer edge is truncated as `int(224 * 640 / 480)` = 298 (not rounded to 299).
        let p = Preprocessor {
            shortest_edge: Some(224),
            ..Preprocessor::identity()
        };
        let img = RgbImage::new(640, 480);
        let out = p
            .resize_and_crop(&img, FilterType::Triangle, Path::new("x.png"))
            .unwrap();
        assert_eq!(out.dimensions(), (298, 224));
        let e = Preprocessor::from_json_file(&write_json(
            dir.path(),
            serde_json::json!({"crop_pct": 1.5, "size": 224}),
        ))
        .unwrap_err();
        assert!(e.to_string().contains("crop_pct"), "{e}");
    }

    /// A file naming no processor class is read as the one `transformers` picks for the model
    /// type; ConvNeXt's `crop_pct` crop is followed by `do_center_crop`'s.
    #[test]
    fn the_model_type_names_the_processor_and_convnext_crops_twice() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_json(
            dir.path(),
            serde_json::json!({"size": {"shortest_edge": 72}, "do_center_crop": true,
                "crop_size": {"height": 64, "width": 64}}),
        );
        let generic = Preprocessor::from_json_file(&path).unwrap();
        assert_eq!(
            (generic.shortest_edge, generic.crop, generic.second_crop),
            (Some(72), Some((64, 64)), None)
        );
        assert_eq!(generic.filter, FilterType::Triangle);
        // ResNet → ConvNextImageProcessor: int(72 / 0.875) = 82, crop 72, then crop 64; bicubic.
        let resnet = Preprocessor::from_json_file_for(&path, Some("resnet")).unwrap();
        assert_eq!(
            (resnet.shortest_edge, resnet.crop, resnet.second_crop),
            (Some(82), Some((72, 72)), Some((64, 64)))
        );
        assert_eq!(resnet.filter, FilterType::CatmullRom);
        assert_eq!(resnet.output_size(), Some((64, 64)));
        // 50 × 40 → 102 × 82 → crop 72 at (15, 5) → crop 64 at (4, 4): offset (19, 9).
        assert_eq!(resnet.resized_size((50, 40)), (102, 82));
        assert_eq!(resnet.crop_offset((102, 82)), (19, 9));
        let img = RgbImage::from_fn(50, 40, |x, y| image::Rgb([x as u8, y as u8, 0]));
        let out = resnet
            .resize_and_crop(&img, FilterType::Nearest, Path::new("x.png"))
            .unwrap();
        assert_eq!(out.dimensions(), (64, 64));
        // An explicit class or resample wins over the model type's.
        let vit = write_json(
            dir.path(),
            serde_json::json!({"image_processor_type": "ViTImageProcessor", "size": 32, "resample": 2}),
        );
        let p = Preprocessor::from_json_file_for(&vit, Some("resnet")).unwrap();
        assert_eq!(
            (p.resize_to, p.filter),
            (Some((32, 32)), FilterType::Triangle)
        );
    }

    #[test]
    fn preprocessing_resizes_crops_and_normalises() {
        let dir = tempfile::tempdir().unwrap();
        let p = write_json(
            dir.path(),
            serde_json::json!({"size": {"shortest_edge": 8}, "do_center_crop": true,
                "crop_size": {"height": 4, "width": 4}, "rescale_factor": 1.0 / 255.0,
                "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.25, 1.0]}),
        );
        let pre = Preprocessor::from_json_file(&p).unwrap();
        // A 16×32 image of constant colour: any resize keeps it constant.
        let img = RgbImage::from_pixel(32, 16, image::Rgb([255, 0, 51]));
        let (v, h, w) = pre.apply(&img, Path::new("x.png")).unwrap();
        assert_eq!((h, w), (4, 4));
        assert_eq!(v.len(), 48);
        assert!(
            (v[0] - 1.0).abs() < 1e-6 && (v[1] + 2.0).abs() < 1e-6 && (v[2] + 0.3).abs() < 1e-6
        );
    }

    #[test]
    fn small_images_without_resize_are_named_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = write_json(
            dir.path(),
            serde_json::json!({"do_resize": false, "do_center_crop": true, "crop_size": 224}),
        );
        let pre = Preprocessor::from_json_file(&p).unwrap();
        let img = RgbImage::new(100, 80);
        let e = pre
            .apply(&img, Path::new("tiny.png"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("tiny.png") && e.contains("smaller than the 224×224 crop"),
            "{e}"
        );
    }
}
