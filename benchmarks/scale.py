"""Scale: wall time and peak memory of each catalogue-sized step at several catalogue sizes.

For each size N a workspace (outside DVC, in ``--work``) gets the repository's params.yaml with
``synth.n_products = N``, then each step runs as the pipeline runs it, as its own process from the
repository's ``stages/`` scripts: ``synth`` (pictures included), ``ingest``, ``image_tokens``,
``harvest_negatives`` and ``evaluate`` (the answering of val and test, with a trained default
model copied in from ``--models``). At the largest size, ``deflate predict`` answers the test
split as a JSONL file. Peak RSS is the OS's figure for that process and its children
(``wait4``'s ``ru_maxrss``); a step under a minute is run ``--repeats`` times and its median time
kept. Every step's seconds include its process's start-up (imports), measured alone as
``startup``. Training is left out: its cost grows with the data by design.

    python benchmarks/scale.py --sizes 1000 10000 100000 --models models \\
        --out benchmarks/results/scale.json --plot docs/scale.png

The goals it checks (issue #36), between the two largest sizes: time per product within 30%, and
peak RSS at most 1.5x, for every step.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
STEPS = ("synth", "ingest", "image_tokens", "harvest_negatives", "evaluate")


def run(cmd: list[str], cwd: Path, log: Path, env: dict | None = None) -> dict:
    """One process: its wall seconds and peak RSS (MiB, the OS's count for it and its children)."""
    t0 = time.perf_counter()
    with open(log, "ab") as out:
        p = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(p.pid, 0)
    seconds = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed in {cwd} (see {log})")
    return {"seconds": round(seconds, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}


def measured(cmd: list[str], cwd: Path, log: Path, repeats: int) -> dict:
    """Median time of ``repeats`` runs where one run is under a minute, else one run; the largest RSS."""
    runs = [run(cmd, cwd, log)]
    while runs[0]["seconds"] < 60 and len(runs) < repeats:
        runs.append(run(cmd, cwd, log))
    return {"seconds": statistics.median(r["seconds"] for r in runs), "runs": len(runs),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in runs)}


def workspace(work: Path, n: int, models: Path, kernels: str) -> Path:
    ws = work / f"n{n}"
    ws.mkdir(parents=True, exist_ok=True)
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    params["synth"]["n_products"] = n
    params["repro"]["kernels"] = kernels
    params["tracking"]["uri"] = f"sqlite:///{ws / 'mlflow.db'}"
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False, allow_unicode=True), encoding="utf-8")
    for part in ("generator", "discriminator"):  # the trained default model: copied, a bundle refuses links
        if not (ws / "models" / part).is_dir():
            shutil.copytree(models / part, ws / "models" / part)
    return ws


def predict_input(ws: Path) -> Path:
    """The test split as ``deflate predict`` rows (JSONL), pictures by path inside the workspace."""
    from deflate.data.records import load_split

    path = ws / "predict_input.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for r in load_split(ws / "data" / "processed", "test"):
            f.write(json.dumps({"id": r.id, "name": r.name, "description": r.description, "image": r.image},
                               ensure_ascii=False) + "\n")
    return path


def growth(results: dict, sizes: list[int]) -> dict:
    """Between the two largest sizes: per step, the ratio of time per product and of peak RSS."""
    a, b = str(sizes[-2]), str(sizes[-1])
    out = {}
    for step in results.get(b, {}) if a in results else {}:
        if step in results[a]:
            x, y = results[a][step], results[b][step]
            t = (y["seconds"] / y["products"]) / (x["seconds"] / x["products"])
            out[step] = {"time_per_product_ratio": round(t, 3), "peak_rss_ratio": round(y["peak_rss_mb"] / x["peak_rss_mb"], 3),
                         "time_goal_met": abs(t - 1) <= 0.3, "rss_goal_met": y["peak_rss_mb"] <= 1.5 * x["peak_rss_mb"]}
    return out


