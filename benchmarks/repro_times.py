"""Per-stage wall time and peak memory of the last `dvc repro` (or `make repro`), from the timing
log every stage appends to (logs/timings.jsonl), plus the total. Usage:

    python benchmarks/repro_times.py [--since 2026-11-25T19:00:00] [--log logs/timings.jsonl]

Only the newest entry per stage after --since counts (a stage rerun replaces its older time).
"""
import argparse
import json
from pathlib import Path


def last_runs(log: Path, since: str = "") -> dict[str, dict]:
    """Each stage's newest timing record at or after ``since`` (deflate.infra.runtime.stage_timer's log)."""
    last = {}
    for x in Path(log).read_text().splitlines():
        if x.strip() and (r := json.loads(x))["time"] >= since:
            last[r["stage"]] = r
    return last


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--log", default="logs/timings.jsonl")
    ap.add_argument("--since", default="", help="ISO time; entries before it are ignored")
    a = ap.parse_args()
    last = last_runs(a.log, a.since)
    total = sum(r["seconds"] for r in last.values())
    print("| stage | seconds | peak memory (MB) |\n|---|---:|---:|")
    for s, r in sorted(last.items(), key=lambda kv: kv[1]["time"]):
        print(f"| {s} | {r['seconds']:.1f} | {r.get('peak_memory_mb', '–')} |")
    print(f"| **sum of stages** | **{total:.1f}** ({total / 60:.1f} min) | |")


if __name__ == "__main__":
    main()
