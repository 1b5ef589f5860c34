"""How readable is the package's house, at any commit? The figures issue #33 asks for, measured from
the source alone (nothing runs):

* modules per folder of ``src/deflate`` and the lines of the largest module;
* inference batch loops: calls that build an inference batch order, ``X.batches(...)`` without
  ``shuffle=True`` (training shuffles);
* training skeletons: call sites of the training loop ``fit(...)``;
* JSON file readers: functions that parse JSON they read from a file themselves (``json.loads`` or
  ``json.load`` beside ``read_text`` / ``read_bytes`` / ``open``);
* repeated blocks: places where 4 (or ``--lines``) consecutive code lines stand again elsewhere,
  in ``src/`` and in ``benchmarks/`` (blank lines, comments, imports, docstring lines and lone
  brackets passed over; white space folded).

    python benchmarks/house_report.py                     # the working tree
    python benchmarks/house_report.py --rev 8b7e16c --rev HEAD --out benchmarks/results/house_report.json
"""
from __future__ import annotations

import argparse
import ast
import io
import json
import subprocess
import sys
import tarfile
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from test_house import code_lines  # noqa: E402  (the house rules' own reading of a code line)


def repeated_blocks(root: Path, files: dict[str, str], size: int) -> int:
    """Places whose ``size`` code lines stand earlier in the tree (another file, or the same file
    without overlap); a run of repeats longer than ``size`` counts once."""
    seen: dict[tuple, tuple[str, int]] = {}
    places, last = 0, {}
    for name in sorted(files):
        lines = code_lines(root / name)
        for i in range(len(lines) - size + 1):
            block = tuple(t for _, t in lines[i:i + size])
            first = seen.get(block)
            if first and (first[0] != name or first[1] + size <= lines[i][0]):
                if last.get(name) != i - 1:  # a new run of repeated lines starts here
                    places += 1
                last[name] = i
            seen.setdefault(block, (name, lines[i][0]))
    return places


def calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            yield node, (f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else "")


def source_figures(files: dict[str, str]) -> dict:
    loops = skeletons = 0
    readers = []
    for name, text in files.items():
        tree = ast.parse(text)
        for node, fn in calls(tree):
            shuffle = next((k.value for k in node.keywords if k.arg == "shuffle"), None)
            if fn == "batches" and isinstance(node.func, ast.Attribute) and not (
                    isinstance(shuffle, ast.Constant) and shuffle.value is True):
                loops += 1
            skeletons += fn == "fit" and isinstance(node.func, ast.Name)
        for fdef in (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.Lambda, ast.Assign))):
            found = list(calls(fdef))
            parses = any(fn in ("loads", "load") and isinstance(node.func, ast.Attribute)
                         and isinstance(node.func.value, ast.Name) and node.func.value.id == "json"
                         for node, fn in found)
            if parses and {fn for _, fn in found} & {"read_text", "read_bytes", "open"}:
                readers.append(f"{name}:{fdef.lineno}")
    return {"inference_loops": loops, "training_skeletons": skeletons, "json_file_readers": len(readers),
            "json_file_reader_places": readers}


def tree_files(root: Path, folder: str) -> dict[str, str]:
    base = root / folder
    return {p.relative_to(root).as_posix(): p.read_text(encoding="utf-8")
            for p in sorted(base.rglob("*.py"))} if base.is_dir() else {}


def measure(root: Path, size: int) -> dict:
    src = tree_files(root, "src/deflate")
    per_folder = Counter(str(Path(n).parent.relative_to("src/deflate")) for n in src if not n.endswith("__init__.py"))
    largest = max(src, key=lambda n: len(src[n].splitlines()))
    return {"modules": sum(per_folder.values()), "modules_per_folder": dict(sorted(per_folder.items())),
            "largest_module": {"file": largest, "lines": len(src[largest].splitlines())},
            "src_lines": sum(len(t.splitlines()) for t in src.values()),
            **source_figures(src),
            f"repeated_blocks_{size}_lines": {"src": repeated_blocks(root, src, size),
                                              "benchmarks": repeated_blocks(root, tree_files(root, "benchmarks"), size)}}


def at_rev(rev: str, size: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        tar = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "src", "benchmarks"], check=True,
                             capture_output=True).stdout
        tarfile.open(fileobj=io.BytesIO(tar)).extractall(tmp, filter="data")
        sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", rev], check=True,
                             capture_output=True, text=True).stdout.strip()
        return {"rev": rev, "commit": sha, **measure(Path(tmp), size)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rev", action="append", help="a git revision to measure (repeatable; default: the working tree)")
    ap.add_argument("--lines", type=int, default=4, help="code lines that make a repeated block (default 4)")
    ap.add_argument("--out", type=Path, help="write the figures to this JSON file too")
    args = ap.parse_args()
    figures = [at_rev(r, args.lines) for r in args.rev] if args.rev else [{"rev": "working tree",
                                                                           **measure(ROOT, args.lines)}]
    text = json.dumps(figures, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
