//! Image data sets and preprocessing.
//!
//! A data set is either a folder with one sub-folder per class (the class name becomes the
//! `label` column) or a JSONL/CSV/Parquet manifest with an `image_path` column (relative to the
//! manifest's folder, or absolute) and any label columns. Either way it becomes a
//! [`TextDataset`] whose "texts" are the image paths, so `examples.parquet`, probes and reports
//! treat images like any other example.
//!
//! Decoding: PNG, JPEG, BMP, TIFF, WebP and PPM/PGM (torchvision's `ImageFolder` extensions;
//! other files in a class folder are left out and listed). Grayscale images are replicated to three channels and alpha is
//! dropped (not blended): models see RGB only. Preprocessing follows Hugging Face image
//! processors ([`crate::preprocessor`]: resize, centre-crop, rescale, normalise per channel).

use crate::dataset::read_dataset_keyed;
use crate::{Column, ColumnKind, DataError, Result, TextDataset, Value};
pub use image::imageops::FilterType;
use image::RgbImage;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// File extensions read as images: torchvision's `ImageFolder` list, so a class folder yields
/// the same images in both.
pub const IMAGE_EXTENSIONS: &[&str] = &[
    "png", "jpg", "jpeg", "bmp", "tif", "tiff", "webp", "ppm", "pgm",
];

/// The manifest column that holds image paths.
pub const IMAGE_COLUMN: &str = "image_path";

/// An image data set: paths (in `data.texts`) resolved against `root`.
#[derive(Debug, Clone)]
pub struct ImageDataset {
    pub data: TextDataset,
    pub root: PathBuf,
    /// Files in the class folders left out as not images (by extension; hidden files are not
    /// listed), relative to `root`, so the caller can say so.
    pub skipped: Vec<String>,
    /// Class folders with no image under them (no examples of that class).
    pub empty_classes: Vec<String>,
}

impl ImageDataset {
    pub fn len(&self) -> usize {
        self.data.len()
    }
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
    /// The file of example `i`.
    pub fn path(&self, i: usize) -> PathBuf {
        self.root.join(&self.data.texts[i])
    }
}

fn is_image(p: &Path) -> bool {
    p.extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.as_str()))
}

/// Whether `path` looks like an image data set (a folder, or a manifest with `image_path`).
pub fn looks_like_images(path: &Path) -> bool {
    if path.is_dir() {
        return true;
    }
    match std::fs::read_to_string(path) {
        Ok(text) => text
            .lines()
            .next()
            .is_some_and(|first| first.contains(IMAGE_COLUMN)),
        Err(_) => false,
    }
}

/// Reads an image data set; its `sha256` covers the manifest (or listing) and every image's
/// bytes, so a changed image changes the fingerprint.
pub fn read_image_dataset(path: &Path) -> Result<ImageDataset> {
    let (mut data, root, skipped, empty_classes) = if path.is_dir() {
        let (data, skipped, empty) = read_class_folders(path)?;
        (data, path.to_path_buf(), skipped, empty)
    } else {
        let data = read_dataset_keyed(path, IMAGE_COLUMN)?;
        let root = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        (data, root, Vec::new(), Vec::new())
    };
    let mut hasher = Sha256::new();
    hasher.update(data.sha256.as_bytes());
    for (i, rel) in data.texts.iter().enumerate() {
        let file = root.join(rel);
        let bytes = std::fs::read(&file).map_err(|e| DataError::Invalid {
            path: file.clone(),
            message: format!("image of example {i} (row {}) cannot be read: {e}", i + 1),
        })?;
        hasher.update(Sha256::digest(&bytes));
    }
    data.sha256 = format!("{:x}", hasher.finalize());
    Ok(ImageDataset {
        data,
        root,
        skipped,
        empty_classes,
    })
}

/// A set of images for a concept: the image files directly inside a folder (sorted by name).
#[derive(Debug, Clone)]
pub struct ImageSet {
    pub name: String,
    pub files: Vec<PathBuf>,
    /// Over the names and bytes of the files.
    pub sha256: String,
}

