"""What the question layout (``model.question``) costs on WDC-PAVE's questions, both layouts in one
run: training examples/s of the generator (forward, backward, optimizer step, length-bucketed
shuffled batches, as ``fit`` draws them) and answering questions/s (greedy decoding inside the span
trie, as the pipeline answers). The pipeline's model (pointer-generator, its sizes); untrained
weights: speed does not depend on them. Train and val questions only (the dev folder of wdc_dev.py).

    python benchmarks/question_layout_cost.py [--examples 2000] [--repeats 2] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from deflate.answering.decoding import generate_values
from deflate.data.records import load_split
from deflate.data.splits import value_sep
from deflate.infra import kernels
from deflate.model.batching import Batcher
from deflate.model.mul_t5 import build_generator
from deflate.model.questions import qa_examples
from deflate.model.tokenizer import QuestionBuilder, corpus, train_tokenizer
from deflate.model.train import make_optimizer

sys.path.insert(0, str(Path(__file__).parent))
import bench_training  # noqa: E402
from wdc_dev import dev_folder, params_with  # noqa: E402

LAYOUTS = ("attribute", "offer")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--examples", type=int, default=2000, help="training questions timed (a prefix of train's, whole products)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--work", type=Path, default=Path("/tmp/wdc_dev"))
    ap.add_argument("--sets", action="append", default=[], help="key.path=value, as wdc_generator_dev.py's -S")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "question_layout_cost.json")
    args = ap.parse_args()
    p = params_with(args.sets)
    kernels.pin(p["repro"]["kernels"], p["repro"]["num_threads"])  # the pipeline's numbers (may restart)
    dev = dev_folder(p, args.work)
    schema = json.loads((dev / "schema.json").read_text())
    train, val = load_split(dev, "train"), load_split(dev, "val")
    t, sep = p["text"], value_sep("en")
    tok = train_tokenizer(corpus(train, schema), t["vocab_size"])
    rates: dict[str, dict[str, list[float]]] = {a: {"train": [], "answer": []} for a in LAYOUTS}
    sizes = {}
    for r in range(args.repeats):  # interleaved, so both layouts see the same machine state
        for layout in LAYOUTS:
            qb = QuestionBuilder(tok, "en", t["max_len"], t["max_value_len"], t["target_form"], t["answer_prefix"], layout)
            ex = qa_examples(train, qb, schema, sep)[: args.examples]
            val_ex = qa_examples(val, qb, schema, sep)[: args.examples // 2]
            sizes = {"train_questions": len(ex), "train_products": len({e.row for e in ex}),
                     "answer_questions": len(val_ex), "answer_products": len({e.row for e in val_ex})}
            torch.manual_seed(0)
            gen = build_generator(dict(p["model"], question=layout), tok, 0, 0)
            b = Batcher(None, None, False, qb.img_id, together=layout == "offer")
            order = b.batches(ex, p["generator"]["batch_size"], shuffle=True, bucket=True, seed=r)
            rates[layout]["train"].append(bench_training.run(gen, make_optimizer(gen, p["generator"]), b, ex, order))
            t0 = time.perf_counter()
            generate_values(gen, qb, b, val_ex, p["decode"], progress=False, spans=True)
            rates[layout]["answer"].append(len(val_ex) / (time.perf_counter() - t0))
    res = {**sizes, "threads": p["repro"]["num_threads"], "kernels": kernels.describe()["kernels"],
           "sets": args.sets, "cpu": next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                                           if line.startswith("model name")), ""),
           **{f"{layout}_{k}_per_s": round(max(v), 1) for layout, d in rates.items() for k, v in d.items()}}
    res["offer_train_speedup"] = round(res["offer_train_per_s"] / res["attribute_train_per_s"], 2)
    res["offer_answer_speedup"] = round(res["offer_answer_per_s"] / res["attribute_answer_per_s"], 2)
    args.out.write_text(json.dumps(res, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
