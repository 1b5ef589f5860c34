"""Prediction files every system writes, one JSON line per product, so any scorer (the paper's
metrics, WDC-PAVE's own rule) can read any system: ``{"id", "predictions": [{"attribute",
"value", ...}], "gold": [labels]}``. DEFLATE's evaluation adds scores and candidates per line."""
from __future__ import annotations

from pathlib import Path

from deflate.data.records import Record
from deflate.infra.files import iter_jsonl, write_jsonl


def write(path: Path, records: list[Record], pred: dict) -> None:
    """``pred``: ``{(product id, attribute): [values]}``; one line per record, in record order."""
    per: dict[str, list[dict]] = {}
    for (pid, attr), values in pred.items():
        per.setdefault(pid, []).extend({"attribute": attr, "value": v} for v in values)
    write_jsonl(path, ({"id": r.id, "predictions": per.get(r.id, []), "gold": r.labels} for r in records))


def read(path: Path) -> dict:
    """``{(product id, attribute): [values]}`` in file order (a system's best value first)."""
    pred: dict = {}
    for row in iter_jsonl(path):  # a line at a time: only the predictions are kept
        for p in row["predictions"]:
            pred.setdefault((str(row["id"]), p["attribute"]), []).append(p["value"])
    return pred