/// Reads a concept folder of images; fewer than `min_size` is an error naming the folder.
pub fn read_image_set(dir: &Path, min_size: usize) -> Result<ImageSet> {
    let entries = std::fs::read_dir(dir).map_err(|e| DataError::Invalid {
        path: dir.to_path_buf(),
        message: format!("cannot read the concept folder: {e}"),
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && is_image(p))
        .collect();
    files.sort();
    if files.len() < min_size.max(1) {
        return Err(DataError::Invalid {
            path: dir.to_path_buf(),
            message: format!(
                "concept set has {} image(s) ({}), fewer than the {} required; add images or lower min_concept_size",
                files.len(),
                IMAGE_EXTENSIONS.join("/"),
                min_size.max(1)
            ),
        });
    }
    let mut hasher = Sha256::new();
    for f in &files {
        hasher.update(
            f.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
        hasher.update(Sha256::digest(std::fs::read(f).map_err(DataError::io(f))?));
    }
    Ok(ImageSet {
        name: dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| dir.display().to_string()),
        files,
        sha256: format!("{:x}", hasher.finalize()),
    })
}

/// One sub-folder per class, classes by name; each class holds the image files anywhere under
/// its folder, in torchvision `ImageFolder`'s order (`sorted(os.walk(class_dir))`, then the
/// file names sorted: by the folder's path as a string, then the name), so both read the same
/// images in the same order. Also returns the files left out for their extension (hidden ones,
/// `.DS_Store` and the like, unlisted) and the class folders that hold no image.
fn read_class_folders(dir: &Path) -> Result<(TextDataset, Vec<String>, Vec<String>)> {
    let list = |d: &Path| -> Result<Vec<PathBuf>> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(d)
            .map_err(DataError::io(d))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        v.sort();
        Ok(v)
    };
    let mut texts = Vec::new();
    let mut labels = Vec::new();
    let mut listing = String::new();
    let mut skipped = Vec::new();
    let mut empty = Vec::new();
    for class_dir in list(dir)?.into_iter().filter(|p| p.is_dir()) {
        let class = class_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut found = 0;
        for (folder, name) in files_under(&class_dir, &class)? {
            let rel = format!("{folder}/{name}");
            if !is_image(Path::new(&name)) {
                if !name.starts_with('.') {
                    skipped.push(rel);
                }
                continue;
            }
            listing.push_str(&rel);
            listing.push('\n');
            texts.push(rel);
            labels.push(Value::Str(class.clone()));
            found += 1;
        }
        if found == 0 {
            empty.push(class);
        }
    }
    if texts.is_empty() {
        return Err(DataError::Invalid {
            path: dir.to_path_buf(),
            message: format!(
                "no images found: expected one sub-folder per class holding {} files, or pass a manifest with an `{IMAGE_COLUMN}` column",
                IMAGE_EXTENSIONS.join("/")
            ),
        });
    }
    let data = TextDataset {
        source: dir.to_path_buf(),
        sha256: crate::hash::sha256_bytes(listing.as_bytes()),
        texts,
        splits: None,
        columns: vec![Column {
            name: "label".into(),
            kind: ColumnKind::Str,
            values: labels,
        }],
    };
    Ok((data, skipped, empty))
}

