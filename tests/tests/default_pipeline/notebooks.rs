//! The run opened as the README and the cookbook show: polars (hive partitions, `array[f32]`
//! activations), DuckDB (`read_parquet(…, hive_partitioning=1)`) and pandas, each read
//! checked against the run's own counts.

use super::default_run;
use glassbox_data::examples::read_examples;
use glassbox_data::RunDir;
use glassbox_tests::*;

const NOTEBOOK: &str = r#"
import sys, duckdb, numpy as np, pandas as pd, polars as pl
run, tokens, examples, hooks = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
# polars, as in the README and the cookbook
acts = pl.scan_parquet(f"{run}/activations/**/*.parquet", hive_partitioning=True)
ex = pl.read_parquet(f"{run}/examples.parquet")
layer3 = acts.filter(pl.col("hook") == "blocks.3.hook_resid_post").collect()
assert layer3.height == tokens, (layer3.height, tokens)
assert layer3.schema["act"] == pl.Array(pl.Float32, 384), layer3.schema
joined = layer3.join(ex, on="example_id").select("text", "position", "act")
assert joined.height == tokens and joined["text"].null_count() == 0
probes = pl.read_parquet(f"{run}/probes/results.parquet")
best = probes.sort("score", descending=True).select("label", "hook", "score", "ci_low", "ci_high", "selectivity")
assert best.height > 0 and (best["ci_low"] <= best["score"]).all() and (best["score"] <= best["ci_high"]).all()
pooled = pl.scan_parquet(f"{run}/pooled/**/*.parquet", hive_partitioning=True).collect()
assert set(pooled["pool"].unique()) == {"mean", "cls"}, pooled["pool"].unique()
assert pooled.height == examples * hooks * 2, pooled.height
# DuckDB, as in the cookbook
counts = dict(duckdb.sql(f"SELECT hook, count(*) FROM read_parquet('{run}/activations/**/*.parquet', hive_partitioning=1) GROUP BY hook").fetchall())
assert len(counts) == hooks and set(counts.values()) == {tokens}, counts
tcav = duckdb.sql(f"SELECT concept, target, hook, score, p_holm, significant FROM '{run}/tcav/scores.parquet' ORDER BY p_holm").fetchall()
assert tcav and all(0 <= r[4] <= 1 for r in tcav), tcav
# pandas: the activation column stacks into the matrix
df = pd.read_parquet(f"{run}/activations/hook=blocks.3.hook_resid_post")
matrix = np.stack(df.act)
assert matrix.shape == (tokens, 384) and matrix.dtype == np.float32, matrix.shape
by_position = lambda t: t.sort_values(["example_id", "position"]) if isinstance(t, pd.DataFrame) else t.sort(["example_id", "position"])
assert np.array_equal(np.stack(by_position(df).act), by_position(layer3)["act"].to_numpy())
causal = pl.read_parquet(f"{run}/causal/tests.parquet")
assert causal.height > 0
"#;

#[test]
fn notebook_readers_open_the_run_as_the_cookbook_shows() {
    let Some(dir) = default_run() else { return };
    let Some(python) = python_or_skip(
        "notebook_readers_open_the_run_as_the_cookbook_shows",
        "polars, duckdb, pandas",
    ) else {
        return;
    };
    let run = RunDir::new(dir);
    let examples = read_examples(&run).unwrap();
    let tokens: u64 = examples.n_tokens.iter().map(|&n| n as u64).sum();
    let out = std::process::Command::new(python)
        .args(["-c", NOTEBOOK])
        .arg(dir)
        .arg(tokens.to_string())
        .arg(examples.example_ids.len().to_string())
        .arg(super::RESID_HOOKS.len().to_string())
        .output()
        .unwrap();
    assert_success(&out, "polars, DuckDB and pandas on the run");
}
