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

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from deflate.data.records import Record
from deflate.evaluation.intervals import percentile_interval, resampled_sums
from deflate.evaluation.metrics import prf

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


def rule_prf(c: np.ndarray, rounded: bool = True) -> dict:
    """The authors' P/R/F1 from counts in :data:`OUTCOMES` order (last axis): VC is the true
    positive, NV + VC + VW the predicted values, VN + VC + VW the gold ones."""
    _, nv, vn, vc, vw = (c[..., i] for i in range(5))  # NN (no value, none predicted) counts nowhere
    return prf(vc, nv + vc + vw, vn + vc + vw, rounded)


@dataclass
class OfferCounts:
    """Outcome counts per offer (rows) and the offers' categories."""
    counts: np.ndarray          # (offers, 5), OUTCOMES order
    categories: list[str]


def judged(records: list[Record], pred: dict, category_attributes: dict[str, list[str]],
           case_insensitive: bool = False) -> Iterator[tuple[int, str, str]]:
    """Each decision the authors' rule counts, as (offer position, attribute, outcome): every
    attribute of the offer's category (its gold attributes where the category has no schema),
    judged on the first predicted value."""
    for i, r in enumerate(records):
        gold = {lab["attribute"]: lab.get("gold") or [lab["value"]] for lab in r.labels}
        for attr in category_attributes.get(r.category, sorted(gold)):
            vals = pred.get((r.id, attr)) or []
            yield i, attr, outcome(vals[0] if vals else None, gold.get(attr, []), case_insensitive)


def count(records: list[Record], pred: dict, category_attributes: dict[str, list[str]],
          case_insensitive: bool = False) -> OfferCounts:
    rows = np.zeros((len(records), len(OUTCOMES)), dtype=np.int64)
    for i, _, o in judged(records, pred, category_attributes, case_insensitive):
        rows[i, OUTCOMES.index(o)] += 1
    return OfferCounts(rows, [r.category for r in records])


def bootstrap_interval(counts: np.ndarray, n: int = 1000, seed: int = 0, level: float = 0.95) -> list[float]:
    """Percentile interval of micro F1 over ``n`` resamples of the offers (rows), seeded (``n`` = 0:
    no interval, an empty list)."""
    if n <= 0:
        return []
    if len(counts) == 0:
        return [0.0, 0.0]
    return percentile_interval(rule_prf(resampled_sums(counts, n, seed), rounded=False)["f1"], level)


def summary(oc: OfferCounts, n_boot: int = 1000, seed: int = 0) -> dict:
    total = oc.counts.sum(axis=0)
    s = rule_prf(total)
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
