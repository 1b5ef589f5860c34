"""Generator training throughput: length-bucketed dynamic padding vs a naive loop
(fixed max-length padding, no bucketing), same model, same examples, one run.

Needs the default pipeline's data (dvc repro image_tokens). Usage:
    python benchmarks/bench_training.py [--examples 1600] [--repeats 2]
"""
import argparse
import json
import time
from pathlib import Path

import torch

from deflate.data.splits import image_spec, load_data
from deflate.infra.config import load_params
from deflate.infra.runtime import seed_everything
from deflate.model.batching import Batcher
from deflate.model.mul_t5 import build_generator
from deflate.model.questions import qa_examples
from deflate.model.tokenizer import QuestionBuilder, corpus, train_tokenizer
from deflate.model.train import make_optimizer


def run(gen, opt, batcher, ex, order, pad_to=0, pad_target_to=0):
    gen.train()
    t = time.perf_counter()
    for idx in order:
        batch = batcher.collate([ex[i] for i in idx], pad_to, pad_target_to)
        loss = gen(batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return len(ex) / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--examples", type=int, default=1600)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    p = load_params()
    seed_everything(p["seed"])
    torch.set_num_threads(p["model"]["num_threads"])
    proc, toks = Path("data/processed"), Path("data/tokens")
    schema = json.loads((proc / "schema.json").read_text())
    data = load_data(proc, toks, "train")
    tok = train_tokenizer(corpus(data.records, schema), p["text"]["vocab_size"])
    qb = QuestionBuilder(tok, schema["language"], p["text"]["max_len"], p["text"]["max_value_len"])
    ex = qa_examples(data.records, qb, schema, "、")[: args.examples]
    b = Batcher(data.image, data.has_image, True, qb.img_id)
    bs = p["generator"]["batch_size"]
    fixed = p["text"]["max_len"] + 1 + b.m
    res = {"examples": len(ex), "batch_size": bs, "fixed_len": fixed, "bucketed": [], "naive": []}
    for r in range(args.repeats):  # interleaved so both see the same machine state
        for mode in ("naive", "bucketed"):
            torch.manual_seed(0)
            gen = build_generator(p["model"], tok, *image_spec(data.meta))
            opt = make_optimizer(gen, p["generator"])
            if mode == "naive":
                order = b.batches(ex, bs, shuffle=True, bucket=False, seed=r)
                res[mode].append(run(gen, opt, b, ex, order, fixed, p["text"]["max_value_len"] + 1))
            else:
                order = b.batches(ex, bs, shuffle=True, bucket=True, seed=r)
                res[mode].append(run(gen, opt, b, ex, order))
    lens = [b.length(e) for e in ex]
    res["mean_len"] = sum(lens) / len(lens)
    res["naive_ex_per_s"] = round(max(res.pop("naive")), 1)
    res["bucketed_ex_per_s"] = round(max(res.pop("bucketed")), 1)
    res["speedup"] = round(res["bucketed_ex_per_s"] / res["naive_ex_per_s"], 2)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
