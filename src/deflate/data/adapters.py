"""Format adapters (desire, mepave, implicitave, wdc_pave) -> validated, normalised tables.

Every raw row either becomes a :class:`Record` or a reject with its row number and a one-line
reason; nothing is dropped silently. Literals are parsed with :func:`ast.literal_eval` after a
size check and then type-checked; nothing from the data is ever evaluated.
"""
from __future__ import annotations

import ast
import csv
import hashlib
import json
import os
import re
import sqlite3
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

from deflate.data.images import BadImage, open_rgb
from deflate.data.records import (
    SPLITS,
    DataError,
    DataMissing,
    Record,
    Reject,
    RowError,
    TooManyRejects,
    write_records,
)
from deflate.infra.files import atomic_writer, read_json, write_json

MAX_LITERAL_CHARS = 200_000  # a 1,024-token list is ~6k chars; anything huge is hostile
DESIRE_NCOLS = 12
# 1-based positions the published DESIRE code reads.
DESIRE_POS = {"name": 1, "label_name": 9, "description": 10, "pic_token": 11, "attribute": 12}


# --- literal parsing ---------------------------------------------------------------------------
def parse_literal(text: str, what: str):
    """Parse a Python/JSON literal safely: size-capped, no evaluation, errors become RowError."""
    text = text.strip()
    if len(text) > MAX_LITERAL_CHARS:
        raise RowError(f"{what}: literal too long ({len(text)} chars)")
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise RowError(f"{what}: not a plain literal") from None


def parse_pic_tokens(text: str, length: int, vocab: int) -> list[int] | None:
    if not text.strip():
        return None
    toks = parse_literal(text, "pic_token")
    if not isinstance(toks, (list, tuple)) or not all(type(t) is int for t in toks):
        raise RowError("pic_token: not a list of ints")
    if len(toks) != length:
        raise RowError(f"pic_token: {len(toks)} tokens, expected {length}")
    bad = [t for t in toks if not 0 <= t < vocab]
    if bad:
        raise RowError(f"pic_token: id {bad[0]} out of range [0, {vocab})")
    return list(toks)


def parse_attributes(text: str) -> dict[str, list[str]]:
    if not text.strip():
        return {}
    d = parse_literal(text, "attribute")
    if not isinstance(d, dict):
        raise RowError("attribute: not a dict literal")
    out: dict[str, list[str]] = {}
    for k, v in d.items():
        vals = [v] if isinstance(v, str) else v
        if not isinstance(k, str) or not k.strip() or not isinstance(vals, (list, tuple)) \
                or not all(isinstance(x, str) and x.strip() for x in vals):
            raise RowError("attribute: keys and values must be non-empty strings")
        out[k.strip()] = [x.strip() for x in vals]
    return out


def default_source(value: str, text: str) -> str:
    """Without a side file we only know whether the value is stated in the text."""
    return "explicit" if value in text else "implicit"


# --- line reading --------------------------------------------------------------------------------
def _lines(path: Path) -> Iterator[tuple[int, str | None, bytes]]:
    """(line number, decoded text or None if not UTF-8, raw bytes), without the newline."""
    with open(path, "rb") as f:
        for n, raw in enumerate(f, start=1):
            raw = raw.rstrip(b"\r\n")
            try:
                yield n, raw.decode("utf-8"), raw
            except UnicodeDecodeError:
                yield n, None, raw


def _rows(split: str, path: Path, parse, has_header: bool, prefix: str = "") -> Iterator[Record | Reject]:
    """The row loop every adapter shares: decode, skip blanks (and the header), parse, and turn a
    RowError into a Reject. ``parse(line, n)`` returns a Record, or None when it keeps the row itself."""
    for n, line, raw in _lines(path):
        if has_header and n == 1:
            continue
        try:
            if line is None:
                raise RowError("not valid UTF-8")
            if not line.strip():
                continue
            rec = parse(line, n)
            if rec is not None:
                rec.line = rec.line or n
                yield rec
        except RowError as e:
            yield Reject(split, n, f"{prefix}{e}", (line or raw.decode("utf-8", "replace"))[:200])


