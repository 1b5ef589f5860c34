"""Discriminator development on WDC-PAVE, on val only: the pipeline's trained DEFLATE generator
(``pipelines/wdc_pave/models/systems/deflate-wdc_pave/generator``, trained on train and selected on
val) is reused; negatives, discriminator, threshold and scores are redone with overrides, and
scored on val (the test split is val, as in benchmarks/wdc_dev.py) by the dataset authors' rule.

    python benchmarks/wdc_disc_dev.py [-S key.path=value ...] [--name NAME] [--work DIR]

Appends one JSON line to DIR/disc_results.jsonl.
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from wdc_dev import PIPE, dev_folder, params_with, record, val_score

from deflate.stages import evaluate, harvest_negatives, train_discriminator

GENERATOR = PIPE / "models" / "systems" / "deflate-wdc_pave" / "generator"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-S", dest="sets", action="append", default=[], help="key.path=value (YAML value)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/wdc_dev"))
    ap.add_argument("--name", default="")
    args = ap.parse_args()
    p = params_with(args.sets)
    dev = dev_folder(p, args.work)
    name = args.name or "_".join(["disc", *args.sets])[:120]
    out = args.work / "disc_runs" / name
    shutil.rmtree(out, ignore_errors=True)
    tokens = args.work / "no_tokens"
    t0 = time.perf_counter()
    harvest_negatives.run(p, dev, tokens, GENERATOR, out / "negatives")
    train_discriminator.run(p, dev, tokens, GENERATOR, out / "negatives", out / "discriminator",
                            out / "checkpoints")
    m = evaluate.run(p, dev, tokens, GENERATOR, out / "discriminator", out / "metrics.json",
                     out / "predictions" / "test.jsonl", out / "deflate")
    s = val_score(dev, out / "predictions" / "test.jsonl")
    neg = json.loads((out / "negatives" / "summary.json").read_text())
    res = {"name": name, "sets": args.sets, "val_f1": s["f1"], "val_p": s["p"], "val_r": s["r"],
           "counts": s["counts"], "ap_f1": m["ap"]["f1"], "ave_f1": m["ave"]["f1"], "threshold": m["threshold"],
           "keep_weight": m.get("keep_weight", 0.0), "keep_rule_val_f1": m.get("keep_rule_val_f1"),
           "negatives": {k: v["negatives"] for k, v in neg["splits"].items()},
           "seconds": round(time.perf_counter() - t0, 1)}
    record(args.work, "disc_results.jsonl", res)


if __name__ == "__main__":
    main()
