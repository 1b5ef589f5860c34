"""Paper §5.1 metrics, micro P/R/F1 in percent with two decimals.

* AP: over (product, attribute) pairs.
* AVE: over (product, attribute, value); a value is right only if attribute and value both match.
* fuzzy AVE: a predicted value matches a label when their longest common substring is longer than
  half the label.
* EAV-only: labels and predictions restricted to values that occur in the product text.
* by_source (beyond the paper): AVE restricted to labels of one source, and to the predictions
  on those labels' (product, attribute) pairs.

``gold``: {(pid, attr): [(value, source), ...]};  ``pred``: {(pid, attr): [value, ...]}.
"""
from __future__ import annotations

from collections import Counter

import numpy as np


def prf(tp, n_pred, n_gold, rounded: bool = True) -> dict:
    """The one micro P/R/F1, in percent, from counts: numbers, or numpy arrays element-wise (every
    resample of a bootstrap at once). Rounded to two decimals unless ``rounded`` is False."""
    tp, n_pred, n_gold = (np.asarray(x, dtype=np.float64) for x in (tp, n_pred, n_gold))
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(n_pred > 0, tp / n_pred, 0.0)
        r = np.where(n_gold > 0, tp / n_gold, 0.0)
        f = np.where(p + r > 0, 2 * p * r / (p + r), 0.0)
    out = {"p": 100 * p, "r": 100 * r, "f1": 100 * f}
    return {k: round(float(v), 2) for k, v in out.items()} if rounded else out


def longest_common_substring(a: str, b: str) -> int:
    best, prev = 0, [0] * (len(b) + 1)
    for ca in a:
        cur = [0] * (len(b) + 1)
        for j, cb in enumerate(b, 1):
            if ca == cb:
                cur[j] = prev[j - 1] + 1
                best = max(best, cur[j])
        prev = cur
    return best


def fuzzy_match(pred: str, label: str) -> bool:
    return longest_common_substring(pred, label) > len(label) / 2


def _ave_counts(gold: dict, pred: dict, match) -> tuple[int, int, int]:
    """(true positives, predicted values, gold values)."""
    n_gold = sum(len(v) for v in gold.values())
    n_pred = sum(len(v) for v in pred.values())
    tp = 0
    for key, values in pred.items():
        labels = [v for v, _ in gold.get(key, [])]
        used: set[int] = set()
        for v in values:  # each label is matched at most once
            j = next((j for j, lab in enumerate(labels) if j not in used and match(v, lab)), None)
            if j is not None:
                used.add(j)
                tp += 1
    return tp, n_pred, n_gold


def exact(v: str, lab: str) -> bool:
    return v == lab


def counts(gold: dict, pred: dict, texts: dict, withheld: set | frozenset = frozenset()) -> dict[str, tuple[int, int, int]]:
    """(true positives, predicted, gold) of every score :func:`evaluate` reports, keyed by its path
    (``ap``, ``ave``, ``ave_fuzzy``, ``eav_only.ave``, ``eav_only.ave_fuzzy``, ``by_source.<s>``).
    Every score is micro-averaged, so counts add up over products (what bootstrap intervals use).
    ``withheld``: (product id, attribute) pairs a system says the product has without giving a value
    (a presence decision apart from the kept values): they count for AP only."""
    pred = {k: v for k, v in pred.items() if v}
    gp, pp = set(gold), set(pred) | set(withheld)
    out = {"ap": (len(gp & pp), len(pp), len(gp)),
           "ave": _ave_counts(gold, pred, exact),
           "ave_fuzzy": _ave_counts(gold, pred, fuzzy_match)}
    g_eav = {k: [(v, s) for v, s in vs if v in texts[k[0]]] for k, vs in gold.items()}
    p_eav = {k: [v for v in vs if v in texts[k[0]]] for k, vs in pred.items()}
    g_eav = {k: v for k, v in g_eav.items() if v}
    p_eav = {k: v for k, v in p_eav.items() if v}
    out["eav_only.ave"] = _ave_counts(g_eav, p_eav, exact)
    out["eav_only.ave_fuzzy"] = _ave_counts(g_eav, p_eav, fuzzy_match)
    for s in sorted({s for vs in gold.values() for _, s in vs}):
        g_s = {k: [(v, src) for v, src in vs if src == s] for k, vs in gold.items()}
        g_s = {k: v for k, v in g_s.items() if v}
        p_s = {k: v for k, v in pred.items() if k in g_s}
        out[f"by_source.{s}"] = _ave_counts(g_s, p_s, exact)
    return out


