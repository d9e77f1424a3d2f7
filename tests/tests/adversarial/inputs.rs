//! Refusals of `extract` for data files, model specs and hooks: each exits 2 naming the file,
//! row, column, model or hook, and leaves the run it was pointed at byte-identical.

use crate::harness::*;
use glassbox_tests::MINILM;
use std::path::Path;

/// `extract` over the fixture's run with MiniLM and `rest` appended.
fn extract(name: &'static str, rest: &str, needles: &[&'static str]) -> Case {
    case(
        name,
        &format!("extract --model {MINILM} --run {{run}} {rest}"),
        needles,
    )
}

fn write(tmp: &Path, name: &str, bytes: &[u8]) {
    std::fs::write(tmp.join(name), bytes).unwrap();
}

#[test]
fn bad_data_files_are_refused_and_the_run_is_untouched() {
    let Some(fx) = fixture() else { return };
    let h = "--hooks blocks.0.hook_resid_post --data";
    check_refusals(
        fx,
        vec![
            extract(
                "missing file",
                &format!("{h} {{tmp}}/nope.jsonl"),
                &["nope.jsonl", "does not exist"],
            ),
            extract(
                "unsupported extension",
                &format!("{h} {{tmp}}/d.txt"),
                &["d.txt", "extension"],
            )
            .with_setup(|t, _| write(t, "d.txt", b"hello\n")),
            extract(
                "malformed JSON",
                &format!("{h} {{tmp}}/d.jsonl"),
                &["d.jsonl", "row 2", "invalid JSON"],
            )
            .with_setup(|t, _| write(t, "d.jsonl", b"{\"text\":\"a\"}\n{\"text\": \n")),
            extract(
                "row without text",
                &format!("{h} {{tmp}}/d.jsonl"),
                &["d.jsonl", "row 2", "`text`"],
            )
            .with_setup(|t, _| write(t, "d.jsonl", b"{\"text\":\"a\"}\n{\"label\":\"x\"}\n")),
            extract(
                "text is a number",
                &format!("{h} {{tmp}}/d.jsonl"),
                &["row 1", "must be a string"],
            )
            .with_setup(|t, _| write(t, "d.jsonl", b"{\"text\":5}\n")),
            extract(
                "line is an array",
                &format!("{h} {{tmp}}/d.jsonl"),
                &["row 1", "JSON object"],
            )
            .with_setup(|t, _| write(t, "d.jsonl", b"[\"text\"]\n")),
            extract(
                "duplicate JSON field",
                &format!("{h} {{tmp}}/d.jsonl"),
                &["row 2", "`label` appears twice"],
            )
            .with_setup(|t, _| {
                write(
                    t,
                    "d.jsonl",
                    b"{\"text\":\"a\",\"label\":1}\n{\"text\":\"b\",\"label\":1,\"label\":2}\n",
                )
            }),
            extract(
                "invalid UTF-8",
                &format!("{h} {{tmp}}/d.jsonl"),
                &["d.jsonl", "row 3", "UTF-8"],
            )
            .with_setup(|t, _| {
                write(
                    t,
                    "d.jsonl",
                    b"{\"text\":\"a\"}\n{\"text\":\"b\"}\n{\"text\":\"\xff\xfe\"}\n",
                )
            }),
            extract(
                "empty JSONL",
                &format!("{h} {{tmp}}/d.jsonl"),
                &["d.jsonl", "empty"],
            )
            .with_setup(|t, _| write(t, "d.jsonl", b"\n\n")),
            extract(
                "empty CSV",
                &format!("{h} {{tmp}}/d.csv"),
                &["d.csv", "empty"],
            )
            .with_setup(|t, _| write(t, "d.csv", b"text,label\n")),
            extract(
                "CSV duplicate header",
                &format!("{h} {{tmp}}/d.csv"),
                &["d.csv", "`label`", "twice"],
            )
            .with_setup(|t, _| write(t, "d.csv", b"text,label,label\na,1,2\n")),
            extract(
                "CSV without text column",
                &format!("{h} {{tmp}}/d.csv"),
                &["d.csv", "no `text` column"],
            )
            .with_setup(|t, _| write(t, "d.csv", b"sentence,label\na,1\n")),
            extract(
                "CSV empty text",
                &format!("{h} {{tmp}}/d.csv"),
                &["d.csv", "row 3", "`text`"],
            )
            .with_setup(|t, _| write(t, "d.csv", b"text,label\na,1\n,2\n")),
            extract(
                "CSV ragged row",
                &format!("{h} {{tmp}}/d.csv"),
                &["d.csv", "row 3"],
            )
            .with_setup(|t, _| write(t, "d.csv", b"text,label\na,1\nb,2,3\n")),
            extract(
                "data is a folder of text files for a text model",
                &format!("{h} {{tmp}}"),
                &["is a folder", "extension"],
            ),
            extract(
                "different data over the run",
                &format!("{h} {{tmp}}/d.jsonl"),
                &["data file", "--force", "--run"],
            )
            .with_setup(|t, _| write(t, "d.jsonl", b"{\"text\":\"a\"}\n{\"text\":\"b\"}\n")),
        ],
    );
}

