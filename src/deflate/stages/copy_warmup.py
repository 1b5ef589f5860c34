"""Stage: the generator's data-free copy warm-up (:mod:`deflate.model.copy_warmup`), run once for every system
that trains the same generator from scratch. DEFLATE and d− build the same T5 (same sizes, seed and
tokenizer), so they would repeat the same warm-up; with ``generator.copy_warmup_from`` naming this
stage's folder, :mod:`deflate.stages.train_generator` loads it instead (only where its key matches)."""
from __future__ import annotations

import time
from pathlib import Path

from deflate.data.records import load_split
from deflate.infra import distributed as dist
from deflate.infra.config import Params
from deflate.infra.files import atomic_dir, write_json
from deflate.model import copy_warmup as copying
from deflate.model.mul_t5 import build_generator
from deflate.stages.context import StageContext
from deflate.stages.train_generator import generator_tokenizer


def run(p: Params, processed: Path, out: Path) -> dict:
    ctx = StageContext.open(p, "copy_warmup", processed)  # the seeds train_generator starts from
    m, g = p["model"], p["generator"]
    if not g["copy_warmup"] or m["pretrained_path"]:  # nothing to share: the folder says so
        if dist.is_main():
            with atomic_dir(out) as tmp:
                write_json(tmp / copying.META, {"key": None, "reason": "no copy warm-up in params"})
        dist.barrier()
        return {"steps": 0}
    tok = generator_tokenizer(p, load_split(processed, "train"), ctx.schema)
    gen = build_generator(m, tok, 0, 0)  # image embeddings come after the T5: its weights are the same
    plan = copying.schedule(g["copy_warmup"])
    key = copying.warm_key(gen.t5, plan, g, p["seed"])
    t0 = time.perf_counter()
    last = copying.warm_up(gen.t5, plan, g, p["seed"], ctx.device)
    if dist.is_main():
        copying.save_warm(gen.t5.cpu(), out, key, last)
    dist.barrier()
    print(f"[copy_warmup] {g['copy_warmup']} steps in {time.perf_counter() - t0:.0f}s, last loss {last:.3f}")
    return {"steps": g["copy_warmup"], "last_loss": round(last, 4)}
