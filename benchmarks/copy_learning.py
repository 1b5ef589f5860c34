"""Can the from-scratch generator learn to copy? A data-free probe of the WDC-PAVE gap (docs/wdc_pave.md).

The task (deflate.copying.copy_batch, the generator's ``copy_warmup``): random token ids (the WDC
tokenizer's 8,000-id vocabulary) with one marker; answer the three tokens after the marker. It is the easiest form of what extraction asks of DEFLATE's generator (copy
unseen tokens out of a long input), with params.yaml's model size and optimizer (Adamax, lr 2e-3,
batch 32, clip 1.0). Three schedules:

* ``long``: 100-token inputs throughout (WDC questions are up to 160 tokens);
* ``short``: 20-token inputs;
* ``curriculum``: 20-token inputs, then 100-token ones.

    python benchmarks/copy_learning.py [--steps N] [--out benchmarks/results/copy_learning.json]

Prints the loss and the exact-copy accuracy (200 fresh examples) every 250 steps.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from transformers import T5ForConditionalGeneration

from deflate import copying
from deflate.config import load_params
from deflate.copying import copy_batch
from deflate.model import t5_config

ROOT = Path(__file__).resolve().parents[1]


def run(schedule: list[tuple[int, int]], p: dict, vocab: int, seed: int) -> list[dict]:
    """The generator's own warm-up (deflate.copying.warm_up) on ``schedule``, judged every 250 steps."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    t5 = T5ForConditionalGeneration(t5_config(p["model"], vocab))
    curve, t0 = [], time.perf_counter()

    def judge(step: int, length: int, loss: float) -> None:
        if step % 250:
            return
        t5.eval()
        with torch.no_grad():
            x, y = copy_batch(g, 200, schedule[-1][0], vocab)  # always judged on the final length
            acc = (t5(input_ids=x, labels=y).logits.argmax(-1) == y).all(1).float().mean().item()
        curve.append({"step": step, "length": length, "loss": round(loss, 3),
                      "exact_copy": round(acc, 3), "seconds": round(time.perf_counter() - t0, 1)})
        print(curve[-1], flush=True)
    copying.warm_up(t5, schedule, p["generator"], seed, "cpu", on_step=judge)
    return curve


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=3000, help="steps of each schedule")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "copy_learning.json")
    args = ap.parse_args()
    torch.set_num_threads(2)
    p = load_params(ROOT / "pipelines" / "wdc_pave" / "params.yaml")
    vocab, n = p["text"]["vocab_size"], args.steps
    schedules = {"long": [(100, n)], "short": [(20, n // 2)], "curriculum": [(20, n // 2), (100, n - n // 2)]}
    res = {"vocab": vocab, "model": {k: p["model"][k] for k in ("d_model", "d_ff", "num_layers", "num_heads")},
           "schedules": {name: run(s, p, vocab, p["seed"]) for name, s in schedules.items()}}
    args.out.write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
