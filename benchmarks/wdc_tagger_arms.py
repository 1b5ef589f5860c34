"""Every tagger arm of #32 item 3 on WDC-PAVE, val and `eval_visible`, for the docs table, run only
after the pipeline's choice was made on val (docs/wdc_pave.md, "The taggers over word pieces of a
pretrained BERT"). Each arm is the pipeline's own system stage (trained on train, its epoch chosen on
val) with ``baselines.tagger.text`` set, on the pipeline's ingested data and its verified checkpoint
copy (`models/pretrained`); both splits are scored with the authors' rule.

    python benchmarks/wdc_tagger_arms.py [--arms bilstm_crf:pieces,mjave:encoder ...] [--work DIR]

Appends one JSON line per arm to benchmarks/results/wdc_tagger_arms.jsonl.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from deflate.infra import kernels

sys.path.insert(0, str(Path(__file__).parent))
from wdc_dev import PIPE, params_with, record  # noqa: E402

ARMS = ("bilstm_crf:chars", "bilstm_crf:pieces", "bilstm_crf:embeddings", "bilstm_crf:encoder",
        "mjave:chars", "mjave:pieces", "mjave:embeddings", "mjave:encoder")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arms", default=",".join(ARMS), help="system:text pairs, comma-separated")
    ap.add_argument("--work", type=Path, default=Path("/tmp/wdc_tagger_arms"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()
    p = params_with([])
    kernels.pin(p["repro"]["kernels"], p["repro"]["num_threads"])

    from deflate.data.records import load_split
    from deflate.evaluation import prediction_files
    from deflate.evaluation import wdc_pave_rule as pave_scoring
    from deflate.stages.system import run_system

    processed = PIPE / "data" / "processed"
    categories = json.loads((processed / "schema.json").read_text())["category_attributes"]
    args.out.mkdir(parents=True, exist_ok=True)
    for arm in args.arms.split(","):
        system, text = arm.split(":")
        q = json.loads(json.dumps(p))
        q["baselines"]["tagger"]["text"] = text
        q["baselines"]["tagger"]["pretrained_path"] = "" if text == "chars" else str(PIPE / "models" / "pretrained")
        out = args.work / arm.replace(":", "-")
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        run_system(system, q, processed, PIPE / "data" / "no_tokens", out, "wdc_pave")
        seconds = round(time.perf_counter() - t0, 1)
        res = {"arm": arm, "system": system, "text": text, "seconds": seconds, "kernels": kernels.describe()["kernels"]}
        for split in ("val", "test"):
            s = pave_scoring.score(load_split(processed, split), prediction_files.read(out / "predictions" / f"{split}.jsonl"),
                                   categories)
            res[split] = {"f1": s["f1"], "f1_ci95": s["f1_ci95"], "p": s["p"], "r": s["r"], "counts": s["counts"]}
        record(args.out, "wdc_tagger_arms.jsonl", res)


if __name__ == "__main__":
    main()
