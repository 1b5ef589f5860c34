"""#36: can the discriminator read the generator's encoder states instead of running its own encoder?

`deflate predict --prune` leaves the discriminator's own encoder pass as 62% of the FLOPs per question
(docs/performance.md, "Pruning what D rules out"). The paper's discriminator shares the generator's
encoder. This probe asks, on val only, whether a head on the generator's (frozen) encoder states of
the question it is asked tells present from absent attributes as well as the committed discriminator
does, before any model change is made.

Arms, all on the default pipeline's committed models and its harvested negatives (train to fit, val
to report; the default pipeline reads no value, ``discriminator.claim_value: false``):
- ``committed``: the bundle's discriminator, its own encoder over ``<CLS> question <IMG> V``;
- ``head``: the discriminator's head architecture (Linear, Tanh, Linear) over the masked mean of the
  generator's encoder states of ``question <IMG> V``, trained on the train claims (full batch Adam,
  a fixed number of steps: nothing is chosen on val);
- ``head_first``: the same over the first position's state.
Reports val log loss, accuracy at 0.5, AP and the share of val questions the prune bound would skip.

    python benchmarks/shared_encoder_probe.py            # from the repository root, after dvc repro
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import average_precision_score

from deflate.answering.scores import claim_probs
from deflate.data.splits import load_data
from deflate.infra.files import read_jsonl
from deflate.model.batching import Batcher, infer
from deflate.model.mul_t5 import load_discriminator, load_generator
from deflate.model.questions import claim_examples, question_examples, training_claims
from deflate.model.tokenizer import QuestionBuilder


def masked_mean(h: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The mean of each row's encoder states over its unpadded positions."""
    m = attention_mask.to(h.dtype)[..., None]
    return (h * m).sum(1) / m.sum(1)


def states(gen, batcher: Batcher, examples, batch_size: int) -> dict[str, np.ndarray]:
    """Masked mean and first-position encoder states of each example's question."""
    def step(idx, batch):
        h = gen.encode(batch).last_hidden_state.float()
        mean = masked_mean(h, batch["attention_mask"])
        return [np.concatenate([a, b]) for a, b in zip(mean.numpy(), h[:, 0].numpy(), strict=True)]
    x = np.stack(infer(gen, batcher, examples, batch_size, step, progress=False))
    d = x.shape[1] // 2
    return {"head": x[:, :d], "head_first": x[:, d:]}


def fit_head(x: np.ndarray, y: np.ndarray, steps: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    d = x.shape[1]
    head = torch.nn.Sequential(torch.nn.Linear(d, d), torch.nn.Tanh(), torch.nn.Linear(d, 1))
    opt = torch.optim.Adam(head.parameters(), lr=2e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.float32))
    bce = torch.nn.BCEWithLogitsLoss()
    for _ in range(steps):
        opt.zero_grad()
        bce(head(xt).squeeze(-1), yt).backward()
        opt.step()
    return head.eval()


def report(y: np.ndarray, s: np.ndarray, bound: float) -> dict:
    ll = -np.mean(y * np.log(s + 1e-7) + (1 - y) * np.log(1 - s + 1e-7))
    return {"log_loss": round(float(ll), 4), "accuracy": round(float(np.mean((s > 0.5) == y)), 4),
            "ap": round(float(average_precision_score(y, s)), 4),
            "pruned_share": round(float(np.mean(s < bound)), 4),
            "positives_pruned": int(np.sum((s < bound) & (y == 1)))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=600, help="full-batch Adam steps for each head (fixed, not chosen)")
    ap.add_argument("--bound", type=float, default=0.391, help="D under which --prune skips a question "
                    "(the committed bundle's: threshold ** (1 / (1 - w)))")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/shared_encoder_probe.json"))
    a = ap.parse_args()
    torch.set_num_threads(2)
    processed, tokens = Path("data/processed"), Path("data/tokens")
    gen, tok, meta = load_generator(Path("models/generator"))
    disc, dmeta = load_discriminator(Path("models/discriminator"), gen)
    assert not dmeta.get("claim_value", True), "the probe is for a discriminator that reads no value"
    qb = QuestionBuilder.from_meta(tok, meta)
    result = {"steps": a.steps, "bound": a.bound}
    feats, ys = {}, {}
    for split in ("train", "val"):
        data = load_data(processed, tokens, split)
        claims, labels = training_claims(data.records, read_jsonl(Path("data/negatives") / f"{split}.jsonl"),
                                         meta["value_sep"])
        b = Batcher(data.image, data.has_image, meta["use_image"], qb.img_id)
        t0 = time.perf_counter()
        feats[split] = states(gen, b, question_examples(data.records, qb, [c.question for c in claims]), 256)
        result[f"{split}_encode_s"] = round(time.perf_counter() - t0, 2)
        ys[split] = np.array(labels)
        result[f"{split}_claims"], result[f"{split}_positive"] = len(claims), int(sum(labels))
        if split == "val":
            t0 = time.perf_counter()
            s = claim_probs(disc, b, claim_examples(data.records, qb, claims, with_value=False), 256, progress=False)
            result["val_committed_s"] = round(time.perf_counter() - t0, 2)
            result["committed"] = report(ys["val"], s, a.bound)
    for arm in ("head", "head_first"):
        head = fit_head(feats["train"][arm], ys["train"], a.steps, seed=42)
        with torch.no_grad():
            for split in ("train", "val"):
                s = torch.sigmoid(head(torch.from_numpy(feats[split][arm])).squeeze(-1)).numpy()
                result[arm if split == "val" else f"{arm}_train"] = report(ys[split], s, a.bound)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
