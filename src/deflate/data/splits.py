"""A split as the models see it: the validated records of :mod:`deflate.data.records` plus their image
tokens (none for a text-only pipeline), and the facts of a dataset's schema that every stage asks
for (value separator, candidate values, image vocabulary)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deflate.data.image_tokens import load_tokens
from deflate.data.records import Record, load_split
from deflate.infra.files import read_json

VALUE_SEP = {"zh": "、", "en": ", "}
TEXT_ONLY = {"continuous": False, "vocab_size": 0, "feature_dim": 0, "tokenizer": None}


@dataclass
class Split:
    records: list[Record]
    image: np.ndarray | None      # image tokens (or patch features) per record; None: text-only
    has_image: np.ndarray | None  # whether the record's picture was usable
    meta: dict                    # the image stage's meta.json (TEXT_ONLY without one)


def load_data(processed: Path, tokens_dir: Path, split: str) -> Split:
    records = load_split(processed, split)
    if not (tokens_dir / f"{split}.safetensors").exists():  # a text-only pipeline (no image stage)
        return Split(records, None, None, dict(TEXT_ONLY))
    image, has, meta = load_tokens(tokens_dir, split)
    if len(image) != len(records):
        raise RuntimeError(f"{split}: {len(records)} products but {len(image)} image-token rows; rerun image_tokens")
    return Split(records, image, has, meta)


def load_schema(processed: Path) -> dict:
    return read_json(processed / "schema.json")


def image_spec(meta: dict) -> tuple[int, int]:
    """(image vocab, feature dim): discrete tokens or continuous features."""
    return (0, meta["feature_dim"]) if meta["continuous"] else (meta["vocab_size"], 0)


def value_sep(language: str) -> str:
    """How several gold values of one attribute are joined into one answer."""
    return VALUE_SEP[language if language in VALUE_SEP else "en"]


def grouped_labels(r: Record) -> dict[str, list[str]]:
    """A record's gold values per attribute, in label order."""
    out: dict[str, list[str]] = {}
    for lab in r.labels:
        out.setdefault(lab["attribute"], []).append(lab["value"])
    return out


def right_answers(r: Record, attribute: str, sep: str) -> set[str]:
    """Every answer that counts as right for one attribute of a record: each gold value, their
    joined form, and every alternative spelling the data keeps (WDC-PAVE's ``gold``)."""
    values = grouped_labels(r).get(attribute, [])
    out = set(values) | {sep.join(values)}
    for lab in r.labels:
        if lab["attribute"] == attribute:
            out |= set(lab.get("gold") or ())
    return out


def attributes_of(schema: dict, category: str) -> list[str]:
    """What a product of ``category`` is asked: its category's schema where the data has per-category
    schemas (WDC-PAVE), else every attribute. ``schema`` is schema.json or a generator's meta."""
    return schema.get("category_attributes", {}).get(category) or schema["attributes"]


def candidate_vocab(schema: dict) -> dict[str, list[str]]:
    """Known values per attribute: the dataset's closed option lists, else the training values."""
    return {a: schema["candidates"].get(a) or schema["values"].get(a, []) for a in schema["attributes"]}
