"""The WDC-PAVE table's val columns only (authors' F1, AP F1 on val), for whichever systems a
pipeline's `models/systems` holds: a reading of a run in progress that never opens eval_visible's
predictions or scores (`wdc_table.val_columns`, which the table stage calls beside the eval columns).

    python benchmarks/wdc_val_rows.py [--pipeline pipelines/wdc_pave]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from deflate.data.records import load_split
from deflate.data.splits import load_schema
from deflate.evaluation import prediction_files
from deflate.evaluation.metrics import gold_from_records
from deflate.reports.wdc_table import SYSTEMS, val_columns


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pipeline", type=Path, default=Path("pipelines/wdc_pave"))
    args = ap.parse_args()
    processed = args.pipeline / "data" / "processed"
    cats = load_schema(processed)["category_attributes"]
    val = load_split(processed, "val")
    gold_texts = gold_from_records(val)
    rows = {}
    for s in SYSTEMS:
        path = args.pipeline / "models" / "systems" / f"{s}-wdc_pave" / "predictions" / "val.jsonl"
        if not path.is_file():
            continue
        rows[s] = val_columns(val, *prediction_files.read_with_withheld(path), cats, gold_texts)
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
