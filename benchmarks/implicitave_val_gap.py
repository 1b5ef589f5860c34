"""Why DEFLATE trails the lexical scorer on ImplicitAVE (#31 item 3), on val only: every val question
scored by each source of the committed bundle (the generator's mean token log-prob of every
candidate, the discriminator's log D of every candidate's claim, the lexical scorer), then per
attribute: questions, candidates, training rows, accuracy of each source alone, of the majority
value in train, of the generator's top 2 / top 3, and how often the generator is right where the
lexical scorer is wrong and back. Never reads eval_visible.

    python benchmarks/implicitave_val_gap.py [--pipeline pipelines/implicitave]
        [--out benchmarks/results/implicitave_val_gap.json] [--sample 4000]
"""
from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np

from deflate.answering.engine import Deflate
from deflate.data.records import load_split
from deflate.data.splits import grouped_labels, load_data
from deflate.infra import kernels
from deflate.infra.config import load_params
from deflate.infra.files import write_json
from deflate.model.questions import gold_questions


def rank_of_gold(scores: np.ndarray, gold: int) -> int:
    """1 for the best candidate; ties count against the gold."""
    return int((scores >= scores[gold]).sum()) if gold >= 0 else 10**6


def arguments(doc: str, out: str) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--pipeline", type=Path, default=Path("pipelines/implicitave"))
    ap.add_argument("--out", type=Path, default=Path(out))
    ap.add_argument("--sample", type=int, default=4000, help="val questions, a seeded sample (0 = all)")
    return ap.parse_args()


def val_sample(pipeline: Path, sample: int, bundle: bool = True):
    """The pipeline's params (kernels pinned), its bundle (None when ``bundle`` is false), val, and a
    seeded sample of val's gold questions: every domain in proportion, not the files' first rows."""
    p = load_params(pipeline / "params.yaml")
    kernels.pin(p["repro"]["kernels"], p["repro"]["num_threads"])
    engine = Deflate.load(pipeline / "models" / "deflate") if bundle else None
    data = load_data(pipeline / "data" / "processed", pipeline / "data" / "tokens", "val")
    questions = gold_questions(data.records)
    if sample and sample < len(questions):
        keep = np.sort(np.random.default_rng(p["seed"]).choice(len(questions), sample, replace=False))
        questions = [questions[i] for i in keep]
    return p, engine, data, questions


def train_value_counts(processed: Path, sep: str) -> dict[str, Counter]:
    """How often each answer (several gold values joined by ``sep``) labels each attribute in train."""
    counts: dict[str, Counter] = {}
    for r in load_split(processed, "train"):
        for a, vs in grouped_labels(r).items():
            counts.setdefault(a, Counter())[sep.join(vs)] += 1
    return counts


def main():
    args = arguments(__doc__, "benchmarks/results/implicitave_val_gap.json")
    p, engine, data, questions = val_sample(args.pipeline, args.sample)
    t0 = time.perf_counter()  # scoring only: loading the bundle and val is left out
    processed = args.pipeline / "data" / "processed"
    exs = engine.questions(data.records, questions)
    scores = engine.candidate_scores(engine.batcher(data.image, data.has_image), data.records, exs)
    seconds = round(time.perf_counter() - t0, 1)
    train_values = train_value_counts(processed, engine.sep)
    per: dict[str, dict] = {}
    for k, q in enumerate(questions):
        opts = engine.candidates.get(q.attribute, [])
        gold = engine.sep.join(grouped_labels(data.records[q.row])[q.attribute])
        g = opts.index(gold) if gold in opts else -1
        a = per.setdefault(q.attribute, Counter())
        a["n"] += 1
        ranks = {s: rank_of_gold(scores[s][k], g) for s in ("generator", "discriminator", "lexical")
                 if scores.get(s) is not None}
        for s, r in ranks.items():
            a[f"{s}_top1"] += r == 1
        a["generator_top2"] += ranks["generator"] <= 2
        a["generator_top3"] += ranks["generator"] <= 3
        a["majority"] += q.attribute in train_values and train_values[q.attribute].most_common(1)[0][0] == gold
        a["gen_right_lex_wrong"] += ranks["generator"] == 1 and ranks["lexical"] != 1
        a["lex_right_gen_wrong"] += ranks["lexical"] == 1 and ranks["generator"] != 1
        a["either"] += ranks["generator"] == 1 or ranks["lexical"] == 1
    rows = []
    total = Counter()
    for attr, c in sorted(per.items(), key=lambda kv: -kv[1]["n"]):
        total.update(c)
        rows.append({"attribute": attr, "n": c["n"], "candidates": len(engine.candidates.get(attr, [])),
                     "train_rows": sum(train_values.get(attr, Counter()).values()),
                     **{k: round(100 * c[k] / c["n"], 1) for k in
                        ("generator_top1", "generator_top2", "generator_top3", "discriminator_top1", "lexical_top1",
                         "majority", "gen_right_lex_wrong", "lex_right_gen_wrong", "either")}})
    overall = {k: round(100 * total[k] / total["n"], 2) for k in total if k != "n"}
    res = {"split": "val", "questions": total["n"], "sample_seed": p["seed"], "seconds_scoring": seconds, "overall": overall,
           "by_attribute": rows, "bundle": str(args.pipeline / "models" / "deflate"),
           "kernels": kernels.describe()["kernels"]}
    write_json(args.out, res, indent=1)
    print(json.dumps(overall))
    print("| attribute | n | cand. | train | gen | gen top-3 | D | lexical | majority | gen>lex | lex>gen |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['attribute']} | {r['n']} | {r['candidates']} | {r['train_rows']} | {r['generator_top1']} | "
              f"{r['generator_top3']} | {r['discriminator_top1']} | {r['lexical_top1']} | {r['majority']} | "
              f"{r['gen_right_lex_wrong']} | {r['lex_right_gen_wrong']} |")


if __name__ == "__main__":
    main()
