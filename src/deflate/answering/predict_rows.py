"""What ``deflate predict`` and the pyfunc read: products to answer, validated row by row.

Input: JSONL (one object per line) or TSV with a header, fields ``id``, ``name``, optional
``description``, ``image`` (a path inside the allowed image folder) or ``image_b64`` (the picture's
bytes, base64) and ``attributes`` (a JSON list, or
``|``-separated in TSV; default: every attribute the model knows). Output: one JSON line per input
row, ``{"id", "predictions": [{"attribute", "value", "score"}], "errors": [...]}``. A row with
bad fields gets its errors and no predictions (:func:`checked_rows`, duplicates included); a broken
picture is reported and the row is answered from its text (:func:`row_pictures`). Nothing stops
the run.

``--format implicitave`` reads ImplicitAVE TSVs (a file or a folder of them; columns ``id images
category texts attribute_names attribute_values``): each row asks its one attribute, carries its
gold value, and :func:`deflate.evaluation.metrics.accuracy_of` scores the answers (exact and
ImplicitAVE's lenient match).
Answering is :class:`deflate.answering.engine.Deflate`'s.
"""
from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path
from typing import Iterator

import numpy as np

from deflate.data.adapters import IMPLICITAVE_COLUMNS, implicitave_row, wdc_gold
from deflate.data.image_tokens import load_images
from deflate.data.images import confine
from deflate.data.records import RowError

MAX_FIELD = 20_000
MAX_LINE = 1 << 20  # bytes; a longer line is that row's error, and is never held in memory whole
MAX_IMAGE_B64 = 16 << 20  # characters of an inline picture


def _lines(path: Path):
    """(line number, bytes without the newline, or None for a line over ``MAX_LINE``), streamed."""
    with open(path, "rb") as f:
        n = 0
        while True:
            raw = f.readline(MAX_LINE + 1)
            if not raw:
                return
            n += 1
            if len(raw) > MAX_LINE and not raw.endswith(b"\n"):
                while raw and not raw.endswith(b"\n"):  # skip the rest of the long line
                    raw = f.readline(MAX_LINE)
                yield n, None
                continue
            yield n, raw.rstrip(b"\n")


def read_rows(path: Path) -> list[dict]:
    """All of :func:`iter_rows`."""
    return list(iter_rows(path))


def iter_rows(path: Path) -> Iterator[dict]:
    """Raw rows with a ``_line`` number, one at a time; undecodable, malformed or over-long lines
    become ``_error`` rows."""
    too_long = f"line longer than {MAX_LINE} bytes"
    if path.suffix.lower() in (".tsv", ".tab"):
        header = None
        for n, raw in _lines(path):
            if raw is None:
                yield {"_line": n, "_error": too_long}
                continue
            try:
                line = raw.rstrip(b"\r").decode("utf-8")
            except UnicodeDecodeError:
                yield {"_line": n, "_error": "not valid UTF-8"}
                continue
            if not line.strip():
                continue
            cols = line.split("\t")  # no quoting in these files: a plain split (csv.reader chokes on a bare \r)
            if header is None:
                header = [c.strip() for c in cols]
                continue
            if len(cols) != len(header):
                yield {"_line": n, "_error": f"{len(cols)} columns, expected {len(header)}"}
                continue
            row = {**{h: c for h, c in zip(header, cols) if not h.startswith("_")}, "_line": n}  # "_" keys are ours
            if row.get("attributes"):
                row["attributes"] = [a.strip() for a in row["attributes"].split("|") if a.strip()]
            yield row
        return
    for n, raw in _lines(path):
        if raw is None:
            yield {"_line": n, "_error": too_long}
            continue
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw.decode("utf-8"))
            obj = ({**{k: v for k, v in obj.items() if not k.startswith("_")}, "_line": n} if isinstance(obj, dict)
                   else {"_line": n, "_error": "bad JSON: not a JSON object"})  # "_" keys are ours
        except UnicodeDecodeError:
            obj = {"_line": n, "_error": "not valid UTF-8"}
        except RecursionError:
            obj = {"_line": n, "_error": "bad JSON: nested too deeply"}
        except ValueError as e:
            obj = {"_line": n, "_error": f"bad JSON: {str(e)[:80]}"}
        yield obj


