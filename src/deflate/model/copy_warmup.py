"""A data-free copy warm-up for a generator trained from scratch (``generator.copy_warmup``).

Extraction asks the generator to copy tokens it has never seen out of a long question. A
from-scratch T5 does not learn that from 100-token inputs in thousands of steps; in 20-token inputs
it does, suddenly, and then carries it over to long inputs (8b7e16c:benchmarks/copy_learning.py,
docs/wdc_pave.md). So before its real training the generator answers a synthetic task: random token
ids with one marker, answer the ``ANSWER`` tokens after it; two thirds of the steps on short inputs,
the rest on long ones. A pretrained T5 (``model.pretrained_path``) can already copy and skips it.

The task needs no data, so every system that trains the same generator from scratch (DEFLATE and
d−: same size, seed and tokenizer) would repeat the same warm-up. A pipeline can run it once
(``deflate.stages.copy_warmup``) and name the folder in ``generator.copy_warmup_from``; a system
loads it only where its :func:`warm_key` (settings *and* the digest of its freshly built weights)
is the saved one, and otherwise warms up itself, so the result is the same either way.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm import tqdm

from deflate.infra import distributed as dist
from deflate.infra.files import atomic_dir, read_json, write_text
from deflate.infra.weights import load_weights, save_weights, unique_state
from deflate.model.train import make_optimizer

WEIGHTS, META = "t5.safetensors", "warmup.json"

MARKER, ANSWER, FIRST_ID = 4, 3, 5  # <CLS> marks; ids below 5 are the special tokens
SHORT, LONG = 20, 100


def copy_batch(g: torch.Generator, n: int, length: int, vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random inputs of ``length`` ids with a marker, and their answers (+ </s>)."""
    x = torch.randint(FIRST_ID, vocab, (n, length), generator=g)
    pos = torch.randint(0, length - ANSWER - 1, (n,), generator=g)
    x[torch.arange(n), pos] = MARKER
    y = torch.stack([x[i, pos[i] + 1:pos[i] + 1 + ANSWER] for i in range(n)])
    return x, torch.cat([y, torch.ones(n, 1, dtype=torch.long)], 1)


def schedule(steps: int) -> list[tuple[int, int]]:
    """(input length, steps) of the warm-up: two thirds short inputs, then long ones."""
    return [(SHORT, 2 * steps // 3), (LONG, steps - 2 * steps // 3)]


def warm_up(t5, plan: list[tuple[int, int]], cfg: dict, seed: int, device: str = "cpu",
            on_step: Callable[[int, int, float], None] | None = None) -> float:
    """The copy task on ``t5`` for each (input length, steps) of ``plan``, with ``cfg``'s optimizer
    (a fresh one: the real training starts its own), lr, batch and clipping; returns the last loss.
    ``on_step(step, length, loss)`` is called after every step. Every process draws the same
    batches, so under several processes the weights stay the same without any communication."""
    g = torch.Generator().manual_seed(seed)
    opt = make_optimizer(t5, cfg)
    t5.to(device)
    loss, step = float("nan"), 0
    bar = tqdm(total=sum(n for _, n in plan), desc="copy warm-up", unit="step", mininterval=2.0,
               disable=not dist.is_main())
    for length, n in plan:
        for _ in range(n):
            t5.train()
            x, y = copy_batch(g, cfg["batch_size"], length, t5.config.vocab_size)
            out = t5(input_ids=x.to(device), labels=y.to(device)).loss
            opt.zero_grad(set_to_none=True)
            out.backward()
            torch.nn.utils.clip_grad_norm_(t5.parameters(), cfg["grad_clip"])
            opt.step()
            loss, step = float(out.item()), step + 1
            bar.update()
            bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
            if on_step is not None:
                on_step(step, length, loss)
    bar.close()
    return loss


def warm_key(t5, plan: list[tuple[int, int]], cfg: dict, seed: int) -> dict:
    """What a warm-up's result depends on: the plan, seed, optimizer settings and the exact starting
    weights (their digest: same sizes, seed and vocabulary build the same T5)."""
    h = hashlib.sha256()
    for name, t in unique_state(t5).items():
        h.update(name.encode())
        h.update(t.detach().cpu().numpy().tobytes())
    key = {"plan": [list(x) for x in plan], "seed": seed, "init_sha256": h.hexdigest(),
           "optimizer": {k: cfg[k] for k in ("optimizer", "lr", "weight_decay", "batch_size", "grad_clip")}}
    return json.loads(json.dumps(key))  # as it reads back from disk


def save_warm(t5, out: Path, key: dict, last_loss: float) -> None:
    """The warmed weights and their key, in one folder swapped in whole."""
    with atomic_dir(out) as tmp:
        save_weights(t5, tmp / WEIGHTS)
        write_text(tmp / META, json.dumps({"key": key, "last_loss": round(last_loss, 4)}, indent=1, sort_keys=True))


def load_warm(t5, folder: str | Path, key: dict) -> bool:
    """Load a saved warm-up into ``t5`` if ``folder`` holds one for exactly ``key``; False (and a
    line saying why) otherwise, and ``t5`` is left untouched."""
    if not folder:
        return False
    meta = Path(folder) / META
    if not meta.is_file():
        print(f"[copy warm-up] {folder} holds no warm-up ({META}); warming up here")
        return False
    saved = read_json(meta)
    if saved.get("key") != key:
        print(f"[copy warm-up] {folder} was made for other settings or starting weights; warming up here")
        return False
    load_weights(t5, Path(folder) / WEIGHTS)
    return True
