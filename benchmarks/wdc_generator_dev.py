"""WDC-PAVE generator development on val only: the generator stage alone (DEFLATE's first stage) with
params overridden, under the pipeline's kernels; prints its per-epoch val exact-answer accuracy (the
score that selects its epoch), the best epoch and the wall time. Never reads eval_visible (it runs on
wdc_dev.py's dev folder, whose test split is val).

    python benchmarks/wdc_generator_dev.py [-S key.path=value ...] [--name NAME] [--work DIR]

Appends one JSON line to WORK/gen_results.jsonl.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from deflate.infra import kernels
from deflate.stages import train_generator

sys.path.insert(0, str(Path(__file__).parent))
from wdc_dev import dev_folder, dev_run, record  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    args, p = dev_run(ap)
    dev = dev_folder(p, args.work)
    name = args.name or "_".join(["gen", *[s.replace("/", "_") for s in args.sets]])[:120]
    out = args.work / "gen_runs" / name
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    train_generator.run(p, dev, args.work / "no_tokens", out / "generator", out / "ckpt")
    seconds = round(time.perf_counter() - t0, 1)
    hist = json.loads((out / "generator" / "history.json").read_text())
    scores = [h["val_score"] for h in hist]
    best = max(range(len(scores)), key=lambda i: (scores[i], -i))
    record(args.work, "gen_results.jsonl", {"name": name, "sets": args.sets, "val_exact": scores,
                                            "best": scores[best], "best_epoch": best + 1, "seconds": seconds,
                                            "kernels": kernels.describe()["kernels"]})


if __name__ == "__main__":
    main()
