"""A learned keep decision for DEFLATE's answers (WDC-PAVE val only; #31 item 2)

Every generator change since 2026-12-05 (token shapes, the offer layout with 4 encoder layers,
`text.split_punctuation`) gave d− more right values and DEFLATE almost none: DEFLATE says what its
keep rule keeps, and the keep score P_gen^w * D^(1-w) keeps 204 wrong values and 56 answers for
absent attributes on val while it drops right ones. Under the authors' rule a kept answer pays when
it is right and costs when it is not (a dropped wrong value turns VW into VN, which leaves recall's
denominator as it was), so the keep decision is a classification: keep when P(right) is high enough.
The keep score is one hand-made feature of that; this probe asks whether the engine's own outputs
and where the answer stands in its offer say more.

The answers are the committed engine's (greedy in the whole-word span trie, re-ranked among 3 span
beams by the keep score at the fold's chosen weight, as the pipeline does). Each answered question
gets these features, all from the one engine and the offer (no tagger, lexical or dictionary model):
log D of its claim; the generator's mean token log-prob (P_gen); whether re-ranking kept the greedy
answer; P_gen's margin over the best other candidate and the number of candidates; the
relative offset of the value's first occurrence in the offer, whether it is in the title and how
often it occurs; its length in words and characters and its share of digits; whether another
question of the same offer gives the same value. The arm `+ attribute` adds one indicator per
attribute (a per-attribute calibration, shrunk by the same L2 penalty).

Since the decision landed (`eval.keep_decision: learned`) the features are the engine's own,
`deflate.answering.keep_model.features` (the same numbers as the probe's first version; "greedy kept"
is named "first candidate" there). A logistic regression (L2, C 1.0, features standardised) predicts "the answer is one of the gold
spellings" over every answered question; the keep threshold on its probability is chosen by the
authors' F1 on the fitting half. Out of fold: fit on one half of val's offers, score the other,
both ways; over the parity halves (as every probe since 2026-12-06) and over 5 seeded random
halvings, which lower the noise of one split. The committed keep rule gets the same protocol, with
(w, threshold) chosen by the pipeline's own `eval.threshold_metric` and, as a control of the
criterion alone, by the authors' F1. AP F1: the presence threshold is chosen on val as the pipeline
chooses it, given the arm's in-sample kept values.

Rule, fixed before the first run (2026-12-07 01:50 UTC, docs/wdc_pave.md "A learned keep
decision"): a learned keep decision becomes an engine option (its weights and threshold carried in
the bundle's decisions) only if, on the committed bundle, its authors' F1 beats the committed keep
rule's by at least 1.0 out of fold on **both** the parity halves and the mean of the 5 random
halvings, its in-sample val F1 reaches **62.12** (61.12 + 1.0), and its val AP F1 stays at or
above d−'s 86.63. Never reads eval_visible.

    python benchmarks/wdc_keep_model.py [--pipeline pipelines/wdc_pave] [--bundle DIR] [--out F]
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from deflate.infra import kernels

sys.path.insert(0, str(Path(__file__).parent))
from wdc_val_probe import folds, offers, open_val, parser  # noqa: E402

HALVINGS = 5


def main():
    args = parser(__doc__, "benchmarks/results/wdc_keep_model.json").parse_args()
    val = open_val(args)
    p, engine, data, processed = val.params, val.engine, val.data, val.processed

    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from deflate.answering import keep_model
    from deflate.answering.engine import Answers, keep_scores
    from deflate.model.tokenizer import answered
    from deflate.data.splits import load_schema, right_answers
    from deflate.evaluation import wdc_pave_rule
    from deflate.evaluation.metrics import evaluate as compute_metrics
    from deflate.evaluation.metrics import gold_from_records
    from deflate.model.questions import all_questions
    from deflate.reports.wdc_table import val_columns
    from deflate.stages.evaluate import best_keep_rule, best_presence_threshold, select, withheld_pairs

    schema = load_schema(processed)
    cats, metric, weights = schema["category_attributes"], p["eval"]["threshold_metric"], p["eval"]["keep_weights"]
    records, questions = data.records, all_questions(data.records, schema)
    t0 = time.perf_counter()
    base = engine.answer(records, questions, engine.batcher(None, None), "val", gen_logprobs=True)
    seconds = round(time.perf_counter() - t0, 1)
    at_w = {w: base.at_weight(w) for w in weights}
    attrs = sorted({q.attribute for q in questions})
    n_rows = len(records)

    def features(ans: Answers) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per question: the engine's keep-model features with one indicator per attribute after them,
        whether it is answered, whether the answer is right."""
        onehot = np.asarray([[float(q.attribute == a_) for a_ in attrs] for q in ans.questions])
        has = np.asarray([answered(v) for v in ans.values])
        right = np.asarray([answered(v) and v in right_answers(records[q.row], q.attribute, engine.sep)
                            for q, v in zip(ans.questions, ans.values)])
        return np.hstack([keep_model.features(ans, records), onehot]), has, right

    feats = {w: features(at_w[w]) for w in weights}
    x_width = feats[weights[0]][0].shape[1]
    qrow = np.asarray([q.row for q in questions])

    def sub(ans: Answers, rows: np.ndarray, scores: np.ndarray) -> tuple[Answers, list, np.ndarray]:
        """The answers of the offers ``rows`` (renumbered) and their scores."""
        a, recs, ks = offers(ans, records, rows)
        return a, recs, scores[ks]

    def authors(a: Answers, recs: list, s: np.ndarray, t: float) -> float:
        return float(wdc_pave_rule.summary(wdc_pave_rule.count(recs, select(a, recs, t, engine.sep, s), cats), 0)["f1"])

    def best_t(a: Answers, recs: list, s: np.ndarray, crit: str) -> float:
        """The threshold on ``s`` with the best F1 on ``recs``: the authors' rule, or the pipeline's metric."""
        grid = sorted(set(np.round(np.quantile(s, np.linspace(0, 1, 101)), 4).tolist()))
        if crit == "authors":
            return max(grid, key=lambda t: (authors(a, recs, s, t), -t))
        gold, texts = gold_from_records(recs)
        return max(grid, key=lambda t: (compute_metrics(gold, select(a, recs, t, engine.sep, s), texts)[crit]["f1"], -t))

    def committed(fit_rows: np.ndarray, crit: str) -> tuple[float, float]:
        """(w, t) of the committed keep rule chosen on ``fit_rows``: by the pipeline's metric or the authors' F1."""
        best = []
        for w in weights:
            a, recs, s = sub(at_w[w], fit_rows, keep_scores(at_w[w].probs, at_w[w].gen_logprobs, w))
            if crit == "authors":
                t = best_t(a, recs, s, crit)
                f = authors(a, recs, s, t)
            else:
                _, t, by = best_keep_rule(a, recs, engine.sep, metric, [w])
                f = by[str(w)]
            best.append((f, -w, w, t))
        _, _, w, t = max(best)
        return w, t

    def learned(fit_rows: np.ndarray, w: float, cols: list[int], crit: str):
        """The keep model on features ``cols``, fitted on ``fit_rows``'s answered questions (answers
        re-ranked at ``w``), and its threshold chosen there by ``crit``."""
        x, has, right = feats[w]
        m = np.isin(qrow, fit_rows) & has
        xs = x[:, cols]
        mu, sd = xs[m].mean(0), xs[m].std(0) + 1e-9
        lr = LogisticRegression(C=1.0, max_iter=2000).fit((xs[m] - mu) / sd, right[m])
        s = np.where(has, lr.predict_proba((xs - mu) / sd)[:, 1], 0.0)
        a, recs, ss = sub(at_w[w], fit_rows, s)
        return s, best_t(a, recs, ss, crit), lr.coef_[0]

    FEATURES = keep_model.FEATURES
    n_f = len(FEATURES)
    # arm: (criterion of the keep weight, the learned model's feature columns or None, criterion of the threshold)
    arms = {"committed": (metric, None, metric),
            "committed, threshold by authors' F1": ("authors", None, "authors"),
            "learned": ("authors", list(range(n_f)), "authors"),
            "learned + attribute": ("authors", list(range(x_width)), "authors"),
            "learned, weight and threshold by the pipeline's metric": (metric, list(range(n_f)), metric),
            "learned, without 'another question gives it'": ("authors", list(range(n_f - 1)), "authors"),
            "learned, without 'another question gives it', by the pipeline's metric": (metric, list(range(n_f - 1)),
                                                                                        metric)}

    def fitted(kind: str, fit_rows: np.ndarray):
        w_crit, cols, t_crit = arms[kind]
        w, t = committed(fit_rows, w_crit)
        s, coef = keep_scores(at_w[w].probs, at_w[w].gen_logprobs, w), None
        if cols is not None:
            s, t, coef = learned(fit_rows, w, cols, t_crit)
        return w, t, s, coef

    def score_arm(kind: str, fit_rows: np.ndarray, test_rows: np.ndarray) -> float:
        w, t, s, _ = fitted(kind, fit_rows)
        a, recs, ss = sub(at_w[w], test_rows, s)
        return authors(a, recs, ss, t)

    all_rows = np.arange(n_rows)
    parity, halvings = folds(n_rows, p["seed"], HALVINGS)
    res = {"split": "val", "questions": len(questions), "bundle": str(val.bundle), "features": list(FEATURES),
           "seconds_answering": seconds, "kernels": kernels.describe()["kernels"], "arms": {}}
    for kind in arms:
        def oof(halves):
            return float(np.mean([score_arm(kind, halves[1 - i], halves[i]) for i in (0, 1)]))
        w, t, s, coef = fitted(kind, all_rows)
        pred = select(at_w[w], records, t, engine.sep, s)
        withheld = withheld_pairs(at_w[w], records, pred, best_presence_threshold(at_w[w], records, pred))
        cols = val_columns(records, pred, withheld, cats, gold_from_records(records))
        counts = wdc_pave_rule.summary(wdc_pave_rule.count(records, pred, cats), 0)
        res["arms"][kind] = {
            "weight": w, "threshold": round(float(t), 4), "val_f1": round(authors(at_w[w], records, s, t), 2),
            "precision": round(float(counts["p"]), 2), "recall": round(float(counts["r"]), 2),
            "counts": counts["counts"],
            "val_ap_f1": cols["val_ap_f1"],
            "out_of_fold_parity": round(oof(parity), 2),
            "out_of_fold_halvings": round(float(np.mean([oof(h) for h in halvings])), 2),
            **({"coef_standardised": dict(zip(FEATURES, np.round(coef[:n_f], 3).tolist()))} if coef is not None else {})}
        print(kind, json.dumps(res["arms"][kind]), flush=True)
    c = res["arms"]["committed"]
    for kind in list(arms)[1:]:
        a = res["arms"][kind]
        a["passes_rule"] = bool(a["out_of_fold_parity"] - c["out_of_fold_parity"] >= 1.0
                                and a["out_of_fold_halvings"] - c["out_of_fold_halvings"] >= 1.0
                                and a["val_f1"] >= 62.12 and a["val_ap_f1"] >= 86.63)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
