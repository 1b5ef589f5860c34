"""Seeded 95% bootstrap intervals over test products for every F1 :func:`metrics.evaluate` reports.

Products are drawn with replacement (the same draws for every score of one call). Every score is
micro-averaged, so a resample's F1 follows from the sum of its products' counts
(:func:`metrics.counts`): the metric code runs once per product, not once per resample.
"""
from __future__ import annotations

import numpy as np

from deflate.data.records import Record
from deflate.evaluation.metrics import counts, gold_from_records

LEVEL = 0.95


def bootstrap_f1(records: list[Record], pred: dict, n: int = 1000, seed: int = 0,
                 level: float = LEVEL, withheld: set | frozenset = frozenset()) -> dict[str, list[float]]:
    """``{"ap": [lo, hi], "ave": [...], "ave_fuzzy": [...], "eav_only.ave": [...], ...}`` in percent,
    one entry per key of :func:`metrics.counts`; ``pred`` and ``withheld`` as :func:`metrics.evaluate`
    takes them."""
    gold, texts = gold_from_records(records)
    g_by, p_by = _by_product(gold), _by_product(pred)
    w_by = _by_product(dict.fromkeys(withheld))
    per = [counts(g_by.get(r.id, {}), p_by.get(r.id, {}), {r.id: texts[r.id]}, set(w_by.get(r.id, {})))
           for r in records]
    keys = sorted({k for c in per for k in c} | {"ap", "ave", "ave_fuzzy"})
    if not per or n <= 0:  # nothing to resample (e.g. a predict input whose every row was rejected)
        return {k: [0.0, 0.0] for k in keys}
    c = np.array([[c.get(k, (0, 0, 0)) for k in keys] for c in per], dtype=np.int64).reshape(len(per), -1)
    return dict(zip(keys, _percentiles(resampled_sums(c, n, seed).reshape(n, len(keys), 3), level)))


def _by_product(d: dict) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for k, v in d.items():
        out.setdefault(k[0], {})[k] = v
    return out


def resampled_sums(per_product: np.ndarray, n: int, seed: int) -> np.ndarray:
    """The one bootstrap resampler. (n, columns): column sums over ``n`` resamples of the rows
    (products, offers), drawn with replacement from ``seed``."""
    rows = len(per_product)
    draws = np.random.default_rng(seed).integers(0, rows, (n, rows))
    weights = np.bincount((np.arange(n)[:, None] * rows + draws).ravel(), minlength=n * rows).reshape(n, rows)
    return weights @ per_product  # int64: exact


def _percentiles(c: np.ndarray, level: float) -> list[list[float]]:
    """c: (n, keys, 3) counts (tp, predicted, gold) -> [[lo, hi] of F1 in percent] per key."""
    tp, denom = c[..., 0], c[..., 1] + c[..., 2]
    f1 = np.divide(200.0 * tp, denom, out=np.zeros(tp.shape), where=denom > 0)  # 2PR/(P+R) = 2tp/(pred+gold)
    lo, hi = np.percentile(f1, [50 * (1 - level), 50 * (1 + level)], axis=0)
    return [[round(float(a), 2), round(float(b), 2)] for a, b in zip(lo, hi)]


def bootstrap_accuracy(rows: list[dict], correct, n: int = 1000, seed: int = 0, level: float = LEVEL,
                       group: str = "id") -> list[float]:
    """[lo, hi] of the percentage of ``rows`` for which ``correct(row)`` holds, resampling the
    groups (products: all questions of one product are drawn together)."""
    if not rows or n <= 0:
        return [0.0, 0.0]
    ids = {g: i for i, g in enumerate(dict.fromkeys(r[group] for r in rows))}
    per = np.zeros((len(ids), 2), dtype=np.int64)  # (correct, asked) per group
    for r in rows:
        per[ids[r[group]]] += (bool(correct(r)), 1)
    s = resampled_sums(per, n, seed)
    return percentile_interval(np.divide(100.0 * s[:, 0], s[:, 1], out=np.zeros(n), where=s[:, 1] > 0), level)


def percentile_interval(values: np.ndarray, level: float = LEVEL) -> list[float]:
    """[lo, hi]: the central ``level`` of a score's resampled values, two decimals."""
    lo, hi = np.percentile(values, [50 * (1 - level), 50 * (1 + level)])
    return [round(float(lo), 2), round(float(hi), 2)]


def beyond(a: list[float], b: list[float]) -> bool:
    """Whether interval ``a`` lies wholly above interval ``b`` (an ordering that holds beyond both)."""
    return a[0] > b[1]
