"""A discriminator that learns to tell a right span from its neighbours, on WDC-PAVE (**val only**;
docs/wdc_pave.md): the pipeline's negatives (the generator's answers to absent attributes) plus,
for every attribute a product has, the generator's other span beams that are none of its right
answers. Reuses the pipeline's generator and the ``base`` run's negatives of
``benchmarks/wdc_disc_dev.py``; writes a run folder ``DIR/disc_runs/NAME`` that
``benchmarks/wdc_beam_rerank.py --runs NAME`` scores.

    python benchmarks/wdc_beam_negatives.py [--k 4] [-S key.path=value ...] [--name beamneg] [--work /tmp/wdc_dev]
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch
from wdc_dev import dev_folder, params_with, record, val_score
from wdc_disc_dev import GENERATOR

from deflate.dataset import load_data, right_answers
from deflate.decoding import span_beams
from deflate.files import read_jsonl, write_jsonl
from deflate.questions import gold_questions
from deflate.stages import evaluate, train_discriminator
from deflate.stages.harvest_negatives import generator_only
from deflate.text import NONE_VALUE


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--name", default="beamneg")
    ap.add_argument("-S", dest="sets", action="append", default=[], help="key.path=value (YAML value)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/wdc_dev"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    p = params_with(args.sets)
    dev, tokens = dev_folder(p, args.work), args.work / "no_tokens"
    out = args.work / "disc_runs" / args.name
    shutil.rmtree(out, ignore_errors=True)
    (out / "negatives").mkdir(parents=True)
    t0 = time.perf_counter()
    engine = generator_only(p, GENERATOR, "cpu")
    counts = {}
    for split in ("train", "val"):
        data = load_data(dev, tokens, split)
        rows = read_jsonl(args.work / "disc_runs" / "base" / "negatives" / f"{split}.jsonl")
        questions = gold_questions(data.records)
        beams = span_beams(engine.gen, engine.qb, engine.batcher(None, None), engine.questions(data.records, questions),
                           args.k, dict(engine.decode, batch_size=32 * args.k), progress=False)
        extra = [{"row": q.row, "id": data.records[q.row].id, "attribute": q.attribute, "value": v}
                 for q, bs in zip(questions, beams) for v, _ in bs
                 if v != NONE_VALUE and v not in right_answers(data.records[q.row], q.attribute, engine.sep)]
        counts[split] = {"absent": len(rows), "beams": len(extra)}
        write_jsonl(out / "negatives" / f"{split}.jsonl", rows + extra)
    (out / "negatives" / "summary.json").write_text(json.dumps(counts))
    train_discriminator.run(p, dev, tokens, GENERATOR, out / "negatives", out / "discriminator", out / "checkpoints")
    m = evaluate.run(p, dev, tokens, GENERATOR, out / "discriminator", out / "metrics.json",
                     out / "predictions" / "test.jsonl", out / "deflate")
    s = val_score(dev, out / "predictions" / "test.jsonl")
    record(args.work, "disc_results.jsonl",
           {"name": args.name, "sets": [f"beam negatives k={args.k}", *args.sets], "val_f1": s["f1"], "val_p": s["p"],
            "val_r": s["r"], "counts": s["counts"], "ap_f1": m["ap"]["f1"], "ave_f1": m["ave"]["f1"],
            "threshold": m["threshold"], "negatives": counts, "seconds": round(time.perf_counter() - t0, 1)})


if __name__ == "__main__":
    main()
