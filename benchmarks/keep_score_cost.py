"""What the keep score costs at answering time: the WDC-PAVE bundle answering every val question
under the paper's rule (keep_weight 0: generate + discriminate) and under the bundle's keep score
(one more teacher-forced pass of the generator over the answers), twice each, on this machine.

    python benchmarks/keep_score_cost.py

Writes benchmarks/results/keep_score_cost.json.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from deflate.dataset import load_data, load_schema
from deflate.engine import Deflate
from deflate.files import write_json
from deflate.questions import all_questions

ROOT = Path(__file__).resolve().parents[1]
PIPE = ROOT / "pipelines" / "wdc_pave"


def main():
    torch.set_num_threads(2)
    engine = Deflate.load(PIPE / "models" / "systems" / "deflate-wdc_pave" / "deflate")
    chosen = engine.decisions.keep_weight
    val = load_data(PIPE / "data" / "processed", PIPE / "data" / "no_tokens", "val")
    questions = all_questions(val.records, load_schema(PIPE / "data" / "processed"))
    batcher = engine.batcher(val.image, val.has_image)
    runs = []
    for w in (0.0, chosen, 0.0, chosen):
        engine.with_decisions(keep_weight=w)
        t = time.perf_counter()
        ans = engine.answer(val.records, questions, batcher, progress=False)
        runs.append({"keep_weight": w, "seconds": round(time.perf_counter() - t, 2), "kept": int(sum(ans.kept))})
        print(runs[-1])
    base = min(r["seconds"] for r in runs if r["keep_weight"] == 0.0)
    mixed = min(r["seconds"] for r in runs if r["keep_weight"] == chosen)
    res = {"questions": len(questions), "threads": 2, "runs": runs,
           "overhead_percent": round(100 * (mixed - base) / base, 1)}
    print(json.dumps(res))
    write_json(ROOT / "benchmarks" / "results" / "keep_score_cost.json", res, indent=1)


if __name__ == "__main__":
    main()
