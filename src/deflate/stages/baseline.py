"""Stage: train one baseline (:mod:`deflate.baselines`) on one dataset, write its val and test
predictions, and score test with the paper's metrics and their bootstrap intervals."""
from __future__ import annotations

from pathlib import Path

from deflate.baselines.systems import (
    SYSTEMS,
    run_dictionary,
    score,
    train_jgave,
    train_tagger,
)
from deflate.evaluation import prediction_files
from deflate.evaluation.intervals import bootstrap_f1
from deflate.infra import distributed as dist
from deflate.stages.context import StageContext


def run_baseline(system: str, p: dict, processed: Path, tokens_dir: Path, out: Path) -> dict:
    """Train ``system`` on ``processed`` (+ ``tokens_dir`` pictures for M-JAVE), predict test, score
    with the paper's metrics; returns the metrics dict (also logged to MLflow)."""
    if system not in SYSTEMS:
        raise ValueError(f"unknown baseline {system!r}; choose one of {SYSTEMS}")
    ctx = StageContext.open(p, system, processed)
    tracker = ctx.tracker()
    if system == "jgave":
        t = train_jgave(p, processed, tokens_dir, out, tracker, ctx.train_kw)
    elif system == "dictionary":
        t = run_dictionary(processed)
    else:
        t = train_tagger(system, p, processed, tokens_dir, out, tracker, ctx.train_kw)
    if dist.is_main():
        for split, records, pred in (("val", t.val, t.val_pred), ("test", t.test, t.test_pred)):
            prediction_files.write(out / "predictions" / f"{split}.jsonl", records, pred)
    m = score(t.test, t.test_pred)
    m["intervals"] = bootstrap_f1(t.test, t.test_pred, p["eval"]["n_boot"], p["seed"])
    m["meta"] = {"system": system, "params": t.params, "epochs": len(t.history),
                 "best_val_ave_f1": round(100 * max(h["val_score"] for h in t.history), 2) if t.history else
                 score(t.val, t.val_pred)["ave"]["f1"]}
    tracker.metrics({f"test_{k}_f1": m[k]["f1"] for k in ("ap", "ave", "ave_fuzzy")}, step=len(t.history))
    tracker.artifacts(out, system)
    tracker.close()
    dist.barrier()
    return m
