"""`deflate predict` throughput: (product, attribute) queries per second on CPU, batched,
including picture decoding and tokenization, with the default-size trained model.

Needs a trained model (dvc repro). Usage:
    python benchmarks/bench_predict.py [--products 200] [--batch-size 256]
"""
import argparse
import json
import time
from pathlib import Path

import torch

from deflate.data import load_split
from deflate.predict import Predictor


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--products", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    recs = load_split(Path("data/processed"), "test")[: args.products]
    rows = [{"id": r.id, "name": r.name, "description": r.description, "image": r.image} for r in recs]
    pred = Predictor(Path("models/generator"), Path("models/discriminator"), 0.5,
                     decode={"num_beams": 1, "max_new_tokens": 12, "batch_size": args.batch_size})
    pred.predict(rows[:8], progress=False)  # warm-up
    t = time.perf_counter()
    out = pred.predict(rows, progress=False)
    dt = time.perf_counter() - t
    queries = len(rows) * len(pred.known)
    print(json.dumps({"products": len(rows), "attributes": len(pred.known), "queries": queries,
                      "seconds": round(dt, 2), "queries_per_s": round(queries / dt, 1),
                      "kept_values": sum(len(r["predictions"]) for r in out),
                      "batch_size": args.batch_size, "threads": args.threads}, indent=1))


if __name__ == "__main__":
    main()