def evaluate(gold: dict, pred: dict, texts: dict, withheld: set | frozenset = frozenset()) -> dict:
    out: dict = {"eav_only": {}, "by_source": {}}
    for path, c in counts(gold, pred, texts, withheld).items():
        head, _, tail = path.partition(".")
        if tail:
            out[head][tail] = prf(*c)
        else:
            out[head] = prf(*c)
    pred = {k: v for k, v in pred.items() if v}
    gp, pp = set(gold), set(pred)
    out["n"] = {"products": len({k[0] for k in gold} | {k[0] for k in pred}), "gold_pairs": len(gp),
                "gold_values": sum(len(v) for v in gold.values()), "pred_pairs": len(pp),
                "gold_by_source": dict(sorted(Counter(s for vs in gold.values() for _, s in vs).items()))}
    if withheld:  # present without a value (only systems with a presence decision have these)
        out["n"]["withheld_pairs"] = len(set(withheld) - pp)
    return out


def gold_from_records(records) -> tuple[dict, dict]:
    gold: dict = {}
    for r in records:
        for lab in r.labels:
            gold.setdefault((r.id, lab["attribute"]), []).append((lab["value"], lab["source"]))
    return gold, {r.id: r.text for r in records}


def majority_baseline(train_records, test_records) -> dict:
    """Most frequent training value per attribute, for every gold (product, attribute) of test
    (an oracle on AP, so only its AVE is informative)."""
    counts: dict = {}
    for r in train_records:
        for lab in r.labels:
            counts.setdefault(lab["attribute"], Counter())[lab["value"]] += 1
    gold, texts = gold_from_records(test_records)
    pred = {k: [counts[k[1]].most_common(1)[0][0]] for k in gold if k[1] in counts}
    return evaluate(gold, pred, texts)


# --- closed-vocabulary accuracy (ImplicitAVE's protocol) ----------------------------------------
def normalise(v: str) -> str:
    return " ".join(v.lower().split())


def exact_hit(row: dict) -> bool:
    return normalise(row["pred"]) == normalise(row["gold"])


def lenient_hit(row: dict) -> bool:
    return row["gold"].lower() in row["pred"].lower()


def accuracy_report(rows: list[dict]) -> tuple[dict, dict]:
    """rows: {"domain", "attribute", "gold", "pred"}. Exact match of normalised values and
    ImplicitAVE's lenient score (gold, lower-cased, contained in the prediction), in percent,
    overall and per domain; plus a per-attribute breakdown."""
    def score(sub):
        if not sub:
            return {"exact": 0.0, "lenient": 0.0, "n": 0}
        ex = sum(exact_hit(r) for r in sub)
        le = sum(lenient_hit(r) for r in sub)
        return {"exact": round(100 * ex / len(sub), 2), "lenient": round(100 * le / len(sub), 2), "n": len(sub)}
    by = lambda key: {k: score([r for r in rows if r[key] == k]) for k in sorted({r[key] for r in rows})}  # noqa: E731
    return {"overall": score(rows), "by_domain": by("domain")}, by("attribute")


def scored_answers(results: list[dict], rows: list[dict]) -> list[dict]:
    """``{domain, attribute, gold, pred}`` of each answered row that carries a gold value (a row
    answered with nothing, or with errors, has pred "")."""
    scored = []
    for res, row in zip(results, rows):
        if row.get("gold") is None:
            continue
        pred = res["predictions"][0]["value"] if res["predictions"] else ""
        scored.append({"domain": row.get("domain", ""), "attribute": (row.get("attributes") or [""])[0],
                       "gold": row["gold"], "pred": pred})
    return scored


def accuracy_of(scored: list[dict]) -> dict:
    """Exact / lenient accuracy, overall, per domain and per attribute; unanswered rows count as wrong."""
    overall, per_attribute = accuracy_report(scored)
    overall["per_attribute"] = per_attribute
    overall["unanswered"] = sum(not x["pred"] for x in scored)
    return overall