class SourceIndex:
    """``sources.jsonl`` (each label's source: explicit, implied by the text, or only in the picture)
    as an on-disk SQLite table keyed by (id, attribute, value), looked up row by row. Held as a
    dict it grew with the catalogue (126 MiB for 100k products, ingest's largest allocation;
    benchmarks/ingest_memory.py). A later line wins, as it did in the dict. Every line is
    validated while the index is built; a bad one is a :class:`DataError` naming its line."""

    BATCH = 10_000  # lines inserted per statement

    def __init__(self, path: Path):
        self._tmp = tempfile.TemporaryDirectory(prefix="deflate-sources-")
        self._db = sqlite3.connect(Path(self._tmp.name) / "sources.sqlite")
        self._db.execute("CREATE TABLE s (id TEXT, attribute TEXT, value TEXT, source TEXT, "
                         "PRIMARY KEY (id, attribute, value)) WITHOUT ROWID")
        batch: list[tuple[str, str, str, str]] = []
        for n, line, _ in _lines(path):
            if line is None or not line.strip():
                if line is None:
                    raise DataError(f"{path}:{n}: not valid UTF-8")
                continue
            try:
                s = json.loads(line)
                batch.append((str(s["id"]), str(s["attribute"]), str(s["value"]), str(s["source"])))
            except (ValueError, RecursionError) as e:
                raise DataError(f"{path}:{n}: bad JSON ({str(e)[:80]})") from None
            except (KeyError, TypeError) as e:
                raise DataError(f"{path}:{n}: a line needs id, attribute, value and source ({e})") from None
            if len(batch) >= self.BATCH:
                self._insert(batch)
        self._insert(batch)
        self._db.commit()

    def _insert(self, batch: list) -> None:
        self._db.executemany("INSERT OR REPLACE INTO s VALUES (?, ?, ?, ?)", batch)  # in file order: the later wins
        batch.clear()

    def get(self, key: tuple[str, str, str], default: str) -> str:
        row = self._db.execute("SELECT source FROM s WHERE id = ? AND attribute = ? AND value = ?", key).fetchone()
        return default if row is None else row[0]


def _check_image(path: Path) -> str:
    """Validate a picture; return its path relative to the working directory (where every stage of
    a pipeline runs), so the tables do not depend on where the repository was cloned."""
    open_rgb(path)  # raises BadImage with the reason
    return os.path.relpath(path.resolve(), Path.cwd())


# --- adapters ------------------------------------------------------------------------------------
class DesireAdapter:
    """DESIRE raw TSV: header + 12 columns; also reads our synthetic default (image_path column).

    Real DESIRE files carry ``pic_token`` (precomputed DALL-E tokens) and no image path; the
    synthetic data carries images. A ``sources.jsonl`` side file, if present, gives value sources.
    """

    def __init__(self, root: Path, pic_token_len: int = 1024, pic_token_vocab: int = 8192):
        self.root, self.len, self.vocab = root, pic_token_len, pic_token_vocab
        side = root / "sources.jsonl"
        self.sources: SourceIndex | dict = SourceIndex(side) if side.exists() else {}

    def files(self, split: str) -> list[Path]:
        p = self.root / f"{split}.tsv"
        return [p] if p.exists() else []

    def read(self, split: str) -> Iterator[Record | Reject]:
        for path in self.files(split):
            with open(path, encoding="utf-8", errors="replace") as f:
                header = {name.strip(): i for i, name in enumerate(f.readline().rstrip("\r\n").split("\t"))}
            yield from _rows(split, path, lambda line, n: self._record(line, header, n), has_header=True)

    def _record(self, line: str, header: dict[str, int], n: int) -> Record:
        cols = line.split("\t")
        if len(cols) != DESIRE_NCOLS:
            raise RowError(f"{len(cols)} columns, expected {DESIRE_NCOLS}")
        col = {k: cols[p - 1].strip() for k, p in DESIRE_POS.items()}
        if not col["name"]:
            raise RowError("empty name")
        pid = cols[header["sku_id"]].strip() if "sku_id" in header else f"row{n}"
        if not pid:
            raise RowError("empty id")
        tokens = parse_pic_tokens(col["pic_token"], self.len, self.vocab)
        image = ""
        if "image_path" in header and cols[header["image_path"]].strip():
            rel = cols[header["image_path"]].strip()
            p = (self.root / rel).resolve()
            if self.root.resolve() not in p.parents:
                raise RowError("image path outside the data directory")
            try:
                image = _check_image(p)
            except BadImage as e:
                raise RowError(str(e)) from None
        text = col["name"] + col["description"]
        labels = [{"attribute": a, "value": v,
                   "source": self.sources.get((pid, a, v), default_source(v, text))}
                  for a, vs in parse_attributes(col["attribute"]).items() for v in vs]
        return Record(pid, col["name"], col["description"], col["label_name"], image, tokens, labels)


