"""Run by tests/test_distributed.py: DEFLATE stages on a tiny world under the given params, launched
again under ``accelerate launch`` when ``distributed.processes`` > 1 (what a stage script does).

Usage: python tests/distributed_worker.py PARAMS WORLD OUT train|train_killed
       python tests/distributed_worker.py PARAMS WORLD OUT system NAME
       python tests/distributed_worker.py PARAMS WORLD OUT discriminator GENERATOR
       python tests/distributed_worker.py PARAMS WORLD OUT answer GENERATOR DISCRIMINATOR"""
import sys
from pathlib import Path

from deflate.infra import distributed
from deflate.infra.config import load_params
from deflate.infra.files import write_json
from deflate.stages import (
    evaluate,
    evaluate_candidates,
    harvest_negatives,
    train_discriminator,
    train_generator,
)

params, world, out, what = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
p = load_params(params)
distributed.relaunch(p["distributed"])
proc, tok = world / "processed", world / "tokens"
if what == "train_killed":  # killed after 2 epochs (every process), to be resumed by "train"
    import functools

    train_generator.fit = functools.partial(train_generator.fit, stop_after_epochs=2)
    try:
        train_generator.run(p, proc, tok, out / "gen", out / "ckpt_gen")
    except KeyboardInterrupt:
        sys.exit(3)
elif what == "train":
    result = train_generator.run(p, proc, tok, out / "gen", out / "ckpt_gen")
    if distributed.is_main():
        write_json(out / "train.json", result)
elif what == "system":  # one compared system end to end (experiments.run_system), e.g. a baseline
    from deflate.stages.system import run_system

    m = run_system(sys.argv[5], p, proc, tok, out / sys.argv[5])
    if distributed.is_main():
        write_json(out / f"{sys.argv[5]}.json", m)
elif what == "discriminator":  # negatives and a discriminator for GENERATOR
    gen = Path(sys.argv[5])
    harvest_negatives.run(p, proc, tok, gen, out / "neg_d")
    train_discriminator.run(p, proc, tok, gen, out / "neg_d", out / "disc", out / "ckpt_disc")
else:
    gen, disc = Path(sys.argv[5]), Path(sys.argv[6])
    harvest_negatives.run(p, proc, tok, gen, out / "neg")
    evaluate.run(p, proc, tok, gen, disc, out / "metrics.json", out / "pred.jsonl", out / "bundle")
    p["decode"]["top_k"] = 3  # closed vocabularies: candidate scores, re-ranking, the trie's top-k
    evaluate_candidates.run(p, proc, tok, gen, disc, out / "cand.json", out / "cand_attr.json", out / "cand_bundle")
