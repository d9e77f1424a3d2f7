#!/usr/bin/env python3
"""Rerun the numeric test executables at every SIMD level below the CPU's best (and, on an
AMX CPU, the bf16 product tests with AMX off).

`just test` has already built every test executable with `cargo test --workspace`; this script
asks cargo for their paths (no rebuild: same profile, same features) and runs the numeric crates'
ones again with GLASSBOX_SIMD capped, from the package's folder as `cargo test` would. Running
`cargo test -p <subset>` instead would resolve features for the subset alone and recompile a
good part of the dependency graph (≈ 15 min of a cold CI run on two cores).
"""

import json
import os
import subprocess
import sys
import time

# Whole-model integration tests (minutes each at the scalar level) whose arithmetic is the
# kernels' that the unit and parity tests already cover at every level: they run at the CPU's
# best level in the main suite, and on an AVX2-only machine at AVX2 there.
MODEL_LEVEL = {
    "attribution_smollm2",
    "attribution_effnet",
    "attribution_encoder",
    "patching_parity",
    "planted_sae_architectures",
}

NUMERIC_PACKAGES = {
    "glassbox-probes",
    "glassbox-concepts",
    "glassbox-models",
    "glassbox-runner",
    "glassbox-data",
}


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def test_executables():
    out = subprocess.run(
        ["cargo", "test", "--workspace", "--no-run", "--message-format=json"],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    ).stdout
    found = []
    for line in out.splitlines():
        msg = json.loads(line)
        if msg.get("reason") != "compiler-artifact" or not msg.get("executable"):
            continue
        if not msg["profile"]["test"]:
            continue
        package = msg["package_id"]
        # package_id is "path+file:///…/probes#glassbox-probes@0.1.0" (cargo ≥ 1.77) or
        # "glassbox-probes 0.1.0 (path+file://…)" (older): the name is in either.
        name = package.split("#", 1)[-1].split("@", 1)[0] if "#" in package else package.split()[0]
        target = msg["target"]["name"]
        if target in MODEL_LEVEL:
            continue
        if name in NUMERIC_PACKAGES and set(msg["target"]["kind"]) & {"lib", "test"}:
            found.append((name, target, msg["executable"], os.path.dirname(msg["manifest_path"])))
    return found


def main():
    flags = cpu_flags()
    levels = ["scalar"] + (["avx2"] if "avx512f" in flags else [])
    shown = " ".join(sorted(flags & {"avx2", "fma", "avx512f"}))
    executables = test_executables()
    if not executables:
        sys.exit("test-simd: cargo listed no test executables for the numeric crates")
    failed = []
    for level in levels:
        print(f"== numeric tests with GLASSBOX_SIMD={level} (CPU flags: {shown})", flush=True)
        for package, target, exe, folder in executables:
            env = dict(os.environ, GLASSBOX_SIMD=level, CARGO_MANIFEST_DIR=folder, CARGO_PKG_NAME=package)
            start = time.time()
            code = subprocess.run([exe, "-q"], cwd=folder, env=env).returncode
            print(f"   {package}/{target}: {'ok' if code == 0 else 'FAILED'} in {time.time() - start:.1f} s", flush=True)
            if code != 0:
                failed.append(f"{level}: {package}/{target}")
    # On an AMX CPU the bf16 products run on the tiles at the best level; the VDPBF16PS
    # register kernels that AVX-512 BF16 CPUs without AMX use (Zen 4) are run here with AMX off.
    if {"amx_bf16", "avx512_bf16"} <= flags:
        print("== bf16 product tests with GLASSBOX_AMX=off (the VDPBF16PS kernels)", flush=True)
        for package, target, exe, folder in executables:
            if package != "glassbox-models" or target not in {"glassbox_models", "bf16_compute"}:
                continue
            env = dict(os.environ, GLASSBOX_AMX="off", CARGO_MANIFEST_DIR=folder, CARGO_PKG_NAME=package)
            args = [exe, "-q"] + (["bf16"] if target == "glassbox_models" else [])
            start = time.time()
            code = subprocess.run(args, cwd=folder, env=env).returncode
            print(f"   {package}/{target}: {'ok' if code == 0 else 'FAILED'} in {time.time() - start:.1f} s", flush=True)
            if code != 0:
                failed.append(f"GLASSBOX_AMX=off: {package}/{target}")
    if failed:
        sys.exit("test-simd: failed:\n  " + "\n  ".join(failed))


if __name__ == "__main__":
    main()
