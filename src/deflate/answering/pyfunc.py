"""DEFLATE as an MLflow pyfunc model, so ``mlflow models predict`` and ``mlflow.pyfunc.load_model``
answer the same input as ``deflate predict``: both are :class:`deflate.answering.engine.Deflate` on one
bundle. Logged "from code" (this file is the model, no pickled object); the bundle folder
(trained parts + the decisions made on val) travels as the one artifact.

Input: a DataFrame (or the JSON/CSV that ``mlflow models predict`` turns into one) with ``id``,
``name`` and optional ``description``, ``attributes`` (a list, or ``|``-separated), ``image_b64``
(the picture's bytes, base64) or ``image`` (a path, only under the folder named by the
``DEFLATE_IMAGE_ROOT`` environment variable where the model is served). Output, by the ``layout``
param: ``values`` (the default) one row per kept (product, attribute, value) and one per row error:
``id, attribute, value, score, error``; ``products`` one row per input row, in input order:
``id, predictions, errors`` (JSON arrays, as in ``deflate predict``'s output lines), the shape
``mlflow.pyfunc.spark_udf`` needs (docs/scale_out.md). A bad row never fails the batch.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import mlflow.pyfunc
import pandas as pd


def frame_rows(frame: pd.DataFrame) -> list[dict]:
    """A DataFrame of products as the rows ``deflate predict`` reads: NaN cells dropped, an
    ``a|b`` attributes cell split, each row numbered for its errors."""
    rows = []
    for n, r in enumerate(frame.to_dict(orient="records"), 1):
        r = {k: v for k, v in r.items() if not (isinstance(v, float) and pd.isna(v))}
        attrs = r.get("attributes")
        if isinstance(attrs, str):
            r["attributes"] = [a.strip() for a in attrs.split("|") if a.strip()]
        elif attrs is not None and not isinstance(attrs, list) and hasattr(attrs, "__iter__"):
            r["attributes"] = list(attrs)  # a numpy array from a DataFrame cell; anything else: validation says
        r["_line"] = n
        rows.append(r)
    return rows


def to_frame(results: list[dict]) -> pd.DataFrame:
    out = []
    for r in results:
        out += [{"id": r["id"], "attribute": p["attribute"], "value": p["value"], "score": p["score"], "error": ""}
                for p in r["predictions"]]
        out += [{"id": r["id"], "attribute": "", "value": "", "score": None, "error": e} for e in r["errors"]]
    return pd.DataFrame(out, columns=["id", "attribute", "value", "score", "error"])


def to_product_frame(results: list[dict]) -> pd.DataFrame:
    """One row per input row: its kept predictions and its errors as JSON arrays."""
    return pd.DataFrame({"id": [None if r["id"] is None else str(r["id"]) for r in results],
                         "predictions": [json.dumps(r["predictions"], ensure_ascii=False) for r in results],
                         "errors": [json.dumps(r["errors"], ensure_ascii=False) for r in results]},
                        columns=["id", "predictions", "errors"])


LAYOUTS = {"values": to_frame, "products": to_product_frame}


class DeflateModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from deflate.answering.engine import (
            Deflate,  # absolute: MLflow runs this file as a script
        )

        self.engine = Deflate.load(Path(context.artifacts["bundle"]))
        # a serving process cannot be restarted with the bundle's kernels (deflate predict can): say so
        rec = self.engine.meta.get("kernels") or {}
        mark = f"{rec.get('kernels')}:{rec.get('threads')}"
        if rec.get("kernels") in ("avx2", "compatible") and not _runs_with(rec):
            import warnings

            warnings.warn(f"this bundle was trained with kernels {mark}; this process did not start with them, "
                          "so scores may differ in the last bits (start it with `deflate.infra.kernels."
                          f"environment('{rec['kernels']}', {rec.get('threads')})` in its environment)", stacklevel=2)
        root = os.environ.get("DEFLATE_IMAGE_ROOT")  # the one folder request paths may name
        self.images_root = Path(root) if root else None

    def predict(self, context, model_input, params=None):
        layout = (params or {}).get("layout", "values")
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, not {layout!r}")
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        return LAYOUTS[layout](self.engine.answer_rows(frame_rows(frame), self.images_root, progress=False))


mlflow.models.set_model(DeflateModel())


def _runs_with(rec: dict) -> bool:
    """Whether this process computes with the kernels and threads a bundle records (a bad record: no)."""
    from deflate.infra import kernels  # absolute: MLflow runs this file as a script

    try:
        return kernels.pinned(rec["kernels"], rec.get("threads"))
    except kernels.KernelsError:
        return False
