"""Batched inference: generate a value per question, optionally constrained to a candidate trie,
and score claims with the discriminator."""
from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from .batching import Batcher, Example, to_device


class Trie:
    """Token-id trie of the allowed values of one attribute (each ending in </s>)."""

    def __init__(self, sequences: list[list[int]]):
        self.root: dict = {}
        for seq in sequences:
            node = self.root
            for t in seq:
                node = node.setdefault(t, {})

    def next_tokens(self, prefix: list[int]) -> list[int]:
        node = self.root
        for t in prefix:
            node = node.get(t)
            if node is None:
                return []
        return list(node)


def build_tries(values_by_attr: dict[str, list[str]], qb) -> dict[str, Trie]:
    return {a: Trie([qb.value(v) for v in vs]) for a, vs in values_by_attr.items() if vs}


@torch.no_grad()
def generate_values(gen, qb, batcher: Batcher, examples: list[Example], decode: dict, device: str = "cpu",
                    tries: dict[str, Trie] | None = None, desc: str = "generate", progress: bool = True) -> list[str]:
    """One decoded string per example (``key[1]`` is the attribute, used by the tries)."""
    gen.eval().to(device)
    out: list[str] = [""] * len(examples)
    order = batcher.batches(examples, decode.get("batch_size", 128), shuffle=False, bucket=True)
    eos, pad = qb.eos_id, qb.tok.pad_token_id
    for idx in tqdm(order, desc=desc, unit="batch", disable=not progress, mininterval=2.0):
        batch = to_device(batcher.collate([examples[i] for i in idx]), device)
        kw = {"max_new_tokens": decode.get("max_new_tokens", 12), "num_beams": decode.get("num_beams", 1),
              "do_sample": False}
        if tries:
            attrs = [examples[i].key[1] for i in idx]

            def allowed(batch_id, sent, attrs=attrs):
                trie = tries.get(attrs[batch_id])
                if trie is None:
                    return list(range(len(qb.tok)))
                nxt = trie.next_tokens(sent.tolist()[1:])  # drop the decoder start token
                return nxt or [eos if eos is not None else pad]
            kw["prefix_allowed_tokens_fn"] = allowed
        seqs = gen.generate(batch, **kw)
        for i, s in zip(idx, seqs.tolist()):
            out[i] = qb.decode(s)
    return out


@torch.no_grad()
def score_claims(disc, batcher: Batcher, examples: list[Example], batch_size: int = 256, device: str = "cpu",
                 desc: str = "discriminate", progress: bool = True) -> np.ndarray:
    disc.eval().to(device)
    out = np.zeros(len(examples), dtype=np.float32)
    for idx in tqdm(batcher.batches(examples, batch_size, shuffle=False, bucket=True), desc=desc, unit="batch",
                    disable=not progress, mininterval=2.0):
        batch = to_device(batcher.collate([examples[i] for i in idx]), device)
        out[idx] = torch.sigmoid(disc(batch).float()).cpu().numpy()
    return out