#[test]
fn bad_model_specs_are_refused_and_the_run_is_untouched() {
    let Some(fx) = fixture() else { return };
    let rest = "--hooks blocks.0.hook_resid_post --data {data} --run {run}";
    let model =
        |name, spec: &str, needles| case(name, &format!("extract --model {spec} {rest}"), needles);
    check_refusals(
        fx,
        vec![
            model(
                "model not in the cache",
                "nobody-xyz/nothing-xyz",
                &["nobody-xyz/nothing-xyz"],
            ),
            model(
                "missing local folder",
                "./no/such/model",
                &["no/such/model"],
            ),
            model("malformed spec", "a/b/c", &["a/b/c", "ORG/NAME"]),
            model("empty revision", "org/name@", &["empty revision"]),
            model("folder without config", "{tmp}/m", &["config.json"]).with_setup(|t, _| {
                std::fs::create_dir_all(t.join("m")).unwrap();
                std::fs::write(t.join("m/model.safetensors"), b"").unwrap();
            }),
            model("garbage safetensors", "{tmp}/m", &["model.safetensors"]).with_setup(|t, _| {
                let snapshot = glassbox_tests::minilm_snapshot().unwrap();
                std::fs::create_dir_all(t.join("m")).unwrap();
                for f in ["config.json", "tokenizer.json"] {
                    std::fs::copy(snapshot.join(f), t.join("m").join(f)).unwrap();
                }
                std::fs::write(
                    t.join("m/model.safetensors"),
                    b"\x08\0\0\0\0\0\0\0{\"a\":1}",
                )
                .unwrap();
            }),
            model(
                "pickle without --allow-pickle",
                "{tmp}/m",
                &["pytorch_model.bin", "--allow-pickle"],
            )
            .with_setup(|t, _| {
                let snapshot = glassbox_tests::minilm_snapshot().unwrap();
                std::fs::create_dir_all(t.join("m")).unwrap();
                for f in ["config.json", "tokenizer.json"] {
                    std::fs::copy(snapshot.join(f), t.join("m").join(f)).unwrap();
                }
                std::fs::write(t.join("m/pytorch_model.bin"), b"PK\x03\x04 not really").unwrap();
            }),
            model(
                "a different model over the run",
                "./tests/fixtures/tiny_gpt2 --max-length 32",
                &["model (was", "--force"],
            ),
        ],
    );
}

#[test]
fn bad_hooks_are_refused_and_the_run_is_untouched() {
    let Some(fx) = fixture() else { return };
    let hooks = |name, hooks: &str, needles| {
        extract(name, &format!("--data {{data}} --hooks {hooks}"), needles)
    };
    check_refusals(
        fx,
        vec![
            hooks(
                "misspelt hook",
                "blocks.*.hook_resid_psot",
                &["hook_resid_psot", "hook_resid_post"],
            ),
            hooks(
                "layer out of range",
                "blocks.99.hook_resid_post",
                &["blocks.99.hook_resid_post"],
            ),
            hooks("path-like hook", "../../etc/passwd", &["../../etc/passwd"]),
            hooks("empty hook name", "blocks.0.hook_resid_post,,", &["hook"]),
            hooks(
                "a different hook set over the run",
                "blocks.3.hook_resid_post",
                &["hook set", "blocks.3.hook_resid_post", "--force"],
            ),
        ],
    );
}
