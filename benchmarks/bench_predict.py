"""`deflate predict` throughput: (product, attribute) queries per second on CPU, batched,
including picture decoding and tokenization, through the answering engine on a trained bundle.

Needs a trained model (dvc repro). Usage:
    python benchmarks/bench_predict.py [--model models/deflate] [--products 200] [--splits test]
        [--batch-size 256] [--repeats 3] [--kernels native|avx2|compatible] [--answers out.jsonl] [--prune-arms]
Prints the median of ``--repeats`` timed runs (after one warm-up). ``--kernels`` starts the process
with that setting (as ``deflate predict --kernels`` does); ``--answers`` keeps the answers, to
compare two settings' answers. ``--prune-arms``: each repeat answers the rows twice in this one
process, every question generated (``engine.prune`` off, ``deflate predict``'s default) and pruned
(``deflate predict --prune``), and says whether the two answers are identical and how many rows and
kept values differ.
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


def warm_engine(model: Path, products: int, batch_size: int, images: Path,
                splits: tuple[str, ...] = ("test",)) -> tuple[Deflate, list[dict]]:
    """The bundle loaded with ``batch_size`` questions (and claims) per batch, the first ``products``
    products of ``splits`` as predict rows, and one small warm-up answer."""
    recs = [r for s in splits for r in load_split(Path("data/processed"), s)][:products]
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
    ap.add_argument("--splits", nargs="+", default=["test"], help="the splits whose products are asked")
    ap.add_argument("--prune-arms", action="store_true", help="time every-question and pruned answering "
                    "alternately in this process, and compare their answers")
    ap.add_argument("--images", type=Path, default=Path("."),
                    help="the allowed image folder (the records' image paths are relative to the repo root)")
    args = ap.parse_args()
    if args.kernels:
        kernels.pin(args.kernels, args.threads)  # may start this script again in its place
    torch.set_num_threads(args.threads)
    engine, rows = warm_engine(args.model, args.products, args.batch_size, args.images, tuple(args.splits))
    arms = {"every_question": False, "pruned": True} if args.prune_arms else {"default": engine.prune}
    times: dict[str, list[float]] = {a: [] for a in arms}
    outs: dict[str, list[dict]] = {}
    for _ in range(args.repeats):
        for arm, prune in arms.items():  # alternating: both arms see the same machine state
            engine.prune = prune
            t = time.perf_counter()
            outs[arm] = engine.answer_rows(rows, args.images, progress=False)
            times[arm].append(time.perf_counter() - t)
    queries = len(rows) * len(engine.attributes)
    res = {"products": len(rows), "splits": args.splits, "attributes": len(engine.attributes), "queries": queries,
           "mode": engine.decisions.mode, "batch_size": args.batch_size, "threads": args.threads,
           "kernels": kernels.describe(), "arms": {}}
    for arm in arms:
        dt = statistics.median(times[arm])
        out = outs[arm]
        res["arms"][arm] = {"seconds_median": round(dt, 2), "seconds": [round(x, 2) for x in times[arm]],
                            "queries_per_s": round(queries / dt, 1),
                            "kept_values": sum(len(r["predictions"]) for r in out),
                            "rows_with_errors": sum(bool(r["errors"]) for r in out)}
    if args.prune_arms:
        a, b = outs["every_question"], outs["pruned"]
        res["identical_answers"] = a == b
        res["rows_differing"] = sum(x != y for x, y in zip(a, b))
        values = lambda r: ([(p["attribute"], p["value"]) for p in r["predictions"]],  # noqa: E731
                            [(w["attribute"], w["value"]) for w in r.get("withheld", [])])
        res["rows_with_other_values"] = sum(values(x) != values(y) for x, y in zip(a, b))
        res["speedup"] = round(res["arms"]["pruned"]["queries_per_s"] / res["arms"]["every_question"]["queries_per_s"], 3)
    if args.answers:
        last = outs[list(arms)[-1]]
        args.answers.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in last), encoding="utf-8")
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
