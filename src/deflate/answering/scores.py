"""Exact scores. The discriminator's probability that a claim is true (what keeps or drops an
answer), and closed-vocabulary answers (beyond the paper): when an attribute has a known candidate
list (ImplicitAVE's options, DESIRE's value vocabularies), rank every candidate by the generator's
length-normalised log-likelihood, then re-rank with the discriminator:

    score(c) = alpha * mean_logprob_gen(c | question) + (1 - alpha) * log D(<CLS> question c)

``alpha`` is picked on validation. With a lexical scorer (:mod:`deflate.answering.lexical`) its log-probability
is a third term, the three weights picked on validation the same way. Scoring all candidates exactly
is cheap here (tens per attribute) and needs no beam search; :mod:`deflate.answering.decoding` keeps the trie
for open decoding.
"""
from __future__ import annotations

import itertools

import numpy as np
import torch

from deflate.model.batching import Batcher, Example, infer


def claim_probs(disc, batcher: Batcher, examples: list[Example], batch_size: int = 256, device: str = "cpu",
                desc: str = "discriminate", progress: bool = True) -> np.ndarray:
    """P(claim is true) per claim example."""
    def step(idx, batch):
        return torch.sigmoid(disc(batch).float()).cpu().numpy()
    return np.asarray(infer(disc, batcher, examples, batch_size, step, device, desc, progress), dtype=np.float32)


def per_candidate(examples: list[Example], candidates: dict[str, list[str]]) -> list[np.ndarray]:
    """One score slot (-inf) per known value of each example's attribute."""
    return [np.full(len(candidates.get(e.key.attribute, [])), -np.inf, dtype=np.float32) for e in examples]


def mean_logprobs(gen, batcher: Batcher, examples: list[Example], batch_size: int, device: str = "cpu",
                  desc: str = "score answers", progress: bool = True, skip: list[int] | None = None) -> np.ndarray:
    """Mean token log-prob of each example's target under the generator; ``skip``: leading target
    tokens per example that are not the answer (a forced prefix), left out of the mean."""
    def step(idx, batch):
        return target_mean_logprobs(gen(batch).logits, batch["labels"], None if skip is None else [skip[i] for i in idx])
    return np.asarray(infer(gen, batcher, examples, batch_size, step, device, desc, progress), dtype=np.float32)


def target_mean_logprobs(logits: torch.Tensor, labels: torch.Tensor, skip: list[int] | None = None) -> np.ndarray:
    """Per row, the mean log-prob of its labelled target tokens (-100: padding), the first ``skip[j]``
    of row j left out (a forced prefix)."""
    mask = labels != -100
    if skip is not None:
        for j, n in enumerate(skip):
            mask[j, :n] = False
    lp = torch.log_softmax(logits.float(), -1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return ((lp * mask).sum(1) / mask.sum(1)).cpu().numpy()


def answer_logprobs(gen, qb, batcher: Batcher, examples: list[Example], batch_size: int, device: str = "cpu",
                    desc: str = "score answers", progress: bool = True) -> np.ndarray:
    """The generator's confidence in its own answers: mean token log-prob of each answer, in the
    tokens it writes (question examples built with their answers as targets; the prefix left out)."""
    skip = [len(qb.prefix(e.key.attribute)) for e in examples]
    return mean_logprobs(gen, batcher, examples, batch_size, device, desc, progress, skip)


def candidate_logprobs(gen, qb, batcher: Batcher, examples: list[Example], candidates: dict[str, list[str]],
                       batch_size: int, device: str = "cpu", progress: bool = True) -> list[np.ndarray]:
    """Per question example: mean token log-prob of each candidate of its attribute."""
    qb.refuse_prefix("candidate scoring")
    pairs, where = [], []
    for k, e in enumerate(examples):
        for j, c in enumerate(candidates.get(e.key.attribute, [])):
            # the same question, this value as answer
            pairs.append(Example(e.ids, e.row, target=qb.value(c), key=e.key))
            where.append((k, j))
    flat = mean_logprobs(gen, batcher, pairs, batch_size, device, "score candidates", progress)
    out = per_candidate(examples, candidates)
    for (k, j), s in zip(where, flat):
        out[k][j] = s
    return out


def candidate_claim_logprobs(disc, batcher: Batcher, examples: list[Example], claims: list[Example],
                             where: list[tuple[int, int]], candidates: dict, batch_size: int, device: str = "cpu",
                             progress: bool = True) -> list[np.ndarray]:
    """Per question example: log D of each candidate's claim (``claims`` at ``where`` positions,
    built by :func:`deflate.model.questions.candidate_claims`)."""
    probs = claim_probs(disc, batcher, claims, batch_size, device, desc="re-rank", progress=progress)
    out = per_candidate(examples, candidates)
    for (k, j), p in zip(where, probs):
        out[k][j] = np.log(max(float(p), 1e-7))
    return out


def fuse(sources: list[list[np.ndarray]], weights) -> list[int]:
    """Index of the best candidate per example under a weighted sum of score sources (-1 when an
    attribute has no candidates). A source with weight 0 is ignored."""
    best = []
    for k in range(len(sources[0])):
        if len(sources[0][k]) == 0:
            best.append(-1)
            continue
        s = sum(w * src[k] for w, src in zip(weights, sources) if w)
        best.append(int(np.argmax(s)) if np.ndim(s) else 0)
    return best


def combine(gen_lp: list[np.ndarray], disc_lp: list[np.ndarray] | None, alpha: float) -> list[int]:
    """The generator's best candidate, or alpha * generator + (1 - alpha) * discriminator."""
    return fuse([gen_lp], [1.0]) if disc_lp is None else fuse([gen_lp, disc_lp], [alpha, 1 - alpha])


def pick_weights(sources: list[list[np.ndarray]], gold_index: list[int], step: float = 0.1) -> tuple[float, ...]:
    """Weights (on the simplex, ``step`` apart) with the best validation accuracy; ties go to more
    weight on the earlier sources (the generator first)."""
    n = round(1 / step)
    grid = [w for w in itertools.product(range(n + 1), repeat=len(sources)) if sum(w) == n]

    def acc(w):
        return np.mean([b == g for b, g in zip(fuse(sources, w), gold_index)])
    best = max(grid, key=lambda w: (acc(w), w))
    return tuple(round(x / n, 4) for x in best)


def pick_alpha(gen_lp, disc_lp, gold_index: list[int]) -> float:
    """The generator's weight against the discriminator, best on validation."""
    return pick_weights([gen_lp, disc_lp], gold_index)[0]
