"""Why DEFLATE's AP F1 swings with its keep threshold, and which rule picks the threshold more
steadily (issue #35 item 3), on val only.

For each trained DEFLATE (a folder holding ``generator/`` and ``discriminator/``: ``models`` of the
default pipeline, or the runs ``benchmarks/seed_spread.py --keep-models DIR`` keeps), it answers
every val question once (as the evaluate stage does) and reports
  * how flat the val F1 curve is around the chosen keep rule (F1 at t, t +- 0.05, t +- 0.1);
  * per rule, the threshold it picks on all of val, and its *held-out* F1: the rule picks (weight
    and threshold) on one half of the val products and is scored on the other, both ways, over 5
    seeded splits, so a rule that fits noise in the curve pays for it.
Rules: ``argmax`` (the evaluate stage's: the best val F1 over the keep scores' percentiles and 0.5,
ties to the smaller weight, then to 0.5); ``plateau`` (argmax's weight; the median threshold among
those within 0.5 F1 of that weight's best); ``smoothed`` (argmax's weight; the argmax of the F1 curve
averaged over 5 neighbouring grid points). Never reads test.

    python benchmarks/threshold_rules.py RUN [RUN ...] [--out benchmarks/results/threshold_rules.json]
"""
import argparse
import json
import random
import statistics
from pathlib import Path

import numpy as np

from deflate.answering.engine import Deflate, keep_scores
from deflate.data.splits import load_data, load_schema
from deflate.evaluation.metrics import evaluate, gold_from_records
from deflate.infra.config import stage_params
from deflate.infra.files import write_json
from deflate.stages.evaluate import FREE, answer_split, select

PLATEAU = 0.5  # F1 points below the best that still count as the plateau
WINDOW = 5     # grid points averaged by the smoothed rule
RULES = ("argmax", "plateau", "smoothed")


class Curves:
    """Val F1 of every (keep weight, threshold) on any subset of the val products."""

    def __init__(self, ans, records, sep, weights):
        self.ans, self.records, self.sep = ans, records, sep
        self.scores = {w: keep_scores(ans.probs, ans.gen_logprobs, w) for w in weights}
        self.grid = {w: sorted(set(np.round(np.quantile(s, np.linspace(0, 1, 101)), 4).tolist()) | {0.5})
                     for w, s in self.scores.items()}
        self.gold, self.texts = gold_from_records(records)

    def f1(self, w, ids, metric):
        gold = {k: v for k, v in self.gold.items() if k[0] in ids}
        out = []
        for t in self.grid[w]:
            pred = {k: v for k, v in select(self.ans, self.records, t, self.sep, self.scores[w]).items() if k[0] in ids}
            out.append(evaluate(gold, pred, self.texts)[metric]["f1"])
        return np.array(out)


def choose(cv: Curves, ids, metric: str, rule: str) -> tuple[float, float]:
    curves = {w: cv.f1(w, ids, metric) for w in cv.grid}
    best_f1 = max(c.max() for c in curves.values())
    w = min(w for w, c in curves.items() if c.max() == best_f1)  # ties: the smaller weight (the paper's rule first)
    c, g = curves[w], cv.grid[w]
    if rule == "argmax":
        return w, min((x for x, f in zip(g, c) if f == c.max()), key=lambda x: abs(x - 0.5))
    if rule == "plateau":
        near = [x for x, f in zip(g, c) if f >= c.max() - PLATEAU]
        return w, near[len(near) // 2]
    if rule == "smoothed":
        sm = np.convolve(np.pad(c, WINDOW // 2, mode="edge"), np.ones(WINDOW) / WINDOW, mode="valid")
        return w, g[int(np.argmax(sm))]
    raise ValueError(rule)


def at(cv: Curves, w: float, t: float, ids, metric: str) -> float:
    c = cv.f1(w, ids, metric)
    return float(c[int(np.argmin([abs(x - t) for x in cv.grid[w]]))])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=Path, nargs="+", help="folders with generator/ and discriminator/")
    ap.add_argument("--processed", type=Path, default=Path("data/processed"))
    ap.add_argument("--tokens", type=Path, default=Path("data/tokens"))
    ap.add_argument("--splits", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/threshold_rules.json"))
    a = ap.parse_args()
    p = stage_params()  # the pipeline's kernels and threads, so the val answers are the evaluate stage's
    metric, weights = p["eval"]["threshold_metric"], [float(w) for w in p["eval"]["keep_weights"]]
    val, schema = load_data(a.processed, a.tokens, "val"), load_schema(a.processed)
    ids = sorted({r.id for r in val.records})
    result = {"metric_chosen_on": metric, "keep_weights": weights, "plateau_f1_points": PLATEAU, "window": WINDOW,
              "splits": a.splits, "runs": {}}
    for run in a.runs:
        engine = Deflate(run / "generator", discriminator=run / "discriminator", lexical=None, decisions=FREE,
                         decode=p["decode"], claim_batch_size=p["discriminator"]["eval_batch_size"], device="cpu")
        ans = answer_split(engine, val, schema, "val", gen_logprobs=True)
        cv = Curves(ans, val.records, engine.sep, weights)
        every = set(ids)
        w0, t0 = choose(cv, every, metric, "argmax")
        out = {"flatness": {"weight": w0, "threshold": t0, **{
            f"{d:+.2f}": {m: at(cv, w0, t0 + d, every, m) for m in ("ave", "ap")} for d in (-0.1, -0.05, 0.0, 0.05, 0.1)}},
            "rules": {}}
        held = {r: {"ave": [], "ap": []} for r in RULES}
        for k in range(a.splits):
            order = ids[:]
            random.Random(k).shuffle(order)
            halves = (set(order[: len(order) // 2]), set(order[len(order) // 2:]))
            for pick, score in (halves, halves[::-1]):
                for r in RULES:
                    w, t = choose(cv, pick, metric, r)
                    for m in ("ave", "ap"):
                        held[r][m].append(at(cv, w, t, score, m))
        for r in RULES:
            w, t = choose(cv, every, metric, r)
            out["rules"][r] = {"weight": w, "threshold": t, "val_ave_f1": at(cv, w, t, every, "ave"),
                               "val_ap_f1": at(cv, w, t, every, "ap"),
                               **{f"heldout_{m}_f1": round(statistics.mean(held[r][m]), 2) for m in ("ave", "ap")},
                               **{f"heldout_{m}_f1_sd": round(statistics.stdev(held[r][m]), 2) for m in ("ave", "ap")}}
        result["runs"][str(run)] = out
        print(json.dumps({"run": str(run), **out}), flush=True)
    write_json(a.out, result, indent=1)


if __name__ == "__main__":
    main()
