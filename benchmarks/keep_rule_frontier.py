"""The keep rule's trade-off on **val**: every generator weight w of the keep score
``P_gen^w * D^(1-w)`` and every threshold, with the val F1s each choice gives (AVE, AP, and on
WDC-PAVE the authors' rule), and what each selection criterion would choose (#17).

A low keep score refuses an answer. Refusing a wrong value helps AVE F1 and the authors' F1; it
also refuses an attribute the product has, which costs AP F1. The evaluate stage chooses (w,
threshold) by ``eval.threshold_metric``; this script shows what each criterion costs the others.
It answers val with a pipeline's trained DEFLATE bundle; nothing here reads the test split.

    python benchmarks/keep_rule_frontier.py [--pipeline wdc_pave | default] [--bundle DIR]

Writes benchmarks/results/keep_rule_frontier_<pipeline>.json.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from deflate import pave_scoring
from deflate.config import load_params
from deflate.dataset import load_data, load_schema
from deflate.engine import Deflate, keep_scores
from deflate.files import write_json
from deflate.metrics import evaluate as compute_metrics
from deflate.metrics import gold_from_records
from deflate.questions import all_questions
from deflate.stages.evaluate import select

ROOT = Path(__file__).resolve().parents[1]
SETUPS = {  # pipeline: (folder, DEFLATE bundle, tables, image tokens)
    "wdc_pave": (ROOT / "pipelines" / "wdc_pave", "models/systems/deflate-wdc_pave/deflate", "data/processed",
                 "data/no_tokens"),
    "default": (ROOT, "models/deflate", "data/processed", "data/tokens"),
}
CRITERIA = ("ave", "ap", "mean_ave_ap")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pipeline", choices=sorted(SETUPS), default="wdc_pave")
    ap.add_argument("--bundle", type=Path, help="default: the pipeline's DEFLATE bundle")
    args = ap.parse_args()
    torch.set_num_threads(2)
    folder, bundle, tables, tokens = SETUPS[args.pipeline]
    p = load_params(folder / "params.yaml")
    engine = Deflate.load(args.bundle or folder / bundle).with_decisions(keep_weight=0.0, threshold=0.0)
    val = load_data(folder / tables, folder / tokens, "val")
    schema = load_schema(folder / tables)
    ans = engine.answer(val.records, all_questions(val.records, schema), engine.batcher(val.image, val.has_image),
                        "val", gen_logprobs=True)
    gold, texts = gold_from_records(val.records)
    categories = engine.meta.get("category_attributes")
    rows = []
    for w in p["eval"]["keep_weights"]:
        scores = keep_scores(ans.probs, ans.gen_logprobs, w)
        for t in sorted(set(np.round(np.quantile(scores, np.linspace(0, 1, 101)), 4).tolist()) | {0.5}):
            pred = select(ans, val.records, t, engine.sep, scores)
            m = compute_metrics(gold, pred, texts)
            row = {"w": w, "t": t, "ave": m["ave"]["f1"], "ap": m["ap"]["f1"]}
            row["mean_ave_ap"] = round((row["ave"] + row["ap"]) / 2, 3)
            if categories:
                counts = pave_scoring.count(val.records, pred, categories).counts.sum(0)
                row["authors"] = round(float(pave_scoring.prf(counts)["f1"]), 2)
            rows.append(row)
    # the stage's own tie-break: the smaller weight, then the threshold closest to 0.5
    chosen = {c: max(rows, key=lambda r: (r[c], -r["w"], -abs(r["t"] - 0.5))) for c in CRITERIA}
    per_weight = {str(w): {c: max(r[c] for r in rows if r["w"] == w) for c in CRITERIA + ("authors",)
                           if c in rows[0]} for w in p["eval"]["keep_weights"]}
    res = {"pipeline": args.pipeline, "bundle": str((args.bundle or folder / bundle).relative_to(ROOT)),
           "chosen_by": chosen, "best_per_weight": per_weight, "rules": rows}
    print(json.dumps({k: v for k, v in res.items() if k != "rules"}, indent=1))
    write_json(ROOT / "benchmarks" / "results" / f"keep_rule_frontier_{args.pipeline}.json", res, indent=1)


if __name__ == "__main__":
    main()
