"""#36: one encoder for the generator and the discriminator, trained for both (the paper's Fig. 2).

`benchmarks/shared_encoder_probe.py` found that a head on the generator's *frozen* encoder states
tells val's present from absent attributes far worse than the committed discriminator (AP 0.77
against 0.98). This probe trains the encoder for both jobs: from the committed default generator, a
presence head (Linear, Tanh, Linear over the masked mean of the encoder's states of the generator's
own question) and the generator are fine-tuned together. Each step adds the head's cross-entropy on
a batch of the discriminator's training claims (true pairs and the harvested absent attributes) to
the generator's loss on a batch of its own training questions. If both hold on val, one encoder pass
per question can serve both at answer time (docs/performance.md, "Pruning what D rules out").

Fixed before the run (nothing chosen on val): Adamax, lr 5e-4, batch 32, ``--epochs`` passes over
the claims (2), the generator's batches drawn in turn. Val: the head's AP, log loss and accuracy on
val's 1,800 claims against the committed discriminator, and the generator's exact answers on its own
val questions (the training stage's model-selection score) before and after.

    python benchmarks/joint_encoder_probe.py            # from the repository root, after dvc repro
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from deflate.answering.decoding import generate_values
from deflate.data.splits import load_data, load_schema
from deflate.infra.config import load_params
from deflate.infra.files import read_jsonl
from deflate.model.batching import Batcher, infer
from deflate.model.mul_t5 import load_generator
from deflate.model.questions import qa_examples, question_examples, training_claims
from deflate.model.tokenizer import QuestionBuilder

sys.path.insert(0, str(Path(__file__).parent))
from shared_encoder_probe import masked_mean, report  # noqa: E402


def pooled(gen, batch) -> torch.Tensor:
    return masked_mean(gen.encode(batch).last_hidden_state, batch["attention_mask"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--bound", type=float, default=0.391)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/joint_encoder_probe.json"))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    p = load_params("params.yaml")
    processed, tokens = Path("data/processed"), Path("data/tokens")
    gen, tok, meta = load_generator(Path("models/generator"))
    qb = QuestionBuilder.from_meta(tok, meta)
    schema, sep, seed = load_schema(processed), meta["value_sep"], p["seed"]
    train, val = load_data(processed, tokens, "train"), load_data(processed, tokens, "val")
    tr_b = Batcher(train.image, train.has_image, meta["use_image"], qb.img_id)
    va_b = Batcher(val.image, val.has_image, meta["use_image"], qb.img_id)
    gen_ex = qa_examples(train.records, qb, schema, sep, 0, seed)
    val_ex = qa_examples(val.records, qb, schema, sep, 0, seed + 1)[: p["generator"]["val_max"]]
    targets = [qb.answer(e.target, e.key.attribute) for e in val_ex]

    def claims(data, split):
        cs, labels = training_claims(data.records, read_jsonl(Path("data/negatives") / f"{split}.jsonl"), sep)
        return [replace(e, target=float(y)) for e, y in
                zip(question_examples(data.records, qb, [c.question for c in cs]), labels, strict=True)]
    claim_ex, val_claims = claims(train, "train"), claims(val, "val")
    y_val = np.array([e.target for e in val_claims])

    def gen_score() -> float:
        got = generate_values(gen, qb, va_b, val_ex, p["decode"], progress=False,
                              spans=p["decode"]["constrain_to_spans"])
        return round(float(np.mean([x == y for x, y in zip(got, targets, strict=True)])), 4)

    def head_scores(head) -> np.ndarray:
        def step(idx, batch):
            return torch.sigmoid(head(pooled(gen, batch)).squeeze(-1)).tolist()
        return np.asarray(infer(gen, va_b, val_claims, 256, step, progress=False))

    result = {"epochs": a.epochs, "lr": a.lr, "claims": len(claim_ex), "generator_examples": len(gen_ex),
              "generator_val_before": gen_score()}
    torch.manual_seed(seed)
    d = gen.embed.text.embedding_dim
    head = torch.nn.Sequential(torch.nn.Linear(d, d), torch.nn.Tanh(), torch.nn.Linear(d, 1))
    opt = torch.optim.Adamax(list(gen.parameters()) + list(head.parameters()), lr=a.lr, betas=(0.9, 0.999),
                             weight_decay=1e-4)
    bce = torch.nn.BCEWithLogitsLoss()
    history = []
    t0 = time.perf_counter()
    for epoch in range(a.epochs):
        gen.train()
        head.train()
        gen_batches = itertools.cycle(tr_b.batches(gen_ex, 32, shuffle=True, seed=seed + 100 + epoch))
        for idx in tr_b.batches(claim_ex, 32, shuffle=True, seed=seed + epoch):
            cb = tr_b.collate([claim_ex[i] for i in idx])
            gb = tr_b.collate([gen_ex[i] for i in next(gen_batches)])
            loss = bce(head(pooled(gen, cb)).squeeze(-1), cb["labels"]) + gen(gb).loss
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(list(gen.parameters()) + list(head.parameters()), 1.0)
            opt.step()
        gen.eval()
        head.eval()
        s = head_scores(head)
        history.append({"epoch": epoch + 1, "head": report(y_val, s, a.bound), "generator_val": gen_score(),
                        "seconds": round(time.perf_counter() - t0, 1)})
        print(history[-1], flush=True)
    result["history"] = history
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
