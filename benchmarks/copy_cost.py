"""What the copy path (``model.copy``, a pointer-generator) costs on WDC-PAVE's questions, beside
the plain T5 of the same size, in one run: training examples/s (forward, backward, optimizer step,
length-bucketed batches) and answering questions/s (greedy decoding inside the span trie, as the
pipeline answers). Untrained weights: speed does not depend on them. Val questions only.

    python benchmarks/copy_cost.py [--examples 1600] [--repeats 2] [--work /tmp/wdc_dev]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from deflate.batching import Batcher
from deflate.data import load_split
from deflate.dataset import value_sep
from deflate.decoding import generate_values
from deflate.model import build_generator
from deflate.questions import qa_examples
from deflate.text import QuestionBuilder, corpus, train_tokenizer
from deflate.train import make_optimizer

sys.path.insert(0, str(Path(__file__).parent))
import bench_training
from wdc_dev import dev_folder, params_with


def train_rate(gen, cfg: dict, batcher: Batcher, ex, seed: int) -> float:
    order = batcher.batches(ex, cfg["batch_size"], shuffle=True, bucket=True, seed=seed)
    return bench_training.run(gen, make_optimizer(gen, cfg), batcher, ex, order)


def answer_rate(gen, qb, batcher: Batcher, ex, decode: dict) -> float:
    t = time.perf_counter()
    generate_values(gen, qb, batcher, ex, decode, progress=False, spans=True)
    return len(ex) / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--examples", type=int, default=1600)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--work", type=Path, default=Path("/tmp/wdc_dev"))
    args = ap.parse_args()
    p = params_with([])
    torch.set_num_threads(p["model"]["num_threads"])
    dev = dev_folder(p, args.work)
    schema = json.loads((dev / "schema.json").read_text())
    train, val = load_split(dev, "train"), load_split(dev, "val")
    t = p["text"]
    tok = train_tokenizer(corpus(train, schema), t["vocab_size"])
    qb = QuestionBuilder(tok, "en", t["max_len"], t["max_value_len"], t["target_form"], t["answer_prefix"])
    sep = value_sep("en")
    ex = qa_examples(train, qb, schema, sep)[: args.examples]
    val_ex = qa_examples(val, qb, schema, sep)[: args.examples // 2]
    b = Batcher(None, None, False, qb.img_id)
    rates: dict[str, dict[str, list[float]]] = {a: {"train": [], "answer": []} for a in ("plain", "copy")}
    for r in range(args.repeats):  # interleaved, so both arms see the same machine state
        for arm in ("plain", "copy"):
            torch.manual_seed(0)
            gen = build_generator(dict(p["model"], copy=arm == "copy"), tok, 0, 0)
            rates[arm]["train"].append(train_rate(gen, p["generator"], b, ex, r))
            rates[arm]["answer"].append(answer_rate(gen, qb, b, val_ex, p["decode"]))
    res = {"train_examples": len(ex), "answer_questions": len(val_ex), "threads": p["model"]["num_threads"],
           **{f"{arm}_{k}_per_s": round(max(v), 1) for arm, d in rates.items() for k, v in d.items()}}
    res["copy_train_cost"] = round(res["plain_train_per_s"] / res["copy_train_per_s"], 2)
    res["copy_answer_cost"] = round(res["plain_answer_per_s"] / res["copy_answer_per_s"], 2)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
