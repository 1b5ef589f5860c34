"""The pretrained encoder's pass over product texts (``model.encoder_states``): texts per second read
one at a time (what :class:`EncoderStates` does, so a product's states never depend on which others
are read with it), against batches of texts with the same number of word pieces (no padding), and
whether those batches give the same float16 states, bit for bit.

    python benchmarks/encoder_pass.py --checkpoint DIR [--pipeline pipelines/implicitave] [--texts 1000]
"""
from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from deflate.data.records import load_split
from deflate.infra import kernels
from deflate.infra.config import load_params
from deflate.infra.files import read_json
from deflate.model.encoder_states import EncoderStates
from deflate.model.tokenizer import QuestionBuilder, load_tokenizer


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--pipeline", type=Path, default=Path("pipelines/implicitave"))
    ap.add_argument("--texts", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    p = load_params(args.pipeline / "params.yaml")
    kernels.pin(p["repro"]["kernels"], p["repro"]["num_threads"])
    gen = args.pipeline / "models" / "generator"  # its builder makes the texts the encoder reads
    qb = QuestionBuilder.from_meta(load_tokenizer(gen / "tokenizer"), read_json(gen / "deflate.json"))
    every = list(dict.fromkeys(qb.offer_text(r.name, r.description)
                               for r in load_split(args.pipeline / "data" / "processed", "train")))
    texts = [every[i] for i in np.random.default_rng(0).permutation(len(every))[: args.texts]]
    enc = EncoderStates(args.checkpoint)
    t0 = time.perf_counter()
    single = [enc.text_states(t)[0] for t in texts]
    one = time.perf_counter() - t0
    by_len = defaultdict(list)
    for t in texts:
        by_len[len(enc.tok(t, truncation=True, max_length=enc.max_pieces)["input_ids"])].append(t)
    t0 = time.perf_counter()
    batched = {}
    with torch.no_grad():
        for group in by_len.values():
            for i in range(0, len(group), args.batch):
                chunk = group[i:i + args.batch]
                e = enc.tok(chunk, truncation=True, max_length=enc.max_pieces, return_tensors="pt",
                            return_offsets_mapping=True)
                offsets = e.pop("offset_mapping")
                states = enc.bert(**e).last_hidden_state
                for k, t in enumerate(chunk):
                    keep = [j for j, (a, b) in enumerate(offsets[k].tolist()) if b > a]
                    batched[t] = states[k, keep].to(torch.float16).numpy()
    many = time.perf_counter() - t0
    same = sum(np.array_equal(s, batched[t]) for s, t in zip(single, texts))
    worst = max(float(np.abs(s.astype(np.float32) - batched[t].astype(np.float32)).max()) for s, t in zip(single, texts))
    res = {"texts": len(texts), "one_at_a_time_per_s": round(len(texts) / one, 1),
           "same_length_batches_per_s": round(len(texts) / many, 1), "batch": args.batch,
           "bitwise_equal": same, "max_abs_diff": worst, "threads": torch.get_num_threads(),
           "all_train_texts": len(every)}
    print(json.dumps(res))
    if args.out:
        args.out.write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
