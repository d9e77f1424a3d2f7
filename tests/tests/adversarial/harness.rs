//! The adversarial suite's fixture and checks: one small MiniLM run (extract + probe) built
//! once per test binary, copied for every case; a byte-level snapshot of a run directory.

use glassbox_tests::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

/// Rows of the built-in data set the fixture keeps (it adds degenerate label columns to
/// them: `one_class`, `constant`, `empty`, and a numeric `score`).
const ROWS: usize = 48;

/// The fixture: `dir/run` (extract + probe done), `dir/data.jsonl`, `dir/concepts/*.jsonl`.
pub struct Fixture {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
}

impl Fixture {
    pub fn run(&self) -> PathBuf {
        self.root.join("run")
    }
    pub fn data(&self) -> PathBuf {
        self.root.join("data.jsonl")
    }
    pub fn concept(&self, name: &str) -> PathBuf {
        self.root.join("concepts").join(format!("{name}.jsonl"))
    }
}

/// The shared fixture, or `None` (the test is skipped; under CI=true it fails) without MiniLM.
pub fn fixture() -> Option<&'static Fixture> {
    static FIXTURE: OnceLock<Option<Fixture>> = OnceLock::new();
    FIXTURE
        .get_or_init(|| {
            require_minilm("adversarial suite")?;
            Some(build_fixture())
        })
        .as_ref()
}

fn build_fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let source = std::fs::read_to_string(workspace_root().join("data/sets/default.jsonl")).unwrap();
    let mut lines = Vec::new();
    for (i, line) in source.lines().take(ROWS).enumerate() {
        let mut row: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(line).unwrap();
        row.insert("one_class".into(), "same".into());
        row.insert("constant".into(), serde_json::json!(3.5));
        row.insert("empty".into(), serde_json::Value::Null);
        row.insert("score".into(), serde_json::json!(i as f64 / 7.0));
        lines.push(serde_json::Value::Object(row).to_string());
    }
    std::fs::write(root.join("data.jsonl"), lines.join("\n") + "\n").unwrap();
    std::fs::create_dir_all(root.join("concepts")).unwrap();
    let concepts = [
        ("food", "I cooked pasta with garlic and basil"),
        ("numbers", "There were 42 apples and 17 pears in"),
    ];
    for (name, stem) in concepts {
        let rows: Vec<String> = (0..12)
            .map(|i| serde_json::json!({ "text": format!("{stem} {i}.") }).to_string())
            .collect();
        std::fs::write(
            root.join("concepts").join(format!("{name}.jsonl")),
            rows.join("\n"),
        )
        .unwrap();
    }
    let run = root.join("run");
    let out = glassbox()
        .args(["extract", "--model", MINILM, "--hooks"])
        .arg("blocks.0.hook_resid_post,blocks.1.hook_resid_post,blocks.2.hook_resid_post")
        .args(["--shard-size", "16", "--data"])
        .arg(root.join("data.jsonl"))
        .arg("--run")
        .arg(&run)
        .output()
        .unwrap();
    assert_success(&out, "fixture extract");
    let out = glassbox()
        .args([
            "probe",
            "--label",
            "topic",
            "--no-neurons",
            "--bootstrap",
            "50",
            "--run",
        ])
        .arg(&run)
        .output()
        .unwrap();
    assert_success(&out, "fixture probe");
    Fixture { _dir: dir, root }
}

/// Panics, naming what differs, unless two snapshots are equal.
pub fn assert_same(
    case: &str,
    before: &BTreeMap<String, Option<Vec<u8>>>,
    after: &BTreeMap<String, Option<Vec<u8>>>,
) {
    let changed = changed_paths(before, after);
    assert!(changed.is_empty(), "{case}: the run changed: {changed:?}");
}

/// The paths whose presence or bytes differ between two snapshots.
fn changed_paths<'a>(
    before: &'a BTreeMap<String, Option<Vec<u8>>>,
    after: &'a BTreeMap<String, Option<Vec<u8>>>,
) -> Vec<&'a String> {
    let keys: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    keys.into_iter()
        .filter(|k| before.get(*k) != after.get(*k))
        .collect()
}

/// A fresh copy of the fixture's run (or the fixture's folder) in `into`.
pub fn copy_tree(from: &Path, into: &Path) {
    std::fs::create_dir_all(into).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let to = into.join(entry.file_name());
        if entry.path().is_dir() {
            copy_tree(&entry.path(), &to);
        } else {
            std::fs::copy(entry.path(), &to).unwrap();
        }
    }
}

/// One refused invocation: `args` with `{run}`, `{data}`, `{tmp}`, `{concepts}` filled in.
pub struct Case {
    pub name: &'static str,
    pub args: Vec<String>,
    /// Texts stderr must contain (the fault's name: file, row, column, hook, flag).
    pub needles: Vec<&'static str>,
    /// Prepares the case's temp folder (and may damage its copy of the run) before the
    /// snapshot.
    pub setup: Option<fn(&Path, &Path)>,
}

pub fn case(name: &'static str, args: &str, needles: &[&'static str]) -> Case {
    Case {
        name,
        args: shell_words(args),
        needles: needles.to_vec(),
        setup: None,
    }
}

impl Case {
    pub fn with_setup(mut self, setup: fn(&Path, &Path)) -> Self {
        self.setup = Some(setup);
        self
    }
}

/// Splits on spaces, keeping single-quoted parts whole.
fn shell_words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    // A word was begun (an empty '' is a word too).
    let mut started = false;
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                started = true;
            }
            ' ' if !quoted => {
                if started {
                    out.push(std::mem::take(&mut current));
                    started = false;
                }
            }
            _ => {
                current.push(c);
                started = true;
            }
        }
    }
    if started {
        out.push(current);
    }
    out
}

/// Runs every case on its own copy of the run: each must exit 2, name its fault on stderr and
/// leave the run byte-identical. All failures are reported together.
pub fn check_refusals(fixture: &Fixture, cases: Vec<Case>) {
    let mut failures = Vec::new();
    for case in cases {
        let tmp = tempfile::tempdir().unwrap();
        let run = tmp.path().join("run");
        copy_tree(&fixture.run(), &run);
        if let Some(setup) = case.setup {
            setup(tmp.path(), &run);
        }
        let before = snapshot(&run);
        let args: Vec<String> = case
            .args
            .iter()
            .map(|a| {
                a.replace("{run}", &run.display().to_string())
                    .replace("{data}", &fixture.data().display().to_string())
                    .replace("{tmp}", &tmp.path().display().to_string())
                    .replace(
                        "{concepts}",
                        &fixture.root.join("concepts").display().to_string(),
                    )
            })
            .collect();
        let out = glassbox().args(&args).output().unwrap();
        if let Err(why) = refused_cleanly(&out, &case.needles) {
            failures.push(format!("{}: {why}\n  args: {args:?}", case.name));
            continue;
        }
        let after = snapshot(&run);
        let changed = changed_paths(&before, &after);
        if !changed.is_empty() {
            failures.push(format!("{}: the run changed: {changed:?}", case.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn refused_cleanly(out: &Output, needles: &[&str]) -> Result<(), String> {
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() != Some(2) {
        return Err(format!(
            "exit {:?}, not 2; stderr:\n{stderr}",
            out.status.code()
        ));
    }
    if stderr.contains("panicked") || stderr.contains("stack backtrace") {
        return Err(format!("a panic or backtrace:\n{stderr}"));
    }
    for needle in needles {
        if !stderr.contains(needle) {
            return Err(format!("stderr lacks {needle:?}:\n{stderr}"));
        }
    }
    Ok(())
}