MEPAVE_TAG = re.compile(r"<(?P<a>[^<>/]+)>(?P<v>[^<>]*)</(?P=a)>")


class MepaveAdapter:
    """MEPAVE: ``cid sid text labelled_text``, no header; values wrapped as ``<attr>value</attr>``."""

    SPLIT_NAMES = {"train": ("train",), "val": ("valid", "val", "dev"), "test": ("test",)}

    def __init__(self, root: Path):
        self.root = root

    def files(self, split: str) -> list[Path]:
        out = []
        for p in sorted(self.root.iterdir()):
            parts = p.name.split(".")
            if p.is_file() and any(s in parts for s in self.SPLIT_NAMES[split]):
                out.append(p)
        return out

    def read(self, split: str) -> Iterator[Record | Reject]:
        for path in self.files(split):
            yield from _rows(split, path, self._record, has_header=False)

    @staticmethod
    def _record(line: str, n: int) -> Record:
        cols = line.split("\t")
        if len(cols) != 4:
            raise RowError(f"{len(cols)} columns, expected 4")
        cid, sid, text, labelled = (c.strip() for c in cols)
        if not text:
            raise RowError("empty text")
        if MEPAVE_TAG.sub(lambda m: m.group("v"), labelled) != text:
            raise RowError("labelled_text does not match text")
        labels = [{"attribute": m.group("a"), "value": m.group("v"), "source": "explicit"}
                  for m in MEPAVE_TAG.finditer(labelled) if m.group("v")]
        return Record(f"{cid}|{sid}", text, "", "", "", None, labels)


