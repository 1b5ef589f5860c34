"""ImplicitAVE: the generator reading a pretrained encoder's frozen states (``model.encoder_states``,
#32 item 3), against the committed generator, on val only. Never reads eval_visible.

The generator is trained as the pipeline's ``train_generator`` stage trains it (its own code, the
pipeline's params, every epoch's val exact in ``history``), with one change: the questions carry the
states of the checkpoint folder given (``deflate checkpoint minilm-l6 --out DIR`` makes a verified
one). Then both generators, this one and the committed bundle's, score every candidate of the same
seeded sample of val questions that ``implicitave_val_gap.py`` scores: the generator's best candidate
is the "DEFLATE alone" answer of the pipeline's table.

    python benchmarks/implicitave_states.py --checkpoint models/pretrained [--epochs 20]
        [--work /tmp/implicitave_states] [--out benchmarks/results/implicitave_states.json]
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
from implicitave_val_gap import rank_of_gold, val_sample

from deflate.answering.engine import Deflate
from deflate.data.splits import grouped_labels
from deflate.infra import kernels
from deflate.infra.bundle import Decisions
from deflate.infra.files import read_json, write_json
from deflate.infra.runtime import read_cost
from deflate.stages import train_generator

ALONE = Decisions(mode="constrained", threshold=0.0, keep_all=True, alpha=1.0, weights=(1.0, 0.0, 0.0))


def best_candidate(engine: Deflate, data, questions) -> float:
    """% of ``questions`` whose gold value is the generator's best-scored candidate."""
    scores = engine.candidate_scores(engine.batcher(data.image, data.has_image), data.records,
                                     engine.questions(data.records, questions), sources=("generator",))["generator"]
    right = 0
    for k, q in enumerate(questions):
        opts = engine.candidates.get(q.attribute, [])
        gold = engine.sep.join(grouped_labels(data.records[q.row])[q.attribute])
        right += rank_of_gold(scores[k], opts.index(gold) if gold in opts else -1) == 1
    return round(100 * right / len(questions), 2)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pipeline", type=Path, default=Path("pipelines/implicitave"))
    ap.add_argument("--checkpoint", type=Path, required=True, help="a materialised BERT-family checkpoint folder")
    ap.add_argument("--epochs", type=int, default=0, help="0: the pipeline's generator.epochs")
    ap.add_argument("--sample", type=int, default=4000, help="val questions scored, a seeded sample (0 = all)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/implicitave_states"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/implicitave_states.json"))
    ap.add_argument("--no-control", action="store_true",
                    help="the committed bundle is not built here (a fresh machine's empty DVC cache): train and "
                         "score the arm alone, with the pipeline's decode settings; the control's figure is then "
                         "the one recorded on the same CPU (implicitave_val_gap_ema.json)")
    ap.add_argument("--score-only", action="store_true",
                    help="score the generator already trained in --work (its training seconds: training.json)")
    args = ap.parse_args()
    p, committed, data, questions = val_sample(args.pipeline, args.sample, bundle=not args.no_control)
    p = copy.deepcopy(p)
    p["model"]["encoder_states"] = str(args.checkpoint.resolve())
    p["generator"]["epochs"] = args.epochs or p["generator"]["epochs"]
    p["tracking"]["enabled"] = False
    seconds = None  # trained elsewhere (--score-only): its figures are in that run's log
    if not (args.score_only and (args.work / "generator" / "history.json").exists()):
        t0 = time.perf_counter()
        train_generator.run(p, args.pipeline / "data" / "processed", args.pipeline / "data" / "tokens",
                            args.work / "generator", args.work / "ckpt")
        seconds = round(time.perf_counter() - t0, 1)
    history = read_json(args.work / "generator" / "history.json")
    decode, claim_bs = ((committed.decode, committed.claim_batch_size) if committed else
                        (p["decode"], p["discriminator"]["eval_batch_size"]))
    arm = Deflate(args.work / "generator", discriminator=None, lexical=None, decisions=ALONE,
                  decode=decode, claim_batch_size=claim_bs)
    committed_history = args.pipeline / "models" / "generator" / "history.json"
    res = {"split": "val", "questions": len(questions), "sample_seed": p["seed"], "epochs": p["generator"]["epochs"],
           "checkpoint": arm.meta["encoder_states"], "seconds": seconds,
           "best_candidate": {"committed": best_candidate(committed, data, questions) if committed else None,
                              "states": best_candidate(arm, data, questions)},
           "val_exact_by_epoch": {"committed": [h["val_score"] for h in read_json(committed_history)]
                                  if committed_history.exists() else None,
                                  "states": [h["val_score"] for h in history]},
           **{k: v for k, v in read_cost(args.work / "generator").items() if k in ("train_seconds", "examples_per_s")},
           "kernels": kernels.describe()["kernels"]}
    write_json(args.out, res, indent=1)
    print(json.dumps({k: res[k] for k in ("best_candidate", "seconds")}))
    print("best val exact (epoch):", {k: (max(v), int(np.argmax(v)) + 1)
                                      for k, v in res["val_exact_by_epoch"].items() if v})


if __name__ == "__main__":
    main()
