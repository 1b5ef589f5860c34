"""Is d- held back by its own negatives? d- (no discriminator; its generator answers "None" for
absent attributes) trained with another `generator.none_per_product`, scored on **val only**
beside the pipeline's d- (3 per product) and DEFLATE's val answers, the way
benchmarks/discriminator_dev.py scores (AP / AVE F1 of the val answers; d- has no threshold).

#17 changed DEFLATE's negatives to every absent attribute; this asks whether d- would gain from
the same. Needs the default pipeline's outputs (dvc repro).

    python benchmarks/d_minus_dev.py [--none-per-product -1]
"""
import argparse
import json
import sys
import tempfile
from pathlib import Path

from deflate.config import load_params
from deflate.dataset import load_data
from deflate.experiments import run_system
from deflate.metrics import gold_from_records

sys.path.insert(0, str(Path(__file__).parent))
from discriminator_dev import score_answers  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--none-per-product", type=int, default=-1)
    ap.add_argument("--out", default="benchmarks/results/d_minus_dev.json")
    a = ap.parse_args()
    p = load_params()
    p["tracking"]["enabled"] = False
    p["generator"]["none_per_product"] = a.none_per_product
    processed, tokens = Path("data/processed"), Path("data/tokens")
    gold, texts = gold_from_records(load_data(processed, tokens, "val").records)
    rows = {"d- (pipeline: none_per_product 3)":
            score_answers(gold, texts, Path("models/systems/d_minus-desire/predictions/val.jsonl")),
            "DEFLATE (pipeline; its threshold fit on these val answers)":
            score_answers(gold, texts, Path("data/predictions/val.jsonl"))}
    with tempfile.TemporaryDirectory() as tmp:
        run_system("d_minus", p, processed, tokens, Path(tmp) / "d_minus", dataset="desire")
        ans = Path(tmp) / "d_minus" / "predictions" / "val.jsonl"
        rows[f"d- with none_per_product {a.none_per_product}"] = score_answers(gold, texts, ans)
    Path(a.out).write_text(json.dumps(rows, indent=1) + "\n")
    for name, r in rows.items():
        print(f"| {name} | {r['ap_f1']} ({r['ap_p']} / {r['ap_r']}) | {r['ave_f1']} |")


if __name__ == "__main__":
    main()
