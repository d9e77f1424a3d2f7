#!/usr/bin/env python3
"""Module-level import cycles inside each crate of the workspace.

For every crate, each source file is a module (`src/a/b.rs` and `src/a/b/mod.rs` are `a::b`);
an edge A -> B is a path to B in A's code (`crate::b::…`, `super::b…`, `self::b…`, and a
`use super::*`). Edges between a module and its ancestors are not counted (a parent declares
its children; children see their parent through `super`). A cycle is a strongly connected
component of two or more modules. Prints each cycle with the lines that make it; exits 1 when
there is one. Standard library only.

Usage: python3 scripts/module_cycles.py [CRATE_DIR ...]   (default: every workspace member)
"""
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def members():
    text = (ROOT / "Cargo.toml").read_text()
    found = re.search(r"members\s*=\s*\[([^\]]*)\]", text)
    return [m.strip().strip('"') for m in found.group(1).split(",") if m.strip()]


def module_of(src: Path, file: Path):
    rel = file.relative_to(src).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return tuple(parts)


def strip_comments(code: str) -> str:
    code = re.sub(r"/\*.*?\*/", "", code, flags=re.S)
    return re.sub(r"//[^\n]*", "", code)


def resolve(modules, start, segments):
    """The longest module path `start + segments[:k]` that exists."""
    best = None
    for k in range(1, len(segments) + 1):
        cand = start + tuple(segments[:k])
        if cand in modules:
            best = cand
    return best


def edges_of(modules, mod, code):
    out = {}
    for lineno, line in enumerate(code.splitlines(), 1):
        for m in re.finditer(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)+|::\*|::\{)", line):
            head, tail = m.group(1), m.group(2)
            segs = [s for s in tail.split("::") if s and s not in ("*", "{")]
            if head == "crate":
                base = ()
            elif head == "self":
                base = mod
            else:
                base = mod[:-1]
                while segs and segs[0] == "super":
                    segs, base = segs[1:], base[:-1]
            target = resolve(modules, base, segs) if segs else None
            if target is None:
                continue
            if target == mod or target[: len(mod)] == mod or mod[: len(target)] == target:
                continue  # itself, a descendant or an ancestor
            out.setdefault(target, []).append(lineno)
    return out


def sccs(graph):
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(comp)

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return out


def check(crate: str) -> int:
    src = ROOT / crate / "src"
    files = {module_of(src, f): f for f in src.rglob("*.rs") if "bin" not in f.relative_to(src).parts}
    graph = {}
    for mod, file in files.items():
        graph[mod] = edges_of(files, mod, strip_comments(file.read_text()))
    found = 0
    for comp in sccs(graph):
        if len(comp) < 2:
            continue
        found += 1
        names = sorted("::".join(m) or "(root)" for m in comp)
        print(f"{crate}: cycle between {', '.join(names)}")
        for a in comp:
            for b, lines in graph[a].items():
                if b in comp:
                    rel = files[a].relative_to(ROOT)
                    print(f"  {rel}:{lines[0]} uses {'::'.join(b)}")
    return found


def main():
    crates = sys.argv[1:] or members()
    total = sum(check(c) for c in crates)
    if total:
        print(f"{total} module cycle(s)")
        return 1
    print(f"no module cycles in {len(crates)} crates")
    return 0


if __name__ == "__main__":
    sys.exit(main())
