"""Seeded 95% bootstrap intervals over products for the paper's F1 scores (AP, AVE, fuzzy AVE).

Products are drawn with replacement; a product drawn twice counts twice (its id gets the draw's
number, so the metric code sees distinct products). The definitions are :mod:`deflate.metrics`'s.
"""
from __future__ import annotations

import numpy as np

from .data import Record
from .metrics import evaluate as compute_metrics
from .metrics import gold_from_records

KEYS = ("ap", "ave", "ave_fuzzy")


def bootstrap_f1(records: list[Record], pred: dict, n: int = 1000, seed: int = 0,
                 level: float = 0.95) -> dict[str, list[float]]:
    """``{"ap": [lo, hi], "ave": [...], "ave_fuzzy": [...]}``; ``pred`` as :func:`metrics.evaluate` takes."""
    if not records:
        return {k: [0.0, 0.0] for k in KEYS}
    gold, texts = gold_from_records(records)
    by_product: dict[str, tuple[dict, dict]] = {r.id: ({}, {}) for r in records}
    for (pid, a), v in gold.items():
        by_product[pid][0][a] = v
    for (pid, a), v in pred.items():
        if pid in by_product:
            by_product[pid][1][a] = v
    ids = [r.id for r in records]
    rng = np.random.default_rng(seed)
    scores = {k: [] for k in KEYS}
    for _ in range(n):
        g, p, t = {}, {}, {}
        for k, i in enumerate(rng.integers(0, len(ids), len(ids))):
            pid, key = ids[i], f"{ids[i]}#{k}"
            gp, pp = by_product[pid]
            g.update({(key, a): v for a, v in gp.items()})
            p.update({(key, a): v for a, v in pp.items()})
            t[key] = texts[pid]
        m = compute_metrics(g, p, t)
        for k in KEYS:
            scores[k].append(m[k]["f1"])
    lo, hi = 50 * (1 - level), 50 * (1 + level)
    return {k: [round(float(np.percentile(v, lo)), 2), round(float(np.percentile(v, hi)), 2)]
            for k, v in scores.items()}
