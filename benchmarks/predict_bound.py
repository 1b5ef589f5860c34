"""Where `deflate predict`'s time goes and how far it is from the machine's bound (#36 item 3).

On a trained bundle and the test products (as ``bench_predict.py``), one timed ``answer_rows`` with
every part of the answering wrapped: seconds and floating-point operations (``torch``'s
``FlopCounterMode``: matmuls, attention products, convolutions) of picture decoding, greedy
generation, the discriminator's claims and the keep score's generator pass. Then the machine's
matmul rate, measured at the model's own shapes (rows x d_model x d_ff) and at a large square one,
gives the time each part would take at that rate: the physical bound the measured time compares with.

    python benchmarks/predict_bound.py [--model models/deflate] [--products 200] [--batch-size 256]
        [--kernels compatible] [--prune] [--splits test] [--out benchmarks/results/predict_bound.json]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from deflate.answering import engine as engine_module
from deflate.infra import kernels
from deflate.infra.files import write_json

sys.path.insert(0, str(Path(__file__).parent))
from bench_predict import warm_engine  # noqa: E402

PARTS = ("generate", "claim_probs", "answer_logprobs")  # Deflate methods; row_pictures is the module's


def matmul_rate(m: int, k: int, n: int, seconds: float = 2.0) -> float:
    """GFLOP/s of ``(m, k) @ (k, n)`` in float32, repeated for about ``seconds``."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    for _ in range(3):
        a @ b
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        reps += 1
    return 2 * m * k * n * reps / (time.perf_counter() - t0) / 1e9


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=Path("models/deflate"))
    ap.add_argument("--products", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--kernels", default="compatible", choices=["native", "avx2", "compatible"])
    ap.add_argument("--prune", action="store_true", help="answer as deflate predict --prune does")
    ap.add_argument("--splits", nargs="+", default=["test"], help="the splits whose products are asked")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/predict_bound.json"))
    args = ap.parse_args()
    kernels.pin(args.kernels, args.threads)
    engine, rows = warm_engine(args.model, args.products, args.batch_size, Path("."), tuple(args.splits))
    engine.prune = args.prune

    def measure(count: bool) -> tuple[float, dict[str, float], dict[str, int]]:
        """One ``answer_rows`` with each part wrapped: wall seconds, seconds per part and, with
        ``count``, FLOPs per part (counting slows the parts, so seconds come from a pass without)."""
        seconds: dict[str, float] = {}
        flops: dict[str, int] = {}

        def timed(name, f, counted: bool):
            def g(*a, **k):
                t0 = time.perf_counter()
                with (FlopCounterMode(display=False) if counted else contextlib.nullcontext()) as fc:
                    r = f(*a, **k)
                if counted:
                    flops[name] = flops.get(name, 0) + fc.get_total_flops()
                seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - t0
                return r
            return g

        pictures, scored = engine_module.row_pictures, engine_module.generate_scored
        try:
            for n in PARTS:
                setattr(engine, n, timed(n, getattr(engine, n), count))
            engine_module.row_pictures = timed("pictures", pictures, False)  # seconds only: the FLOPs are the models'
            # greedy generation with its keep score, one encoder pass per batch (the engine's path when it keeps
            # by score): a module function, not a method
            engine_module.generate_scored = timed("generate_scored", scored, count)
            t0 = time.perf_counter()
            engine.answer_rows(rows, Path("."), progress=False)
            return time.perf_counter() - t0, seconds, flops
        finally:
            engine_module.row_pictures, engine_module.generate_scored = pictures, scored
            for n in PARTS:
                delattr(engine, n)  # the class's methods again

    total_wall, wall_seconds, _ = measure(count=False)
    _, _, flops = measure(count=True)
    queries = len(rows) * len(engine.attributes)
    d = engine.gen.t5.config.d_model
    d_ff = engine.gen.t5.config.d_ff
    tokens_per_batch = args.batch_size * 90  # ~90 encoder positions per question (text + <IMG> + 64 image tokens)
    rates = {"model_shapes_ff_in": round(matmul_rate(tokens_per_batch, d, d_ff), 1),
             "model_shapes_ff_out": round(matmul_rate(tokens_per_batch, d_ff, d), 1),
             "model_shapes_attention_proj": round(matmul_rate(tokens_per_batch, d, d), 1),
             "square_2048": round(matmul_rate(2048, 2048, 2048), 1)}
    best = max(rates.values())
    parts = {}
    for n in ("pictures", "generate_scored", *PARTS):
        s, f = wall_seconds.get(n, 0.0), flops.get(n, 0)
        parts[n] = {"seconds": round(s, 3), "share": round(s / total_wall, 3), "gflop": round(f / 1e9, 2),
                    "mflop_per_query": round(f / 1e6 / queries, 2),
                    "achieved_gflop_s": round(f / 1e9 / s, 1) if s and f else None,
                    "seconds_at_best_matmul_rate": round(f / 1e9 / best, 3)}
    total_f = sum(flops.values())
    res = {"model": str(args.model), "products": len(rows), "queries": queries, "batch_size": args.batch_size,
           "threads": args.threads, "kernels": kernels.describe(), "prune": args.prune, "splits": args.splits,
           "wall_seconds": round(total_wall, 2),
           "queries_per_s": round(queries / total_wall, 1), "parts": parts,
           "other_seconds": round(total_wall - sum(wall_seconds.values()), 3),
           "mflop_per_query": round(total_f / 1e6 / queries, 2), "matmul_gflop_s": rates,
           "bound_seconds_at_best_rate": round(total_f / 1e9 / best, 3),
           "bound_queries_per_s": round(queries / (total_f / 1e9 / best), 1)}
    write_json(args.out, res, indent=1)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
