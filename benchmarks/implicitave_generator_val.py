"""A trained ImplicitAVE generator's best candidate (the "DEFLATE alone" answer) on the seeded val
questions of ``implicitave_val_gap.py``, the generator alone: no bundle, discriminator or lexical scorer
needed, so an arm is scored as soon as its generator stage ends. The figure the ImplicitAVE arms'
rules read (docs/implicitave.md). Never reads eval_visible.

    python benchmarks/implicitave_generator_val.py --generator WORKTREE/pipelines/implicitave/models/generator \
        --label copy [--pipeline pipelines/implicitave] [--sample 4000] \
        [--out benchmarks/results/implicitave_generator_val.json]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from implicitave_states import ALONE, best_candidate
from implicitave_val_gap import val_sample

from deflate.answering.engine import Deflate
from deflate.infra import kernels
from deflate.infra.files import read_json, write_json


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--generator", type=Path, required=True, help="a trained generator folder")
    ap.add_argument("--label", required=True, help="the arm's name in the results file")
    ap.add_argument("--pipeline", type=Path, default=Path("pipelines/implicitave"),
                    help="its params (decode settings, seed, kernels) and val")
    ap.add_argument("--sample", type=int, default=4000)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/implicitave_generator_val.json"))
    a = ap.parse_args()
    p, _, data, questions = val_sample(a.pipeline, a.sample, bundle=False)
    engine = Deflate(a.generator, discriminator=None, lexical=None, decisions=ALONE,
                     decode=p["decode"], claim_batch_size=p["discriminator"]["eval_batch_size"])
    t0 = time.perf_counter()
    got = best_candidate(engine, data, questions)
    history = a.generator / "history.json"
    res = read_json(a.out) if a.out.exists() else {}
    res[a.label] = {"split": "val", "questions": len(questions), "sample_seed": p["seed"], "best_candidate": got,
                    "seconds_scoring": round(time.perf_counter() - t0, 1),
                    "val_exact_by_epoch": [h["val_score"] for h in read_json(history)] if history.exists() else None,
                    "generator": str(a.generator), "kernels": kernels.describe()["kernels"]}
    write_json(a.out, res, indent=1)
    print(json.dumps({a.label: got}))


if __name__ == "__main__":
    main()
