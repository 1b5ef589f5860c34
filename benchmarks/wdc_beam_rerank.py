"""Discriminator re-ranking of the generator's span beams on WDC-PAVE, on **val only**
(docs/wdc_pave.md). Greedy decoding answers 46.9% of the attributes val products have rightly,
while one of 8 beams holds a right answer 59.0% of the time (benchmarks/wdc_answer_probes.py).
This asks whether DEFLATE's own discriminator can pick that beam: every val question (each
attribute of the offer's category) gets ``k`` beams inside its span trie; each beam's claim is
scored by the discriminator of a ``benchmarks/wdc_disc_dev.py`` run; the answer is the beam with
the best ``log D + a * generator score``, kept when its D passes the threshold. Each rule is scored
by the dataset authors' rule at its own best val threshold (the pipeline's procedure: threshold on val).

    python benchmarks/wdc_beam_rerank.py [--k 8] [--runs base wrong] [--work /tmp/wdc_dev]

Writes benchmarks/results/wdc_beam_rerank.json.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from wdc_dev import ROOT, authors_f1, dev_folder, kept_predictions, params_with

from deflate.dataset import load_data
from deflate.decoding import span_beams
from deflate.engine import Deflate
from deflate.metrics import evaluate as compute_metrics
from deflate.metrics import gold_from_records
from deflate.questions import all_questions


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--runs", nargs="+", default=["base", "wrong"], help="benchmarks/wdc_disc_dev.py run names")
    ap.add_argument("--work", type=Path, default=Path("/tmp/wdc_dev"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    p = params_with([])
    dev = dev_folder(p, args.work)
    val = load_data(dev, args.work / "no_tokens", "val")
    schema = json.loads((dev / "schema.json").read_text())
    questions = all_questions(val.records, schema)
    gold, texts = gold_from_records(val.records)
    categories = schema["category_attributes"]

    def scores(values: list[str], probs: np.ndarray) -> dict:
        """Best authors' F1 over thresholds, with its AP F1 and threshold."""
        best = None
        for t in np.unique(np.quantile(probs, np.linspace(0, 1, 101))):
            pred = kept_predictions(val.records, questions, values, probs >= t)
            f1 = authors_f1(val.records, pred, categories)
            if best is None or f1 > best[0]:
                best = (f1, t, pred)
        f1, t, pred = best
        return {"f1": round(f1, 2), "ap_f1": round(compute_metrics(gold, pred, texts)["ap"]["f1"], 2),
                "threshold": round(float(t), 4)}

    res: dict = {"k": args.k, "questions": len(questions), "runs": {}}
    beams = None
    for run in args.runs:
        engine = Deflate.load(args.work / "disc_runs" / run / "deflate")
        b = engine.batcher(None, None)
        exs = engine.questions(val.records, questions)
        if beams is None:
            t0 = time.perf_counter()
            greedy = engine.generate(b, exs, progress=False)
            beams = span_beams(engine.gen, engine.qb, b, exs, args.k, dict(engine.decode, batch_size=32 * args.k),
                               progress=False)
            res["beam_seconds"] = round(time.perf_counter() - t0, 1)
        flat_q = [q for q, bs in zip(questions, beams) for _ in bs]
        flat_v = [v for bs in beams for v, _ in bs]
        flat_p = engine.claim_probs(b, engine.claims(val.records, flat_q, flat_v), progress=False)
        greedy_p = engine.claim_probs(b, engine.claims(val.records, questions, greedy), progress=False)
        out = {"greedy": scores(greedy, greedy_p)}
        pos = np.cumsum([0] + [len(bs) for bs in beams])
        for kk in sorted({2, 4, args.k}):
            for a in (0.0, 0.5, 1.0, 2.0):
                values, probs = [], np.zeros(len(questions))
                for j, bs in enumerate(beams):
                    cand = bs[:kk]
                    if not cand:
                        values.append("")
                        continue
                    d = flat_p[pos[j]:pos[j] + len(cand)]
                    g = np.array([s for _, s in cand])
                    c = int(np.argmax(np.log(d + 1e-7) + a * g))
                    values.append(cand[c][0])
                    probs[j] = d[c]
                out[f"k{kk}_a{a}"] = scores(values, probs)
        res["runs"][run] = out
        print(run, json.dumps(out))
    (ROOT / "benchmarks" / "results" / "wdc_beam_rerank.json").write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
