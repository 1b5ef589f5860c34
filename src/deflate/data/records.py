"""The record every layer reads: one product (offer) with its labels, and the processed tables (parquet) that hold them.

Also the errors a bad row or a bad data folder raises."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from deflate.infra.errors import UserError

SPLITS = ("train", "val", "test")


@dataclass
class Record:
    id: str
    name: str
    description: str = ""
    category: str = ""
    image: str = ""                     # validated image, relative to the working directory, or ""
    pic_tokens: list[int] | None = None  # precomputed DALL-E tokens (real DESIRE), or None
    labels: list[dict] = field(default_factory=list)  # [{"attribute", "value", "source"}]
    line: int = 0                       # where the row (its first row) stands in the raw file; not saved

    @property
    def text(self) -> str:
        return self.name + self.description


@dataclass
class Reject:
    split: str
    row: int       # 1-based line number in the raw file (the header is line 1)
    reason: str
    raw: str = ""


class RowError(ValueError):
    """A raw row that cannot be used; the message is the reject reason."""


class DataError(UserError, ValueError):
    """A dataset that cannot be ingested as a whole (the message names the file or setting)."""


class DataMissing(UserError, FileNotFoundError):
    """``data.path`` or a split's file is not there."""


class TooManyRejects(UserError, RuntimeError):
    """More rows rejected than ``data.max_reject_fraction`` allows (the rejects folder says why)."""


# --- records as tables on disk (parquet) --------------------------------------------------------
def records_to_frame(records: list[Record]) -> pd.DataFrame:
    rows = []
    for r in records:
        d = asdict(r)
        d["labels"] = json.dumps(d["labels"], ensure_ascii=False)
        d["pic_tokens"] = json.dumps(d["pic_tokens"]) if d["pic_tokens"] is not None else ""
        rows.append(d)
    cols = ["id", "name", "description", "category", "image", "pic_tokens", "labels"]
    return pd.DataFrame(rows, columns=cols)


def frame_to_records(df: pd.DataFrame) -> list[Record]:
    return [Record(r.id, r.name, r.description, r.category, r.image,
                   json.loads(r.pic_tokens) if r.pic_tokens else None, json.loads(r.labels))
            for r in df.itertuples(index=False)]


def load_split(processed: Path, split: str) -> list[Record]:
    return frame_to_records(pd.read_parquet(processed / f"{split}.parquet"))