def iter_wdc_pave(path: Path) -> Iterator[dict]:
    """WDC-PAVE JSONL offers as product rows (title -> name, description, category) carrying their
    gold: ``{"attribute": [correct spellings]}`` for stated attributes (``n/a`` ones are absent)."""
    for row in iter_rows(path):
        if "_error" in row:
            yield row
            continue
        scores = row.get("target_scores")
        try:
            gold = wdc_gold(scores, list(scores)) if scores is not None else {}
        except RowError as e:
            yield {"_line": row["_line"], "_error": str(e)}
            continue
        yield {"id": row.get("id"), "name": row.get("input_title"), "description": row.get("input_description"),
               "category": row.get("category"), "gold": gold, "_line": row["_line"]}


def read_implicitave(path: Path) -> tuple[Iterator[dict], Path | None]:
    """Rows of ImplicitAVE TSVs (a file, or a folder with ``*.tsv`` or ``texts/*.tsv``) as predict
    rows with ``gold`` and ``domain``, read as they are consumed; and the pictures' folder when one
    sits beside the texts."""
    files = [path] if path.is_file() else sorted(path.glob("*.tsv")) or sorted(path.glob("texts/*.tsv"))
    if not files:
        raise FileNotFoundError(f"no ImplicitAVE .tsv files in {path}")
    pictures = next((d for d in (files[0].parent / "images", files[0].parent.parent / "images") if d.is_dir()), None)
    return _implicitave_rows(files), pictures


def _implicitave_rows(files: list[Path]) -> Iterator[dict]:
    for f in files:
        for r in iter_rows(f):
            r["_file"] = f.name
            if "_error" not in r:
                missing = [c for c in IMPLICITAVE_COLUMNS if c not in r]
                if missing:
                    r = {"_line": r["_line"], "_file": f.name, "_error": f"missing column(s) {', '.join(missing)}"}
                else:
                    x = implicitave_row(r)
                    r = {"_line": r["_line"], "_file": f.name, "id": x.id, "name": x.name,
                         "description": x.category,  # as the adapter does
                         "image": x.image, "attributes": [x.attribute], "gold": x.value, "domain": f.stem}
            yield r


def unicode_ok(s: str) -> bool:
    """Whether ``s`` is text that can be written as UTF-8 (JSON's ``"\\ud800"`` decodes to a lone
    surrogate, which cannot)."""
    try:
        s.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def shown(x, limit: int = 200) -> str:
    """A row's value as it may appear in an output or a message: a string or integer id, cut to
    ``limit`` characters, any lone surrogate written as ``\\udXXX``; anything else as ""."""
    if isinstance(x, bool) or not isinstance(x, (str, int)):
        return ""
    s = x[:limit] if isinstance(x, str) else str(x) if abs(x) < 1 << 63 else "(an integer beyond 64 bits)"
    return s if unicode_ok(s) else s.encode("utf-8", "backslashreplace").decode("utf-8")


def json_line(record: dict) -> str:
    """One output line, valid UTF-8 whatever a row held (non-ASCII kept where it can be)."""
    line = json.dumps(record, ensure_ascii=False)
    return (line if unicode_ok(line) else json.dumps(record)) + "\n"


