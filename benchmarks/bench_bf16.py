"""bf16 autocast on CPU at our model sizes: the default generator trained once in float32 and once
with bf16 autocast around every training step (``distributed.mixed_precision: bf16``), same data,
seed and epochs. Reports training examples/s per epoch and the best validation accuracy (what model selection
uses), so a speed-up is only taken if quality holds. Needs the default pipeline's data
(dvc repro image_tokens).

    python benchmarks/bench_bf16.py [--epochs 6]
"""
import argparse
import copy
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from deflate.infra.config import load_params
from deflate.infra.runtime import read_cost
from deflate.stages import train_generator

def one(p, bf16: bool, work: Path) -> dict:
    p = copy.deepcopy(p)
    p["distributed"]["mixed_precision"] = "bf16" if bf16 else "no"
    t = time.perf_counter()
    train_generator.run(p, Path("data/processed"), Path("data/tokens"), work / "gen", work / "ckpt")
    hist = json.loads((work / "gen" / "history.json").read_text())
    rates = read_cost(work / "gen")["examples_per_s"]  # measured speeds live outside the model folder
    return {"bf16": bf16, "seconds": round(time.perf_counter() - t, 1),
            "median_train_examples_per_s": round(statistics.median(rates), 1),
            "best_val_accuracy": max(h["val_score"] for h in hist),
            "val_accuracy_by_epoch": [round(h["val_score"], 4) for h in hist]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=0, help="0 = generator.epochs of params.yaml")
    a = ap.parse_args()
    p = load_params()
    p["tracking"]["enabled"] = False
    if a.epochs:
        p["generator"]["epochs"] = a.epochs
    torch.set_num_threads(p["model"]["num_threads"])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for bf16 in (False, True):
            rows.append(one(p, bf16, Path(tmp) / ("bf16" if bf16 else "fp32")))
            print(json.dumps(rows[-1]), flush=True)
    print(f"cpu bf16 support: {torch.backends.mkldnn.is_available()=}, "
          f"{getattr(torch.backends.cpu, 'get_cpu_capability', lambda: '?')()=}")
    print("| autocast | train ex/s (median epoch) | best val accuracy | stage seconds |\n|---|---:|---:|---:|")
    for r in rows:
        print(f"| {'bf16' if r['bf16'] else 'off (fp32)'} | {r['median_train_examples_per_s']} | "
              f"{r['best_val_accuracy']:.4f} | {r['seconds']} |")


if __name__ == "__main__":
    main()
