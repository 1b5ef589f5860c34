"""Why DEFLATE's AP F1 swings with its keep threshold, and which rule picks the threshold more
steadily (issue #35 item 3), on val only.

Input: the val predictions of DEFLATE trained with several seeds (``python benchmarks/seed_spread.py
--systems deflate --keep-val DIR``): each val question's answer and its keep score at the keep
weight val chose. For each seed it reports
  * how flat the val F1 curve is around the chosen threshold (F1 at t, t +- 0.05, t +- 0.1);
  * per rule, the threshold it picks on all of val, and its *held-out* F1: the rule picks on one half
    of the val products and is scored on the other (both ways, 5 seeded splits), so a rule that
    fits noise in the curve pays for it.
Rules: ``argmax`` (today's: the best val F1 over the scores' percentiles and 0.5, ties to 0.5),
``plateau`` (the median threshold among those within 0.5 F1 of the best), ``smoothed`` (the argmax
of the F1 curve averaged over 5 neighbouring grid points). Never reads test predictions.

    python benchmarks/threshold_rules.py DIR [--processed data/processed] [--generator models/generator]
        [--out benchmarks/results/threshold_rules.json]
"""
import argparse
import json
import random
import statistics
from pathlib import Path

import numpy as np

from deflate.answering.engine import keep
from deflate.data.records import load_split
from deflate.evaluation.metrics import evaluate, gold_from_records
from deflate.infra.files import read_json, read_jsonl, write_json

PLATEAU = 0.5  # F1 points below the best that still count as the plateau
WINDOW = 5     # grid points averaged by the smoothed rule


def f1s(rows, gold, texts, sep, ids, grid, metric):
    """Val F1 (``metric``: ave | ap) of the products ``ids`` at every threshold of ``grid``."""
    cands = [(r["id"], c["attribute"], c["value"], c["score"]) for r in rows if r["id"] in ids for c in r["candidates"]]
    g = {k: v for k, v in gold.items() if k[0] in ids}
    out = []
    for t in grid:
        pred = {(i, a): [x for x in v.split(sep) if x] for i, a, v, s in cands if keep(v, s, t)}
        out.append(evaluate(g, pred, texts)[metric]["f1"])
    return np.array(out)


def choose(curve: np.ndarray, grid: list[float], rule: str) -> float:
    if rule == "argmax":
        best = curve.max()
        return min((t for t, f in zip(grid, curve) if f == best), key=lambda t: abs(t - 0.5))
    if rule == "plateau":
        near = [t for t, f in zip(grid, curve) if f >= curve.max() - PLATEAU]
        return near[len(near) // 2]
    if rule == "smoothed":
        sm = np.convolve(np.pad(curve, WINDOW // 2, mode="edge"), np.ones(WINDOW) / WINDOW, mode="valid")
        return grid[int(np.argmax(sm))]
    raise ValueError(rule)


def at(curve: np.ndarray, grid: list[float], t: float) -> float:
    return float(curve[int(np.argmin([abs(g - t) for g in grid]))])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir", type=Path)
    ap.add_argument("--processed", type=Path, default=Path("data/processed"))
    ap.add_argument("--generator", type=Path, default=Path("models/generator"))
    ap.add_argument("--metric", default="ave", choices=["ave", "ap"], help="what the threshold maximises (eval.threshold_metric)")
    ap.add_argument("--splits", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/threshold_rules.json"))
    a = ap.parse_args()
    sep = read_json(a.generator / "deflate.json")["value_sep"]
    gold, texts = gold_from_records(load_split(a.processed, "val").records)
    rules = ("argmax", "plateau", "smoothed")
    result = {"metric_chosen_on": a.metric, "plateau_f1_points": PLATEAU, "window": WINDOW, "seeds": {}}
    for f in sorted(a.dir.glob("deflate-*-val.jsonl")):
        seed = f.name.split("-")[1]
        rows = read_jsonl(f)
        ids = sorted(r["id"] for r in rows)
        scores = [c["score"] for r in rows for c in r["candidates"] if c["score"] is not None]
        grid = sorted(set(np.round(np.quantile(scores, np.linspace(0, 1, 101)), 4).tolist()) | {0.5})
        full = {m: f1s(rows, gold, texts, sep, set(ids), grid, m) for m in ("ave", "ap")}
        seed_out = {"pipeline": read_json(a.dir / f"deflate-{seed}-metrics.json"), "rules": {}}
        t0 = choose(full[a.metric], grid, "argmax")
        seed_out["flatness"] = {f"{d:+.2f}": {m: at(full[m], grid, t0 + d) for m in ("ave", "ap")}
                                for d in (-0.1, -0.05, 0.0, 0.05, 0.1)}
        held = {r: {"ave": [], "ap": []} for r in rules}
        for k in range(a.splits):
            order = ids[:]
            random.Random(k).shuffle(order)
            halves = (set(order[: len(order) // 2]), set(order[len(order) // 2:]))
            for pick, score in (halves, halves[::-1]):
                cp = f1s(rows, gold, texts, sep, pick, grid, a.metric)
                cs = {m: f1s(rows, gold, texts, sep, score, grid, m) for m in ("ave", "ap")}
                for r in rules:
                    t = choose(cp, grid, r)
                    for m in ("ave", "ap"):
                        held[r][m].append(at(cs[m], grid, t))
        for r in rules:
            t = choose(full[a.metric], grid, r)
            seed_out["rules"][r] = {"threshold": t, "val_ave_f1": at(full["ave"], grid, t),
                                    "val_ap_f1": at(full["ap"], grid, t),
                                    **{f"heldout_{m}_f1": round(statistics.mean(held[r][m]), 2) for m in ("ave", "ap")}}
        result["seeds"][seed] = seed_out
        print(json.dumps({"seed": seed, **seed_out}), flush=True)
    result["summary"] = {r: {k: {"mean": round(statistics.mean(v), 2), "sd": round(statistics.stdev(v), 2) if len(v) > 1 else 0.0}
                             for k in ("threshold", "heldout_ave_f1", "heldout_ap_f1")
                             for v in [[s["rules"][r][k] for s in result["seeds"].values()]]}
                         for r in rules}
    write_json(a.out, result, indent=1)
    print(json.dumps(result["summary"], indent=1))


if __name__ == "__main__":
    main()