def validate(row: dict, known: set[str], category_attributes: dict | None = None) -> tuple[dict | None, list[str]]:
    """A clean product dict or None, and the row's errors. Without ``attributes`` a row is asked
    its ``category``'s schema where the model has per-category schemas, else every known attribute
    (each asked once however often the row names it). Every string must be valid Unicode; ids are
    strings or integers (not booleans); an image path holds no NUL."""
    if "_error" in row:
        return None, [shown(row["_error"]) or "bad row"]
    errors = []
    pid, name = row.get("id"), row.get("name")
    desc = row.get("description") or ""
    for k in ("id", "name", "description", "category", "image"):
        if isinstance(row.get(k), str) and not unicode_ok(row[k]):
            errors.append(f"{k} is not valid Unicode (a lone surrogate)")
    if isinstance(pid, bool) or not isinstance(pid, (str, int)) or shown(pid).strip() == "" \
            or isinstance(pid, int) and abs(pid) >= 1 << 63:
        blank = pid is None or isinstance(pid, str) and not pid.strip()
        errors.append("missing id" if blank else "id must be a string or an integer")
    if not isinstance(name, str) or not name.strip():
        errors.append("missing name")
    if not isinstance(desc, str):
        errors.append("description is not a string")
    image = row.get("image")
    if image is not None and not isinstance(image, str):
        errors.append("image must be a path (a string)")
    elif isinstance(image, str) and "\x00" in image:
        errors.append("image path contains a NUL character")
    picture = None
    if row.get("image_b64") not in (None, ""):
        inline = row["image_b64"]
        if not isinstance(inline, str) or len(inline) > MAX_IMAGE_B64:
            errors.append(f"image_b64 must be base64 text of at most {MAX_IMAGE_B64} characters")
        else:
            try:
                picture = base64.b64decode(inline, validate=True)
            except (binascii.Error, ValueError):
                errors.append("image_b64 is not valid base64")
    for k in ("name", "description"):
        if isinstance(row.get(k), str) and len(row[k]) > MAX_FIELD:
            errors.append(f"{k} longer than {MAX_FIELD} characters")
    category = row.get("category") or ""
    if not isinstance(category, str):
        errors.append("category must be a string")
        category = ""
    attrs = row.get("attributes") or list((category_attributes or {}).get(category, [])) or sorted(known)
    if not isinstance(attrs, list) or not all(isinstance(a, str) for a in attrs):
        errors.append("attributes must be a list of names")
        attrs = []
    attrs = list(dict.fromkeys(attrs))  # a name repeated 10,000 times is asked once
    unknown = [a for a in attrs if a not in known]
    if unknown:
        errors.append(f"unknown attribute(s): {', '.join(shown(a, 60) for a in unknown[:5])}")
    if errors:
        return None, errors
    return {"id": str(pid), "name": name.strip(), "description": desc.strip(), "category": category,
            "image": image or "", "image_bytes": picture, "attributes": attrs}, []


def checked_rows(rows: list[dict], known: set[str], category_attributes: dict | None = None,
                 seen: dict | None = None) -> list[tuple[dict | None, list[str]]]:
    """:func:`validate` of every row; a row asking again what an earlier row asked (same id and
    attributes) is an error of the later row (pass the same ``seen`` to every chunk of one input)."""
    checked = [validate(r, known, category_attributes) for r in rows]
    first: dict[tuple, object] = {} if seen is None else seen
    for k, (r, (p, _)) in enumerate(zip(rows, checked)):
        if p is None:
            continue
        asked = (p["id"], tuple(sorted(p["attributes"])))
        if asked in first:
            checked[k] = (None, [f"duplicate of line {first[asked]} (same id {p['id']!r} and attributes)"])
        else:
            first[asked] = r.get("_line", k + 1)
    return checked


def row_pictures(image_tok, products: list[dict], images_dir: Path | None, errors: list[list[str]]):
    """Image tokens per product (``image_tok``: a bundle's image tokenizer, None when its generator
    is text-only), loaded exactly as the image stage loads them (same guard, same resampling). A
    picture comes as bytes (``image_bytes``) or as a path inside ``images_dir`` (after symlinks;
    anything else is refused without touching it); a refused, missing or broken picture is reported
    in ``errors`` and masked out (the row is answered from its text)."""
    if image_tok is None:
        return None, None
    sources: list = []
    for i, p in enumerate(products):
        source = p.get("image_bytes") or ""
        if not source and p["image"]:
            where = confine(images_dir, p["image"]) if images_dir is not None else None
            if where is None:
                errors[i].append("image ignored: outside the allowed image folder" if images_dir is not None
                                 else "image ignored: no image folder allowed here; send the picture as image_b64")
            else:
                source = str(where)
        sources.append(source)
    size = image_tok.resize
    blank = np.zeros((size, size, 3), np.uint8)
    arrays = []
    for i, arr, why in load_images(sources, size, "load pictures", progress=False):
        if arr is None and sources[i]:
            errors[i].append(f"image ignored: {why}")
        arrays.append(arr)
    has = np.array([a is not None for a in arrays], dtype=bool)
    return image_tok.encode([a if a is not None else blank for a in arrays]), has
