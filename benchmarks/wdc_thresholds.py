"""One discriminator threshold, or one per attribute, on WDC-PAVE (**val only**; docs/wdc_pave.md).

The generator's answers are right for some attributes (Gender 95%) and almost never for others
(Retail UPC 0%), and the discriminator judges presence, not the value. Under the dataset authors'
rule a refused wrong value is pure gain, so a threshold per attribute (refusing everything where
the answers are mostly wrong) might keep fewer wrong values. Scored honestly with two folds: the
thresholds are fit on half of the val offers and scored on the other half, and the other way round.
Reads the val answers and scores of a ``benchmarks/wdc_disc_dev.py`` run (no model is run).

    python benchmarks/wdc_thresholds.py [--runs base ...] [--work /tmp/wdc_dev]

Writes benchmarks/results/wdc_thresholds.json.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from wdc_dev import ROOT, dev_folder, params_with

from deflate import pave_scoring
from deflate.data import load_split
from deflate.text import NONE_VALUE

GRID = np.r_[np.linspace(0, 1, 101), 1.01]  # 1.01: refuse every answer to that attribute


def questions(dev: Path, run: Path) -> dict:
    """Per val question: offer, key (attribute or category/attribute), score, and the authors'
    outcome index if the answer is kept and if it is refused."""
    schema = json.loads((dev / "schema.json").read_text())
    records = {r.id: r for r in load_split(dev, "test")}  # the dev folder's test split is val
    rows = [json.loads(x) for x in (run / "predictions" / "test.jsonl").read_text().splitlines()]
    out: dict[str, list] = {k: [] for k in ("offer", "attribute", "category_attribute", "score", "kept", "refused")}
    for i, row in enumerate(rows):
        r = records[row["id"]]
        gold = {lab["attribute"]: lab.get("gold") or [lab["value"]] for lab in r.labels}
        cands = {c["attribute"]: c for c in row["candidates"]}
        for a in schema["category_attributes"][r.category]:
            c = cands.get(a, {"value": "", "score": 0.0})
            v = c["value"] if c["value"] != NONE_VALUE else ""
            out["offer"].append(i)
            out["attribute"].append(a)
            out["category_attribute"].append(f"{r.category}/{a}")
            out["score"].append(c["score"] if c["score"] is not None else 1.0)
            out["kept"].append(pave_scoring.OUTCOMES.index(pave_scoring.outcome(v, gold.get(a, []))))
            out["refused"].append(pave_scoring.OUTCOMES.index(pave_scoring.outcome(None, gold.get(a, []))))
    return {k: np.array(v) for k, v in out.items()}


def counts(q: dict, mask: np.ndarray, thr: np.ndarray) -> np.ndarray:
    """Outcome counts of the questions in ``mask`` with a threshold per question."""
    kept = q["score"] >= thr
    idx = np.where(kept, q["kept"], q["refused"])[mask]
    return np.bincount(idx, minlength=5)


def f1(c: np.ndarray) -> float:
    return float(pave_scoring.prf(c)["f1"])


def fit(q: dict, mask: np.ndarray, by: str | None) -> dict:
    """Thresholds maximising the authors' F1 on ``mask``: one (``by`` None) or one per key, each
    chosen with the others held at the global best (one coordinate pass)."""
    glob = max(GRID, key=lambda t: (f1(counts(q, mask, np.full(len(q["score"]), t))), -abs(t - 0.5)))
    thr = {None: glob}
    if by is None:
        return thr
    per = np.full(len(q["score"]), glob)
    for key in np.unique(q[by][mask]):
        sel = q[by] == key

        def score(t, sel=sel):
            trial = per.copy()
            trial[sel] = t
            return f1(counts(q, mask, trial)), -abs(t - glob)
        thr[key] = max(GRID, key=score)
        per[sel] = thr[key]
    return thr


def apply(q: dict, thr: dict, by: str | None) -> np.ndarray:
    if by is None:
        return np.full(len(q["score"]), thr[None])
    return np.array([thr.get(k, thr[None]) for k in q[by]])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", nargs="+", default=["base"])
    ap.add_argument("--work", type=Path, default=Path("/tmp/wdc_dev"))
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    dev = dev_folder(params_with([]), args.work)
    res = {}
    for run in args.runs:
        q = questions(dev, args.work / "disc_runs" / run)
        offers = np.unique(q["offer"])
        half = set(np.random.default_rng(args.seed).permutation(offers)[: len(offers) // 2].tolist())
        fold = np.array([o in half for o in q["offer"]])
        out = {}
        for by in (None, "attribute", "category_attribute"):
            total = np.zeros(5, dtype=np.int64)
            for train_mask in (fold, ~fold):  # fit on one half, score the other
                thr = fit(q, train_mask, by)
                total += counts(q, ~train_mask, apply(q, thr, by))
            in_sample = fit(q, np.ones(len(fold), bool), by)
            name = by or "global"
            out[name] = {"two_fold_f1": round(f1(total), 2), "two_fold_counts": total.tolist(),
                         "in_sample_f1": round(f1(counts(q, np.ones(len(fold), bool), apply(q, in_sample, by))), 2),
                         "thresholds": len(in_sample),
                         "refused_outright": sorted(str(k) for k, t in in_sample.items() if t > 1)}
        res[run] = out
        print(run, json.dumps({k: (v["two_fold_f1"], v["in_sample_f1"]) for k, v in out.items()}))
    (ROOT / "benchmarks" / "results" / "wdc_thresholds.json").write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
