"""Which outputs a re-run changed: each stage's outs in a ``dvc.lock`` against the same lock at a git
revision, and for a changed folder the files inside it that differ (read from the DVC cache's
listings). How a re-run of unchanged-behaviour code is checked before it is committed.

    python benchmarks/lock_diff.py pipelines/wdc_pave/dvc.lock [--rev HEAD] [--cache .dvc/cache]
"""
import argparse
import json
import subprocess
from pathlib import Path

import yaml


def outs(lock: dict) -> dict[str, dict[str, str]]:
    return {st: {o["path"]: o.get("md5") for o in spec.get("outs", [])} for st, spec in lock["stages"].items()}


def listing(cache: Path, md5: str | None) -> dict[str, str]:
    f = cache / "files" / "md5" / md5[:2] / md5[2:] if md5 else None
    return {e["relpath"]: e["md5"] for e in json.loads(f.read_text())} if f and f.is_file() else {}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("lock", type=Path)
    ap.add_argument("--rev", default="HEAD")
    ap.add_argument("--cache", type=Path, help="the DVC cache (default: .dvc/cache, or config.local's dir)")
    a = ap.parse_args()
    cache = a.cache
    if cache is None:
        local = Path(".dvc/config.local")
        cache = Path(".dvc/cache")
        if local.is_file():
            for line in local.read_text().splitlines():
                if line.strip().startswith("dir ="):
                    cache = Path(line.split("=", 1)[1].strip())
    shown = subprocess.run(["git", "show", f"{a.rev}:{a.lock}"], capture_output=True, text=True, check=True).stdout
    old, new = outs(yaml.safe_load(shown)), outs(yaml.safe_load(a.lock.read_text()))
    for st in sorted(set(old) | set(new)):
        o, n = old.get(st, {}), new.get(st, {})
        changed = [p for p in sorted(set(o) | set(n)) if o.get(p) != n.get(p)]
        print(f"{st}: {'same' if not changed else 'CHANGED'}")
        for p in changed:
            print(f"  {p}")
            if str(o.get(p, "")).endswith(".dir") or str(n.get(p, "")).endswith(".dir"):
                lo, ln = listing(cache, o.get(p)), listing(cache, n.get(p))
                for f in sorted(set(lo) | set(ln)):
                    if lo.get(f) != ln.get(f):
                        print(f"    {f}: {'new' if f not in lo else 'gone' if f not in ln else 'differs'}")


if __name__ == "__main__":
    main()
