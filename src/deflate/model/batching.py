"""Examples -> padded tensors. Dynamic padding and length-bucketed batches keep CPU training cheap.
:func:`infer` is the one inference loop: every answering, scoring and baseline path runs through it.

An example's encoder sequence is ``text ids [+ <IMG> + m placeholders]``; the placeholders are
filled with image embeddings by :class:`deflate.model.mul_t5.MultimodalEmbedding`. A product without a
usable image (or any product when ``use_image`` is off) gets no ``<IMG>`` and no image tokens.
"""
from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from deflate.infra import distributed as dist


@dataclass
class Example:
    ids: list[int]                       # question (generator) or claim (discriminator) token ids
    row: int                             # row of the product in its split's image arrays
    _: KW_ONLY                           # the rest by name: Example(ids, row, target=..., key=...)
    target: list[int] | float | None = None
    key: Any = None                      # the deflate.model.questions.Question it asks or claims (None: baselines)
    value_from: int = -1                 # a claim's first value token in ``ids`` (-1: no value in it)
    states: Any = None                   # a pretrained encoder's states under the tokens (deflate.model.encoder_states.TokenStates)


class Batcher:
    def __init__(self, image: np.ndarray | None, has_image: np.ndarray | None, use_image: bool, img_id: int,
                 together: bool = False):
        """``together``: shuffled batches keep a product's examples side by side (``model.question:
        offer``, where they share one encoder pass)."""
        self.together = together
        self.image = torch.from_numpy(image) if image is not None and use_image else None
        self.has_image = has_image if has_image is not None else None
        self.use_image, self.img_id = use_image and image is not None, img_id
        self.m = int(image.shape[1]) if image is not None else 0

    def _with_image(self, ex: Example) -> bool:
        return self.use_image and ex.row >= 0 and bool(self.has_image[ex.row])

    def length(self, ex: Example) -> int:
        return len(ex.ids) + (1 + self.m if self._with_image(ex) else 0)

    def collate(self, exs: list[Example], pad_to: int = 0, pad_target_to: int = 0) -> dict:
        """``pad_to``/``pad_target_to`` > 0 give fixed-length padding (the naive loop, for benchmarks)."""
        T = max(pad_to, max(self.length(e) for e in exs))
        B = len(exs)
        ids = torch.zeros(B, T, dtype=torch.long)
        mask = torch.zeros(B, T, dtype=torch.long)
        img_start = torch.full((B,), -1, dtype=torch.long)
        for b, e in enumerate(exs):
            n = len(e.ids)
            ids[b, :n] = torch.tensor(e.ids)
            if self._with_image(e):
                ids[b, n] = self.img_id
                img_start[b] = n + 1
                n += 1 + self.m
            mask[b, :n] = 1
        batch = {"input_ids": ids, "attention_mask": mask}
        if any(e.value_from >= 0 for e in exs):  # the claimed value's tokens (Discriminator.mark_value)
            marks = torch.zeros(B, T)
            for b, e in enumerate(exs):
                if e.value_from >= 0:
                    marks[b, e.value_from:len(e.ids)] = 1.0
            batch["value_mask"] = marks
        if exs[0].states is not None:  # model.encoder_states: (B, T, dim), zeros past each row's tokens
            pooled = [e.states.pooled() for e in exs]
            states = torch.zeros(B, T, pooled[0].shape[1])
            for b, x in enumerate(pooled):
                states[b, :len(x)] = torch.from_numpy(x)
            batch["encoder_states"] = states
        if self.use_image:
            rows = torch.tensor([max(e.row, 0) for e in exs])
            batch["img_start"], batch["image"] = img_start, self.image[rows]
        if isinstance(exs[0].target, list):
            batch["labels"] = self.labels([e.target for e in exs], pad_target_to)
        elif isinstance(exs[0].target, float):
            batch["labels"] = torch.tensor([e.target for e in exs], dtype=torch.float)
        return batch

    @staticmethod
    def labels(targets: list[list[int]], pad_to: int = 0) -> torch.Tensor:
        """Decoder targets as one (B, U) tensor, -100 after each row's end (what the loss skips)."""
        U = max(pad_to, max(len(t) for t in targets))
        labels = torch.full((len(targets), U), -100, dtype=torch.long)
        for b, t in enumerate(targets):
            labels[b, : len(t)] = torch.tensor(t)
        return labels

    def batches(self, exs: list[Example], batch_size: int, shuffle: bool = False, bucket: bool = True,
                seed: int = 0) -> list[list[int]]:
        """Index lists. With ``bucket``, similar lengths share a batch (sorted within chunks of 50
        batches, batch order shuffled), so little compute goes to padding. A product's questions
        have one length in the offer layout, so the stable sort keeps them side by side."""
        idx = np.arange(len(exs))
        rng = np.random.default_rng(seed)
        if shuffle and self.together:  # products in random order, each one's examples in a run
            _, group = np.unique(np.array([e.row for e in exs]), return_inverse=True)
            place = rng.permutation(int(group.max()) + 1) if len(exs) else group
            idx = np.argsort(place[group], kind="stable")
        elif shuffle:
            rng.shuffle(idx)
        if bucket:
            chunk = batch_size * 50
            lens = np.array([self.length(e) for e in exs])
            idx = np.concatenate([c[np.argsort(lens[c], kind="stable")] for c in np.array_split(idx, max(1, -(-len(idx) // chunk)))]) if len(idx) else idx
        out = [idx[i:i + batch_size].tolist() for i in range(0, len(idx), batch_size)]
        if bucket and shuffle:
            rng.shuffle(out)
        return out


def to_device(batch: dict, device: str) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def infer(model: torch.nn.Module, batcher: Batcher, examples: list[Example], batch_size: int,
          step: Callable[[list[int], dict], Sequence], device: str = "cpu", desc: str = "infer",
          progress: bool = True) -> list:
    """The one inference loop. ``model`` in eval mode on ``device``; ``examples`` in length-bucketed
    batches, this process's share of them (:func:`deflate.infra.distributed.share`);
    ``step(idx, batch)`` gets a batch's example indices and its tensors and returns one result per
    index. Returns the results in input order, on every process (:func:`distributed.complete`)."""
    model.eval().to(device)
    out: list = [None] * len(examples)
    order = batcher.batches(examples, batch_size, shuffle=False, bucket=True)
    with torch.no_grad():
        for idx in dist.progress(order, desc, progress):
            for i, result in zip(idx, step(idx, to_device(batcher.collate([examples[i] for i in idx]), device)),
                                 strict=True):
                out[i] = result
    return dist.complete(out, order)
