"""Are two runs of the pipelines the same? Compares, between two checkouts that each ran `dvc repro`:
every number in every metrics JSON (measured times and memory left out: they vary run to run), the
prediction and negative files byte for byte, and every tensor of every trained model.

    python benchmarks/compare_runs.py OLD_CHECKOUT NEW_CHECKOUT [--pipeline . --pipeline pipelines/mepave ...]

Prints one line per compared item and a summary; exits 1 if any quality number, prediction or
weight differs. Then, for information, each stage output whose ``dvc.lock`` hash is the same in both
checkouts (byte-identical files or folders, even when the old run's files are not on this machine:
a committed lock against a re-run); folders holding measured seconds or run ids differ by design.
"""
import argparse
import json
import sys
from pathlib import Path

VARYING = {"efficiency", "seconds", "cost", "train_seconds", "peak_memory_mb", "examples_per_s", "mlflow_model"}
FILES = ("data/predictions/test.jsonl", "data/negatives/train.jsonl", "data/negatives/val.jsonl")
MODELS = ("models/generator", "models/discriminator")


def numbers(obj, path=""):
    """(dotted path, value) of every leaf, measured quantities left out."""
    if isinstance(obj, dict):
        for k, v in sorted(obj.items()):
            if k not in VARYING:
                yield from numbers(v, f"{path}.{k}" if path else k)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from numbers(v, f"{path}[{i}]")
    else:
        yield path, obj


def tensors_equal(a: Path, b: Path) -> bool:
    from safetensors.torch import load_file

    x, y = load_file(str(a)), load_file(str(b))
    return x.keys() == y.keys() and all(bool((x[k] == y[k]).all()) for k in x)


def compare(old: Path, new: Path, pipeline: str) -> tuple[int, int]:
    same = differ = 0
    for f in sorted((old / pipeline / "metrics").rglob("*.json")):
        rel = f.relative_to(old / pipeline)
        g = new / pipeline / rel
        if rel.name in ("table5_efficiency.json",):
            continue
        if not g.is_file():
            print(f"MISSING  {pipeline}/{rel}")
            differ += 1
            continue
        a, b = dict(numbers(json.loads(f.read_text()))), dict(numbers(json.loads(g.read_text())))
        bad = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
        print(f"{'same    ' if not bad else 'DIFFERS '} {pipeline}/{rel}: {len(a)} values"
              + (f"; {len(bad)} differ, e.g. {bad[0]}: {a.get(bad[0])} -> {b.get(bad[0])}" if bad else ""))
        same, differ = same + (not bad), differ + bool(bad)
    for rel in FILES:
        f, g = old / pipeline / rel, new / pipeline / rel
        if f.is_file():
            ok = g.is_file() and f.read_bytes() == g.read_bytes()
            print(f"{'same    ' if ok else 'DIFFERS '} {pipeline}/{rel} (bytes)")
            same, differ = same + ok, differ + (not ok)
    for rel in MODELS:
        f, g = old / pipeline / rel / "model.safetensors", new / pipeline / rel / "model.safetensors"
        if f.is_file():
            ok = g.is_file() and tensors_equal(f, g)
            print(f"{'same    ' if ok else 'DIFFERS '} {pipeline}/{rel} (every tensor)")
            same, differ = same + ok, differ + (not ok)
    return same, differ


def lock_outputs(lock: Path) -> dict[str, str]:
    """``{stage/output path: md5}`` of a dvc.lock."""
    import yaml

    stages = yaml.safe_load(lock.read_text(encoding="utf-8")).get("stages", {}) if lock.is_file() else {}
    return {f"{stage}: {o['path']}": o.get("md5", "") for stage, v in stages.items() for o in v.get("outs", [])}


def compare_locks(old: Path, new: Path, pipeline: str) -> None:
    a, b = lock_outputs(old / pipeline / "dvc.lock"), lock_outputs(new / pipeline / "dvc.lock")
    same = sorted(k for k in a.keys() & b.keys() if a[k] == b[k])
    print(f"dvc.lock {pipeline}: {len(same)} of {len(a.keys() | b.keys())} outputs hash the same")
    for k in sorted(a.keys() | b.keys()):
        print(f"  {'same    ' if k in same else 'differs '} {k}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("old", type=Path)
    ap.add_argument("new", type=Path)
    ap.add_argument("--pipeline", action="append", default=None,
                    help="folder with a metrics/ dir, relative to each checkout (default: . and pipelines/*)")
    args = ap.parse_args()
    pipelines = args.pipeline or ["."] + sorted(str(p.relative_to(args.old)) for p in (args.old / "pipelines").iterdir()
                                                if (p / "metrics").is_dir())
    same = differ = 0
    for pl in pipelines:
        s, d = compare(args.old, args.new, pl)
        same, differ = same + s, differ + d
    print(f"{same} same, {differ} differ")
    for pl in pipelines:
        compare_locks(args.old, args.new, pl)
    sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
