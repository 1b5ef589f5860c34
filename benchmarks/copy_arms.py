"""Copy against no copy (#31's table): one pipeline's committed metrics beside the same pipeline run
with another ``model.copy``, for the generator-based systems (DEFLATE, d−, JG-AVE).

It only reads what the two runs wrote: ``metrics/<table>.json`` (val and ``eval_visible`` F1, AP F1,
their 95% intervals), ``metrics/<table>_efficiency.json`` (each system stage's seconds) and the
arm's ``logs/timings.jsonl`` (every stage's seconds, the shared generator and the warm-up
included). The arm is a whole ``dvc repro`` of the pipeline in a worktree of its own.

    python benchmarks/copy_arms.py --pipeline wdc_pave --arm WORKTREE \
        --arm-label "no copy (model.copy=false, generator.copy_warmup=3000)" \
        [--base .] [--out benchmarks/results/copy_arms.json]
"""
from __future__ import annotations

import argparse
from pathlib import Path

from repro_times import last_runs

from deflate.infra.files import read_json, write_json

SYSTEMS = ("deflate", "d_minus", "jgave")
FIELDS = ("val_f1", "val_ap_f1", "f1", "f1_ci95", "ap_f1", "ap_f1_ci95")


def run_figures(root: Path, pipeline: str) -> dict:
    """The generator systems' figures and seconds of one run of ``pipelines/<pipeline>``."""
    folder = root / "pipelines" / pipeline
    table = read_json(folder / "metrics" / f"{pipeline}.json")
    cost = read_json(folder / "metrics" / f"{pipeline}_efficiency.json")
    out = {s: {f: table["rows"][s][f] for f in FIELDS} | {"stage_seconds": cost["rows"][s]["seconds"]}
           for s in SYSTEMS}
    shared = cost.get("shared_generator") or {}
    out["shared_generator_train_seconds"] = shared.get("train_seconds")
    history = folder / "models" / "shared_generator" / "history.json"  # in the DVC cache: absent where not pulled
    out["shared_generator_val_exact"] = [h["val_score"] for h in read_json(history)] if history.exists() else None
    return out


def stage_seconds(root: Path, pipeline: str) -> dict[str, float]:
    """The last recorded seconds of each stage in the run's ``logs/timings.jsonl`` (absent: {})."""
    log = root / "pipelines" / pipeline / "logs" / "timings.jsonl"
    return {s: r["seconds"] for s, r in last_runs(log).items()} if log.exists() else {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pipeline", default="wdc_pave")
    ap.add_argument("--base", default=".", help="the checkout whose metrics are committed")
    ap.add_argument("--base-label", default="committed (model.copy as in params.yaml)")
    ap.add_argument("--arm", required=True, help="the worktree that ran the pipeline with the other setting")
    ap.add_argument("--arm-label", required=True)
    ap.add_argument("--out", default="benchmarks/results/copy_arms.json")
    a = ap.parse_args()
    base, arm = Path(a.base), Path(a.arm)
    result = read_json(Path(a.out)) if Path(a.out).exists() else {}
    result[a.pipeline] = {
        "base": {"label": a.base_label, **run_figures(base, a.pipeline)},
        "arm": {"label": a.arm_label, **run_figures(arm, a.pipeline),
                "stages_seconds": stage_seconds(arm, a.pipeline)},
    }
    write_json(Path(a.out), result)
    for side in ("base", "arm"):
        r = result[a.pipeline][side]
        print(r["label"])
        for s in SYSTEMS:
            print(f"  {s:8s} val F1 {r[s]['val_f1']:6.2f}  val AP F1 {r[s]['val_ap_f1']:6.2f}  "
                  f"stage {r[s]['stage_seconds']:7.1f} s")


if __name__ == "__main__":
    main()
