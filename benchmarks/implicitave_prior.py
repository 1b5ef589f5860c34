"""Does the generator's prior over an attribute's values cost it the ranking? (#31 item 3, val only.)

The generator ranks an attribute's closed option list by the mean token log-prob of each value,
log P(v | product, attribute). Trained on train's label distribution, part of that score is the
value's prior, not the product's evidence. Candidate scoring with the prior divided out,

    score(v) = log P(v | product, a) - lam * log prior(v | a),     lam in [0, 1]  (lam 1: PMI),

is a standard correction (Holtzman et al. 2021, domain-conditional PMI; Zhao et al. 2021,
contextual calibration). Three priors, each from the generator or train's labels only:
- ``content_free``: the generator's score of v for the question with an empty product text;
- ``marginal``: log of the mean over val questions of the attribute of exp(score), computed without
  labels on the other fold of val's products (so a question never contributes to its own prior);
- ``train_labels``: log of v's add-one frequency among train's labels of the attribute.

Each (prior, lam) is chosen on one half of val's products and scored on the other, both ways, so
every one of the 4,000 sampled val questions (the sample of ``implicitave_val_gap.py``) is scored
out of fold. Never reads eval_visible.

    python benchmarks/implicitave_prior.py [--pipeline pipelines/implicitave]
        [--out benchmarks/results/implicitave_prior.json] [--sample 4000]
"""
from __future__ import annotations

import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from deflate.data.records import Record
from deflate.data.splits import grouped_labels
from deflate.infra import kernels
from deflate.infra.files import write_json
from deflate.model.questions import Question

sys.path.insert(0, str(Path(__file__).parent))
from implicitave_val_gap import arguments, train_value_counts, val_sample  # noqa: E402  (the same val sample)

LAMS = [round(0.1 * i, 1) for i in range(11)]
PRIORS = ("content_free", "marginal", "train_labels")


def logmeanexp(x: np.ndarray, axis: int = 0) -> np.ndarray:
    m = x.max(axis=axis, keepdims=True)
    return (m + np.log(np.exp(x - m).mean(axis=axis, keepdims=True))).squeeze(axis)


