//! Helpers for glassbox's end-to-end tests: locating the CLI binary, the cached real model,
//! the independent Python reader and the committed fixtures.

pub mod azurite;
pub mod s3_server;
pub mod sharded;
mod small_run;
pub use small_run::small_topic_run;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const MINILM: &str = "sentence-transformers/all-MiniLM-L6-v2";

/// The repository root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The `glassbox` binary of this checkout, built (or brought up to date) once per test process
/// with the test executable's own profile and target folder: `cargo test` builds test targets
/// only, so without this a clean checkout would fail and an edited one would test a stale
/// binary. Cargo's own lock serialises test processes that build at once.
pub fn glassbox_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("current test executable");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test executables live in target/<profile>/deps");
        let target_dir = profile_dir.parent().expect("target/<profile> has a parent");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = Command::new(cargo);
        // `cargo test` hands the test process its package's CARGO_PKG_*, CARGO_MANIFEST_* and
        // OUT_DIR; build scripts that rerun on those (ring's does) would see them change and
        // rebuild ring and all its dependents here and again in the next plain `cargo` call.
        for (key, _) in std::env::vars_os() {
            let key_text = key.to_string_lossy();
            if key_text.starts_with("CARGO_PKG_")
                || key_text.starts_with("CARGO_MANIFEST_")
                || key_text.starts_with("CARGO_BIN_")
                || matches!(
                    &*key_text,
                    "CARGO_CRATE_NAME"
                        | "CARGO_PRIMARY_PACKAGE"
                        | "CARGO_TARGET_TMPDIR"
                        | "OUT_DIR"
                )
            {
                build.env_remove(&key);
            }
        }
        build
            .args(["build", "--quiet", "--bin", "glassbox", "--manifest-path"])
            .arg(workspace_root().join("Cargo.toml"))
            .arg("--target-dir")
            .arg(target_dir);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("cargo runs");
        assert!(
            status.success(),
            "cargo build --bin glassbox failed ({status})"
        );
        let bin = profile_dir.join("glassbox");
        assert!(
            bin.is_file(),
            "{} is missing after the build",
            bin.display()
        );
        bin
    })
    .clone()
}

/// A `glassbox` command run from the repository root, offline, without progress bars.
pub fn glassbox() -> Command {
    let mut cmd = Command::new(glassbox_bin());
    cmd.current_dir(workspace_root())
        .env("HF_HUB_OFFLINE", "1")
        .arg("--quiet");
    cmd
}

/// The local snapshot folder of MiniLM in the HF cache, or why it is not there.
pub fn minilm_snapshot() -> Result<PathBuf, String> {
    let home = std::env::var_os("HF_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/huggingface")))
        .ok_or("neither HF_HOME nor HOME is set")?;
    let repo = home.join("hub/models--sentence-transformers--all-MiniLM-L6-v2");
    let rev = std::fs::read_to_string(repo.join("refs/main")).map_err(|_| {
        format!(
            "{MINILM} is not in the HF cache at {}; run `just models`",
            home.display()
        )
    })?;
    let snap = repo.join("snapshots").join(rev.trim());
    if snap.join("model.safetensors").exists() {
        Ok(snap)
    } else {
        Err(format!(
            "{} has no model.safetensors; run `just models`",
            snap.display()
        ))
    }
}

/// Returns the snapshot, or prints why the calling test is skipped and returns `None`
/// (under `CI=true`: fails instead, see [`skip`]).
pub fn require_minilm(test: &str) -> Option<PathBuf> {
    match minilm_snapshot() {
        Ok(p) => Some(p),
        Err(why) => {
            skip(test, &why);
            None
        }
    }
}

/// Reports that `test` cannot run here (a model, the venv or the browser is missing). Locally
/// it is skipped with a line on stderr; under `CI=true` it fails, so CI cannot go green
/// without the real-model and independent-reader checks.
pub fn skip(test: &str, why: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!(
            "{test} cannot run: {why} (CI=true: a missing prerequisite is a failure, not a skip)"
        );
    }
    eprintln!("SKIP {test}: {why}");
}

/// The Python interpreter with pyarrow (from `just venv`), or why there is none.
pub fn python_with_pyarrow() -> Result<PathBuf, String> {
    python_with("pyarrow")
}

