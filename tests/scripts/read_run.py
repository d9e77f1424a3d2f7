"""Reads a glassbox run with pyarrow alone (no glassbox code) and prints facts as JSON.

Used by the end-to-end test to prove the Parquet store works in a notebook.
"""
import json
import sys
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

run = Path(sys.argv[1])
examples = pq.read_table(run / "examples.parquet")
tokens = pq.read_table(run / "tokens.parquet")
acts = ds.dataset(run / "activations", format="parquet", partitioning="hive").to_table()
pooled = ds.dataset(run / "pooled", format="parquet", partitioning="hive").to_table()
hooks = sorted(set(acts.column("hook").to_pylist()))

one = acts.filter(pc.field("hook") == "blocks.3.hook_resid_post")
keys = set(zip(one.column("example_id").to_pylist(), one.column("position").to_pylist()))
row = one.filter((pc.field("example_id") == 7) & (pc.field("position") == 2))
part = pq.ParquetFile(run / "activations/hook=blocks.3.hook_resid_post/part-00000.parquet")
meta = {k.decode(): v.decode() for k, v in (part.schema_arrow.metadata or {}).items()}
results = pq.read_table(run / "probes/results.parquet")
dictionary = run / "dictionary/hook=blocks.3.hook_resid_post"
features = pq.read_table(dictionary / "features.parquet")
feature_examples = pq.read_table(dictionary / "feature_examples.parquet")
sae_neurons = pq.read_table(dictionary / "neurons.parquet")
# The safetensors header, read by hand: 8-byte little-endian length, then JSON.
with open(dictionary / "sae/sae_weights.safetensors", "rb") as f:
    header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
shapes = {k: v["shape"] for k, v in header.items() if k != "__metadata__"}
neurons = pq.read_table(run / "probes/neurons.parquet")
sparse = pq.read_table(dictionary / "sparse_probing.parquet")
absorption = pq.read_table(dictionary / "absorption.parquet")

print(json.dumps({
    "examples": examples.num_rows,
    "tokens_rows": tokens.num_rows,
    "hooks": hooks,
    "activation_rows": acts.num_rows,
    "act_type": str(one.schema.field("act").type),
    "pooled_mean_rows": pooled.filter(pc.field("pool") == "mean").num_rows,
    "distinct_keys_per_hook": len(keys),
    "value_ex7_pos2_unit5": row.column("act")[0].as_py()[5],
    "metadata_hook": meta.get("glassbox.hook"),
    "tokens_with_span": tokens.filter(pc.is_valid(tokens.column("start"))).num_rows,
    "probe_results": results.num_rows,
    "probe_levels": sorted(set(results.column("level").to_pylist())),
    "probe_best_score": pc.max(results.column("score")).as_py(),
    "neuron_rows": neurons.num_rows,
    "sae_features": features.num_rows,
    "sae_neurons": sae_neurons.num_rows,
    "sae_weight_shapes": shapes,
    "sparse_probing_rows": sparse.num_rows,
    "sparse_probing_units_type": str(sparse.schema.field("feature_units").type),
    "sparse_probing_tasks": sorted({(r["label"], r["class"]) for r in sparse.select(["label", "class"]).to_pylist()}),
    "absorption_letters": absorption.num_rows,
    "absorption_measured": sum(absorption.column("measured").to_pylist()),
    "absorption_columns": absorption.schema.names,
    "feature_example_types": {c: str(feature_examples.schema.field(c).type) for c in ["context_tokens", "context_activations"]},
}))
