"""Prediction files every system writes, one JSON line per product, so any scorer (the paper's
metrics, WDC-PAVE's own rule) can read any system: ``{"id", "predictions": [{"attribute",
"value", ...}], "gold": [labels]}``. DEFLATE's evaluation adds scores and candidates per line, and
with a presence decision ``"withheld": [{"attribute", ...}]``: attributes the product has whose
value was not kept (they count for attribute prediction only)."""
from __future__ import annotations

from pathlib import Path

from deflate.data.records import Record
from deflate.infra.files import iter_jsonl, write_jsonl


def write(path: Path, records: list[Record], pred: dict, withheld: set | None = None) -> None:
    """``pred``: ``{(product id, attribute): [values]}``; one line per record, in record order;
    ``withheld``: (product id, attribute) pairs present without a value (None: no presence decision,
    no such key in the lines)."""
    per: dict[str, list[dict]] = {}
    for (pid, attr), values in pred.items():
        per.setdefault(pid, []).extend({"attribute": attr, "value": v} for v in values)
    held: dict[str, list[dict]] = {}
    for pid, attr in sorted(withheld or ()):
        held.setdefault(pid, []).append({"attribute": attr})
    write_jsonl(path, ({"id": r.id, "predictions": per.get(r.id, []), "gold": r.labels,
                        **({} if withheld is None else {"withheld": held.get(r.id, [])})} for r in records))


def read_with_withheld(path: Path) -> tuple[dict, set]:
    """One pass over a file: ``{(product id, attribute): [values]}`` in file order (a system's best
    value first), and the (product id, attribute) pairs it says are present without a value (empty
    for a system without a presence decision)."""
    pred: dict = {}
    withheld: set = set()
    for row in iter_jsonl(path):  # a line at a time: only the predictions are kept
        pid = str(row["id"])
        for p in row["predictions"]:
            pred.setdefault((pid, p["attribute"]), []).append(p["value"])
        withheld.update((pid, w["attribute"]) for w in row.get("withheld", []))
    return pred, withheld


def read(path: Path) -> dict:
    """The predictions of :func:`read_with_withheld`."""
    return read_with_withheld(path)[0]


def read_withheld(path: Path) -> set:
    """The withheld pairs of :func:`read_with_withheld`."""
    return read_with_withheld(path)[1]