/// The test venv's Python (from `just venv`) if it can import `module`, or why not.
pub fn python_with(module: &str) -> Result<PathBuf, String> {
    let candidates = [
        std::env::var_os("GLASSBOX_PYTHON").map(PathBuf::from),
        Some(workspace_root().join(".venv/bin/python")),
    ];
    for python in candidates.into_iter().flatten() {
        let ok = Command::new(&python)
            .args(["-c", &format!("import {module}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if ok {
            return Ok(python);
        }
    }
    Err(format!("no Python with {module}; run `just venv`"))
}

/// The test venv's Python if it can import `module` (e.g. `"polars, duckdb"`), else `None`
/// with `test` skipped (a failure under `CI=true`).
pub fn python_or_skip(test: &str, module: &str) -> Option<PathBuf> {
    python_with(module).map_err(|why| skip(test, &why)).ok()
}

/// Runs `script` with the test venv's pyarrow Python, `args` after it, and asserts it succeeds;
/// without pyarrow, `test` is skipped (a failure under `CI=true`).
pub fn pyarrow_check(test: &str, script: &str, args: &[&Path]) {
    let python = match python_with_pyarrow() {
        Ok(p) => p,
        Err(why) => return skip(test, &why),
    };
    let out = Command::new(python)
        .args(["-c", script])
        .args(args)
        .output()
        .expect("python runs");
    assert_success(&out, &format!("{test}: pyarrow check"));
}

/// A run of the committed tiny GPT-2 on the default data: see [`tiny_decoder_run`].
pub fn tiny_gpt2_run(run: &Path, token_level: bool, label: Option<&str>) {
    tiny_decoder_run("tiny_gpt2", run, token_level, label)
}

/// A run of the tiny vision fixture `fixture` over one generated 32 × 32 image per texture
/// class (`stripes`, `dots`), extracted at `hook_pooled`, under `dir`; returns the run folder.
pub fn tiny_image_run(fixture: &str, dir: &Path) -> PathBuf {
    let images = dir.join("images");
    let out = glassbox()
        .args([
            "textures",
            "--kinds",
            "stripes,dots",
            "--per-class",
            "1",
            "--size",
            "32",
            "--out",
        ])
        .arg(&images)
        .output()
        .unwrap();
    assert_success(&out, "textures");
    let run = dir.join("run");
    let out = glassbox()
        .args(["extract", "--model"])
        .arg(workspace_root().join("tests/fixtures").join(fixture))
        .arg("--data")
        .arg(&images)
        .args(["--hooks", "hook_pooled", "--run"])
        .arg(&run)
        .output()
        .unwrap();
    assert_success(&out, &format!("extract ({fixture})"));
    run
}

/// A run of a committed tiny decoder (`tests/fixtures/<fixture>`) on the default data:
/// residual hooks of both blocks (mean-pooled; token rows too unless `token_level` is false),
/// and with `label` a sequence-level probe of it (bootstrap 50, no neuron ranking).
pub fn tiny_decoder_run(fixture: &str, run: &Path, token_level: bool, label: Option<&str>) {
    let mut extract = glassbox();
    extract
        .args(["extract", "--model"])
        .arg(workspace_root().join("tests/fixtures").join(fixture))
        .arg("--data")
        .arg(workspace_root().join("data/sets/default.jsonl"))
        .args(["--hooks", "blocks.*.hook_resid_post", "--max-length", "64"]);
    if !token_level {
        extract.arg("--no-token-level");
    }
    let out = extract.arg("--run").arg(run).output().unwrap();
    assert_success(&out, &format!("extract ({fixture})"));
    if let Some(label) = label {
        let out = glassbox()
            .args([
                "probe",
                "--label",
                label,
                "--bootstrap",
                "50",
                "--no-neurons",
                "--run",
            ])
            .arg(run)
            .output()
            .unwrap();
        assert_success(&out, &format!("probe ({fixture})"));
    }
}

/// Panics with the command's output unless it exited 0.
pub fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({:?})\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Asserts exit code 2 and that stderr contains every `needle`; returns stderr.
pub fn assert_bad_input(out: &Output, needles: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(2),
        "expected exit 2, stderr:\n{stderr}"
    );
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "stderr lacks {needle:?}:\n{stderr}"
        );
    }
    stderr
}

/// One reference text from `tests/fixtures/minilm_reference.json`.
#[derive(Debug, Clone)]
pub struct ReferenceText {
    pub text: String,
    pub input_ids: Vec<u32>,
    /// `[7][tokens][384]`: `hidden_states` of transformers.
    pub hidden_states: Vec<Vec<Vec<f32>>>,
}

