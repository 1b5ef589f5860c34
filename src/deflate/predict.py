"""``deflate predict``: a trained DEFLATE on new products.

Input: JSONL (one object per line) or TSV with a header, fields ``id``, ``name``, optional
``description``, ``image`` (path, relative to ``--images``) and ``attributes`` (a JSON list, or
``|``-separated in TSV; default: every attribute the model knows). Output: one JSON line per input
row, ``{"id", "predictions": [{"attribute", "value", "score"}], "errors": [...]}``. A row with
bad fields gets its errors and no predictions; a broken picture is reported and the row is
answered from its text. Nothing stops the run.

``--format implicitave`` reads ImplicitAVE TSVs (a file or a folder of them; columns ``id images
category texts attribute_names attribute_values``): each row asks its one attribute, carries its
gold value, and :func:`accuracy` scores the answers (exact and ImplicitAVE's lenient match).

Answer modes: ``free`` (the generator's own words), ``constrained`` (the best of the attribute's
candidate values saved with the model, by generator likelihood) and ``rerank`` (candidates scored
by ``alpha * generator + (1 - alpha) * discriminator``).
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from .batching import Batcher, Example
from .candidates import candidate_logprobs, combine, discriminator_logprobs, fuse
from .data import Record
from .imaging import load_for_inference, load_images
from .infer import generate_values, score_claims
from .metrics import accuracy_report
from .model import load_discriminator, load_generator
from .pipeline import keep
from .text import QuestionBuilder

MODES = ("free", "constrained", "rerank", "fused")

MAX_FIELD = 20_000


def read_rows(path: Path) -> list[dict]:
    """Raw rows with a ``_line`` number; undecodable or malformed lines become ``_error`` rows."""
    rows: list[dict] = []
    with open(path, "rb") as f:
        raw_lines = f.read().split(b"\n")
    if path.suffix.lower() in (".tsv", ".tab"):
        header = None
        for n, raw in enumerate(raw_lines, 1):
            try:
                line = raw.rstrip(b"\r").decode("utf-8")
            except UnicodeDecodeError:
                rows.append({"_line": n, "_error": "not valid UTF-8"})
                continue
            if not line.strip():
                continue
            cols = next(csv.reader([line], delimiter="\t", quoting=csv.QUOTE_NONE))
            if header is None:
                header = [c.strip() for c in cols]
                continue
            if len(cols) != len(header):
                rows.append({"_line": n, "_error": f"{len(cols)} columns, expected {len(header)}"})
                continue
            row = dict(zip(header, cols), _line=n)
            if row.get("attributes"):
                row["attributes"] = [a.strip() for a in row["attributes"].split("|") if a.strip()]
            rows.append(row)
        return rows
    for n, raw in enumerate(raw_lines, 1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw.decode("utf-8"))
            if not isinstance(obj, dict):
                raise ValueError("not a JSON object")
            obj["_line"] = n
            rows.append(obj)
        except UnicodeDecodeError:
            rows.append({"_line": n, "_error": "not valid UTF-8"})
        except ValueError as e:
            rows.append({"_line": n, "_error": f"bad JSON: {str(e)[:80]}"})
    return rows


IMPLICITAVE_COLUMNS = ("id", "images", "category", "texts", "attribute_names", "attribute_values")


def read_implicitave(path: Path) -> tuple[list[dict], Path | None]:
    """Rows of ImplicitAVE TSVs (a file, or a folder with ``*.tsv`` or ``texts/*.tsv``) as predict
    rows with ``gold`` and ``domain``; and the pictures' folder when one sits beside the texts."""
    files = [path] if path.is_file() else sorted(path.glob("*.tsv")) or sorted(path.glob("texts/*.tsv"))
    if not files:
        raise FileNotFoundError(f"no ImplicitAVE .tsv files in {path}")
    rows: list[dict] = []
    for f in files:
        for r in read_rows(f):
            r["_file"] = f.name
            if "_error" not in r:
                missing = [c for c in IMPLICITAVE_COLUMNS if c not in r]
                if missing:
                    r = {"_line": r["_line"], "_file": f.name, "_error": f"missing column(s) {', '.join(missing)}"}
                else:
                    r = {"_line": r["_line"], "_file": f.name, "id": r["id"].strip(),
                         "name": r["texts"].strip().removeprefix("[Title]").strip(),
                         "description": r["category"].strip(),  # as the adapter does
                         "image": Path(r["images"].strip()).name if r["images"].strip() else "",
                         "attributes": [r["attribute_names"].strip()], "gold": r["attribute_values"].strip(),
                         "domain": f.stem}
            rows.append(r)
    pictures = next((d for d in (files[0].parent / "images", files[0].parent.parent / "images") if d.is_dir()), None)
    return rows, pictures


def accuracy(results: list[dict], rows: list[dict]) -> dict:
    """Exact / lenient accuracy of the answers to rows that carry a gold value; a row answered
    with nothing (or with errors) counts as wrong."""
    scored = []
    for res, row in zip(results, rows):
        if row.get("gold") is None:
            continue
        pred = res["predictions"][0]["value"] if res["predictions"] else ""
        scored.append({"domain": row.get("domain", ""), "attribute": (row.get("attributes") or [""])[0],
                       "gold": row["gold"], "pred": pred})
    overall, per_attribute = accuracy_report(scored)
    overall["per_attribute"] = per_attribute
    overall["unanswered"] = sum(r.get("gold") is not None and not res["predictions"] for res, r in zip(results, rows))
    return overall


def validate(row: dict, known: set[str]) -> tuple[dict | None, list[str]]:
    """A clean product dict or None, and the row's errors."""
    if "_error" in row:
        return None, [row["_error"]]
    errors = []
    pid, name = row.get("id"), row.get("name")
    desc = row.get("description") or ""
    if not isinstance(pid, (str, int)) or str(pid).strip() == "":
        errors.append("missing id")
    if not isinstance(name, str) or not name.strip():
        errors.append("missing name")
    if not isinstance(desc, str):
        errors.append("description is not a string")
    for k in ("name", "description"):
        if isinstance(row.get(k), str) and len(row[k]) > MAX_FIELD:
            errors.append(f"{k} longer than {MAX_FIELD} characters")
    attrs = row.get("attributes") or sorted(known)
    if not isinstance(attrs, list) or not all(isinstance(a, str) for a in attrs):
        errors.append("attributes must be a list of names")
        attrs = []
    unknown = [a for a in attrs if a not in known]
    if unknown:
        errors.append(f"unknown attribute(s): {', '.join(unknown[:5])}")
    if errors:
        return None, errors
    return {"id": str(pid), "name": name.strip(), "description": desc.strip(), "image": row.get("image") or "",
            "attributes": attrs}, []


class Predictor:
    def __init__(self, model_dir: Path, disc_dir: Path | None = None, threshold: float = 0.5,
                 device: str = "cpu", decode: dict | None = None, lexical_dir: Path | None = None):
        self.gen, tok, self.meta = load_generator(model_dir)
        self.qb = QuestionBuilder(tok, self.meta["language"], self.meta["max_len"], self.meta["max_value_len"])
        self.disc = load_discriminator(disc_dir, model_dir)[0] if disc_dir and self.meta["use_discriminator"] else None
        self.image_tok = load_for_inference(model_dir) if self.meta["use_image"] else None
        self.threshold, self.device = threshold, device
        self.decode = decode or {"num_beams": 1, "max_new_tokens": 12, "batch_size": 256}
        self.known = set(self.meta["attributes"])
        self.lexical = None
        if lexical_dir is not None:
            self.attach_lexical(lexical_dir)

    def attach_lexical(self, path: Path) -> None:
        """Load the lexical scorer (the train_lexical stage's models/lexical) that mode 'fused' needs."""
        from .lexical import FILES, LexicalScorer

        if not all((path / f).is_file() for f in FILES):
            raise FileNotFoundError(f"no lexical scorer in {path} (expected {' and '.join(FILES)}); pass --lexical")
        self.lexical = LexicalScorer.load(path)

    def _images(self, products: list[dict], images_dir: Path | None, errors: list[list[str]]):
        """Image tokens per product, loaded exactly as the image stage loads them (same guard, same
        resampling); a missing or broken picture is masked out (text-only row)."""
        if self.image_tok is None:
            return None, None
        size = self.image_tok.resize
        paths = [str(images_dir / p["image"]) if images_dir is not None and p["image"] else p["image"]
                 for p in products]
        blank = np.zeros((size, size, 3), np.uint8)
        arrays = []
        for i, arr, why in load_images(paths, size, "load pictures", progress=False):
            if arr is None and paths[i]:
                errors[i].append(f"image ignored: {why}")
            arrays.append(arr)
        has = np.array([a is not None for a in arrays], dtype=bool)
        return self.image_tok.encode([a if a is not None else blank for a in arrays]), has

    def predict(self, rows: list[dict], images_dir: Path | None = None, progress: bool = True,
                mode: str = "free", alpha: float = 0.5, keep_all: bool = False,
                weights: tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3)) -> list[dict]:
        """One result per row. ``keep_all`` answers every asked attribute (the question is which
        value, not whether: ImplicitAVE); otherwise the discriminator's threshold decides. Modes:
        free text; the best known value (constrained); known values re-ranked with the
        discriminator (``alpha`` on the generator); or fused with the lexical scorer too
        (``weights`` of generator, discriminator, lexical)."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        cands = self.meta.get("candidates") or {}
        if mode != "free" and not cands:
            raise ValueError("this model was saved without candidate values; use mode 'free'")
        if mode in ("rerank", "fused") and self.disc is None:
            raise ValueError(f"mode {mode!r} needs the discriminator")
        if mode == "fused" and self.lexical is None:
            raise ValueError("mode 'fused' needs a lexical scorer (the train_lexical stage's models/lexical)")
        checked = [validate(r, self.known) for r in rows]
        good = [(i, p) for i, (p, _) in enumerate(checked) if p is not None]
        results = [{"id": str(r.get("id", "")), "line": r.get("_line"), "predictions": [], "errors": errs}
                   for r, (_, errs) in zip(rows, checked)]
        if not good:
            return results
        products = [p for _, p in good]
        image, has = self._images(products, images_dir, [results[i]["errors"] for i, _ in good])
        qb = self.qb
        exs = [Example(qb.question(p["name"], p["description"], a), j, None, (j, a))
               for j, p in enumerate(products) for a in p["attributes"]]
        batcher = Batcher(image, has, self.image_tok is not None, qb.img_id)
        # free text where asked, or for attributes without known values (the fallback of the other modes)
        free = [k for k, e in enumerate(exs) if mode == "free" or not cands.get(e.key[1])]
        values = [""] * len(exs)
        for k, v in zip(free, generate_values(self.gen, qb, batcher, [exs[k] for k in free], self.decode,
                                              self.device, desc="predict", progress=progress)):
            values[k] = v
        if mode != "free":
            bs = self.decode.get("batch_size", 256)
            g = candidate_logprobs(self.gen, qb, batcher, exs, cands, bs, self.device, progress)
            d = None
            recs = [Record(p["id"], p["name"], p["description"]) for p in products]
            if mode == "rerank" or (mode == "fused" and weights[1]):  # a weight of 0 needs no scores
                d = discriminator_logprobs(self.disc, qb, batcher, exs, recs, cands, bs, self.device, progress)
            if mode == "fused":
                lex = self.lexical.question_logprobs(recs, [e.key for e in exs], cands) if weights[2] else None
                best = fuse([g, d, lex], weights)  # a source with weight 0 is skipped, so may be None
            else:
                best = combine(g, d, alpha if d is not None else 1.0)
            values = [cands[e.key[1]][b] if b >= 0 else v for e, b, v in zip(exs, best, values)]
        scores = None
        if self.disc is not None:
            claims = [Example(qb.claim(products[e.key[0]]["name"], products[e.key[0]]["description"], e.key[1], v),
                              e.key[0], None, e.key) for e, v in zip(exs, values)]
            scores = score_claims(self.disc, batcher, claims, self.decode.get("batch_size", 256), self.device,
                                  desc="discriminate", progress=progress)
        for k, (e, v) in enumerate(zip(exs, values)):
            s = None if scores is None else float(scores[k])
            if keep(v, s, self.threshold) or (keep_all and v):
                results[good[e.key[0]][0]]["predictions"].append(
                    {"attribute": e.key[1], "value": v, "score": None if s is None else round(s, 4)})
        return results
