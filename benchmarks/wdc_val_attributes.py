"""Per attribute, on WDC-PAVE's val split only: each system's authors'-rule outcomes (VC, VW, VN,
NV) and F1, and where DEFLATE's F1 falls short of the best tagger's. It reads the pipeline's val
predictions (``models/systems/<system>-wdc_pave/predictions/val.jsonl``), never eval_visible's.

    python benchmarks/wdc_val_attributes.py [--pipeline pipelines/wdc_pave] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from deflate.data.records import load_split
from deflate.data.splits import load_schema
from deflate.evaluation import prediction_files
from deflate.evaluation.wdc_pave_rule import OUTCOMES, judged, rule_prf
from deflate.reports.wdc_table import SYSTEMS


def per_attribute(val, pred: dict, cats: dict) -> dict[str, dict[str, int]]:
    """Outcome counts per attribute, by the authors' rule (first predicted value)."""
    out: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(OUTCOMES, 0))
    for _, attr, o in judged(val, pred, cats):
        out[attr][o] += 1
    return out


def f1(c: dict[str, int]) -> float:
    return float(rule_prf(np.array([c[o] for o in OUTCOMES]))["f1"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pipeline", type=Path, default=Path("pipelines/wdc_pave"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/wdc_val_attributes.json"))
    args = ap.parse_args()
    processed = args.pipeline / "data" / "processed"
    cats = load_schema(processed)["category_attributes"]
    val = load_split(processed, "val")
    table = {}
    for s in SYSTEMS:
        path = args.pipeline / "models" / "systems" / f"{s}-wdc_pave" / "predictions" / "val.jsonl"
        if path.is_file():
            pred, _withheld = prediction_files.read_with_withheld(path)
            table[s] = {a: {**c, "f1": f1(c)} for a, c in sorted(per_attribute(val, pred, cats).items())}
    # Where DEFLATE loses most against the best other system, in right values (VC) per attribute.
    gaps = []
    for a, c in table.get("deflate", {}).items():
        best = max((s for s in table if s not in ("deflate", "d_minus")), key=lambda s: table[s][a]["VC"])
        gaps.append({"attribute": a, "gold": c["VN"] + c["VC"] + c["VW"], "deflate_vc": c["VC"],
                     "deflate_vw": c["VW"], "deflate_vn": c["VN"], "best_other": best,
                     "best_vc": table[best][a]["VC"], "vc_gap": table[best][a]["VC"] - c["VC"]})
    gaps.sort(key=lambda g: -g["vc_gap"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"per_attribute": table, "deflate_gaps": gaps}, indent=1) + "\n")
    print(f"{'attribute':28s} {'gold':>5s} {'DEF VC':>6s} {'VW':>4s} {'VN':>4s}  best other (VC)  gap")
    for g in gaps:
        print(f"{g['attribute'][:28]:28s} {g['gold']:5d} {g['deflate_vc']:6d} {g['deflate_vw']:4d} "
              f"{g['deflate_vn']:4d}  {g['best_other']:>10s} {g['best_vc']:4d}  {g['vc_gap']:4d}")


if __name__ == "__main__":
    main()