/// Loads the committed PyTorch reference; `.1` is how many texts come from the default set.
pub fn minilm_reference() -> (Vec<ReferenceText>, usize) {
    let dir = workspace_root().join("tests/fixtures");
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("minilm_reference.json")).expect("reference json"),
    )
    .expect("valid reference json");
    let tensors = candle_core::safetensors::load(
        dir.join("minilm_hidden_states.safetensors"),
        &candle_core::Device::Cpu,
    )
    .expect("reference safetensors");
    let texts = meta["texts"]
        .as_array()
        .expect("texts")
        .iter()
        .enumerate()
        .map(|(i, t)| ReferenceText {
            text: t["text"].as_str().expect("text").to_owned(),
            input_ids: t["input_ids"]
                .as_array()
                .expect("ids")
                .iter()
                .map(|v| v.as_u64().expect("id") as u32)
                .collect(),
            hidden_states: tensors[&format!("hidden_states.{i}")]
                .to_vec3::<f32>()
                .expect("[7, t, 384]"),
        })
        .collect();
    (
        texts,
        meta["n_default_set_examples"].as_u64().expect("count") as usize,
    )
}

/// All token rows of a hook: example_id → rows in position order.
pub fn token_rows(
    run: &glassbox_data::RunDir,
    hook: &str,
) -> std::collections::BTreeMap<u64, Vec<Vec<f32>>> {
    let mut rows: std::collections::BTreeMap<u64, Vec<(u32, Vec<f32>)>> =
        std::collections::BTreeMap::new();
    glassbox_data::store::read_parts(&run.activations_dir(hook_point(hook)), |b| {
        let pos = b.positions.expect("token-level shards have positions");
        for (i, id) in b.example_ids.iter().enumerate() {
            rows.entry(*id)
                .or_default()
                .push((pos[i], b.values[i * b.width..(i + 1) * b.width].to_vec()));
        }
        Ok(())
    })
    .expect("read activations");
    rows.into_iter()
        .map(|(id, mut r)| {
            r.sort_by_key(|(p, _)| *p);
            assert!(
                r.iter().enumerate().all(|(i, (p, _))| *p as usize == i),
                "positions 0..n"
            );
            (id, r.into_iter().map(|(_, v)| v).collect())
        })
        .collect()
}

/// A safetensors file with every f32 tensor whose name `scaled` accepts multiplied by
/// `factor`, the others as they were (at least one must be scaled).
pub fn scaled_tensors(bytes: &[u8], scaled: impl Fn(&str) -> bool, factor: f32) -> Vec<u8> {
    let file = safetensors::SafeTensors::deserialize(bytes).expect("a safetensors file");
    let tensors: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = file
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let mut data = view.data().to_vec();
            if scaled(&name) {
                assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name}");
                for c in data.chunks_exact_mut(4) {
                    let v = f32::from_le_bytes(c.try_into().unwrap()) * factor;
                    c.copy_from_slice(&v.to_le_bytes());
                }
            }
            (name, view.dtype(), view.shape().to_vec(), data)
        })
        .collect();
    assert!(
        tensors.iter().any(|(name, ..)| scaled(name)),
        "no tensor to scale"
    );
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, d, s, b)| {
            let view = safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap();
            (n.clone(), view)
        })
        .collect();
    safetensors::serialize(views, None).expect("serialise")
}

/// Max |a - b| over two equally long slices.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// A local copy of MiniLM (config, tokenizer, weights) in `dir/model`, whose files a test may
/// corrupt; `None` (with a printed reason) when the weights are not available.
pub fn local_minilm(dir: &Path) -> Option<PathBuf> {
    let snap = require_minilm("local model copy")?;
    let local = dir.join("model");
    std::fs::create_dir_all(&local).unwrap();
    for f in ["config.json", "tokenizer.json", "model.safetensors"] {
        std::fs::copy(snap.join(f), local.join(f)).unwrap();
    }
    Some(local)
}

