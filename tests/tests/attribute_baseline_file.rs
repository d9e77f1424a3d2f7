//! `attribute --baseline-file`: a user's `.npy` baseline. An all-zero array gives exactly the
//! attributions of `--baseline zero` (text: one `[hidden]` row; images: `[3, H, W]` channels
//! first); arrays of the wrong shape or a file that is not an array are refused naming the
//! shape that fits, exit 2, the run unchanged.

use glassbox_tests::{assert_bad_input, assert_success, glassbox, tiny_decoder_run};
use std::path::Path;

/// A little-endian f32 `.npy` file, as `numpy.save` writes it.
fn write_npy(path: &Path, shape: &[usize], values: &[f32]) {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    for v in values {
        bytes.extend(v.to_le_bytes());
    }
    std::fs::write(path, bytes).unwrap();
}

fn attribute(run: &Path, target: &str, extra: &[&str]) -> std::process::Output {
    glassbox()
        .args(["attribute", "--run"])
        .arg(run)
        .args([
            "--target",
            target,
            "--method",
            "saliency,ig,occlusion",
            "--steps",
            "8",
        ])
        .args([
            "--max-examples",
            "2",
            "--no-sanity",
            "--curve-points",
            "4",
            "--force",
        ])
        .args(extra)
        .output()
        .unwrap()
}

/// Every attribution file's bytes under `attributions/method=*/` (the maps).
fn maps(run: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![run.join("attributions")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().contains("method=") {
                out.push((p.display().to_string(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_zero_text_baseline_file_equals_the_zero_baseline_and_bad_shapes_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    tiny_decoder_run("tiny_gpt2", &run, false, None);
    let out = attribute(&run, "token: the", &[]);
    assert_success(&out, "attribute (zero baseline)");
    let zero = maps(&run);
    let row = tmp.path().join("row.npy");
    write_npy(&row, &[32], &[0.0; 32]);
    let out = attribute(
        &run,
        "token: the",
        &["--baseline-file", row.to_str().unwrap()],
    );
    assert_success(&out, "attribute (zero baseline file)");
    assert!(
        zero == maps(&run),
        "a zero [hidden] file is the zero baseline"
    );

    let snapshot = maps(&run);
    let wide = tmp.path().join("wide.npy");
    write_npy(&wide, &[48], &[0.0; 48]);
    let long = tmp.path().join("long.npy");
    write_npy(&long, &[300, 32], &vec![0.0; 300 * 32]);
    let junk = tmp.path().join("junk.npy");
    std::fs::write(&junk, b"not an array").unwrap();
    for (file, needles) in [
        (&wide, vec!["shape [48]", "[32]"]),
        (&long, vec!["300 token embeddings", "example 0 has"]),
        (&junk, vec!["junk.npy", "numpy.save"]),
    ] {
        let out = attribute(
            &run,
            "token: the",
            &["--baseline-file", file.to_str().unwrap()],
        );
        assert_bad_input(&out, &needles);
        assert!(snapshot == maps(&run), "a refused baseline changed the run");
    }
}

#[test]
fn image_baseline_files_are_channels_first_and_the_wrong_layout_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let run = glassbox_tests::tiny_image_run("tiny_vit", tmp.path());
    let out = attribute(&run, "class:predicted", &["--window", "8", "--stride", "8"]);
    assert_success(&out, "attribute (zero baseline)");
    let zero = maps(&run);
    let file = tmp.path().join("zeros.npy");
    write_npy(&file, &[3, 32, 32], &vec![0.0; 3 * 32 * 32]);
    let args = [
        "--window",
        "8",
        "--stride",
        "8",
        "--baseline-file",
        file.to_str().unwrap(),
    ];
    let out = attribute(&run, "class:predicted", &args);
    assert_success(&out, "attribute (zero image file)");
    assert!(
        zero == maps(&run),
        "a zero [3, H, W] file is the zero baseline"
    );

    // Channels-last or the wrong size: refused, naming the layout that fits.
    for shape in [[32, 32, 3], [3, 16, 16]] {
        let bad = tmp.path().join("bad.npy");
        write_npy(&bad, &shape, &vec![0.0; shape.iter().product()]);
        let out = attribute(
            &run,
            "class:predicted",
            &["--baseline-file", bad.to_str().unwrap()],
        );
        assert_bad_input(&out, &["does not fit", "[3, 32, 32]", "channels first"]);
    }
}
