#!/usr/bin/env python3
"""glassbox's activation cache → SAELens's cached-activations layout.

    python scripts/saelens_cache.py RUN HOOK OUT [--context-size 128] [--dtype float32]

Reads the token rows glassbox stored for HOOK (`RUN/activations/hook=HOOK/part-*.parquet`, with
the token ids from `RUN/tokens.parquet`), lays the tokens end to end in example order and cuts
them into windows of `--context-size` tokens (the remainder is dropped, as SAELens's own cache
runner drops the end of its stream), and saves a Hugging Face `datasets` dataset to OUT with
the columns SAELens's `CacheActivationsRunner` writes: HOOK as `Array2D(shape=(context_size,
d_in))` and `token_ids` as `Sequence(int32, length=context_size)`. SAELens reads it with
`use_cached_activations=True, cached_activations_path=OUT` (`hook_name`, `context_size` and
`d_in` equal to these). Needs `pyarrow`, `numpy` and `datasets` (SAELens's own dependencies);
glassbox itself needs none of them.

The windows span example boundaries without a separator, so run the extraction without
special tokens you do not want inside a window, or pick `--context-size` no longer than your
texts if each window should hold one example.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq


def token_rows(run: str, hook: str) -> tuple[np.ndarray, np.ndarray]:
    """The hook's activations [n, d_in] and token ids [n], ordered by (example_id, position)."""
    parts = sorted(glob.glob(os.path.join(run, "activations", f"hook={hook}", "part-*.parquet")))
    if not parts:
        sys.exit(
            f"{run}: no token rows stored for `{hook}` (activations/hook={hook}/ is missing); "
            "run `glassbox extract` with that hook and without --no-token-level"
        )
    acts = pq.ParquetDataset(parts).read(columns=["example_id", "position", "act"])
    tokens = pq.read_table(os.path.join(run, "tokens.parquet"), columns=["example_id", "position", "token_id"])
    acts = acts.sort_by([("example_id", "ascending"), ("position", "ascending")])
    tokens = tokens.sort_by([("example_id", "ascending"), ("position", "ascending")])
    if acts.num_rows != tokens.num_rows or not (
        pc.all(pc.equal(acts["example_id"], tokens["example_id"])).as_py()
        and pc.all(pc.equal(acts["position"], tokens["position"])).as_py()
    ):
        sys.exit(f"{run}: the token rows of `{hook}` do not match tokens.parquet; re-run the extraction")
    column = acts["act"].combine_chunks()
    width = column.type.list_size
    values = np.asarray(column.flatten().to_numpy(zero_copy_only=False), dtype=np.float32)
    return values.reshape(-1, width), np.asarray(tokens["token_id"].to_numpy(), dtype=np.int32)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a glassbox run directory")
    parser.add_argument("hook", help="the hook, e.g. blocks.3.hook_resid_post")
    parser.add_argument("out", help="folder for the SAELens cache (must not exist or be empty)")
    parser.add_argument("--context-size", type=int, default=128, help="tokens per row (SAELens's context_size)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16"], help="activation dtype")
    args = parser.parse_args()
    if args.context_size < 1:
        parser.error("--context-size must be at least 1")
    if os.path.isdir(args.out) and os.listdir(args.out):
        parser.error(f"{args.out} is not empty; SAELens's cache runner refuses to write into one too")

    from datasets import Array2D, Dataset, Features, Sequence, Value

    acts, ids = token_rows(args.run, args.hook)
    rows = len(ids) // args.context_size
    if rows == 0:
        sys.exit(f"{args.run}: only {len(ids)} tokens at `{args.hook}`, fewer than one window of {args.context_size}")
    n = rows * args.context_size
    d_in = acts.shape[1]
    features = Features(
        {
            args.hook: Array2D(shape=(args.context_size, d_in), dtype=args.dtype),
            "token_ids": Sequence(Value(dtype="int32"), length=args.context_size),
        }
    )
    data = {
        args.hook: acts[:n].astype(args.dtype).reshape(rows, args.context_size, d_in),
        "token_ids": ids[:n].reshape(rows, args.context_size),
    }
    Dataset.from_dict(data, features=features).save_to_disk(args.out)
    print(
        f"{args.out}: {rows} rows × {args.context_size} tokens × {d_in} ({n} of {len(ids)} tokens) "
        f"for hook_name={args.hook}, context_size={args.context_size}, d_in={d_in}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
