"""Re-rank the generator's span beams by the keep score (WDC-PAVE val only; #31 items 1 and 2)

`benchmarks/wdc_span_collisions.py` found a right answer among the generator's 3 whole-word span
beams for 794 of val's 1,192 present attributes, against 617 for the best beam alone: the ranking,
not the reach, loses most right answers. DEFLATE already has a judge of (attribute, value) claims
trained on the generator's own wrong answers: the discriminator. This probe lets it choose among the
beams, with the committed DEFLATE bundle of the pipeline:
- **greedy:** the pipeline's answer (greedy in the span trie) and its keep rule: what the table has;
- **rerank:** per question, the candidates are the greedy answer and the k beams that are not
  "None"; each candidate's claim gets D and the generator's mean token log-prob, and the candidate
  with the highest keep score P_gen^w * D^(1-w) is the answer (none when every beam is "None").
Both arms choose the weight w and the threshold on val with the pipeline's own rule
(`evaluate.best_keep_rule`, `eval.threshold_metric`, `eval.keep_weights`), so the in-sample figures
are comparable; out of fold, each half of val's offers (by row parity) is scored under the choice
made on the other half.

An earlier probe (docs/wdc_pave.md, "Can the discriminator choose the value?", 2026-11-27; its
results are `benchmarks/results/wdc_beam_rerank.json`) re-ranked beams by log D + a * the generator's
score and lost to greedy: that discriminator did not read the value. Since then it marks the claimed
value and learns from the generator's wrong values (`discriminator.mark_value`,
`negatives.wrong_values`), the keep score weighs the generator (`eval.keep_weights`), and answers are
whole-word spans (`decode.span_words`).

The AP F1 of each arm's in-sample choice is reported beside it (presence threshold chosen on val
as the pipeline does). `--none-stays` re-ranks only where the greedy answer names a value.

`--rank-discriminator DIR` (2026-12-06): a second discriminator, trained on the same generator,
chooses among the candidates (P_gen^w * D_rank^(1-w)); the bundle's discriminator still gives the
chosen answer's keep score and presence. It tests a ranking judge apart from the keeping one: e.g.
the one trained with every beam's wrong value as a negative (`pending/wrong_beams.diff`, first arm),
which lost AP as the keeping judge.

Rule, fixed before the first run (2026-12-06 09:05 UTC): re-ranking becomes a decode option of the
one engine only if its authors' F1 on val beats the greedy arm's by at least 1.0 both in sample and
out of fold (the mean of the two halves). Never reads eval_visible.

`--listwise` (2026-12-06): a third arm, a listwise choice. Each candidate gets a score θ·x over a few
features of the one engine's own outputs and of the offer: the bundle's log D, the generator's mean
token log-prob, whether it is the greedy answer, its place in the candidate list, where it first stands
in the offer (relative offset, whether in the title), its length in words, and whether it is another
question's greedy answer for the same offer. θ maximises the softmax likelihood of the right
candidate among a question's candidates (a conditional logit, L2 0.1) over val questions that have a
right candidate. Out of fold, θ is fitted on one half of val's offers and w and the threshold are
chosen on that same half; the other half is scored. In sample, everything is fitted on all of val.
The bundle's D and P_gen still give the chosen answer's keep score.

`--choose-by-generator` (2026-12-06): the re-ranking arm chooses each question's candidate by P_gen
alone; D enters only the chosen answer's keep score (what the listwise fit's weights point to).

    python benchmarks/wdc_rerank_keep_score.py [--pipeline pipelines/wdc_pave] [--k 3]
        [--rank-discriminator DIR] [--listwise] [--choose-by-generator] [--none-stays]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from deflate.infra import kernels

sys.path.insert(0, str(Path(__file__).parent))
from wdc_val_probe import offers, open_val, parser  # noqa: E402


def arguments() -> argparse.Namespace:
    ap = parser(__doc__, "benchmarks/results/wdc_rerank_keep_score.json")
    ap.add_argument("--k", type=int, default=3, help="span beams per question")
    ap.add_argument("--rank-discriminator", type=Path, default=None,
                    help="a discriminator folder (same generator) that chooses among the candidates")
    ap.add_argument("--choose-by-generator", action="store_true",
                    help="the rerank arm chooses each question's candidate by P_gen alone (D only keeps)")
    ap.add_argument("--listwise", action="store_true", help="also the listwise choice arm (see above)")
    ap.add_argument("--none-stays", action="store_true",
                    help="re-rank only where the greedy answer names a value (a greedy None stays None)")
    return ap.parse_args()


def main():
    args = arguments()
    val = open_val(args)
    p, bundle, engine, data, processed = val.params, val.bundle, val.engine, val.data, val.processed

    import numpy as np

    from deflate.answering.decoding import span_beams
    from deflate.answering.engine import Answers, keep_scores
    from deflate.model.tokenizer import answered
    from deflate.data.splits import load_schema
    from deflate.evaluation import wdc_pave_rule
    from deflate.model.questions import Question, all_questions
    from deflate.model.tokenizer import NONE_VALUE
    from deflate.evaluation.metrics import gold_from_records
    from deflate.reports.wdc_table import val_columns
    from deflate.stages.evaluate import best_keep_rule, best_presence_threshold, select, withheld_pairs

    engine.decode["rerank_beams"] = 0  # the greedy arm is greedy, whatever the bundle re-ranks
    schema = load_schema(processed)
    cats, metric, weights = schema["category_attributes"], p["eval"]["threshold_metric"], p["eval"]["keep_weights"]
    records, questions = data.records, all_questions(data.records, schema)
    batcher = engine.batcher(None, None)
    t0 = time.perf_counter()
    greedy = engine.answer(records, questions, batcher, "val", gen_logprobs=True)
    beams = span_beams(engine.gen, engine.qb, batcher, engine.questions(records, questions), args.k,
                       engine.decode, engine.device, desc=f"span beams (k={args.k})")
    # every question's candidates: its greedy answer first, then its beams that name a value
    cands = [list(dict.fromkeys([v for v in [g] + [b for b, _ in bs] if answered(v)]))
             if answered(g) or not args.none_stays else [] for g, bs in zip(greedy.values, beams)]
    flat_q = [q for q, cs in zip(questions, cands) for _ in cs]
    flat_v = [v for cs in cands for v in cs]
    probs = engine.claim_probs(batcher, engine.claims(records, flat_q, flat_v), "discriminate beams")
    glp = engine.answer_logprobs(batcher, records, flat_q, flat_v, "score beams")
    rank_probs = probs
    if args.rank_discriminator:  # the same claims, scored by the ranking judge
        from deflate.answering.scores import claim_probs
        from deflate.model.mul_t5 import load_discriminator

        ranker, _ = load_discriminator(args.rank_discriminator, engine.gen)
        rank_probs = claim_probs(ranker, batcher, engine.claims(records, flat_q, flat_v), engine.claim_batch_size,
                                 engine.device, "rank beams")
    seconds = round(time.perf_counter() - t0, 1)
    starts = np.cumsum([0] + [len(cs) for cs in cands])

    def chosen(s: np.ndarray) -> Answers:
        """Each question's candidate with the highest ``s``, with its D and P_gen (None: no candidate)."""
        pick = [int(a + np.argmax(s[a:b])) if b > a else -1 for a, b in zip(starts[:-1], starts[1:])]
        take = lambda arr, none: np.asarray([arr[i] if i >= 0 else none for i in pick], dtype=np.float32)
        return Answers(questions, [flat_v[i] if i >= 0 else NONE_VALUE for i in pick], take(probs, 0.0),
                       gen_logprobs=take(glp, -99.0))

    def reranked(w: float) -> Answers:
        return chosen(keep_scores(rank_probs, glp, 1.0 if args.choose_by_generator else w))

    def half(ans: Answers, parity: int) -> tuple[Answers, list]:
        return offers(ans, records, [i for i in range(len(records)) if i % 2 == parity])[:2]

    def authors_f1(ans: Answers, recs: list, w: float, t: float) -> float:
        pred = select(ans, recs, t, engine.sep, keep_scores(ans.probs, ans.gen_logprobs, w))
        return float(wdc_pave_rule.score(recs, pred, cats, 0)["f1"])

    def arm(per_weight: dict[float, Answers], fold_answers=None) -> dict:
        """Choose (w, t) on val as the pipeline does; in sample and out of fold. ``fold_answers(parity)``:
        the answers scored on half ``parity`` when they depend on the other half (default ``per_weight``)."""
        def choose(pw: dict[float, Answers], recs_of) -> tuple[float, float, float]:
            best = []
            for w, ans in pw.items():
                a, recs = recs_of(ans)
                _, t, by = best_keep_rule(a, recs, engine.sep, metric, [w])
                best.append((by[str(w)], -w, w, t))
            _, _, w, t = max(best)
            return w, t

        w, t = choose(per_weight, lambda a: (a, records))
        folds = []
        for parity in (0, 1):
            pw = fold_answers(parity) if fold_answers else per_weight
            wf, tf = choose(pw, lambda a: half(a, 1 - parity))
            a, recs = half(pw[wf], parity)
            folds.append(authors_f1(a, recs, wf, tf))
        a = per_weight[w]
        pred = select(a, records, t, engine.sep, keep_scores(a.probs, a.gen_logprobs, w))
        withheld = withheld_pairs(a, records, pred, best_presence_threshold(a, records, pred))
        ap_f1 = val_columns(records, pred, withheld, cats, gold_from_records(records))["val_ap_f1"]
        return {"weight": w, "threshold": round(t, 4), "val_f1": authors_f1(per_weight[w], records, w, t),
                "val_ap_f1": ap_f1,
                "out_of_fold_f1": [round(f, 2) for f in folds], "out_of_fold_mean": round(float(np.mean(folds)), 2)}

    def listwise_arm() -> dict:
        """The listwise choice (see the module doc), out of fold and in sample."""
        from collections import Counter

        from scipy.optimize import minimize

        from deflate.data.splits import right_answers

        qrow = np.asarray([q.row for q in flat_q])
        # (offer row, value) -> how many questions of the offer answer it greedily
        greedy_of = Counter((q.row, g) for q, g in zip(questions, greedy.values) if answered(g))
        feats, right = [], []
        for i, (q, v) in enumerate(zip(flat_q, flat_v)):
            r = records[q.row]
            title, text = r.name, f"{r.name} {r.description}"
            at = text.find(v)
            k = i - starts[flat_owner[i]]  # the candidate's place in its question's list
            g = greedy.values[flat_owner[i]]
            feats.append([np.log(max(probs[i], 1e-7)), glp[i], float(v == g), float(k),
                          at / max(len(text), 1) if at >= 0 else 1.0, float(v in title), len(v.split()),
                          float(greedy_of.get((q.row, v), 0) - (v == g) > 0)])
            right.append(v in right_answers(r, q.attribute, engine.sep))
        x, y = np.asarray(feats, dtype=np.float64), np.asarray(right, dtype=bool)
        mu, sd = x.mean(0), x.std(0) + 1e-9
        x = (x - mu) / sd
        groups = [(a, b) for a, b in zip(starts[:-1], starts[1:]) if b > a]

        def fit(rows: set[int]) -> np.ndarray:
            use = [(a, b) for a, b in groups if qrow[a] in rows and y[a:b].any()]

            def loss(theta):
                val, grad = 0.1 * theta @ theta, 0.2 * theta
                for a, b in use:
                    z = x[a:b] @ theta
                    pz = np.exp(z - z.max())
                    pz /= pz.sum()
                    tgt = y[a:b] / y[a:b].sum()
                    val -= float(tgt @ np.log(pz + 1e-12))
                    grad -= x[a:b].T @ (tgt - pz)
                return val, grad
            return minimize(loss, np.zeros(x.shape[1]), jac=True, method="L-BFGS-B").x

        thetas = {parity: fit({r for r in range(len(records)) if r % 2 == 1 - parity}) for parity in (0, 1)}
        theta = fit(set(range(len(records))))
        return {**arm({w: chosen(x @ theta) for w in weights},
                      lambda parity: {w: chosen(x @ thetas[parity]) for w in weights}),
                "theta_all_val": theta.round(3).tolist(),
                "theta_folds": {parity: t.round(3).tolist() for parity, t in thetas.items()},
                "features": ["log D", "P_gen mean log-prob", "is greedy", "place in list", "offset in offer",
                             "in title", "words", "another question's greedy answer"],
                "right_candidate_reachable": int(sum(y[a:b].any() for a, b in groups))}

    flat_owner = [k for k, cs in enumerate(cands) for _ in cs]
    res = {"split": "val", "questions": len(questions), "k": args.k, "none_stays": args.none_stays,
           "rank_discriminator": str(args.rank_discriminator) if args.rank_discriminator else None,
           "choose_by_generator": args.choose_by_generator,
           "bundle": str(bundle),
           "candidates_per_question": round(len(flat_v) / len(questions), 3),
           "greedy": arm({w: greedy for w in weights}),
           "rerank": arm({w: reranked(w) for w in weights}),
           **({"listwise": listwise_arm()} if args.listwise else {}),
           "seconds_answering": seconds, "kernels": kernels.describe()["kernels"]}
    res["gain_in_sample"] = round(res["rerank"]["val_f1"] - res["greedy"]["val_f1"], 2)
    res["gain_out_of_fold"] = round(res["rerank"]["out_of_fold_mean"] - res["greedy"]["out_of_fold_mean"], 2)
    res["adopted"] = res["gain_in_sample"] >= 1.0 and res["gain_out_of_fold"] >= 1.0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