class ImplicitAveAdapter:
    """ImplicitAVE: ``id images category texts attribute_names attribute_values`` (header row).

    One row is one (product, attribute); rows of the same product are merged. train/val are
    text-only; the test split is ``eval_visible`` with photos. The category ("Dresses", "Shirts &
    Tops") is the only side text a row carries, so it becomes the description of the question.
    """

    DIRS = {"train": "train", "val": "val", "test": "eval_visible/texts"}

    def __init__(self, root: Path):
        self.root = root

    def files(self, split: str) -> list[Path]:
        d = self.root / self.DIRS[split]
        return sorted(d.glob("*.tsv")) if d.is_dir() else []

    def candidates(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for p in sorted(self.root.glob("options_*.json")):
            for a, vals in read_json(p).items():
                out.setdefault(a, [])
                out[a] += [v for v in vals if v not in out[a]]
        return out

    def read(self, split: str) -> Iterator[Record | Reject]:
        image_dir = self.root / "eval_visible" / "images" if split == "test" else None
        products: dict[str, Record] = {}

        def parse(line: str, n: int, domain: str) -> None:
            cols = line.split("\t")
            if len(cols) != len(IMPLICITAVE_COLUMNS):
                raise RowError(f"{len(cols)} columns, expected {len(IMPLICITAVE_COLUMNS)}")
            row = implicitave_row(dict(zip(IMPLICITAVE_COLUMNS, cols)))  # by position: the header is skipped
            pid, name, attr, value = row.id, row.name, row.attribute, row.value
            if not pid or not name or not attr or not value:
                raise RowError("empty id, text, attribute or value")
            rec = products.get(pid)
            if rec is None:
                image = ""
                if image_dir is not None and row.image:
                    try:
                        image = _check_image(image_dir / row.image)
                    except BadImage as e:
                        raise RowError(str(e)) from None
                rec = products[pid] = Record(pid, name, row.category, f"{domain}/{row.category}", image, line=n)
            if any(lab["attribute"] == attr for lab in rec.labels):
                raise RowError(f"duplicate attribute {attr!r} for id {pid}")
            rec.labels.append({"attribute": attr, "value": value, "source":
                               "explicit" if value.lower() in name.lower() else "text_implied"})

        for path in self.files(split):  # rows of one product are merged, so rejects come first
            yield from _rows(split, path, lambda line, n, d=path.stem: parse(line, n, d), True, f"{path.name}: ")
        yield from products.values()


class WdcPaveAdapter:
    """WDC-PAVE (Brinkmann et al. 2024): JSONL offers ``id cluster_id category input_title
    input_description target_scores``; ``descriptions.csv`` gives each category's attribute schema.

    Title -> name, description -> description. ``target_scores`` names every attribute of the
    category: ``{"n/a": 1}`` means absent (no label), otherwise its keys are alternative correct
    spellings. Each becomes one label whose ``gold`` keeps every spelling (for scoring) and whose
    ``value`` -- the training target -- is the spelling found earliest in title + description
    (longest on ties), because the models copy what they read and the start of the text is what
    survives every system's window. The release has no val split: val is drawn from train, whole
    offers, all offers of one ``cluster_id`` together, by a seeded hash of the cluster
    (:func:`wdc_val_cluster`), ``val_fraction`` of clusters.
    """

    FILES = {"train": "train.jsonl", "val": "train.jsonl", "test": "eval_visible.jsonl"}

    def __init__(self, root: Path, seed: int = 0, val_fraction: float = 0.15):
        if not 0.0 < val_fraction < 1.0:
            raise DataError(f"data.val_fraction must be in (0, 1), got {val_fraction}")
        self.root, self.seed, self.val_fraction = root, seed, val_fraction

    def files(self, split: str) -> list[Path]:
        p = self.root / self.FILES[split]
        return [p] if p.is_file() else []

    def category_attributes(self) -> dict[str, list[str]]:
        """Category -> its attributes, from ``descriptions.csv`` (``;``-separated, file order)."""
        path = self.root / "descriptions.csv"
        out: dict[str, list[str]] = {}
        with open(path, encoding="utf-8-sig", newline="") as f:
            for n, row in enumerate(csv.DictReader(f, delimiter=";"), start=2):
                cat, attr = (row.get("Category") or "").strip(), (row.get("Attribute") or "").strip()
                if not cat or not attr:
                    raise DataError(f"{path}:{n}: a schema row without Category or Attribute")
                if attr not in out.setdefault(cat, []):
                    out[cat].append(attr)
        return out

    def read(self, split: str) -> Iterator[Record | Reject]:
        schema = self.category_attributes()

        def parse(line: str, n: int) -> Record | None:
            row = parse_json_object(line)
            oid, cluster, cat = row.get("id"), row.get("cluster_id"), row.get("category")
            title, desc, scores = row.get("input_title"), row.get("input_description") or "", row.get("target_scores")
            if isinstance(oid, bool) or not isinstance(oid, (int, str)) or str(oid).strip() == "":
                raise RowError("id must be a number or a non-empty string")
            if not isinstance(title, str) or not title.strip() or not isinstance(desc, str):
                raise RowError("input_title must be a non-empty string, input_description a string or null")
            if not isinstance(cat, str) or cat not in schema:
                raise RowError(f"category {str(cat)[:60]!r} is not in descriptions.csv")
            if not isinstance(scores, dict):  # before the split filter: a bad row is reported in every split
                raise RowError("target_scores must be an object")
            if split != "test" and wdc_val_cluster(cluster if cluster is not None else oid, self.seed,
                                                   self.val_fraction) != (split == "val"):
                return None
            unknown = sorted(set(scores) - set(schema[cat]))
            if unknown:
                raise RowError(f"attribute {unknown[0][:60]!r} is not in the schema of {cat!r}")
            title, desc = title.strip(), desc.strip()
            # schema order, so labels do not depend on the row's key order
            labels = wdc_labels(wdc_gold(scores, schema[cat]), f"{title} {desc}")
            return Record(str(oid), title, desc, cat, "", None, labels, line=n)

        for path in self.files(split):
            yield from _rows(split, path, parse, False, f"{path.name}: ")


IMPLICITAVE_COLUMNS = ("id", "images", "category", "texts", "attribute_names", "attribute_values")


@dataclass(frozen=True)
class ImplicitAveRow:
    """One ImplicitAVE row: one (product, attribute) and its value."""
    id: str
    image: str           # the picture's file name ("" when none)
    category: str        # "Dresses", "Shirts & Tops": the only side text, so the question's description
    name: str            # the product text without its "[Title]" mark
    attribute: str
    value: str


def implicitave_row(cols: dict[str, str]) -> ImplicitAveRow:
    """The one parser of an ImplicitAVE row's fields (``cols``: :data:`IMPLICITAVE_COLUMNS` to
    their raw text), for ingest and for ``deflate predict --format implicitave`` alike."""
    c = {k: cols[k].strip() for k in IMPLICITAVE_COLUMNS}
    return ImplicitAveRow(id=c["id"], image=Path(c["images"]).name if c["images"] else "", category=c["category"],
                          name=c["texts"].removeprefix("[Title]").strip(), attribute=c["attribute_names"],
                          value=c["attribute_values"])


def wdc_gold(scores, attributes: list[str]) -> dict[str, list[str]]:
    """The one parser of an offer's ``target_scores``: ``{attribute: correct spellings}`` for each
    of ``attributes`` that the offer states (absent and ``n/a`` ones left out), in ``attributes``
    order; :class:`RowError` when it is not an object of ``{value string: score}`` objects."""
    if not isinstance(scores, dict):
        raise RowError("target_scores must be an object")
    gold = {}
    for attr in attributes:
        vals = scores.get(attr, {"n/a": 1})
        if not isinstance(vals, dict) or not vals or not all(isinstance(v, str) for v in vals):
            raise RowError(f"target_scores[{str(attr)[:60]!r}] must map value strings to scores")
        spellings = wdc_spellings(vals)
        if spellings:
            gold[attr] = spellings
    return gold


def wdc_labels(gold: dict[str, list[str]], text: str) -> list[dict]:
    """One label per stated attribute: every spelling kept as ``gold`` (for scoring), the training
    target (:func:`wdc_target`) as ``value``, ``explicit`` when the text holds it."""
    labels = []
    for attr, spellings in gold.items():
        target = wdc_target(spellings, text)
        labels.append({"attribute": attr, "value": target, "source": "explicit" if target in text else "implicit",
                       "gold": spellings})
    return labels


def wdc_spellings(values: dict) -> list[str]:
    """The correct spellings among one attribute's ``target_scores`` keys (``n/a`` and blanks dropped)."""
    return sorted({v.strip() for v in values if isinstance(v, str)} - {"", "n/a"})


def wdc_target(gold: list[str], text: str) -> str:
    """The training target among correct spellings: the one found earliest in ``text`` (longest on
    ties), else the first in sorted order."""
    found = [(text.find(v), -len(v), v) for v in gold if v in text]
    return min(found)[2] if found else sorted(gold)[0]


def wdc_val_cluster(cluster, seed: int, val_fraction: float) -> bool:
    """Whether a cluster (and every offer in it) goes to val: a seeded SHA-256 of its id, so the
    split does not depend on file order, Python's hash seed or the machine."""
    digest = hashlib.sha256(f"{seed}:{cluster}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < val_fraction


def parse_json_object(line: str) -> dict:
    """One JSONL row: an object, else RowError (also for nesting deep enough to blow the stack)."""
    if len(line) > MAX_LITERAL_CHARS * 5:
        raise RowError(f"line longer than {MAX_LITERAL_CHARS * 5} characters")
    try:
        row = json.loads(line)
    except (ValueError, RecursionError) as e:
        raise RowError(f"bad JSON: {type(e).__name__}") from None
    if not isinstance(row, dict):
        raise RowError("a row must be a JSON object")
    return row


ADAPTERS = {"desire": DesireAdapter, "mepave": MepaveAdapter, "implicitave": ImplicitAveAdapter,
            "wdc_pave": WdcPaveAdapter}


ADAPTER_OPTIONS = {"desire": ("pic_token_len", "pic_token_vocab"), "wdc_pave": ("seed", "val_fraction")}


def check_source(fmt: str, path: str | Path) -> Path:
    """The raw data folder, once the format is known and the folder exists."""
    if fmt not in ADAPTERS:
        raise DataError(f"unknown data.format {fmt!r}; choose one of {sorted(ADAPTERS)}")
    root = Path(path)
    if not root.is_dir():
        raise DataMissing(f"data.path {root} is not a directory")
    return root


def make_adapter(fmt: str, path: str | Path, **kw):
    root = check_source(fmt, path)
    # Each format takes only its own options; the same params stay harmless for the others.
    return ADAPTERS[fmt](root, **{k: kw[k] for k in ADAPTER_OPTIONS.get(fmt, ()) if k in kw})


def ingest(fmt: str, path: str | Path, out: Path, rejects_dir: Path, max_reject_fraction: float,
           language: str = "auto", train_fraction: float = 1.0, seed: int = 0, **adapter_kw) -> dict:
    """Read every split through the adapter, write parquet tables, rejects and the schema.

    Streamed: each split's rows go to its table and rejects file as they are read, so memory does not
    grow with the data (except for a ``train_fraction`` sample, drawn from the whole split). A
    split that fails (no usable row, too many rejects) removes every table written before it."""
    check_source(fmt, path)  # a mistyped format or folder touches nothing
    tables = [out / f"{s}.parquet" for s in SPLITS]
    for old in [*tables, out / "schema.json"]:  # bad data leaves nothing stale
        old.unlink(missing_ok=True)
    adapter = make_adapter(fmt, path, seed=seed, **adapter_kw)
    out.mkdir(parents=True, exist_ok=True)
    rejects_dir.mkdir(parents=True, exist_ok=True)
    report: dict = {"format": fmt, "splits": {}}
    seen: set[str] = set()
    stats = SchemaStats()
    try:
        for split in SPLITS:
            if not adapter.files(split):
                raise DataMissing(f"{fmt}: no {split} file under {path}")
            where = IngestTarget(out / f"{split}.parquet", rejects_dir, fmt, str(path))
            report["splits"][split] = _ingest_split(adapter, split, where, seen, stats, max_reject_fraction,
                                                    train_fraction if split == "train" else 1.0, seed)
    except BaseException:
        for t in tables:
            t.unlink(missing_ok=True)
        raise
    schema = stats.schema(fmt, language, adapter)
    write_json(out / "schema.json", schema, ensure_ascii=False, indent=1, sort_keys=True)
    report["schema"] = {"attributes": len(schema["attributes"]), "language": schema["language"]}
    return report


@dataclass(frozen=True)
class IngestTarget:
    """Where one split goes, and what its errors name."""
    table: Path
    rejects_dir: Path
    fmt: str
    source: str


def _ingest_split(adapter, split: str, where: IngestTarget, seen: set[str], stats: "SchemaStats",
                  max_reject_fraction: float, fraction: float, seed: int) -> dict:
    """One split: its table and rejects file, written as rows are read; the report's entry."""
    bad: Counter = Counter()
    rejects_file = where.rejects_dir / f"{split}.jsonl"

    def triage(rejects) -> Iterator[Record]:
        for item in adapter.read(split):
            if isinstance(item, Record) and item.id not in seen:
                seen.add(item.id)
                yield item
                continue
            if isinstance(item, Record):
                item = Reject(split, item.line or -1, f"duplicate id {item.id}", item.name[:200])
            bad[item.reason.split(":")[0]] += 1
            rejects.write(json.dumps(asdict(item), ensure_ascii=False) + "\n")

    def counted(records) -> Iterator[Record]:
        for r in records:
            stats.add(split, r)
            yield r

    with atomic_writer(rejects_file) as rejects:
        good = triage(rejects)
        if fraction < 1.0:  # low-resource runs (Fig. 3): a sample of the whole split
            import random
            everything = list(good)
            k = max(1, round(len(everything) * fraction))
            good = iter(sorted(random.Random(seed).sample(everything, k), key=lambda r: r.id))
        kept = write_records(where.table, counted(good))
    rejected = sum(bad.values())
    total = kept + rejected
    if not kept:
        raise DataError(f"{where.fmt}: the {split} split has no usable rows ({total} read) under {where.source}; "
                         f"see {where.rejects_dir}")
    print(f"[ingest] {split}: kept {kept}, rejected {rejected}" + (f" (see {rejects_file})" if rejected else ""))
    if total and rejected / total > max_reject_fraction:
        raise TooManyRejects(f"{split}: {rejected}/{total} rows rejected, more than "
                             f"data.max_reject_fraction={max_reject_fraction}; see {where.rejects_dir}")
    return {"kept": kept, "rejected": rejected, "reasons": dict(bad.most_common())}


class SchemaStats:
    """What the schema needs of the tables, gathered record by record as they are written."""

    def __init__(self, sample: int = 200):
        self.counts: Counter = Counter()
        self.values: dict[str, Counter] = {}
        self.n_products: dict[str, int] = {}
        self.sample, self.texts = sample, []

    def add(self, split: str, r: Record) -> None:
        self.n_products[split] = self.n_products.get(split, 0) + 1
        if split != "train":
            return
        for lab in r.labels:
            self.counts[lab["attribute"]] += 1
            self.values.setdefault(lab["attribute"], Counter())[lab["value"]] += 1
        if len(self.texts) < self.sample:  # the language guess reads the first training texts
            self.texts.append(r.text)

    def schema(self, fmt: str, language: str, adapter) -> dict:
        """Attributes (train frequency order), train values per attribute, known candidates, language."""
        attrs = [a for a, _ in sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))]
        if language == "auto":
            text = "".join(self.texts)
            language = "zh" if sum("\u4e00" <= ch <= "\u9fff" for ch in text) > len(text) * 0.2 else "en"
        cands = adapter.candidates() if hasattr(adapter, "candidates") else {}
        schema = {"format": fmt, "language": language, "attributes": attrs,
                  "values": {a: [v for v, _ in self.values[a].most_common()] for a in attrs},
                  "candidates": cands, "n_products": {s: self.n_products.get(s, 0) for s in SPLITS}}
        if hasattr(adapter, "category_attributes"):  # per-category schemas (WDC-PAVE): what each product is asked
            cats = adapter.category_attributes()
            schema["category_attributes"] = cats
            schema["attributes"] = attrs + sorted({a for v in cats.values() for a in v} - set(attrs))
            schema["values"].update({a: [] for a in schema["attributes"] if a not in schema["values"]})
        return schema
