"""The record every layer reads: one product (offer) with its labels, and the processed tables (parquet) that hold them.

Also the errors a bad row or a bad data folder raises."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import pandas as pd

from deflate.infra.errors import UserError
from deflate.infra.files import atomic_path, chunked

SPLITS = ("train", "val", "test")
_COLUMNS = ("id", "name", "description", "category", "image", "pic_tokens", "labels")  # a table's, in order


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
ROW_GROUP = 8_192  # rows held and written at a time; a table of at most this many is one row group.
# 65,536 until #36: a 100k catalogue's 80k-row train split then held ~180 MiB at once (benchmarks/ingest_memory.py)


def records_to_frame(records: list[Record]) -> pd.DataFrame:
    rows = []
    for r in records:
        d = asdict(r)
        d["labels"] = json.dumps(d["labels"], ensure_ascii=False)
        d["pic_tokens"] = json.dumps(d["pic_tokens"]) if d["pic_tokens"] is not None else ""
        rows.append(d)
    return pd.DataFrame(rows, columns=list(_COLUMNS))


def frame_to_records(df: pd.DataFrame) -> list[Record]:
    return [Record(r.id, r.name, r.description, r.category, r.image,
                   json.loads(r.pic_tokens) if r.pic_tokens else None, json.loads(r.labels))
            for r in df.itertuples(index=False)]


def write_records(path: Path, records: Iterable[Record]) -> int:
    """Write records as a parquet table, :data:`ROW_GROUP` rows at a time (the memory held does not
    grow with the table; up to ``ROW_GROUP`` rows the bytes are those of ``DataFrame.to_parquet``).
    Nothing appears at ``path`` unless every record was written; returns how many were."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    n, writer = 0, None
    with atomic_path(path) as tmp:
        try:
            for chunk in chunked(records, ROW_GROUP):
                table = pa.Table.from_pandas(records_to_frame(chunk), preserve_index=False)
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema)
                writer.write_table(table.cast(writer.schema))
                n += len(chunk)
            if writer is None:  # no record: an empty table with the columns
                records_to_frame([]).to_parquet(tmp, index=False)
        finally:
            if writer is not None:
                writer.close()
    return n


def iter_records(processed: Path, split: str, columns: list[str] | None = None) -> Iterator[Record]:
    """The records of a split, one parquet batch at a time; ``columns`` reads only those (the
    others get their defaults)."""
    import pyarrow.parquet as pq

    cols = columns or list(_COLUMNS)
    for batch in pq.ParquetFile(processed / f"{split}.parquet").iter_batches(batch_size=ROW_GROUP, columns=cols):
        df = batch.to_pandas()
        for col in _COLUMNS:
            if col not in df:
                df[col] = "[]" if col == "labels" else ""
        yield from frame_to_records(df[list(_COLUMNS)])


def load_split(processed: Path, split: str) -> list[Record]:
    return frame_to_records(pd.read_parquet(processed / f"{split}.parquet"))
