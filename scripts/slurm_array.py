#!/usr/bin/env python3
"""Write a Slurm job-array script that runs a glassbox stage as N shard workers.

    python3 scripts/slurm_array.py --shards 8 --cpus 16 --out extract.sbatch -- \
        extract --model ORG/NAME --data d.jsonl --hooks 'blocks.*.hook_resid_post' --run /shared/r1
    sbatch extract.sbatch          # or: sbatch --wait extract.sbatch

Array task i runs `glassbox <command> --shard i/N`. The run folder must be on storage every
node sees. glassbox does the rest: each task writes only its own parts, the last one to finish
checks coverage and commits the run. A failed or killed task is re-run alone
(`sbatch --array=<i> extract.sbatch`): it keeps the parts it had finished. `glassbox inspect
RUN` shows every shard's state. Slurm schedules; glassbox only shards.
"""

from __future__ import annotations

import argparse
import shlex
import sys


def render(command: list[str], shards: int, cpus: int, glassbox: str, job_name: str,
           output: str, partition: str | None, time: str | None, mem: str | None) -> str:
    directives = [
        f"--job-name={job_name}",
        f"--array=0-{shards - 1}",
        "--ntasks=1",
        f"--cpus-per-task={cpus}",
        f"--output={output}",
    ]
    if partition:
        directives.append(f"--partition={partition}")
    if time:
        directives.append(f"--time={time}")
    if mem:
        directives.append(f"--mem={mem}")
    lines = ["#!/bin/bash"]
    lines += [f"#SBATCH {d}" for d in directives]
    quoted = " ".join(shlex.quote(a) for a in command)
    lines += [
        "# Written by scripts/slurm_array.py: array task i is shard i of "
        f"{shards} (`--shard i/{shards}`).",
        "# Re-run one failed task alone with: sbatch --array=<i> <this file>",
        "set -euo pipefail",
        'if [ -z "${SLURM_ARRAY_TASK_ID:-}" ]; then',
        '    echo "submit this with sbatch (it is a job array: SLURM_ARRAY_TASK_ID is unset)" >&2',
        "    exit 2",
        "fi",
        # The kernels use the CPUs Slurm gave the task, no more.
        'export RAYON_NUM_THREADS="${SLURM_CPUS_PER_TASK:-1}"',
        f'exec {shlex.quote(glassbox)} {quoted} --shard "${{SLURM_ARRAY_TASK_ID}}/{shards}"',
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=int, required=True, help="array tasks = shard workers (N)")
    parser.add_argument("--cpus", type=int, default=4, help="CPUs per task (default 4)")
    parser.add_argument("--glassbox", default="glassbox", help="the glassbox executable on the nodes")
    parser.add_argument("--job-name", default="glassbox")
    parser.add_argument("--output", default="glassbox-%A_%a.out", help="Slurm output pattern")
    parser.add_argument("--partition")
    parser.add_argument("--time", help="time limit per task, e.g. 04:00:00")
    parser.add_argument("--mem", help="memory per task, e.g. 32G")
    parser.add_argument("--out", default="-", help="file to write (default stdout)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the glassbox command, without --shard")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if args.shards < 1:
        parser.error("--shards must be at least 1")
    if args.cpus < 1:
        parser.error("--cpus must be at least 1")
    if not command:
        parser.error("give the glassbox command after --, e.g. -- extract --model … --run FOLDER")
    if any(a == "--shard" or a.startswith("--shard=") for a in command):
        parser.error("leave --shard out of the command: each array task adds its own")
    if not any(a == "--run" or a.startswith("--run=") for a in command):
        parser.error("the glassbox command needs --run FOLDER (on storage every node sees)")
    script = render(command, args.shards, args.cpus, args.glassbox, args.job_name, args.output,
                    args.partition, args.time, args.mem)
    if args.out == "-":
        sys.stdout.write(script)
    else:
        with open(args.out, "w") as f:
            f.write(script)
        print(f"wrote {args.out}: {args.shards} array tasks; submit with `sbatch {args.out}`", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
