"""#36: `deflate predict` as a user runs it, today's options against the fast ones, in one run.

Every arm is `deflate predict` as its own process on the same input file: the default data's
products (all splits, pictures included, 2,000 by default), the committed default bundle, batch
256, two threads in all. The arms run in turn, ``--repeats`` rounds, so each sees the same machine
state; each arm's figure is the median of its rounds.

- ``today``: `deflate predict` with no option (the bundle's kernels and its 2 threads);
- ``prune``: ``--prune``;
- ``prune_native``: ``--prune --kernels native`` (this CPU's fastest kernels; not bit-exact);
- ``prune_native_2proc``: the same in two processes of one thread each (``--processes 2 --threads 1``).
Options that trade exactness must say what they cost, so every arm's answers are compared with
``today``'s row by row, and its AVE F1 and AP F1 on the default test split's products are computed
from its own output with the pipeline's scorer (`deflate.evaluation.metrics.evaluate`).

    python benchmarks/predict_cli_arms.py [--products 2000] [--repeats 3]   # repo root, after dvc repro
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from scale import run  # noqa: E402  (one process: wall seconds and the OS's peak RSS)

from deflate.data.records import SPLITS, load_split  # noqa: E402
from deflate.evaluation.metrics import evaluate, gold_from_records  # noqa: E402

ARMS = {
    "today": [],
    "prune": ["--prune"],
    "prune_native": ["--prune", "--kernels", "native", "--threads", "2"],
    "prune_native_2proc": ["--prune", "--kernels", "native", "--threads", "1", "--processes", "2"],
}


def answers(path: Path) -> dict[str, dict]:
    """Per product id: its kept (attribute, value, score) and withheld attributes."""
    out = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            out[r["id"]] = {"kept": sorted((p["attribute"], p["value"], p["score"]) for p in r["predictions"]),
                            "withheld": sorted(w["attribute"] for w in r.get("withheld", []))}
    return out


def compare(base: dict, other: dict) -> dict:
    """Rows whose kept values or withheld attributes differ, and the largest printed score change."""
    rows_other = 0
    score_diff = 0.0
    for k, a in base.items():
        b = other[k]
        if [x[:2] for x in a["kept"]] != [x[:2] for x in b["kept"]] or a["withheld"] != b["withheld"]:
            rows_other += 1
            continue
        score_diff = max([score_diff, *(abs(x[2] - y[2]) for x, y in zip(a["kept"], b["kept"], strict=True))])
    return {"rows_with_other_values": rows_other, "max_score_difference": round(score_diff, 6)}


def test_scores(ans: dict, test) -> dict:
    gold, texts = gold_from_records(test)
    pred, withheld = {}, set()
    for r in test:
        for attribute, value, _ in ans[r.id]["kept"]:
            pred.setdefault((r.id, attribute), []).append(value)
        withheld |= {(r.id, a) for a in ans[r.id]["withheld"]}
    m = evaluate(gold, pred, texts, withheld)
    return {"ave_f1": m["ave"]["f1"], "ap_f1": m["ap"]["f1"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--products", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "deflate")
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "predict_cli_arms.json")
    a = ap.parse_args()
    recs = [r for s in SPLITS for r in load_split(ROOT / "data" / "processed", s)][:a.products]
    test = [r for r in load_split(ROOT / "data" / "processed", "test") if r.id in {x.id for x in recs}]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        inp = work / "products.jsonl"
        with open(inp, "w", encoding="utf-8") as f:
            for r in recs:
                f.write(json.dumps({"id": r.id, "name": r.name, "description": r.description, "image": r.image},
                                   ensure_ascii=False) + "\n")
        env = {**os.environ, "TQDM_DISABLE": "1"}
        runs: dict[str, list[dict]] = {arm: [] for arm in a.arms}
        for k in range(a.repeats):
            for arm in a.arms:
                out, log = work / f"{arm}.jsonl", work / f"{arm}.log"
                cmd = [sys.executable, "-m", "deflate.cli", "predict", "--model", str(a.model), "--input", str(inp),
                       "--output", str(out), "--images", str(ROOT), "--batch-size", "256", *ARMS[arm]]
                got = run(cmd, ROOT, log, env=env)
                summary = [x for x in log.read_text(errors="replace").splitlines() if " rows, " in x][-1]
                got["answering_s"] = float(re.search(r", ([0-9.]+)s -> ", summary).group(1))
                runs[arm].append(got)
                print(f"round {k + 1} {arm}: {got}", flush=True)
        res_ans = {arm: answers(work / f"{arm}.jsonl") for arm in a.arms}
    attributes = json.loads((a.model / "generator" / "deflate.json").read_text(encoding="utf-8"))["attributes"]
    questions = len(recs) * len(attributes)  # every product is asked each of the bundle's attributes
    base = res_ans.get("today")
    result = {"products": len(recs), "questions": questions, "test_products": len(test), "repeats": a.repeats,
              "batch_size": 256, "model": str(a.model.relative_to(ROOT)), "arms": {}}
    for arm in a.arms:
        wall = statistics.median(r["seconds"] for r in runs[arm])
        inside = statistics.median(r["answering_s"] for r in runs[arm])
        result["arms"][arm] = {
            "options": " ".join(ARMS[arm]) or "(none)", "wall_s": [r["seconds"] for r in runs[arm]],
            "answering_s": [r["answering_s"] for r in runs[arm]], "peak_rss_mb": max(r["peak_rss_mb"] for r in runs[arm]),
            "questions_per_s_wall": round(questions / wall, 1), "questions_per_s_answering": round(questions / inside, 1),
            "test": test_scores(res_ans[arm], test),
            **({"against_today": compare(base, res_ans[arm])} if base is not None else {})}
    if base is not None:
        for arm, r in result["arms"].items():
            r["speedup_wall"] = round(r["questions_per_s_wall"] / result["arms"]["today"]["questions_per_s_wall"], 2)
            r["speedup_answering"] = round(r["questions_per_s_answering"]
                                           / result["arms"]["today"]["questions_per_s_answering"], 2)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
