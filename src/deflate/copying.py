"""A data-free copy warm-up for a generator trained from scratch (``generator.copy_warmup``).

Extraction asks the generator to copy tokens it has never seen out of a long question. A
from-scratch T5 does not learn that from 100-token inputs in thousands of steps; in 20-token inputs
it does, suddenly, and then carries it over to long inputs (benchmarks/copy_learning.py,
docs/wdc_pave.md). So before its real training the generator answers a synthetic task: random token
ids with one marker, answer the ``ANSWER`` tokens after it; two thirds of the steps on short inputs,
the rest on long ones. A pretrained T5 (``model.pretrained_path``) can already copy and skips it.
"""
from __future__ import annotations

import torch
from tqdm import tqdm

from . import distributed as dist

MARKER, ANSWER, FIRST_ID = 4, 3, 5  # <CLS> marks; ids below 5 are the special tokens
SHORT, LONG = 20, 100


def copy_batch(g: torch.Generator, n: int, length: int, vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random inputs of ``length`` ids with a marker, and their answers (+ </s>)."""
    x = torch.randint(FIRST_ID, vocab, (n, length), generator=g)
    pos = torch.randint(0, length - ANSWER - 1, (n,), generator=g)
    x[torch.arange(n), pos] = MARKER
    y = torch.stack([x[i, pos[i] + 1:pos[i] + 1 + ANSWER] for i in range(n)])
    return x, torch.cat([y, torch.ones(n, 1, dtype=torch.long)], 1)


def warm_up(t5, steps: int, cfg: dict, seed: int, device: str = "cpu") -> float:
    """``steps`` optimiser steps of the copy task on ``t5`` (its own Adamax, ``cfg``'s lr, batch and
    clipping); returns the last loss. Every process draws the same batches, so under several
    processes the weights stay the same without any communication."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adamax(t5.parameters(), lr=cfg["lr"], betas=(0.9, 0.999), weight_decay=cfg["weight_decay"])
    t5.to(device).train()
    loss = torch.tensor(float("nan"))
    bar = tqdm(range(steps), desc="copy warm-up", unit="step", mininterval=2.0, disable=not dist.is_main())
    for step in bar:
        x, y = copy_batch(g, cfg["batch_size"], SHORT if step < 2 * steps // 3 else LONG, t5.config.vocab_size)
        loss = t5(input_ids=x.to(device), labels=y.to(device)).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(t5.parameters(), cfg["grad_clip"])
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    return float(loss.item())
