"""A control for DEFLATE's keep rule (#17): give d− the same kind of val-chosen threshold.

DEFLATE keeps an answer when ``P_gen^w * D^(1-w)`` passes a threshold, ``w`` and the threshold
chosen on val (``eval.keep_weights``). Part of its gain over d− could then come from thresholding
the generator's confidence, which d− (the paper's ablation: the generator alone, "None" for an
absent attribute) never does. This script thresholds d−'s own answers on its generator's mean
token probability, the threshold chosen on val by the pipeline's ``eval.threshold_metric``, and
scores the result on val and on the test split the pipeline reports, beside the pipeline's rows.
It answers with the pipeline's trained d− bundle; it chooses nothing on test.

    python benchmarks/generator_threshold_control.py [--pipeline wdc_pave | default]

Writes benchmarks/results/generator_threshold_control_<pipeline>.json.
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
from deflate.engine import Deflate, keep
from deflate.files import write_json
from deflate.metrics import evaluate as compute_metrics
from deflate.metrics import gold_from_records
from deflate.questions import all_questions

ROOT = Path(__file__).resolve().parents[1]
SETUPS = {  # pipeline: (folder, d− run, DEFLATE metrics, tables, image tokens)
    "wdc_pave": (ROOT / "pipelines" / "wdc_pave", "models/systems/d_minus-wdc_pave",
                 "metrics/systems/deflate-wdc_pave.json", "data/processed", "data/no_tokens"),
    "default": (ROOT, "models/systems/d_minus-desire", "metrics/deflate.json", "data/processed", "data/tokens"),
}


def kept(records, qs, vals, scores, t: float, sep: str) -> dict:
    return {(records[q.row].id, q.attribute): [x for x in v.split(sep) if x]
            for q, v, s in zip(qs, vals, scores) if keep(v, s, t)}


def scores_of(records, pred: dict, categories: dict | None) -> dict:
    gold, texts = gold_from_records(records)
    m = compute_metrics(gold, pred, texts)
    out = {k: m[k]["f1"] for k in ("ap", "ave")}
    if categories:
        out["authors_f1"] = round(float(pave_scoring.prf(pave_scoring.count(records, pred, categories)
                                                         .counts.sum(0))["f1"]), 2)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pipeline", choices=sorted(SETUPS), default="wdc_pave")
    args = ap.parse_args()
    torch.set_num_threads(2)
    folder, run, deflate_metrics, tables, tokens = SETUPS[args.pipeline]
    p = load_params(folder / "params.yaml")
    run = folder / run
    engine = Deflate.load(run / "deflate")
    categories = engine.meta.get("category_attributes")
    metric = p["eval"]["threshold_metric"]
    res: dict = {"pipeline": args.pipeline, "threshold_metric": metric}
    probs: dict = {}
    schema = load_schema(folder / tables)
    for split in ("val", "test"):  # d−'s answers, as the pipeline's evaluate stage gives them
        data = load_data(folder / tables, folder / tokens, split)
        b = engine.batcher(data.image, data.has_image)
        qs = all_questions(data.records, schema)
        vals = engine.answer(data.records, qs, b, split).values
        lp = engine.answer_logprobs(b, data.records, qs, vals, split)
        probs[split] = (data.records, qs, vals, np.exp(lp.astype(np.float64)))
    records, qs, vals, pg = probs["val"]
    gold, texts = gold_from_records(records)
    grid = sorted(set(np.round(np.quantile(pg, np.linspace(0, 1, 101)), 4).tolist()) | {0.0})
    t = max(grid, key=lambda t: (compute_metrics(gold, kept(records, qs, vals, pg, t, engine.sep), texts)[metric]["f1"],
                                 -t))  # ties: the lower threshold (closer to d− as it is)
    res["threshold"] = t
    for split, (recs, qs, vals, pg) in probs.items():
        res[split] = {"d_minus": scores_of(recs, kept(recs, qs, vals, pg, 0.0, engine.sep), categories),
                      "d_minus_thresholded": scores_of(recs, kept(recs, qs, vals, pg, t, engine.sep), categories)}
    m = json.loads((folder / deflate_metrics).read_text())
    res["deflate_pipeline"] = {"keep_weight": m.get("keep_weight"), "threshold": m.get("threshold"),
                               "test": {k: m[k]["f1"] for k in ("ap", "ave")}}
    print(json.dumps(res, indent=1))
    write_json(ROOT / "benchmarks" / "results" / f"generator_threshold_control_{args.pipeline}.json", res, indent=1)


if __name__ == "__main__":
    main()