/// Rewrites a store file with unit 5 of example 3 set to NaN (glassbox's writer refuses to).
pub fn poison_with_nan(path: &Path) {
    use arrow_array::cast::AsArray;
    use arrow_array::types::Float32Type;
    use arrow_array::{Array, ArrayRef, FixedSizeListArray, Float32Array, RecordBatch};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use std::sync::Arc;
    let file = std::fs::File::open(path).unwrap();
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
    let schema = builder.schema().clone();
    let batches: Vec<RecordBatch> = builder.build().unwrap().map(|b| b.unwrap()).collect();
    let mut out = Vec::new();
    for batch in batches {
        let act_index = batch.schema().index_of("act").unwrap();
        let act = batch.column(act_index).as_fixed_size_list();
        let width = act.value_length() as usize;
        let ids = batch
            .column(batch.schema().index_of("example_id").unwrap())
            .as_primitive::<arrow_array::types::UInt64Type>()
            .clone();
        let mut values: Vec<f32> = act.values().as_primitive::<Float32Type>().values().to_vec();
        for r in 0..batch.num_rows() {
            if ids.value(r) == 3 {
                values[r * width + 5] = f32::NAN;
            }
        }
        let field = match act.data_type() {
            arrow_schema::DataType::FixedSizeList(f, _) => f.clone(),
            _ => unreachable!(),
        };
        let new_act = FixedSizeListArray::new(
            field,
            width as i32,
            Arc::new(Float32Array::from(values)),
            None,
        );
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        columns[act_index] = Arc::new(new_act);
        out.push(RecordBatch::try_new(batch.schema(), columns).unwrap());
    }
    let file = std::fs::File::create(path).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, schema, None).unwrap();
    for b in &out {
        writer.write(b).unwrap();
    }
    writer.close().unwrap();
}

/// The Chromium binary (`chromium`, `chromium-browser` or `google-chrome` on PATH, or
/// `GLASSBOX_CHROMIUM`), or why there is none.
pub fn chromium() -> Result<PathBuf, String> {
    if let Ok(path) = std::env::var("GLASSBOX_CHROMIUM") {
        return Ok(PathBuf::from(path));
    }
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {name}")])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
        if let Some(path) = found.filter(|p| !p.is_empty()) {
            return Ok(PathBuf::from(path));
        }
    }
    Err("no chromium on PATH (`just browser` installs the Debian package)".into())
}

/// Loads `page` in headless Chromium and returns the DOM after load and every console line
/// the page produced (Chromium logs them as `INFO:CONSOLE` on stderr).
pub fn headless_dom(chrome: &Path, page: &Path) -> (String, Vec<String>) {
    let out = Command::new(chrome)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let console = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(str::to_owned)
        .collect();
    (String::from_utf8_lossy(&out.stdout).into_owned(), console)
}

/// A hook point by name (tests name hooks as users type them).
pub fn hook_point(name: &str) -> glassbox_data::HookPoint {
    name.parse()
        .unwrap_or_else(|e| panic!("`{name}` is not a hook point: {e}"))
}

/// Validates `document` against the JSON Schema `schema` (Draft 2020-12, the schema itself
/// checked first) with `python`'s `jsonschema` (an independent validator); the output says how.
pub fn validate_json_schema(python: &Path, schema: &Path, document: &Path) -> Output {
    let script = "import json, sys, jsonschema\n\
        schema = json.load(open(sys.argv[1]))\n\
        jsonschema.Draft202012Validator.check_schema(schema)\n\
        jsonschema.Draft202012Validator(schema).validate(json.load(open(sys.argv[2])))\n\
        print('valid')";
    Command::new(python)
        .args(["-c", script])
        .arg(schema)
        .arg(document)
        .output()
        .expect("python runs")
}

/// What [`assert_same_files`] compares besides the files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compare {
    /// The folders too (two local runs).
    WithFolders,
    /// Files only (a run downloaded from a bucket, which has no empty folders).
    FilesOnly,
}

/// Asserts that `actual` holds `expected`'s files byte for byte, but for `manifest.json` (it
/// records times) and `report/` (it names the run: its folder or its URL); `what` names the
/// comparison in the failure.
pub fn assert_same_files(expected: &Path, actual: &Path, what: &str, compare: Compare) {
    let files = |root: &Path| {
        let mut f = snapshot(root);
        f.retain(|name, bytes| {
            name != "manifest.json"
                && !name.starts_with("report/")
                && (compare == Compare::WithFolders || bytes.is_some())
        });
        f
    };
    let (a, b) = (files(expected), files(actual));
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "{what}: the same files"
    );
    for (name, bytes) in &a {
        assert!(bytes == &b[name], "{what}: {name} differs");
    }
}

/// Every file under `root` (but the lock files) with its bytes, and every folder: what
/// "byte-identical" compares.
pub fn snapshot(root: &Path) -> std::collections::BTreeMap<String, Option<Vec<u8>>> {
    let mut out = std::collections::BTreeMap::new();
    if !root.exists() {
        return out;
    }
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(".glassbox.") && name.ends_with(".lock") {
                continue;
            }
            if path.is_dir() {
                out.insert(rel + "/", None);
                stack.push(path);
            } else {
                out.insert(rel, Some(std::fs::read(&path).unwrap()));
            }
        }
    }
    out
}
