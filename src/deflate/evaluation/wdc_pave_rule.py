"""WDC-PAVE's own scoring (Brinkmann et al. 2024), with bootstrap intervals over offers.

Every (offer, attribute) of the offer's category schema is one decision:

* NN: gold n/a, predicted n/a;  NV: gold n/a, predicted a value;  VN: gold value, predicted n/a;
* VC: the prediction equals one of the gold spellings after stripping surrounding whitespace;
* VW: any other predicted value.

micro P = VC / (NV + VC + VW), R = VC / (VN + VC + VW), F1 their harmonic mean, in percent. The
case-insensitive variant compares lower-cased strings (a second figure, not the authors' rule).
A system that proposes several values for one attribute is scored on its first (best) one.

``pred``: ``{(offer id, attribute): [values, best first]}``, absent or empty meaning n/a.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deflate.data.records import Record

OUTCOMES = ("NN", "NV", "VN", "VC", "VW")


def outcome(predicted: str | None, gold: list[str], case_insensitive: bool = False) -> str:
    """The authors' class of one decision (``gold`` empty means n/a)."""
    p = (predicted or "").strip()
    if not gold:
        return "NV" if p else "NN"
    if not p:
        return "VN"
    fold = str.lower if case_insensitive else (lambda x: x)
    return "VC" if fold(p) in {fold(g.strip()) for g in gold} else "VW"


def prf(c: np.ndarray) -> dict:
    """P/R/F1 (percent, two decimals) from counts in :data:`OUTCOMES` order (last axis)."""
    nn, nv, vn, vc, vw = (c[..., i].astype(float) for i in range(5))
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(nv + vc + vw > 0, vc / (nv + vc + vw), 0.0)
        r = np.where(vn + vc + vw > 0, vc / (vn + vc + vw), 0.0)
        f = np.where(p + r > 0, 2 * p * r / (p + r), 0.0)
    return {"p": 100 * p, "r": 100 * r, "f1": 100 * f}


@dataclass
class OfferCounts:
    """Outcome counts per offer (rows) and the offers' categories."""
    counts: np.ndarray          # (offers, 5), OUTCOMES order
    categories: list[str]


def count(records: list[Record], pred: dict, category_attributes: dict[str, list[str]],
          case_insensitive: bool = False) -> OfferCounts:
    rows = []
    for r in records:
        gold = {lab["attribute"]: lab.get("gold") or [lab["value"]] for lab in r.labels}
        c = [0] * 5
        for attr in category_attributes.get(r.category, sorted(gold)):
            vals = pred.get((r.id, attr)) or []
            c[OUTCOMES.index(outcome(vals[0] if vals else None, gold.get(attr, []), case_insensitive))] += 1
        rows.append(c)
    return OfferCounts(np.array(rows, dtype=np.int64).reshape(-1, 5), [r.category for r in records])


def bootstrap_interval(counts: np.ndarray, n: int = 1000, seed: int = 0, level: float = 0.95) -> list[float]:
    """Percentile interval of micro F1 over ``n`` resamples of the offers (rows), seeded (``n`` = 0:
    no interval, an empty list)."""
    if n <= 0:
        return []
    if len(counts) == 0:
        return [0.0, 0.0]
    idx = np.random.default_rng(seed).integers(0, len(counts), size=(n, len(counts)))
    f1 = prf(counts[idx].sum(axis=1))["f1"]
    lo, hi = np.percentile(f1, [50 * (1 - level), 50 * (1 + level)])
    return [round(float(lo), 2), round(float(hi), 2)]


def summary(oc: OfferCounts, n_boot: int = 1000, seed: int = 0) -> dict:
    total = oc.counts.sum(axis=0)
    s = {k: round(float(v), 2) for k, v in prf(total).items()}
    return {**s, "f1_ci95": bootstrap_interval(oc.counts, n_boot, seed),
            "counts": dict(zip(OUTCOMES, (int(x) for x in total))), "offers": len(oc.counts)}


def score(records: list[Record], pred: dict, category_attributes: dict[str, list[str]], n_boot: int = 1000,
          seed: int = 0) -> dict:
    """The authors' rule overall and per category, and the case-insensitive variant overall."""
    exact = count(records, pred, category_attributes)
    out = summary(exact, n_boot, seed)
    out["per_category"] = {}
    for cat in sorted(set(exact.categories)):
        keep = np.array([c == cat for c in exact.categories])
        out["per_category"][cat] = summary(OfferCounts(exact.counts[keep], [cat] * int(keep.sum())), n_boot, seed)
    out["case_insensitive"] = summary(count(records, pred, category_attributes, True), n_boot, seed)
    return out
