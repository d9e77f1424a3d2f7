//! The `torch.save` reader against checkpoints PyTorch wrote itself
//! (`scripts/reference_torch_checkpoints.py`): the legacy stream and the zip container, with
//! transposed and offset views into shared storages, f16/f64/int64/bool tensors and a
//! Parameter. Every tensor must equal PyTorch's contiguous copy exactly.

use candle_core::{DType, Device, Tensor};
use glassbox_models::torch_legacy;
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/torch_checkpoints")
        .join(name)
}

fn check(file: &str) {
    let expected = candle_core::safetensors::load(fixture("expected.safetensors"), &Device::Cpu)
        .expect("expected tensors");
    let got = torch_legacy::load(&fixture(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
    let mut names: Vec<_> = expected.keys().cloned().collect();
    names.sort();
    let mut got_names: Vec<_> = got.keys().cloned().collect();
    got_names.sort();
    assert_eq!(got_names, names, "{file}: tensor names");
    for name in names {
        let (e, g) = (&expected[&name], &got[&name]);
        assert_eq!(g.dims(), e.dims(), "{file}: {name} shape");
        assert_eq!(g.dtype(), e.dtype(), "{file}: {name} dtype");
        // Every dtype compared exactly, as f64 (which holds f16, f32 and the integers used).
        let values = |t: &Tensor| -> Vec<f64> {
            t.flatten_all()
                .unwrap()
                .to_dtype(DType::F64)
                .unwrap()
                .to_vec1()
                .unwrap()
        };
        let (e, g) = (values(e), values(g));
        assert_eq!(g, e, "{file}: {name} values");
    }
}

#[test]
fn legacy_checkpoint_matches_pytorch() {
    check("legacy.pth");
}

#[test]
fn zip_checkpoint_matches_pytorch() {
    check("zip.pth");
}

#[test]
fn truncated_and_foreign_files_are_named_errors() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(fixture("legacy.pth")).unwrap();
    let cut = dir.path().join("cut.pth");
    std::fs::write(&cut, &bytes[..bytes.len() - 10]).unwrap();
    let e = torch_legacy::load(&cut).unwrap_err().to_string();
    assert!(e.contains("cut.pth") && e.contains("truncated"), "{e}");

    let text = dir.path().join("notes.pth");
    std::fs::write(&text, b"\x80\x02X\x05\x00\x00\x00hello.").unwrap();
    let e = torch_legacy::load(&text).unwrap_err().to_string();
    assert!(e.contains("not a PyTorch checkpoint"), "{e}");
}
