"""Per-attribute attribute-prediction errors from data/predictions/test.jsonl (diagnosis aid).

    python benchmarks/ap_errors.py [predictions.jsonl]
"""
import json
import sys
from collections import Counter

path = sys.argv[1] if len(sys.argv) > 1 else "data/predictions/test.jsonl"
fp, fn, tp, wrong_value = Counter(), Counter(), Counter(), Counter()
for line in open(path, encoding="utf-8"):
    r = json.loads(line)
    gold = {g["attribute"]: g["value"] for g in r["gold"]}
    pred = {p["attribute"]: p["value"] for p in r["predictions"]}
    for a in set(gold) | set(pred):
        if a in gold and a in pred:
            tp[a] += 1
            wrong_value[a] += pred[a] != gold[a]
        elif a in pred:
            fp[a] += 1
        else:
            fn[a] += 1
print(f"{'attribute':10s} {'tp':>4s} {'fp':>4s} {'fn':>4s} {'wrong value':>11s}")
for a in sorted(set(tp) | set(fp) | set(fn), key=lambda a: -(fp[a] + fn[a])):
    print(f"{a:10s} {tp[a]:4d} {fp[a]:4d} {fn[a]:4d} {wrong_value[a]:11d}")
print("total", sum(tp.values()), sum(fp.values()), sum(fn.values()), sum(wrong_value.values()))
