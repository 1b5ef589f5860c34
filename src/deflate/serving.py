"""DEFLATE as an MLflow pyfunc model, so ``mlflow models predict`` and ``mlflow.pyfunc.load_model``
answer the same input as ``deflate predict``. Logged "from code" (this file is the model, no
pickled object); the generator, discriminator and (ImplicitAVE pipeline) lexical scorer folders
travel as artifacts and the answer settings (threshold, mode, alpha, fused weights, keep_all) as
``model_config``.

Input: a DataFrame (or the JSON/CSV that ``mlflow models predict`` turns into one) with ``id``,
``name`` and optional ``description``, ``attributes`` (a list, or ``|``-separated). Output: one row
per kept (product, attribute, value) and one per row error: ``id, attribute, value, score, error``.
"""
from __future__ import annotations

from pathlib import Path

import mlflow.pyfunc
import pandas as pd


def _rows(frame: pd.DataFrame) -> list[dict]:
    rows = []
    for n, r in enumerate(frame.to_dict(orient="records"), 1):
        r = {k: v for k, v in r.items() if not (isinstance(v, float) and pd.isna(v))}
        if isinstance(r.get("attributes"), str):
            r["attributes"] = [a.strip() for a in r["attributes"].split("|") if a.strip()]
        elif r.get("attributes") is not None and not isinstance(r["attributes"], list):
            r["attributes"] = list(r["attributes"])
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


class DeflateModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from deflate.predict import Predictor  # absolute: MLflow runs this file as a script

        cfg = context.model_config or {}
        disc, lex = context.artifacts.get("discriminator"), context.artifacts.get("lexical")
        self.predictor = Predictor(Path(context.artifacts["generator"]), Path(disc) if disc else None,
                                   float(cfg.get("threshold", 0.5)), lexical_dir=Path(lex) if lex else None)
        self.mode, self.alpha = cfg.get("mode", "free"), float(cfg.get("alpha", 0.5))
        self.weights = tuple(float(w) for w in cfg["weights"]) if cfg.get("weights") else None
        self.keep_all = bool(cfg.get("keep_all", False))  # answer every asked attribute (ImplicitAVE)

    def predict(self, context, model_input, params=None):
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        extra = {"weights": self.weights} if self.weights else {}
        return to_frame(self.predictor.predict(_rows(frame), progress=False, mode=self.mode, alpha=self.alpha,
                                               keep_all=self.keep_all, **extra))


mlflow.models.set_model(DeflateModel())
