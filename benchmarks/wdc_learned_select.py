"""A learned choice among the span beams (WDC-PAVE val only; #31)

The committed engine answers each question with one of up to 4 candidates (the greedy answer in the
whole-word span trie and 3 span beams), picked by the keep score P_gen^w * D^(1-w), and then keeps
it when the learned keep model (`eval.keep_decision: learned`) finds it likely right. The candidates
hold a right value for about two thirds of val's present attributes, the picks for fewer
(docs/wdc_pave.md, "One span per offer"). The keep model reads more than the keep score (where the
value stands in the offer, its shape, whether another question gives it), so this probe asks whether
the same model, fitted on every candidate rather than on the picked answers, also picks better.

Arms, each fitted on val offers and scored by the authors' F1:
- `pipeline`: what the evaluate stage does (`best_keep_rule` chooses w on the pipeline's
  `eval.threshold_metric`, answers are picked at w, `learned_keep_rule` fits the keep model and its
  threshold on them): the committed decision, re-fitted per fold.
- `select`: the keep model's logistic regression fitted on every candidate (target: it is a gold
  spelling), features computed per candidate by `keep_model.features` as if it were the answer
  ("first candidate": it is the greedy answer; "margin": its P_gen over its best rival; "another
  question gives it": another question of the offer has it among its candidates); each question
  answers its candidate of highest P(right) and keeps it when that passes a threshold chosen as
  `learned_keep_rule` chooses it (the pipeline's metric over the percentiles and 0.5).
- `select + keep model`: the same choice, then the pipeline's keep model fitted on the chosen
  answers (two stages, as the pipeline would chain them).

Out of fold: fit on one half of val's offers, score the other, both ways, over the parity halves and
5 seeded random halvings (as `wdc_keep_model.py`). Also per arm, in sample: counts, val AP F1 (the
presence threshold chosen as the pipeline chooses it) and how many picks are right before the
keep threshold.

Rule, fixed before the first run (docs/wdc_pave.md, "A learned choice among the beams"): the choice
becomes part of `eval.keep_decision: learned` only if the better selection arm (by the mean of its
two out-of-fold figures) beats `pipeline` by at least 1.0 out of fold on **both** the parity halves
and the mean of the random halvings, its in-sample val F1 beats `pipeline`'s by at least 1.0, and its
val AP F1 is at least d-'s (the committed metrics' val column). Never reads eval_visible.

    python benchmarks/wdc_learned_select.py [--pipeline pipelines/wdc_pave] [--bundle DIR] [--out F]
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
    args = parser(__doc__, "benchmarks/results/wdc_learned_select.json").parse_args()
    val = open_val(args)
    p, engine, data, processed = val.params, val.engine, val.data, val.processed

    import numpy as np

    from deflate.answering import keep_model
    from deflate.answering.engine import Answers, Beams
    from deflate.model.tokenizer import answered
    from deflate.data.splits import load_schema, right_answers
    from deflate.evaluation import wdc_pave_rule
    from deflate.evaluation.metrics import gold_from_records
    from deflate.model.questions import all_questions
    from deflate.reports.wdc_table import val_columns
    from deflate.stages.evaluate import (best_keep_rule, best_presence_threshold, best_threshold, learned_keep_rule,
                                         select, withheld_pairs)

    schema = load_schema(processed)
    cats, metric, seed, sep = schema["category_attributes"], p["eval"]["threshold_metric"], p["seed"], engine.sep
    weights = [float(w) for w in p["eval"]["keep_weights"]]
    records, questions = data.records, all_questions(data.records, schema)
    t0 = time.perf_counter()
    base = engine.answer(records, questions, engine.batcher(None, None), "val", gen_logprobs=True)
    seconds = round(time.perf_counter() - t0, 1)
    assert base.beams is not None, "the committed bundle re-ranks span beams (decode.rerank_beams)"

    def is_right(recs: list, q, v: str) -> bool:
        return answered(v) and v in right_answers(recs[q.row], q.attribute, sep)

    def authors(a: Answers, recs: list, s: np.ndarray, t: float) -> float:
        return float(wdc_pave_rule.score(recs, select(a, recs, t, sep, s), cats, 0)["f1"])

    def threshold(a: Answers, recs: list, s: np.ndarray) -> float:
        """As ``learned_keep_rule`` chooses it, over the answered questions' scores."""
        return best_threshold(a, recs, sep, metric, s, np.array([answered(v) for v in a.values]))[0]

    def candidates(a: Answers) -> Answers:
        """Every candidate of every question as an answer of its own, in the beams' order (its
        question's candidates as its beams, so that ``keep_model.features`` reads it as if re-ranking
        had picked it)."""
        b = a.beams
        sizes = np.diff(b.starts)
        owner = np.repeat(np.arange(len(a.questions)), sizes)
        at = np.asarray([i for k in owner.tolist() for i in range(int(b.starts[k]), int(b.starts[k + 1]))],
                        dtype=np.int64)
        return Answers([a.questions[k] for k in owner.tolist()], list(b.values), b.probs,
                        gen_logprobs=b.gen_logprobs,
                        beams=Beams(np.concatenate([[0], np.cumsum(sizes[owner])]), [b.values[i] for i in at],
                                    b.probs[at], b.gen_logprobs[at]))

    def pick(a: Answers, p_right: np.ndarray) -> tuple[Answers, np.ndarray]:
        """Each question's candidate (in ``a.beams``, the order of :func:`candidates`) of highest P(right),
        the first on ties, and its P(right); a question without candidates keeps its answer, which names
        no value (every answered greedy answer is a candidate), and 0."""
        b = a.beams
        values, probs, glp, s = list(a.values), a.probs.copy(), a.gen_logprobs.copy(), np.zeros(len(a.values))
        for k, (lo, hi) in enumerate(zip(b.starts[:-1].tolist(), b.starts[1:].tolist())):
            if hi > lo:
                j = lo + int(np.argmax(p_right[lo:hi]))
                values[k], probs[k], glp[k], s[k] = b.values[j], b.probs[j], b.gen_logprobs[j], p_right[j]
            assert hi > lo or not answered(values[k])
        return Answers(a.questions, values, probs, gen_logprobs=glp, beams=b), s

    def fit(kind: str, a: Answers, recs: list) -> dict:
        if kind == "pipeline":
            w, _, _ = best_keep_rule(a, recs, sep, metric, weights)
            fitted, why = learned_keep_rule(a.at_weight(w), recs, sep, metric, seed)
            assert fitted is not None, why
            return {"w": w, "model": fitted[0], "t": fitted[1]}
        ex = candidates(a)
        x = keep_model.features(ex, recs)
        right = np.array([is_right(recs, q, v) for q, v in zip(ex.questions, ex.values)])
        chooser = keep_model.fit(x, right, seed)
        chosen, s = pick(a, chooser.probability(x))
        out = {"chooser": chooser}
        if kind == "select":
            out["t"] = threshold(chosen, recs, s)
        else:
            fitted, why = learned_keep_rule(chosen, recs, sep, metric, seed)
            assert fitted is not None, why
            out["model"], out["t"] = fitted
        return out

    def apply(kind: str, f: dict, a: Answers, recs: list) -> tuple[Answers, np.ndarray]:
        """The fold's answers under the fitted decision and the scores its threshold applies to."""
        if kind == "pipeline":
            aw = a.at_weight(f["w"])
            return aw, keep_model.scores(f["model"], aw, recs)
        chosen, s = pick(a, f["chooser"].probability(keep_model.features(candidates(a), recs)))
        return chosen, (s if kind == "select" else keep_model.scores(f["model"], chosen, recs))

    def oof(kind: str, halves: list) -> float:
        got = []
        for i in (0, 1):
            fa, frecs, _ = offers(base, records, halves[1 - i], with_beams=True)
            ta, trecs, _ = offers(base, records, halves[i], with_beams=True)
            f = fit(kind, fa, frecs)
            chosen, s = apply(kind, f, ta, trecs)
            got.append(authors(chosen, trecs, s, f["t"]))
        return float(np.mean(got))

    n_rows = len(records)
    parity, halvings = folds(n_rows, seed, HALVINGS)
    b = base.beams
    reach = sum(any(is_right(records, q, b.values[i]) for i in range(int(b.starts[k]), int(b.starts[k + 1])))
                for k, q in enumerate(base.questions))
    # d-'s val column only (the file's other figures are eval_visible's and are not read)
    metrics = json.loads((args.pipeline / "metrics" / "wdc_pave.json").read_text(encoding="utf-8"))
    d_minus_ap = float(metrics["rows"]["d_minus"]["val_ap_f1"])
    res = {"split": "val", "questions": len(questions), "bundle": str(val.bundle), "seconds_answering": seconds,
           "kernels": kernels.describe()["kernels"], "candidates": len(b.values),
           "questions_with_a_right_candidate": int(reach), "d_minus_val_ap_f1": d_minus_ap, "arms": {}}
    for kind in ("pipeline", "select", "select + keep model"):
        t1 = time.perf_counter()
        f = fit(kind, base, records)
        chosen, s = apply(kind, f, base, records)
        pred = select(chosen, records, f["t"], sep, s)
        withheld = withheld_pairs(chosen, records, pred, best_presence_threshold(chosen, records, pred))
        cols = val_columns(records, pred, withheld, cats, gold_from_records(records))
        counts = wdc_pave_rule.summary(wdc_pave_rule.count(records, pred, cats), 0)
        res["arms"][kind] = {
            "threshold": round(f["t"], 4), **({"weight": f["w"]} if "w" in f else {}),
            "val_f1": round(authors(chosen, records, s, f["t"]), 2), "val_ap_f1": cols["val_ap_f1"],
            "precision": round(float(counts["p"]), 2), "recall": round(float(counts["r"]), 2),
            "counts": counts["counts"],
            "picks_right": int(sum(is_right(records, q, v) for q, v in zip(chosen.questions, chosen.values))),
            "out_of_fold_parity": round(oof(kind, parity), 2),
            "out_of_fold_halvings": round(float(np.mean([oof(kind, h) for h in halvings])), 2),
            **({"chooser_coef_standardised": dict(zip(keep_model.FEATURES, np.round(f["chooser"].coef, 3).tolist()))}
               if "chooser" in f else {}),
            "seconds": round(time.perf_counter() - t1, 1)}
        print(kind, json.dumps(res["arms"][kind]), flush=True)
    c = res["arms"]["pipeline"]
    best = max(("select", "select + keep model"), key=lambda k: res["arms"][k]["out_of_fold_parity"]
               + res["arms"][k]["out_of_fold_halvings"])
    a = res["arms"][best]
    res["better_selection_arm"] = best
    res["passes_rule"] = bool(a["out_of_fold_parity"] - c["out_of_fold_parity"] >= 1.0
                              and a["out_of_fold_halvings"] - c["out_of_fold_halvings"] >= 1.0
                              and a["val_f1"] - c["val_f1"] >= 1.0
                              and a["val_ap_f1"] >= d_minus_ap)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
