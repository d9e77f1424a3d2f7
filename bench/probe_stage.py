#!/usr/bin/env python3
"""`just bench-probe-stage`: the probe stage of a decoder pipeline, timed alone. SmolLM2-135M
(from `just models`) over the default data with the default pipeline's `[extract]` and
`[probe]` sections (31 hooks; topic, sentence_type and @word_class; MDL and neuron rankings:
93 probes), extracted once, then `glassbox probe --force` PASSES times. Reports each pass's
wall time and peak RSS, the best, the rayon threads and the CPU's flags (JSON).

Usage: probe_stage.py GLASSBOX OUT_DIR PASSES
"""
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from cpu import cpu_flags

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF"
ROOT = Path(__file__).resolve().parent.parent


def config(out: Path) -> Path:
    """The default pipeline up to (not including) its [tcav] section: extract and probe."""
    text = (ROOT / "pipelines" / "default.toml").read_text()
    kept = text.split("\n[tcav]")[0]
    path = out / "probe-stage.toml"
    path.write_text(kept.replace('path = "data/', f'path = "{ROOT}/data/') + "\n")
    return path


def main():
    glassbox, out, passes = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    out.mkdir(parents=True, exist_ok=True)
    run = out / "smollm2-probe-run"
    if not (run / "manifest.json").exists():
        subprocess.run([glassbox, "--quiet", "pipeline", "--config", str(config(out)), "--model",
                        MODEL, "--run", str(run)], check=True, stdout=subprocess.DEVNULL)
    runs = []
    for p in range(passes):
        rss = out / "probe-stage-rss"
        start = time.time()
        subprocess.run(["/usr/bin/time", "-f", "%M", "-o", str(rss), glassbox, "--quiet", "probe",
                        "--run", str(run), "--label", "topic,sentence_type", "--token-label",
                        "@word_class", "--mdl", "--force"], check=True, stdout=subprocess.DEVNULL)
        runs.append({"seconds": round(time.time() - start, 2),
                     "peak_rss_bytes": int(rss.read_text().split()[-1]) * 1024})
    result = {
        "bench": "probe-stage-smollm2",
        "model": MODEL,
        "probes": 93,
        "passes": runs,
        "best_seconds": min(r["seconds"] for r in runs),
        "threads": int(os.environ.get("RAYON_NUM_THREADS", 0)) or os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_flags": cpu_flags(),
    }
    (out / "probe-stage.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
