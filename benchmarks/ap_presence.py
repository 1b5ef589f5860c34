"""Why DEFLATE's keep rule costs attribute prediction (AP), and what a separate presence decision
would give: validation only (issue #31 item 2).

DEFLATE reports an attribute as present only when it keeps a value, and the keep threshold is chosen
for value F1. A claim with the right attribute and a doubtful value is then dropped twice: as a value
(right) and as a presence (wrong, when the product has the attribute). This script answers val
with a trained bundle (every question, with the claims' D and the generator's log-prob) and counts:

* what the keep rule drops, by whether the product has the attribute and the value is right;
* AP F1 under presence rules: the bundle's keep rule (today); the generator's answer alone (not
  ``None``: d-'s rule, DEFLATE's generator being d-'s on WDC-PAVE); the answer and ``D >= t``; the
  answer and ``keep score >= t``. A threshold is chosen on one half of val's products and scored on
  the other (both ways, summed), so the figure is not chosen on the products it scores.

    python benchmarks/ap_presence.py BUNDLE PROCESSED [TOKENS] [--out results.json]
"""
from __future__ import annotations

import argparse
import json
import zlib
from pathlib import Path

import numpy as np

from deflate.answering.engine import Deflate
from deflate.data.splits import load_data, load_schema, right_answers
from deflate.evaluation.metrics import counts, gold_from_records, prf
from deflate.model.questions import all_questions
from deflate.model.tokenizer import NONE_VALUE


def ap_counts(records, ans, present: np.ndarray, rows: set[int]) -> tuple[int, int, int]:
    """(true positives, predicted, gold) of AP over the products ``rows``, ``present`` per question."""
    recs = [records[i] for i in sorted(rows)]
    gold, texts = gold_from_records(recs)
    pred = {(records[q.row].id, q.attribute): [ans.values[k]] for k, q in enumerate(ans.questions)
            if present[k] and q.row in rows}
    return counts(gold, pred, texts)["ap"]


def two_fold(records, ans, answered: np.ndarray, score: np.ndarray) -> dict:
    """present = answered and score >= t, t chosen on one half of the products (AP F1), scored on
    the other; both ways, counts summed. Also the in-sample best on all of val."""
    halves = [{i for i in range(len(records)) if zlib.crc32(records[i].id.encode()) % 2 == h} for h in (0, 1)]
    grid = sorted(set(np.round(np.quantile(score[answered], np.linspace(0, 1, 101)), 4).tolist()) | {0.5})

    def best(rows):
        return max(grid, key=lambda t: (prf(*ap_counts(records, ans, answered & (score >= t), rows))["f1"], -t))

    total, chosen = np.zeros(3, dtype=np.int64), []
    for a, b in ((0, 1), (1, 0)):
        t = best(halves[a])
        chosen.append(t)
        total += ap_counts(records, ans, answered & (score >= t), halves[b])
    everything = set(range(len(records)))
    t_all = best(everything)
    return {"cross_half_f1": prf(*total), "thresholds": chosen,
            "in_sample": {"threshold": t_all, **prf(*ap_counts(records, ans, answered & (score >= t_all), everything))}}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("processed", type=Path)
    ap.add_argument("tokens", type=Path, nargs="?", default=Path("data/no_tokens"))
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    engine = Deflate.load(args.bundle)
    d = engine.decisions
    val = load_data(args.processed, args.tokens, "val")
    questions = all_questions(val.records, load_schema(args.processed))
    ans = engine.answer(val.records, questions, engine.batcher(val.image, val.has_image), "val", gen_logprobs=True)
    answered = np.array([bool(v) and v != NONE_VALUE for v in ans.values])
    kept = np.array(ans.kept)
    probs, keep_score = np.asarray(ans.probs, dtype=np.float64), np.asarray(ans.scores, dtype=np.float64)
    has = np.array([any(lab["attribute"] == q.attribute for lab in val.records[q.row].labels) for q in ans.questions])
    right = np.array([answered[k] and ans.values[k] in right_answers(val.records[q.row], q.attribute, engine.sep)
                      for k, q in enumerate(ans.questions)])
    everything = set(range(len(val.records)))
    table = {}
    for name, mask in (("has, right value", has & right), ("has, wrong value", has & answered & ~right),
                       ("has, None", has & ~answered), ("lacks, a value", ~has & answered), ("lacks, None", ~has & ~answered)):
        table[name] = {"questions": int(mask.sum()), "kept": int((mask & kept).sum()),
                       "median_D": round(float(np.median(probs[mask])), 4) if mask.any() else None}
    out = {"bundle": str(args.bundle), "val_products": len(val.records), "questions": len(questions),
           "decisions": {"threshold": d.threshold, "keep_weight": d.keep_weight},
           "what_the_keep_rule_drops": table,
           "ap_f1": {"keep rule (today)": prf(*ap_counts(val.records, ans, kept, everything)),
                     "generator answers (d-'s rule)": prf(*ap_counts(val.records, ans, answered, everything)),
                     "answer and D >= t": two_fold(val.records, ans, answered, probs),
                     "answer and keep score >= t": two_fold(val.records, ans, answered, keep_score)}}
    print(json.dumps(out, indent=1))
    if args.out:
        args.out.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
