"""The default main chain (train_generator -> harvest_negatives -> train_discriminator -> evaluate)
with ``distributed.processes: 2`` (two CPU processes, gloo, one thread each), beside the
one-process run that ``dvc repro`` committed (issue #18): Table 4's DEFLATE row from both, and
whether each lies inside the other's 95% bootstrap interval.

Run after ``dvc repro`` (it reads data/processed, data/tokens and metrics/deflate.json); works in a
temporary folder, so nothing of the workspace changes. Writes
benchmarks/results/distributed_main_chain.json.   Usage: python benchmarks/distributed_main_chain.py"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))
from repro_times import last_runs  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("train_generator", "harvest_negatives", "train_discriminator", "evaluate")


def row(m: dict) -> dict:
    return {k: {"f1": m[k]["f1"], "ci95": m["intervals"][k]} for k in ("ave", "ap")} | {
        "by_source": {s: v["f1"] for s, v in m["by_source"].items()}, "threshold": m["threshold"]}


def stage_seconds(log: Path) -> dict:
    """Each main-chain stage's last timed run (deflate.infra.runtime.stage_timer: the main process, start to end)."""
    return {s: r["seconds"] for s, r in last_runs(log).items() if s in STAGES}


def inside(x: float, ci: list) -> bool:
    return ci[0] <= x <= ci[1]


def main(processes: int = 2) -> dict:
    one = json.loads((ROOT / "metrics" / "deflate.json").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "data").mkdir()
        for d in ("processed", "tokens"):
            (work / "data" / d).symlink_to(ROOT / "data" / d)
        p = yaml.safe_load((ROOT / "params.yaml").read_text())
        p["tracking"]["enabled"] = False
        p["distributed"]["processes"] = processes
        (work / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
        env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK")}
        seconds = {}
        for stage in STAGES:
            t0 = time.perf_counter()
            r = subprocess.run([sys.executable, str(ROOT / "stages" / f"{stage}.py")], cwd=work, env=env,
                               capture_output=True, text=True)
            seconds[stage] = round(time.perf_counter() - t0, 1)
            print(f"[distributed_main_chain] {stage}: rc {r.returncode}, {seconds[stage]} s", flush=True)
            if r.returncode:
                sys.exit(r.stdout[-2000:] + r.stderr[-4000:])
        two = json.loads((work / "metrics" / "deflate.json").read_text())
        two_s = stage_seconds(work / "logs" / "timings.jsonl")
    one_s = stage_seconds(ROOT / "logs" / "timings.jsonl")  # the latest one-process run
    out = {"processes": processes, "one_process": row(one), f"{processes}_processes": row(two),
           "within_intervals": {k: {"two_in_one": inside(two[k]["f1"], one["intervals"][k]),
                                    "one_in_two": inside(one[k]["f1"], two["intervals"][k])} for k in ("ave", "ap")},
           "stage_seconds": {"one_process": one_s, f"{processes}_processes": two_s},
           "wall_seconds_with_launch": {f"{processes}_processes": seconds},
           "machine": f"{os.cpu_count()} cores"}
    path = ROOT / "benchmarks" / "results" / "distributed_main_chain.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
