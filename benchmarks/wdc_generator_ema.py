"""Does an exponential moving average of the generator's weights (Polyak averaging) answer better
than the weights it is taken from? WDC-PAVE val only (wdc_dev.py's dev folder: eval_visible never
read).

One training run of the shared generator, exactly as the pipeline trains it (the same seed, kernels,
examples and selection by val exact on the raw weights, so its curve must be the committed one).
Beside it, after every optimiser step, ``torch.optim.swa_utils.AveragedModel`` keeps one EMA copy
per decay (``--decays``); after each epoch every copy is also scored on the same val questions.
Each copy's best epoch is saved as a generator folder (``WORK/gen_runs/ema_<decay>/generator``), so
``wdc_dev.py deflate --generator-from WORK/gen_runs/ema_<decay>`` runs the whole system on it.

    python benchmarks/wdc_generator_ema.py [--decays 0.995 0.998 0.999] [--work DIR]

Writes ``benchmarks/results/wdc_generator_ema.json``.
"""
from __future__ import annotations

import argparse
import copy
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from deflate.infra import kernels
from deflate.infra.weights import save_weights
from deflate.model import train as training
from deflate.stages import train_generator

sys.path.insert(0, str(Path(__file__).parent))
from wdc_dev import dev_folder, params_with  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "wdc_generator_ema.json"
COMMITTED = Path(__file__).parents[1] / "pipelines" / "wdc_pave" / "models" / "shared_generator" / "history.json"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--decays", type=float, nargs="+", default=[0.995, 0.998, 0.999])
    ap.add_argument("--work", type=Path, default=Path("/tmp/wdc_dev"))
    ap.add_argument("--smoke", action="store_true", help="1 epoch, 50 val questions, no results file (a check)")
    args = ap.parse_args()
    p = params_with(["generator.epochs=1", "generator.val_max=50"] if args.smoke else [])
    kernels.pin(p["repro"]["kernels"], p["repro"]["num_threads"])
    p["generator"]["shared_from"] = ""  # trained here (the dev data's key would match the pipeline's copy)
    dev = dev_folder(p, args.work)
    out = args.work / "gen_runs"
    averages: dict[float, AveragedModel] = {}
    curves: dict[float, list[float]] = {d: [] for d in args.decays}
    best: dict[float, tuple[float, int, dict]] = {}

    make_optimizer = training.make_optimizer

    def with_averages(model, cfg):  # the generator's optimiser, with the EMA copies updated after each step
        opt = make_optimizer(model, cfg)
        for d in args.decays:
            averages[d] = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(d))
        opt.register_step_post_hook(lambda *_: [a.update_parameters(model) for a in averages.values()])
        return opt

    generate_values = train_generator.generate_values

    def scored_too(model, qb, batcher, examples, *a, **kw):  # validate(): the raw answers, and each copy's score
        targets = [qb.answer(e.target, e.key.attribute) for e in examples]
        for d, avg in averages.items():
            avg.module.eval()
            got = generate_values(avg.module, qb, batcher, examples, *a, **kw)
            score = round(float(np.mean([x == y for x, y in zip(got, targets)])), 4)
            curves[d].append(score)
            if score > best.get(d, (float("-inf"),))[0]:
                best[d] = (score, len(curves[d]), copy.deepcopy(avg.module.state_dict()))
        return generate_values(model, qb, batcher, examples, *a, **kw)

    training.make_optimizer = with_averages
    train_generator.generate_values = scored_too
    shutil.rmtree(out / "raw", ignore_errors=True)
    t0 = time.perf_counter()
    train_generator.run(p, dev, args.work / "no_tokens", out / "raw" / "generator", out / "raw" / "ckpt")
    seconds = round(time.perf_counter() - t0, 1)

    raw = [h["val_score"] for h in json.loads((out / "raw" / "generator" / "history.json").read_text())]
    committed = [h["val_score"] for h in json.loads(COMMITTED.read_text())]
    result = {"raw": {"val_exact": raw, "best": max(raw), "best_epoch": raw.index(max(raw)) + 1,
                      "same_as_committed": raw == committed},
              "ema": {}, "seconds": seconds, "kernels": kernels.describe()["kernels"]}
    model = averages[args.decays[0]].module
    for d in args.decays:
        score, epoch, state = best[d]
        folder = out / f"ema_{d}" / "generator"
        shutil.rmtree(folder.parent, ignore_errors=True)
        shutil.copytree(out / "raw" / "generator", folder)
        model.load_state_dict(state)
        save_weights(model, folder / "model.safetensors")
        result["ema"][str(d)] = {"val_exact": curves[d], "best": score, "best_epoch": epoch, "folder": str(folder.parent)}
    if not args.smoke:
        RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: (v if k != "ema" else {d: {"best": e["best"], "best_epoch": e["best_epoch"]}
                                                  for d, e in v.items()}) for k, v in result.items()}, indent=1))


if __name__ == "__main__":
    main()
