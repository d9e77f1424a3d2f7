#!/usr/bin/env python3
"""Runs glassbox-bench and the PyTorch reference side by side, alternating single passes.

Both programs load once in `--serve` mode, then this driver asks each in turn for one forward
pass (and afterwards one end-to-end pass), swapping which goes first every time. The two sides
thus run within seconds of each other, where separate runs were minutes apart and a shared
machine's speed drifts by 10-36% over minutes. Only one side computes at a time: the other
waits on its stdin. Each side then writes its usual JSON report (every pass in order, so
pass i of one pairs with pass i of the other; compare.py prints the paired ratios).

Usage: paired.py PASSES GLASSBOX_BENCH PYTHON TEXTS.jsonl GLASSBOX.json PYTORCH.json
Standard library only.
"""
import atexit
import json
import subprocess
import sys
import time
from pathlib import Path

# Lets the side that just finished park its worker threads (OpenMP and rayon spin briefly
# before sleeping) so it takes no cycles from the other's pass.
SETTLE_S = 0.5


STARTED = []


@atexit.register
def stop_the_others():
    """On an early exit (one side failed), the other is stopped rather than left waiting."""
    for proc in STARTED:
        if proc.poll() is None:
            proc.kill()


class Side:
    def __init__(self, name, argv):
        self.name = name
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        except OSError as e:
            sys.exit(f"cannot start {name} ({argv[0]}): {e}")
        STARTED.append(self.proc)
        self.expect("ready")

    def expect(self, wanted):
        """Reads stdout lines until `wanted` (a line, or a key of a JSON line) appears."""
        for line in self.proc.stdout:
            line = line.strip()
            if line == wanted:
                return None
            if line.startswith("{"):
                try:
                    value = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if wanted in value:
                    return value[wanted]
        code = self.proc.wait()
        sys.exit(f"{self.name} exited (status {code}) before answering {wanted!r}; its errors are above")

    def run(self, command):
        time.sleep(SETTLE_S)
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.expect(f"{command}_tokens_per_s")

    def finish(self):
        self.proc.stdin.close()
        self.proc.stdout.read()
        code = self.proc.wait()
        if code != 0:
            sys.exit(f"{self.name} failed (status {code}) writing its report")


def main():
    if len(sys.argv) != 7 or not sys.argv[1].isdigit() or int(sys.argv[1]) < 1:
        sys.exit(__doc__)
    passes = int(sys.argv[1])
    bench, python, texts, glassbox_out, pytorch_out = sys.argv[2:]
    reference = str(Path(__file__).with_name("pytorch_extract.py"))
    # glassbox-bench first: it writes the texts the reference reads.
    ours = Side("glassbox-bench", [bench, "--serve", "--out", glassbox_out, "--texts", texts])
    theirs = Side("pytorch_extract.py", [python, reference, texts, pytorch_out, "--serve"])
    for command in ["forward", "e2e"]:
        for i in range(passes):
            order = [ours, theirs] if i % 2 == 0 else [theirs, ours]
            tps = {side.name: side.run(command) for side in order}
            g, p = tps[ours.name], tps[theirs.name]
            print(f"{command} pass {i + 1}/{passes}: glassbox {g:.0f}, PyTorch {p:.0f} tokens/s ({g / p:.2f}x)", file=sys.stderr)
    ours.finish()
    theirs.finish()


if __name__ == "__main__":
    main()
