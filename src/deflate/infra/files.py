"""Writing outputs so that a reader never sees half a file: a temporary file in the same folder,
flushed to disk, then renamed over the target (atomic on POSIX). Folders are built beside their
target and swapped in."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _usual_mode(path: Path, base: int) -> None:
    """mkstemp/mkdtemp make private (0600/0700) entries; give them what open/mkdir would have."""
    os.chmod(path, base & ~_umask())


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@contextmanager
def atomic_path(path: Path):
    """A temporary path beside ``path`` for a writer that wants a file name (parquet, savefig):
    renamed over ``path`` when the block ends without an error, removed otherwise."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    _usual_mode(Path(tmp), 0o666)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_dir(path: Path):
    """An empty folder beside ``path`` to build in; when the block ends without an error it replaces
    ``path`` (the old folder is moved aside first, then removed), otherwise it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    _usual_mode(tmp, 0o777)
    try:
        yield tmp
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
            os.replace(path, old / path.name)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def atomic_writer(path: Path):
    """A text file handle for ``path`` written bit by bit: nothing appears at ``path`` until the
    block ends without an error, and then all of it does."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


@contextmanager
def atomic_output(path: Path, sidecar: Path):
    """A text handle for ``path`` and a dict to fill while writing. When the block ends without an
    error the old ``sidecar`` is removed, the new output renamed in, and the dict (with the
    output's SHA-256) written as the new sidecar, with SIGINT and SIGTERM held across those three
    steps. So a sidecar always describes the output beside it: a SIGKILL there can leave the new
    output without one (incomplete, by the sidecar's rule), never the old one beside the new output."""
    import signal

    info: dict = {}
    held = None
    try:
        with atomic_path(path) as tmp:
            with open(tmp, "w", encoding="utf-8") as f:
                yield f, info
                f.flush()
                os.fsync(f.fileno())
            digest = sha256(tmp)
            held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
            Path(sidecar).unlink(missing_ok=True)
        write_json(sidecar, {**info, "sha256": digest}, indent=1)  # the output is in place now
    finally:
        if held is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)


def write_text(path: Path, text: str) -> None:
    with atomic_writer(path) as f:
        f.write(text)


def write_json(path: Path, obj, **dumps) -> None:
    """``json.dumps(obj, **dumps)`` written atomically."""
    write_text(path, json.dumps(obj, **dumps))


def write_jsonl(path: Path, rows) -> None:
    """One JSON object per line (non-ASCII kept), written atomically; ``rows`` may be a generator
    (written as it yields: the file's size does not bound the memory)."""
    with atomic_writer(path) as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def read_json(path: Path):
    """The one reader of a JSON file the pipeline wrote (UTF-8): schemas, manifests, metrics.
    Model-folder files, which an outsider may have written, go through the checked reader
    :func:`deflate.infra.bundle.read_json` (size, depth, UTF-8 limits; errors name the file)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def iter_jsonl(path: Path):
    """The objects of a JSONL file the pipeline wrote, one line at a time (blank lines skipped).
    Lines end at ``\n`` only: a raw U+2028 inside a string (``ensure_ascii=False`` keeps it) is text."""
    with open(path, "rb") as f:
        for raw in f:
            if raw.strip():
                yield json.loads(raw.decode("utf-8"))


def read_jsonl(path: Path) -> list[dict]:
    return list(iter_jsonl(path))


def chunked(items: Iterable, size: int) -> Iterator[list]:
    """Consecutive lists of ``size`` items (the last may be shorter): how a stream is read, answered
    and written a bounded piece at a time."""
    chunk: list = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
