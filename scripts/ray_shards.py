#!/usr/bin/env python3
"""Run a sharded glassbox stage on a Ray cluster and wait for the run to be complete.

    python scripts/ray_shards.py --shards 3 -- extract --model ORG/NAME --data d.jsonl \
        --hooks 'blocks.*.hook_resid_post' --run /shared/runs/r1

One Ray task per shard runs `glassbox <command> --shard i/N` (the run folder must be on storage
every node sees, e.g. NFS). glassbox does the rest: each worker writes only its own parts, and
the last one to finish checks coverage and commits the run. Ray retries a task whose worker
died (`--retries`); the re-run shard keeps the parts its killed attempt had finished. At the
end the driver asks `glassbox inspect --json` whether the run is complete and exits 0 only if
it is, listing any shard still missing otherwise.

No scheduling of our own: placement, retries and resources are Ray's (`--address` or
RAY_ADDRESS for an existing cluster; without either, a local one is started).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import ray


@ray.remote
def run_shard(glassbox: str, command: list[str], index: int, count: int) -> dict:
    """Runs one shard worker to completion; its exit status and output come back."""
    argv = [glassbox, *command, "--shard", f"{index}/{count}", "--quiet"]
    done = subprocess.run(argv, capture_output=True, text=True)
    return {
        "shard": f"{index}/{count}",
        "returncode": done.returncode,
        "stdout": done.stdout,
        "stderr": done.stderr,
    }


def run_folder(command: list[str]) -> str:
    """The `--run` value of the glassbox command (the driver checks that run at the end)."""
    for i, arg in enumerate(command):
        if arg == "--run" and i + 1 < len(command):
            return command[i + 1]
        if arg.startswith("--run="):
            return arg.split("=", 1)[1]
    sys.exit("ray_shards.py: the glassbox command needs --run FOLDER (on storage every node sees)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=int, required=True, help="number of shard workers (N)")
    parser.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS, else a local cluster)")
    parser.add_argument("--glassbox", default="glassbox", help="the glassbox executable on the nodes")
    parser.add_argument("--cpus-per-shard", type=float, default=1.0, help="Ray CPUs reserved per shard task")
    parser.add_argument("--retries", type=int, default=2, help="Ray retries of a shard whose worker died")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the glassbox command, without --shard")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if args.shards < 1:
        parser.error("--shards must be at least 1")
    if not command:
        parser.error("give the glassbox command after --, e.g. -- extract --model … --run FOLDER")
    if any(a == "--shard" or a.startswith("--shard=") for a in command):
        parser.error("leave --shard out of the command: the driver adds one per task")
    run = run_folder(command)

    ray.init(address=args.address, log_to_driver=False)
    task = run_shard.options(num_cpus=args.cpus_per_shard, max_retries=args.retries)
    pending = [task.remote(args.glassbox, command, i, args.shards) for i in range(args.shards)]
    failed = False
    for result in ray.get(pending):
        sys.stdout.write(result["stdout"])
        if result["returncode"] != 0:
            failed = True
            sys.stderr.write(f"shard {result['shard']} failed (exit {result['returncode']}):\n{result['stderr']}")
    ray.shutdown()

    inspected = subprocess.run([args.glassbox, "inspect", "--json", run], capture_output=True, text=True)
    if inspected.returncode != 0:
        sys.stderr.write(inspected.stderr)
        return 1
    report = json.loads(inspected.stdout)
    stage = command[0]
    shards = [s for s in report.get("shards", []) if s["stage"] == stage]
    missing = [s["shard"] for s in shards if s["parts_done"] < s["parts"]]
    # `gradients` is a step, not a stage of the manifest: it is committed when its plan is gone.
    committed = stage in report["manifest"].get("stages", {}) or (stage == "gradients" and not shards and not failed)
    if missing or not committed:
        sys.stderr.write(
            f"the run is not complete: shards {', '.join(missing) or 'none'} still to finish; "
            f"run this driver again (finished parts are kept)\n"
        )
        return 1
    print(f"{stage}: all {args.shards} shards complete, every part checked, run committed → {run}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
