"""`deflate predict` throughput: (product, attribute) queries per second on CPU, batched,
including picture decoding and tokenization, through the answering engine on a trained bundle.

Needs a trained model (dvc repro). Usage:
    python benchmarks/bench_predict.py [--model models/deflate] [--products 200] [--batch-size 256] [--repeats 3]
        [--kernels native|avx2|compatible] [--answers out.jsonl]
Prints the median of ``--repeats`` timed runs (after one warm-up). ``--kernels`` starts the process
with that setting (as ``deflate predict --kernels`` does); ``--answers`` keeps the answers, to
compare two settings' answers.
"""
import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from deflate.answering.engine import Deflate
from deflate.data.records import load_split
from deflate.infra import kernels


def warm_engine(model: Path, products: int, batch_size: int, images: Path) -> tuple[Deflate, list[dict]]:
    """The bundle loaded with ``batch_size`` questions (and claims) per batch, the first ``products``
    test products as predict rows, and one small warm-up answer."""
    recs = load_split(Path("data/processed"), "test")[:products]
    rows = [{"id": r.id, "name": r.name, "description": r.description, "image": r.image} for r in recs]
    engine = Deflate.load(model)
    engine.decode["batch_size"] = engine.claim_batch_size = batch_size
    engine.answer_rows(rows[:8], images, progress=False)
    return engine, rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, default=Path("models/deflate"))
    ap.add_argument("--products", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--kernels", default=None, choices=["native", "avx2", "compatible"],
                    help="start with these kernels (default: whatever this shell gives)")
    ap.add_argument("--answers", type=Path, default=None, help="write the last run's answers here (JSONL)")
    ap.add_argument("--images", type=Path, default=Path("."),
                    help="the allowed image folder (the records' image paths are relative to the repo root)")
    args = ap.parse_args()
    if args.kernels:
        kernels.pin(args.kernels, args.threads)  # may start this script again in its place
    torch.set_num_threads(args.threads)
    engine, rows = warm_engine(args.model, args.products, args.batch_size, args.images)
    times = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        out = engine.answer_rows(rows, args.images, progress=False)
        times.append(time.perf_counter() - t)
    dt = statistics.median(times)
    if args.answers:
        args.answers.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in out), encoding="utf-8")
    queries = len(rows) * len(engine.attributes)
    print(json.dumps({"products": len(rows), "attributes": len(engine.attributes), "queries": queries,
                      "seconds_median": round(dt, 2), "seconds": [round(x, 2) for x in times],
                      "queries_per_s": round(queries / dt, 1), "kept_values": sum(len(r["predictions"]) for r in out),
                      "rows_with_errors": sum(bool(r["errors"]) for r in out),
                      "mode": engine.decisions.mode, "batch_size": args.batch_size, "threads": args.threads,
                      "kernels": kernels.describe()}, indent=1))


if __name__ == "__main__":
    main()
