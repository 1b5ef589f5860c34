"""Bootstrap intervals: the fast count-based resampling equals re-running the metric code on each
resample, and the intervals behave as intervals."""
import numpy as np

from deflate.data.records import Record
from deflate.evaluation.intervals import beyond, bootstrap_accuracy, bootstrap_f1
from deflate.evaluation.metrics import evaluate, gold_from_records


def _data(n=30, seed=0):
    rng = np.random.default_rng(seed)
    recs, pred = [], {}
    for i in range(n):
        labels = [{"attribute": a, "value": f"{a}{rng.integers(3)}", "source": ["explicit", "image_only"][i % 2]}
                  for a in ("colour", "size", "shape") if rng.random() < 0.7]
        text = " ".join(lab["value"] for lab in labels[:1]) + " words"
        recs.append(Record(f"p{i}", text, labels=labels))
        for a in ("colour", "size", "shape"):
            if rng.random() < 0.6:
                pred[(f"p{i}", a)] = [f"{a}{rng.integers(3)}"] + ([f"{a}9"] if rng.random() < 0.2 else [])
    return recs, pred


def _brute(recs, pred, n, seed, key):
    """The same resamples, scored by metrics.evaluate on the resampled products (renamed per draw)."""
    gold, texts = gold_from_records(recs)
    draws = np.random.default_rng(seed).integers(0, len(recs), (n, len(recs)))
    out = []
    for row in draws:
        g, p, t = {}, {}, {}
        for k, i in enumerate(row):
            pid, new = recs[i].id, f"{recs[i].id}#{k}"
            g.update({(new, a): v for (q, a), v in gold.items() if q == pid})
            p.update({(new, a): v for (q, a), v in pred.items() if q == pid})
            t[new] = texts[pid]
        m = evaluate(g, p, t)
        head, _, tail = key.partition(".")
        out.append((m[head][tail] if tail else m[head])["f1"])
    return out


def test_count_resampling_equals_rerunning_the_metrics():
    recs, pred = _data()
    ci = bootstrap_f1(recs, pred, n=60, seed=3)
    assert {"ap", "ave", "ave_fuzzy", "eav_only.ave", "eav_only.ave_fuzzy", "by_source.image_only"} <= set(ci)
    for key in ("ap", "ave", "ave_fuzzy", "eav_only.ave", "by_source.image_only"):
        f1 = _brute(recs, pred, 60, 3, key)
        # metrics.evaluate rounds each F1 to two decimals; the percentiles of the unrounded ones differ by < 0.01
        assert np.allclose(ci[key], np.percentile(f1, [2.5, 97.5]), atol=0.011), key


def test_intervals_contain_the_score_are_seeded_and_narrow_with_more_products():
    recs, pred = _data(200, seed=1)
    gold, texts = gold_from_records(recs)
    m = evaluate(gold, pred, texts)
    ci = bootstrap_f1(recs, pred, n=500, seed=0)
    for key in ("ap", "ave", "ave_fuzzy"):
        assert ci[key][0] <= m[key]["f1"] <= ci[key][1]
    assert ci == bootstrap_f1(recs, pred, n=500, seed=0) and ci != bootstrap_f1(recs, pred, n=500, seed=1)
    small = bootstrap_f1(recs[:20], pred, n=500, seed=0)
    assert small["ave"][1] - small["ave"][0] > ci["ave"][1] - ci["ave"][0]
    perfect = {k: [v for v, _ in vs] for k, vs in gold.items()}
    assert bootstrap_f1(recs, perfect, n=100)["ave"] == [100.0, 100.0]
    assert bootstrap_f1(recs, {}, n=100)["ap"] == [0.0, 0.0]
    assert bootstrap_f1([], {}, n=100) == {"ap": [0.0, 0.0], "ave": [0.0, 0.0], "ave_fuzzy": [0.0, 0.0]}


def test_accuracy_interval_resamples_products():
    rows = [{"id": f"p{i // 2}", "ok": i % 4 != 0} for i in range(400)]  # 75% correct
    lo, hi = bootstrap_accuracy(rows, lambda r: r["ok"], n=500, seed=0)
    assert lo < 75.0 < hi and hi - lo < 15
    assert bootstrap_accuracy([], lambda r: True) == [0.0, 0.0]


def test_beyond_is_strict_separation():
    assert beyond([70.1, 75], [60, 70]) and not beyond([70, 75], [60, 70]) and not beyond([60, 70], [65, 75])
