//! Every image format a class folder may hold decodes to the pixels Pillow gives
//! (`PIL.Image.open(f).convert("RGB")`, recorded by `scripts/reference_image_formats.py`):
//! exactly for every format but JPEG, whose decoders round differently (see `tolerance`).

use glassbox_data::images::{load_rgb, read_image_dataset, IMAGE_EXTENSIONS};
use std::path::PathBuf;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/image_formats")
}

/// The largest difference to Pillow each format may have, in 8-bit levels.
fn tolerance(name: &str) -> u8 {
    match name {
        // zune-jpeg (the `image` crate's decoder) and libjpeg-turbo (Pillow's) round the
        // integer IDCT and the 4:2:0 chroma upsampling differently: up to 4 levels at the hard
        // edges of the fixture. WebP's lossy decoding matches Pillow's libwebp exactly.
        n if n.ends_with(".jpg") => 4,
        _ => 0,
    }
}

#[test]
fn every_format_decodes_as_pillow_does() {
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("reference.json")).unwrap())
            .unwrap();
    let files = reference.as_object().unwrap();
    assert!(files.len() >= 15, "{:?}", files.keys());
    for (name, want) in files {
        let img = load_rgb(&fixtures().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            (img.height() as u64, img.width() as u64),
            (
                want["height"].as_u64().unwrap(),
                want["width"].as_u64().unwrap()
            ),
            "{name}"
        );
        let want: Vec<u8> = want["rgb"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u8)
            .collect();
        let worst = img
            .as_raw()
            .iter()
            .zip(&want)
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap();
        assert!(
            worst <= tolerance(name),
            "{name}: differs from Pillow by up to {worst} levels"
        );
    }
}

#[test]
fn class_folders_read_every_listed_format_and_list_what_they_leave_out() {
    let dir = tempfile::tempdir().unwrap();
    let class = dir.path().join("pictures");
    std::fs::create_dir_all(&class).unwrap();
    for entry in std::fs::read_dir(fixtures()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, class.join(path.file_name().unwrap())).unwrap();
    }
    std::fs::write(class.join(".DS_Store"), b"junk").unwrap();
    std::fs::write(class.join("notes.txt"), b"not an image").unwrap();
    let data = read_image_dataset(dir.path()).unwrap();
    let mut extensions: Vec<String> = data
        .data
        .texts
        .iter()
        .map(|t| t.rsplit('.').next().unwrap().to_owned())
        .collect();
    extensions.sort();
    extensions.dedup();
    let mut listed: Vec<&str> = IMAGE_EXTENSIONS
        .iter()
        .copied()
        .filter(|e| *e != "jpeg")
        .collect();
    listed.sort();
    assert_eq!(extensions, listed, "one fixture per extension");
    assert_eq!(
        data.skipped,
        vec!["pictures/notes.txt", "pictures/reference.json"],
        "hidden files are not listed"
    );
}