/// Every file under `class_dir` as (its folder relative to the data set's root, its name),
/// sorted as `ImageFolder` walks: by folder path as a string, then by name. Symbolic links to
/// folders are followed (`os.walk(followlinks=True)`), each real folder once.
fn files_under(class_dir: &Path, class: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![(class_dir.to_path_buf(), class.to_owned())];
    while let Some((dir, rel)) = stack.pop() {
        // A link back up the tree would loop forever.
        if let Ok(real) = std::fs::canonicalize(&dir) {
            if !seen.insert(real) {
                continue;
            }
        }
        for entry in std::fs::read_dir(&dir).map_err(DataError::io(&dir))? {
            let path = entry.map_err(DataError::io(&dir))?.path();
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if path.is_dir() {
                stack.push((path, format!("{rel}/{name}")));
            } else if path.is_file() {
                out.push((rel.clone(), name));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Decodes an image to RGB (grayscale replicated, alpha dropped), naming the file on error.
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    let bytes = std::fs::read(path).map_err(|e| DataError::Invalid {
        path: path.to_path_buf(),
        message: format!("cannot read image: {e}"),
    })?;
    let img = image::load_from_memory(&bytes).map_err(|e| DataError::Invalid {
        path: path.to_path_buf(),
        message: format!(
            "not a decodable image ({e}); glassbox reads {} — re-save or remove the file",
            IMAGE_EXTENSIONS.join(", ")
        ),
    })?;
    Ok(to_rgb8_as_pillow(img))
}

/// 8-bit RGB as Pillow's `convert("RGB")` gives it, which transformers' image processors and
/// torchvision's `ImageFolder` start from: 16-bit channels keep their high byte (the `image`
/// crate would round v · 255 / 65535, one level off half the time). Pillow reads a 16-bit grey
/// PNG as `I;16` and clips it to white on conversion; glassbox takes the high byte there too,
/// the picture rather than the artefact.
fn to_rgb8_as_pillow(img: image::DynamicImage) -> RgbImage {
    use image::DynamicImage as D;
    let high_byte = |v: u16| (v >> 8) as u8;
    match img {
        D::ImageRgb16(_) | D::ImageRgba16(_) | D::ImageLuma16(_) | D::ImageLumaA16(_) => {
            let wide = img.to_rgb16();
            let (w, h) = wide.dimensions();
            RgbImage::from_raw(w, h, wide.into_raw().into_iter().map(high_byte).collect())
                .expect("one byte per 16-bit value")
        }
        other => other.to_rgb8(),
    }
}

pub use crate::preprocessor::Preprocessor;

/// The image at `path` as the model saw it (resized and cropped by `pre`, not normalised).
pub fn model_input(path: &Path, pre: &Preprocessor) -> Result<RgbImage> {
    let img = load_rgb(path)?;
    pre.resize_and_crop(&img, pre.filter, path)
}

/// Writes preprocessed pixels (`height × width × 3`, channels-last, normalised by `pre`) back
/// as the PNG the model saw — crop and resize included, normalisation undone — so maps of
/// those pixels can be laid over it.
pub fn write_model_input_png(
    path: &Path,
    pixels: &[f32],
    (height, width): (usize, usize),
    pre: &Preprocessor,
) -> Result<()> {
    let mut img = image::RgbImage::new(width as u32, height as u32);
    for (i, px) in img.pixels_mut().enumerate() {
        for c in 0..3 {
            let v = (pixels[i * 3 + c] * pre.std[c] + pre.mean[c]) / pre.rescale_factor;
            px.0[c] = v.round().clamp(0.0, 255.0) as u8;
        }
    }
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .map_err(|e| DataError::Invalid {
        path: path.to_path_buf(),
        message: format!("cannot encode PNG: {e}"),
    })?;
    crate::atomic::write_bytes(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 16-bit grey keeps its high byte, repeated over the channels (Pillow would clip it to
    /// white; `data/tests/image_formats.rs` holds the 16-bit RGB case to Pillow).
    #[test]
    fn sixteen_bit_grey_keeps_its_high_byte() {
        let grey = image::ImageBuffer::<image::Luma<u16>, Vec<u16>>::from_raw(
            3,
            1,
            vec![0x00ff, 0x8000, 0xffff],
        )
        .unwrap();
        let rgb = to_rgb8_as_pillow(image::DynamicImage::ImageLuma16(grey));
        assert_eq!(rgb.into_raw(), [0, 0, 0, 128, 128, 128, 255, 255, 255]);
    }

    /// The order torchvision's `ImageFolder` reads a tree in, taken from Python on this tree:
    /// `for c in sorted(classes): for root, _, f in sorted(os.walk(c)): for n in sorted(f):`
    /// (keeping image extensions) printed `cat/.h.png, cat/z.png, cat/B/w.PNG, cat/a/y.jpg,
    /// cat/a-b/x.png, dog/1.png` — nested folders included, sorted by path as a string.
    #[test]
    fn nested_class_folders_read_in_image_folder_order() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for sub in ["cat/a", "cat/a-b", "cat/B", "dog", "empty/sub"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        let png = {
            let mut bytes = Vec::new();
            image::RgbImage::new(2, 2)
                .write_to(
                    &mut std::io::Cursor::new(&mut bytes),
                    image::ImageFormat::Png,
                )
                .unwrap();
            bytes
        };
        for f in [
            "cat/z.png",
            "cat/a/y.jpg",
            "cat/a-b/x.png",
            "cat/B/w.PNG",
            "cat/.h.png",
            "cat/notes.txt",
            "dog/1.png",
            "empty/sub/readme.md",
        ] {
            std::fs::write(root.join(f), &png).unwrap();
        }
        let set = read_image_dataset(root).unwrap();
        assert_eq!(
            set.data.texts,
            [
                "cat/.h.png",
                "cat/z.png",
                "cat/B/w.PNG",
                "cat/a/y.jpg",
                "cat/a-b/x.png",
                "dog/1.png"
            ]
        );
        let labels: Vec<String> = set.data.columns[0]
            .values
            .iter()
            .map(|v| match v {
                Value::Str(s) => s.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(labels, ["cat", "cat", "cat", "cat", "cat", "dog"]);
        assert_eq!(set.skipped, ["cat/notes.txt", "empty/sub/readme.md"]);
        assert_eq!(set.empty_classes, ["empty"]);
    }

    #[test]
    fn class_folders_and_bad_images() {
        let dir = tempfile::tempdir().unwrap();
        for (class, n) in [("dots", 2), ("stripes", 1)] {
            std::fs::create_dir_all(dir.path().join(class)).unwrap();
            for i in 0..n {
                RgbImage::new(4, 4)
                    .save(dir.path().join(class).join(format!("{i}.png")))
                    .unwrap();
            }
        }
        std::fs::write(dir.path().join("dots").join("notes.txt"), "ignored").unwrap();
        let ds = read_image_dataset(dir.path()).unwrap();
        assert_eq!(
            ds.data.texts,
            vec!["dots/0.png", "dots/1.png", "stripes/0.png"]
        );
        assert_eq!(ds.data.columns[0].values[2], Value::Str("stripes".into()));

        let gray = dir.path().join("gray.png");
        image::GrayAlphaImage::from_pixel(3, 3, image::LumaA([200, 10]))
            .save(&gray)
            .unwrap();
        assert_eq!(load_rgb(&gray).unwrap().get_pixel(1, 1).0, [200, 200, 200]);

        let corrupt = dir.path().join("corrupt.png");
        std::fs::write(&corrupt, b"\x89PNG\r\n\x1a\nnot really").unwrap();
        let e = load_rgb(&corrupt).unwrap_err().to_string();
        assert!(
            e.contains("corrupt.png") && e.contains("not a decodable image"),
            "{e}"
        );
    }
}
