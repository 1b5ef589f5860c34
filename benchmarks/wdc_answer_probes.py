"""Two cheap ways to keep fewer wrong values on WDC-PAVE, probed on **val only** with the
pipeline's trained DEFLATE generator (docs/wdc_pave.md, "Wrong-value negatives"):

* ``beams``: how often greedy decoding, and the best and any of ``k`` beams inside the span trie,
  give a right answer (any gold spelling) to the attributes val products have: the ceiling of
  re-ranking beam candidates;
* ``keep``: the generator's confidence in its own answer (mean / min token log-prob of the value)
  as the keep rule, alone, mixed with the discriminator's log-probability, or as a second
  threshold, each at its best val threshold, scored by the dataset authors' rule. It reads the
  val answers and discriminator scores of a ``benchmarks/wdc_disc_dev.py`` run (``--run``).

    python benchmarks/wdc_answer_probes.py [--k 8] [--run base] [--work /tmp/wdc_dev]

Writes benchmarks/results/wdc_answer_probes.json.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from wdc_dev import ROOT, authors_f1, dev_folder, kept_predictions, params_with
from wdc_disc_dev import GENERATOR

from deflate.batching import to_device
from deflate.dataset import load_data, right_answers
from deflate.decoding import span_constraint
from deflate.questions import Question, gold_questions, question_examples
from deflate.stages.harvest_negatives import generator_only
from deflate.text import NONE_VALUE


def beams(engine, val, k: int) -> dict:
    """Share of present attributes whose greedy answer, and whose best / any of ``k`` beams, is right."""
    qb, gen = engine.qb, engine.gen.eval()
    exs = engine.questions(val.records, gold_questions(val.records))
    b = engine.batcher(None, None)
    greedy = engine.generate(b, exs, progress=False)
    hits = np.zeros(k)
    for idx in b.batches(exs, 32, shuffle=False, bucket=True):
        batch = to_device(b.collate([exs[i] for i in idx]), "cpu")
        allowed, extra = span_constraint(qb, [exs[i] for i in idx])
        with torch.no_grad():
            seqs = gen.generate(batch, max_new_tokens=engine.decode["max_new_tokens"] + extra,
                                num_beams=k, num_return_sequences=k, do_sample=False, prefix_allowed_tokens_fn=allowed)
        for i, row in zip(idx, seqs.view(len(idx), k, -1).tolist()):
            right = right_answers(val.records[exs[i].key.row], exs[i].key.attribute, engine.sep)
            first = next((j for j, s in enumerate(row) if qb.answer(s[1:], exs[i].key.attribute) in right), None)
            if first is not None:
                hits[first:] += 1
    n = len(exs)
    right = [v in right_answers(val.records[e.key.row], e.key.attribute, engine.sep) for v, e in zip(greedy, exs)]
    return {"questions": n, "greedy": round(float(np.mean(right)), 4),
            "beam_best": round(hits[0] / n, 4), "any_of_k": {str(j + 1): round(hits[j] / n, 4) for j in range(k)}}


def keep(engine, val, run: Path) -> dict:
    """Best val F1 (authors' rule) of keep rules built from the generator's and the discriminator's scores."""
    idx = {r.id: i for i, r in enumerate(val.records)}
    qs, vals, probs = [], [], []
    for line in (run / "predictions" / "test.jsonl").read_text().splitlines():  # the dev run's test split is val
        row = json.loads(line)
        for c in row["candidates"]:
            qs.append(Question(idx[row["id"]], c["attribute"]))
            vals.append(c["value"])
            probs.append(c["score"])
    qb, gen = engine.qb, engine.gen.eval()
    exs = question_examples(val.records, qb, qs, [v or NONE_VALUE for v in vals])
    b = engine.batcher(None, None)
    lp_mean, lp_min = np.zeros(len(exs)), np.zeros(len(exs))
    for ix in b.batches(exs, 128, shuffle=False, bucket=True):
        batch = to_device(b.collate([exs[i] for i in ix]), "cpu")
        with torch.no_grad():
            logits = gen(batch).logits.float()
        labels = batch["labels"]
        mask = labels != -100
        for j, i in enumerate(ix):  # the forced prefix is not the answer
            mask[j, :len(qb.prefix(exs[i].key.attribute))] = False
        lp = torch.log_softmax(logits, -1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        lp_mean[ix] = ((lp * mask).sum(1) / mask.sum(1)).numpy()
        lp_min[ix] = torch.where(mask, lp, torch.zeros_like(lp)).min(1).values.numpy()
    categories = engine.meta["category_attributes"]

    def f1(kept) -> float:  # the authors' rule on the kept answers
        return round(authors_f1(val.records, kept_predictions(val.records, qs, vals, kept), categories), 2)

    def best(score) -> float:
        return max(f1(score >= t) for t in np.quantile(score, np.linspace(0, 1, 101)))
    ld = np.log(np.asarray(probs, dtype=float) + 1e-7)
    out = {"discriminator": best(ld), "generator_mean": best(lp_mean), "generator_min": best(lp_min)}
    out.update({f"mix_mean_{a}": best(a * lp_mean + (1 - a) * ld) for a in (0.2, 0.4, 0.6, 0.8)})
    out["two_thresholds"] = max(f1((ld >= t1) & (lp_mean >= t2)) for t1 in np.quantile(ld, np.linspace(0, 1, 41))
                                for t2 in np.quantile(lp_mean, np.linspace(0, 0.9, 19)))
    # honest versions: weight and threshold fit on half of the val offers, scored on the other half
    half = np.random.default_rng(0).permutation(len(val.records)) < len(val.records) // 2
    fold = np.array([half[q.row] for q in qs])

    def on(offers, kept) -> float:  # the authors' F1 over one half of the offers
        recs = [r for r, h in zip(val.records, half) if h == offers]
        return authors_f1(recs, kept_predictions(val.records, qs, vals, kept & (fold == offers)), categories)

    def two_fold(weights) -> float:
        kept = np.zeros(len(qs), bool)
        for fit in (True, False):
            rules = [(a, t) for a in weights for t in np.quantile((a * lp_mean + (1 - a) * ld)[fold == fit],
                                                                  np.linspace(0, 1, 101))]
            a, t = max(rules, key=lambda r: on(fit, r[0] * lp_mean + (1 - r[0]) * ld >= r[1]))
            kept[fold != fit] = (a * lp_mean + (1 - a) * ld >= t)[fold != fit]
        return f1(kept)
    out["two_fold"] = {"discriminator": two_fold([0.0]), "mix_mean_weight_fit": two_fold([0.2, 0.4, 0.6, 0.8])}
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--run", default="base", help="a benchmarks/wdc_disc_dev.py run name")
    ap.add_argument("--work", type=Path, default=Path("/tmp/wdc_dev"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    p = params_with([])
    dev = dev_folder(p, args.work)
    engine = generator_only(p, GENERATOR, "cpu")
    val = load_data(dev, args.work / "no_tokens", "val")
    res = {"generator": str(GENERATOR.relative_to(ROOT)), "beams": beams(engine, val, args.k),
           "keep_rules": {"run": args.run, "val_f1": keep(engine, val, args.work / "disc_runs" / args.run)}}
    print(json.dumps(res, indent=1))
    (ROOT / "benchmarks" / "results" / "wdc_answer_probes.json").write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
