"""Run by tests/test_distributed.py: DEFLATE stages on a tiny world under the given params, launched
again under ``accelerate launch`` when ``distributed.processes`` > 1 (what a stage script does).

Usage: python tests/distributed_worker.py PARAMS WORLD OUT train
       python tests/distributed_worker.py PARAMS WORLD OUT answer GENERATOR DISCRIMINATOR"""
import sys
from pathlib import Path

from deflate import distributed
from deflate.config import load_params
from deflate.files import write_json
from deflate.stages import evaluate, harvest_negatives, train_generator

params, world, out, what = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
p = load_params(params)
distributed.relaunch(p["distributed"])
proc, tok = world / "processed", world / "tokens"
if what == "train":
    result = train_generator.run(p, proc, tok, out / "gen", out / "ckpt_gen")
    if distributed.is_main():
        write_json(out / "train.json", result)
else:
    gen, disc = Path(sys.argv[5]), Path(sys.argv[6])
    harvest_negatives.run(p, proc, tok, gen, out / "neg")
    evaluate.run(p, proc, tok, gen, disc, out / "metrics.json", out / "pred.jsonl", out / "bundle")
