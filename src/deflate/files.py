"""Writing outputs so that a reader never sees half a file: a temporary file in the same folder,
flushed to disk, then renamed over the target (atomic on POSIX)."""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: Path):
    """A temporary path beside ``path`` for a writer that wants a file name (parquet, savefig):
    renamed over ``path`` when the block ends without an error, removed otherwise."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_writer(path: Path):
    """A text file handle for ``path`` written bit by bit: nothing appears at ``path`` until the
    block ends without an error, and then all of it does."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


def write_text(path: Path, text: str) -> None:
    with atomic_writer(path) as f:
        f.write(text)


def write_json(path: Path, obj, **dumps) -> None:
    """``json.dumps(obj, **dumps)`` written atomically."""
    write_text(path, json.dumps(obj, **dumps))


def write_jsonl(path: Path, rows) -> None:
    """One JSON object per line (non-ASCII kept), written atomically."""
    write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in Path(path).read_text(encoding="utf-8").splitlines() if x.strip()]
