"""Training throughput and peak memory of a T5-base-size Mul-T5 generator from scratch (issue #18),
through the project's own batching and training step (``deflate.model.train.step``: forward, backward;
then gradient clipping and Adamax as in ``fit``), under bf16 autocast on a GPU.

Two shapes: the paper's input (60 question tokens + <IMG> + 1024 DALL-E tokens, vocabulary 8192,
batch 8) and a text-only one (64 tokens, batch 32). Prints and writes JSON.

Usage: python benchmarks/gpu_throughput.py [--out FILE] [--steps 20] [--device cuda]"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from deflate.infra import distributed as dist
from deflate.model.batching import Batcher, Example
from deflate.model.mul_t5 import build_generator
from deflate.model.train import make_optimizer, step

BASE = {"pretrained_path": "", "copy": False, "token_shapes": False, "question": "attribute", "d_model": 768, "d_ff": 3072, "d_kv": 64, "num_heads": 12, "num_layers": 12,
        "num_decoder_layers": 12, "dropout": 0.1}  # T5-base / T5-pegasus-base sizes


class Vocab:  # what build_generator reads of a tokenizer: its size and special ids
    def __init__(self, n: int):
        self.n, self.pad_token_id, self.eos_token_id = n, 0, 1

    def __len__(self):
        return self.n


TINY = {**BASE, "d_model": 32, "d_ff": 64, "d_kv": 8, "num_heads": 2, "num_layers": 1, "num_decoder_layers": 1}


def measure(device: str, batch: int, text_len: int, image_len: int, steps: int, warmup: int = 3,
            sizes: dict = BASE) -> dict:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    n_img = image_len and 8192
    gen = build_generator(sizes, Vocab(32128), n_img, 0).to(device)
    opt = make_optimizer(gen, {"optimizer": "adamax", "lr": 2e-3, "weight_decay": 1e-4})
    rows = batch * (steps + warmup)
    image = rng.integers(0, 8192, (rows, image_len), dtype=np.int64) if image_len else None
    img_id = 32127
    batcher = Batcher(image, np.ones(rows, bool) if image_len else None, bool(image_len), img_id)
    exs = [Example(rng.integers(2, 32000, text_len).tolist(), i, target=rng.integers(2, 32000, 8).tolist() + [1])
           for i in range(rows)]
    amp = dist.autocast("auto", device)
    torch.cuda.reset_peak_memory_stats() if device.startswith("cuda") else None
    t0 = 0.0
    for s in range(steps + warmup):
        if s == warmup:
            torch.cuda.synchronize() if device.startswith("cuda") else None
            t0 = time.perf_counter()
        idx = list(range(s * batch, (s + 1) * batch))
        opt.zero_grad(set_to_none=True)
        step(gen, lambda m, b: m(b).loss, batcher, exs, idx, device, amp, 1, 1)
        torch.nn.utils.clip_grad_norm_(gen.parameters(), 1.0)
        opt.step()
    torch.cuda.synchronize() if device.startswith("cuda") else None
    dt = time.perf_counter() - t0
    return {"batch": batch, "encoder_tokens": text_len + (1 + image_len if image_len else 0), "steps": steps,
            "examples_per_s": round(batch * steps / dt, 1), "step_ms": round(1000 * dt / steps, 1),
            "params_m": round(sum(p.numel() for p in gen.parameters()) / 1e6, 1),
            "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.startswith("cuda")
            else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tiny", action="store_true", help="a 2-layer model: a smoke test of this script on a CPU")
    a = ap.parse_args()
    sizes = TINY if a.tiny else BASE
    res = {"device": a.device, "gpu": torch.cuda.get_device_name() if a.device.startswith("cuda") else None,
           "precision": "bf16 autocast" if a.device.startswith("cuda") else "fp32",
           "sizes": sizes, "paper_input": measure(a.device, 8, 60, 1024, a.steps, sizes=sizes),
           "text_only": measure(a.device, 32, 64, 0, a.steps, sizes=sizes)}
    print(json.dumps(res, indent=1))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