def main():
    args = arguments(__doc__, "benchmarks/results/implicitave_prior.json")
    p, engine, data, questions = val_sample(args.pipeline, args.sample)  # the sample of implicitave_val_gap.py
    t0 = time.perf_counter()  # scoring only: loading the bundle and val is left out
    processed = args.pipeline / "data" / "processed"
    batcher = engine.batcher(data.image, data.has_image)
    gen = engine.candidate_scores(batcher, data.records, engine.questions(data.records, questions),
                                  ("generator",))["generator"]
    # content-free: one question per attribute about a product with no text (its domain kept)
    attrs = sorted({q.attribute for q in questions if engine.candidates.get(q.attribute)})
    domain = {a: Counter(data.records[q.row].category for q in questions if q.attribute == a).most_common(1)[0][0]
              for a in attrs}
    empty = [Record(id=f"content-free-{i}", name="", description="", category=domain[a]) for i, a in enumerate(attrs)]
    cf_scores = engine.candidate_scores(engine.batcher(None, None), empty,
                                        engine.questions(empty, [Question(i, a) for i, a in enumerate(attrs)]),
                                        ("generator",))["generator"]
    content_free = dict(zip(attrs, cf_scores))
    seconds = round(time.perf_counter() - t0, 1)

    train_counts = train_value_counts(processed, engine.sep)
    train_prior = {}
    for a in attrs:
        c = train_counts.get(a, Counter())
        train_prior[a] = np.log(np.array([c[v] + 1 for v in engine.candidates[a]], float)
                                / (sum(c.values()) + len(engine.candidates[a])))

    # two folds of val's products
    rows = sorted({q.row for q in questions})
    half = set(np.random.default_rng([p["seed"], 1]).permutation(rows)[: len(rows) // 2].tolist())
    fold = np.array([0 if q.row in half else 1 for q in questions])
    gold = np.array([engine.candidates.get(q.attribute, []).index(v) if v in engine.candidates.get(q.attribute, [])
                     else -1 for q in questions
                     for v in [engine.sep.join(grouped_labels(data.records[q.row])[q.attribute])]])
    usable = np.array([len(g) > 0 for g in gen])
    marginal = {}  # (fold whose questions use it, attribute) -> prior from the other fold, labels unread
    for f in (0, 1):
        for a in attrs:
            other = [gen[k] for k, q in enumerate(questions) if q.attribute == a and fold[k] != f]
            marginal[f, a] = logmeanexp(np.stack(other)) if other else np.zeros(len(engine.candidates[a]))

    # each question's prior under each kind (questions without candidates have none)
    priors = {kind: {k: by_kind(k, questions[k].attribute) for k in np.flatnonzero(usable)}
              for kind, by_kind in (("content_free", lambda k, a: content_free[a]),
                                    ("marginal", lambda k, a: marginal[fold[k], a]),
                                    ("train_labels", lambda k, a: train_prior[a]))}

    def right(kind: str, lam: float) -> np.ndarray:
        """Per question: the corrected score's best candidate is the gold (False without candidates)."""
        out = np.zeros(len(questions), bool)
        for k, pr in priors[kind].items():
            out[k] = int(np.argmax(gen[k] - lam * pr)) == gold[k]
        return out

    grid = {(kind, lam): right(kind, lam) for kind in PRIORS for lam in LAMS}
    base = grid["content_free", 0.0]
    n = len(questions)
    in_sample = {kind: {str(lam): round(100 * grid[kind, lam].mean(), 2) for lam in LAMS} for kind in PRIORS}
    chosen, oof = [], np.zeros(n, bool)
    for f in (0, 1):  # choose on fold f, score on the other
        fit = fold == f
        kind, lam = max(grid, key=lambda kl: (grid[kl][fit].mean(), -kl[1]))  # ties: the smaller correction
        chosen.append({"chosen_on_fold": f, "prior": kind, "lam": lam,
                       "fit_exact": round(100 * grid[kind, lam][fit].mean(), 2),
                       "scored_exact": round(100 * grid[kind, lam][~fit].mean(), 2),
                       "scored_baseline": round(100 * base[~fit].mean(), 2)})
        oof[~fit] = grid[kind, lam][~fit]
    per_attr = []
    best_kind, best_lam = max(grid, key=lambda kl: (grid[kl].mean(), -kl[1]))
    for a in attrs:
        m = np.array([q.attribute == a for q in questions])
        per_attr.append({"attribute": a, "n": int(m.sum()), "candidates": len(engine.candidates[a]),
                         "generator": round(100 * base[m].mean(), 1),
                         "out_of_fold": round(100 * oof[m].mean(), 1),
                         f"{best_kind}_{best_lam}_in_sample": round(100 * grid[best_kind, best_lam][m].mean(), 1)})
    per_attr.sort(key=lambda r: -r["n"])
    res = {"split": "val", "questions": n, "sample_seed": p["seed"], "seconds_scoring": seconds,
           "generator_exact": round(100 * base.mean(), 2), "out_of_fold_exact": round(100 * oof.mean(), 2),
           "folds": chosen, "in_sample_exact": in_sample, "by_attribute": per_attr,
           "bundle": str(args.pipeline / "models" / "deflate"), "kernels": kernels.describe()["kernels"]}
    write_json(args.out, res, indent=1)
    print(json.dumps({k: res[k] for k in ("generator_exact", "out_of_fold_exact", "folds")}, indent=1))
    print("| prior | " + " | ".join(f"lam {lam}" for lam in LAMS) + " |")
    for kind in PRIORS:
        print(f"| {kind} | " + " | ".join(f"{in_sample[kind][str(lam)]:.2f}" for lam in LAMS) + " |")


if __name__ == "__main__":
    main()