def plot(results: dict, sizes: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for step in STEPS:
        xs = [n for n in sizes if step in results[str(n)]]
        ax1.plot(xs, [1000 * results[str(n)][step]["seconds"] / results[str(n)][step]["products"] for n in xs],
                 marker="o", label=step)
        ax2.plot(xs, [results[str(n)][step]["peak_rss_mb"] for n in xs], marker="o", label=step)
    for ax, label in ((ax1, "ms per product"), (ax2, "peak RSS (MiB)")):
        ax.set_xscale("log")
        ax.set_xlabel("products in the catalogue")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    ax1.legend(fontsize=8)
    fig.suptitle("deflate at catalogue sizes (one process per step, 2 threads)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    ap.add_argument("--models", type=Path, default=ROOT / "models", help="a trained default run's models/ folder")
    ap.add_argument("--work", type=Path, default=Path("/tmp/deflate-scale"), help="workspaces (outside DVC)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "scale.json")
    ap.add_argument("--plot", type=Path, default=ROOT / "docs" / "scale.png")
    ap.add_argument("--kernels", choices=("native", "avx2", "compatible"), default=None,
                    help="the math kernels every step (and deflate predict) computes with; default: params.yaml's "
                         "repro.kernels. Growth ratios do not depend on it; absolute times do (compatible's SSE2 "
                         "matrix products make harvest ~2.8x slower than native here)")
    ap.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS), help="which steps to measure")
    ap.add_argument("--no-predict", action="store_true", help="skip `deflate predict` at the largest size")
    ap.add_argument("--resume", type=Path, default=None,
                    help="a stopped run's results JSON: its measured steps are kept, not run again (their outputs "
                         "must still be in --work), and the rest are measured")
    args = ap.parse_args()
    sizes = sorted(args.sizes)
    repro = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))["repro"]
    kernels = args.kernels or repro["kernels"]
    if not (args.models / "generator").is_dir() or not (args.models / "discriminator").is_dir():
        raise SystemExit(f"{args.models} holds no trained generator/discriminator: run `dvc repro` first")
    # a process that only imports what the stages import: warms the page cache for the first size,
    # and is the fixed start-up inside every step's seconds
    startup_cmd = [sys.executable, "-c", "import torch, mlflow, deflate.stages.evaluate, deflate.data.synth"]
    args.work.mkdir(parents=True, exist_ok=True)
    run(startup_cmd, args.work, args.work / "startup.log")
    startup = measured(startup_cmd, args.work, args.work / "startup.log", args.repeats)
    print(f"[scale] start-up of a step's process: {startup['seconds']} s, {startup['peak_rss_mb']} MiB", flush=True)
    results: dict = {}
    if args.resume:  # same machine and code assumed: the note of the stopped run says so
        before = json.loads(args.resume.read_text(encoding="utf-8"))
        if before.get("kernels", kernels) != kernels:
            raise SystemExit(f"{args.resume} was measured with {before['kernels']} kernels, not {kernels}")
        results = {n: dict(steps) for n, steps in before["steps"].items() if int(n) in sizes}
        for n, steps in results.items():
            for step in steps:
                steps[step]["resumed_from"] = str(args.resume.name)

    def report(complete: bool) -> dict:  # written after every step: a stopped run keeps what it measured
        r = {"sizes": sizes, "complete": complete, "startup": startup,
             "threads": repro["num_threads"], "kernels": kernels,
             "cpu": next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                          if line.startswith("model name")), ""),
             "steps": results, "growth_between_two_largest": growth(results, sizes) if len(sizes) > 1 else {}}
        args.out.write_text(json.dumps(r, indent=1) + "\n", encoding="utf-8")
        return r

    for n in sizes:
        ws = workspace(args.work, n, args.models, kernels)
        log = ws / "scale.log"
        results.setdefault(str(n), {})
        for step in STEPS:  # each step needs the ones before it: the unmeasured ones still run, once
            if step in results[str(n)]:  # measured by the resumed run; its outputs are in the workspace
                continue
            if step not in args.steps:
                run([sys.executable, str(ROOT / "stages" / f"{step}.py")], ws, log)
                continue
            m = measured([sys.executable, str(ROOT / "stages" / f"{step}.py")], ws, log, args.repeats)
            results[str(n)][step] = {**m, "products": n}
            print(f"[scale] {n} products, {step}: {m['seconds']} s, peak {m['peak_rss_mb']} MiB", flush=True)
            report(False)
    if not args.no_predict:
        ws = args.work / f"n{sizes[-1]}"
        rows = predict_input(ws)
        n_rows = sum(1 for _ in open(rows, encoding="utf-8"))
        m = measured([sys.executable, "-m", "deflate.cli", "predict", "--model", "models/deflate", "--input", str(rows),
                      "--output", str(ws / "predict_output.jsonl"), "--images", str(ws), "--device", "cpu",
                      "--kernels", kernels],
                     ws, ws / "scale.log", 1)
        results[str(sizes[-1])]["predict"] = {**m, "products": n_rows}
        print(f"[scale] deflate predict, {n_rows} products: {m['seconds']} s, peak {m['peak_rss_mb']} MiB")
    final = report(True)
    plot(results, sizes, args.plot)
    print(json.dumps(final["growth_between_two_largest"], indent=1))


if __name__ == "__main__":
    main()
