"""Where ingest's peak memory goes on a large catalogue (#36: its peak RSS grew 2.58x from 10k to
100k products while every other streaming step stayed under 1.5x).

Runs the ingest stage's library call (``deflate.data.adapters.ingest``, as ``stages/ingest.py``
calls it) on a ``benchmarks/scale.py`` workspace, each configuration in a fresh process:
- ``plain``: peak RSS as the OS counts it (``wait4``), with ``records.ROW_GROUP`` as committed or
  patched (``--row-groups``);
- ``traced``: the same under memray (``pip install -e ".[bench]"``, memray 1.20.0), listing the
  allocations alive at the high-water mark, grouped by the innermost ``deflate`` frame that made them.
  Arrow's own pool (mimalloc) reserves address space in 1 GiB segments, which memray counts as
  allocated; the traced run sets ``ARROW_DEFAULT_MEMORY_POOL=system`` so each allocation is its size.
The output tables are written to a temporary folder and thrown away.

    python benchmarks/ingest_memory.py /tmp/deflate-scale/n100000 [--row-groups 65536 8192] \\
        [--no-trace] [--repeats 3] [--out benchmarks/results/ingest_memory.json]

``--repeats``: the plain run's time is the median of that many runs where one is under a minute, as
in scale.py; its peak RSS the largest.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import scale  # noqa: E402  (its one-process measurement)

MiB = 1024 * 1024


def child(ws: Path, row_group: int, trace: Path | None) -> None:
    """One ingest run, in this process (the parent measures it)."""
    import yaml

    from deflate.data import records
    from deflate.data.adapters import ingest

    records.ROW_GROUP = row_group
    p = yaml.safe_load((ws / "params.yaml").read_text(encoding="utf-8"))
    d = p["data"]
    with tempfile.TemporaryDirectory(dir=ws) as tmp:
        def go():
            ingest(d["format"], ws / d["path"], Path(tmp) / "processed", Path(tmp) / "rejects", d["max_reject_fraction"],
                   language=d["language"], seed=p["seed"], pic_token_len=d["pic_token_len"],
                   pic_token_vocab=d["pic_token_vocab"], val_fraction=d["val_fraction"])
        if trace is None:
            go()
        else:
            import memray

            with memray.Tracker(trace, follow_fork=False):
                go()


def run_child(ws: Path, row_group: int, trace: Path | None) -> dict:
    """One ingest in its own process (scale.py's measurement: wall seconds, the OS's peak RSS)."""
    cmd = [sys.executable, __file__, str(ws), "--child", str(row_group)] + (["--trace", str(trace)] if trace else [])
    env = {**os.environ, "ARROW_DEFAULT_MEMORY_POOL": "system"} if trace else None
    return scale.run(cmd, ws, ws / "ingest_memory.log", env)


def where(stack: list[tuple[str, str, int]]) -> tuple[str, str]:
    """(innermost deflate frame, the allocating frame) of a stack listed innermost first."""
    site = f"{stack[0][0]} ({Path(stack[0][1]).name}:{stack[0][2]})" if stack else "?"
    for fn, file, line in stack:
        if "/deflate/" in file and "benchmarks" not in file:
            return f"{fn} ({file.split('/deflate/')[-1]}:{line})", site
    return "outside deflate", site


def peak_breakdown(trace: Path, top: int) -> dict:
    """Bytes alive at memray's high-water mark, by innermost deflate frame and by allocating site."""
    import memray

    reader = memray.FileReader(trace)
    by_frame: dict[str, int] = defaultdict(int)
    by_site: dict[tuple[str, str], int] = defaultdict(int)
    for rec in reader.get_high_watermark_allocation_records(merge_threads=True):
        frame, site = where(rec.stack_trace())
        by_frame[frame] += rec.size
        by_site[(frame, site)] += rec.size
    total = sum(by_frame.values())
    return {"peak_traced_mb": round(reader.metadata.peak_memory / MiB, 1), "alive_at_peak_mb": round(total / MiB, 1),
            "by_deflate_frame_mb": {k: round(v / MiB, 1) for k, v in sorted(by_frame.items(), key=lambda x: -x[1])[:top]},
            "by_site_mb": [{"deflate_frame": f, "site": s, "mb": round(v / MiB, 1)}
                           for (f, s), v in sorted(by_site.items(), key=lambda x: -x[1])[:top]]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("workspace", type=Path, help="a scale.py workspace whose synth step has run")
    ap.add_argument("--row-groups", type=int, nargs="+", default=[65_536], help="records.ROW_GROUP values to try")
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--no-trace", action="store_true", help="the OS's peak only (no memray run)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--trace", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    ws = args.workspace.resolve()
    if args.child is not None:
        child(ws, args.child, args.trace)
        return
    import deflate

    out = {"workspace": str(ws), "code": str(Path(deflate.__file__).parent), "runs": []}
    for rg in args.row_groups:
        plain = [sys.executable, __file__, str(ws), "--child", str(rg)]
        row = {"row_group": rg, "plain": scale.measured(plain, ws, ws / "ingest_memory.log", args.repeats)}
        if not args.no_trace:
            with tempfile.TemporaryDirectory() as tmp:
                trace = Path(tmp) / "ingest.bin"
                row["traced"] = {**run_child(ws, rg, trace), **peak_breakdown(trace, args.top)}
        out["runs"].append(row)
        print(json.dumps(row, indent=1), flush=True)
    if args.out:
        args.out.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
