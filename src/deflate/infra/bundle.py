"""A bundle on disk: the folder ``deflate predict`` and the MLflow model answer from, verified and
confined; and the one validated reader of every JSON record a model folder holds.

A bundle is ``bundle.json`` (the :class:`Decisions` made on val, the decode settings, and the
SHA-256 of every other file) beside the trained parts (``generator/``, ``discriminator/``,
``lexical/``). :func:`read_bundle` refuses, naming the file, before any work:

- a file that is missing, damaged or changed (its SHA-256), or one the manifest does not list;
- anything that is not a plain file or folder inside the bundle (a symlink, even to a file inside);
- any field of ``bundle.json`` or of the parts' JSON outside its schema (types, ranges, finite).

Files an image tokenizer needs beyond the model folder (a DALL-E encoder, a ViT folder) are copied
into the bundle when it is written, so nothing a bundle names lies outside it.
"""
from __future__ import annotations

import json
import numbers
import os
import re
import shutil
import stat
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, Optional, TypeVar

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from deflate.infra.errors import UserError
from deflate.infra.files import atomic_dir, sha256, write_text

BUNDLE_FILE = "bundle.json"
FORMAT = 2  # 2: every file's SHA-256 in bundle.json (format 1 had none and is refused)
MODES = ("free", "constrained", "rerank", "fused")
PARTS = ("generator", "discriminator", "lexical")
DECODE_KEYS = ("batch_size", "max_new_tokens", "num_beams", "constrain_to_vocab", "constrain_to_spans", "span_words",
               "rerank_beams")
MAX_JSON_BYTES = 64 << 20  # a tokenizer.json of a 250k vocabulary is ~20 MB
MAX_DEPTH = 64  # nesting of any JSON record a model folder holds (ours need 4)
BUNDLED_IMAGE_FILES = "image_files"  # where write_bundle copies an image tokenizer's external files
_SAFE_NAME = re.compile(r"[A-Za-z0-9._+-]{1,128}")


class BundleError(UserError, ValueError):
    """A bundle or model folder that cannot be used; the message names the file and the field."""


# --- JSON records: one reader, one schema per kind ------------------------------------------------------
class Record(BaseModel):
    """Strict types (no "3" for 3, no 1 for true), finite numbers, unknown keys refused."""
    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False, frozen=True)


Count = Field(ge=1, le=1 << 20)
Short = Field(max_length=512)


class Cost(Record):
    train_seconds: float = Field(ge=0)
    peak_memory_mb: float = Field(ge=0)


class Kernels(Record):
    """What computed a model (:func:`deflate.infra.kernels.describe`)."""
    kernels: str = Field(max_length=64)
    threads: int = Field(ge=1, le=1 << 16)
    torch: str = Field(max_length=64)
    mkl: str = Field(max_length=256)
    aten_capability: str = Field(max_length=64)


class CopyWarmup(Record):
    steps: int = Field(ge=0)
    run: str = Short


class EncoderStatesRecord(Record):
    """The frozen pretrained encoder a generator reads (``model.encoder_states``), its copy in the
    generator's ``encoder_states/`` folder."""
    name: str = Field(min_length=1, max_length=64)
    package: str = Field(min_length=1, max_length=128)
    version: str = Field(min_length=1, max_length=64)
    sha256: dict[str, str] = Field(min_length=1, max_length=64)
    dim: int = Field(ge=1, le=1 << 16)
    max_pieces: int = Field(ge=1, le=1 << 16)


def _names(xs: list[str], what: str) -> list[str]:
    if len(set(xs)) != len(xs):
        raise ValueError(f"{what} repeat a name")
    if any(not x or len(x) > 200 or "\x00" in x for x in xs):
        raise ValueError(f"{what} must be names of 1 to 200 characters without NUL")
    return xs


class GeneratorMeta(Record):
    """``generator/deflate.json``: what the generator was trained with and answers."""
    attributes: list[str] = Field(min_length=1, max_length=100_000)
    candidates: dict[str, list[str]]
    category_attributes: Optional[dict[str, list[str]]] = None
    value_sep: str = Field(min_length=1, max_length=8)
    language: Literal["zh", "en"]
    max_len: int = Field(ge=4, le=8192)
    max_value_len: int = Field(ge=1, le=1024)
    target_form: Literal["standalone", "as_in_text"] = "standalone"
    answer_prefix: bool = False
    use_image: bool
    use_discriminator: bool
    image_vocab: int = Field(ge=0, le=1 << 20)
    feature_dim: int = Field(ge=0, le=1 << 16)
    copy_: bool = Field(default=False, alias="copy")  # a pointer-generator (model.PointerT5)
    token_shapes: bool = False  # a learned vector per token shape class on the encoder's input (model.token_shapes)
    question: Literal["attribute", "offer"] = "attribute"  # model.question: what the encoder is asked
    encoder_states: Optional[EncoderStatesRecord] = None  # model.encoder_states: the frozen encoder it reads
    copy_warmup: Optional[CopyWarmup] = None
    params: int = Field(ge=0)
    device: str = Short
    cost: Optional[Cost] = None  # folders written before the measured cost moved to logs/costs
    kernels: Optional[Kernels] = None

    @field_validator("attributes")
    @classmethod
    def _attributes(cls, v):
        return _names(v, "attributes")

    @model_validator(mode="after")
    def _known(self):
        known = set(self.attributes)
        for what, table in (("candidates", self.candidates), ("category_attributes", self.category_attributes or {})):
            for k, vs in table.items():
                if what == "candidates" and k not in known:
                    raise ValueError(f"candidates name an unknown attribute {k[:40]!r}")
                if what == "category_attributes" and not set(vs) <= known:
                    raise ValueError(f"category_attributes of {k[:40]!r} name an unknown attribute")
                if len(vs) > 100_000 or any(len(x) > 2000 for x in vs):
                    raise ValueError(f"{what} of {k[:40]!r}: at most 100,000 names of at most 2,000 characters")
        return self


class DiscriminatorMeta(Record):
    """``discriminator/deflate.json``."""
    enabled: bool = True
    claim_value: bool = True
    mark_value: bool = False
    freeze_encoder: bool = False
    device: str = Field(default="", max_length=512)  # where it trained (a record, not a setting)
    cost: Optional[Cost] = None  # folders written before the measured cost moved to logs/costs
    kernels: Optional[Kernels] = None


class Sizes(Record):
    """A T5's sizes, bounded (params.yaml's ``model`` and a saved ``config.json`` alike)."""
    d_model: int = Field(ge=1, le=16384)
    d_ff: int = Field(ge=1, le=65536)
    d_kv: int = Field(ge=1, le=4096)
    num_heads: int = Field(ge=1, le=256)
    num_layers: int = Field(ge=1, le=128)
    num_decoder_layers: int = Field(ge=1, le=128)


class T5Fields(Sizes):
    """``generator/config.json``: the fields that size the network, bounded; a pretrained
    checkpoint's other transformers keys pass (the file's SHA-256 is checked in a bundle)."""
    model_config = ConfigDict(strict=True, extra="allow", allow_inf_nan=False, frozen=True)
    model_type: Literal["t5"]
    vocab_size: int = Field(ge=8, le=1 << 20)
    relative_attention_num_buckets: int = Field(default=32, ge=1, le=1024)
    relative_attention_max_distance: int = Field(default=128, ge=1, le=1 << 16)
    dropout_rate: float = Field(default=0.1, ge=0, lt=1)
    layer_norm_epsilon: float = Field(default=1e-6, gt=0, lt=1)
    feed_forward_proj: Literal["relu", "gated-gelu", "gated-relu", "gated-silu", "gelu"] = "relu"
    pad_token_id: int = Field(default=0, ge=0)
    eos_token_id: int = Field(default=1, ge=0)
    decoder_start_token_id: Optional[int] = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _ids(self):
        ids = (self.pad_token_id, self.eos_token_id, self.decoder_start_token_id or 0)
        if max(ids) >= self.vocab_size:
            raise ValueError("token ids must be smaller than vocab_size")
        if "auto_map" in (self.model_extra or {}):
            raise ValueError("auto_map (remote code) is not allowed")
        return self


class TokenizerConfig(Record):
    """``tokenizer/tokenizer_config.json``: only classes that read ``tokenizer.json``, no remote code."""
    model_config = ConfigDict(strict=True, extra="allow", allow_inf_nan=False, frozen=True)
    tokenizer_class: Literal["TokenizersBackend", "PreTrainedTokenizerFast", "T5TokenizerFast", "T5Tokenizer",
                             "BertTokenizerFast", "BertTokenizer"] = "PreTrainedTokenizerFast"

    @model_validator(mode="after")
    def _no_remote_code(self):
        if "auto_map" in (self.model_extra or {}):
            raise ValueError("auto_map (remote code) is not allowed")
        return self


class DalleSizes(Record):
    n_hid: int = Field(default=256, ge=1, le=4096)
    vocab_size: int = Field(default=8192, ge=2, le=1 << 20)
    n_blk_per_group: int = Field(default=2, ge=1, le=16)


class ImageConfig(Record):
    """``params.yaml``'s ``image`` section as a model saved it (``image.json``'s ``cfg``)."""
    tokenizer: Literal["visual_words", "dalle", "patches"]
    grid: int = Field(ge=1, le=64)
    vocab_size: int = Field(ge=2, le=1 << 20)
    resize: int = Field(ge=2, le=4096)
    batch_size: int = Count
    num_threads: int = Field(ge=1, le=1024)
    dalle_encoder_path: str = Field(max_length=4096)
    dalle_resize: int = Field(ge=2, le=4096)
    dalle_sizes: DalleSizes = DalleSizes()
    vit_path: str = Field(max_length=4096)


class ImageTokensMeta(Record):
    """``image.json``'s ``meta``: what the image stage made (``splits`` is a report, not read)."""
    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False, frozen=True)
    tokenizer: Literal["visual_words", "dalle", "patches"]
    splits: dict[str, dict] = {}
    text_only: bool = False
    codebook_sha256: str = Field(default="", max_length=64)
    continuous: bool = False
    seq_len: int = Field(default=0, ge=0, le=1 << 16)
    feature_dim: int = Field(default=0, ge=0, le=1 << 16)
    vocab_size: int = Field(default=0, ge=0, le=1 << 20)
    pad_id: int = Field(default=0, ge=0, le=1 << 20)
    grid: int = Field(default=0, ge=0, le=64)


class ImageSpec(Record):
    """``generator/image.json``: how a new product's picture is tokenized."""
    cfg: ImageConfig
    meta: ImageTokensMeta


class LexicalAttribute(Record):
    name: str = Field(min_length=1, max_length=200)
    classes: list[str] = Field(min_length=1, max_length=100_000)
    word: Optional[list[str]] = None
    char: Optional[list[str]] = None


class LexicalConfig(Record):
    max_features: Optional[int] = Field(ge=1)
    C: float = Field(gt=0)


class LexicalMeta(Record):
    """``lexical/lexical.json``."""
    config: LexicalConfig
    attributes: list[LexicalAttribute]


class KeepModelSchema(Record):
    """A learned keep decision: a logistic regression over named features (deflate.answering.keep_model)."""
    features: list[str] = Field(min_length=1, max_length=64)
    mean: list[float]
    scale: list[float]
    coef: list[float]
    intercept: float

    @model_validator(mode="after")
    def _shapes(self):
        if not len(self.mean) == len(self.scale) == len(self.coef) == len(self.features):
            raise ValueError("keep_model: features, mean, scale and coef must have one entry per feature")
        if min(self.scale) <= 0:
            raise ValueError("keep_model: every scale must be positive")
        return self


class DecisionsSchema(Record):
    mode: Literal[MODES]
    threshold: float = Field(ge=0, le=1)
    keep_all: bool
    alpha: float = Field(ge=0, le=1)
    weights: list[float] = Field(min_length=3, max_length=3)
    keep_weight: float = Field(default=0.0, ge=0, lt=1)
    presence_threshold: Optional[float] = Field(default=None, ge=0, le=1)
    keep_model: Optional[KeepModelSchema] = None

    @field_validator("weights")
    @classmethod
    def _weights(cls, v):
        if min(v) < 0 or sum(v) <= 0:
            raise ValueError("weights must be three non-negative numbers (generator, discriminator, lexical) "
                             "with a positive sum")
        return v


class DecodeSchema(Record):
    batch_size: int = Count
    max_new_tokens: int = Field(ge=1, le=1024)
    num_beams: int = Field(ge=1, le=64)
    constrain_to_vocab: bool
    constrain_to_spans: bool
    span_words: bool = False  # bundles saved before the switch answered with any span
    rerank_beams: int = Field(default=0, ge=0, le=64)  # bundles saved before the option kept the greedy answer

    @model_validator(mode="after")
    def _rerank(self):
        if self.rerank_beams and not self.constrain_to_spans:
            raise ValueError("rerank_beams re-ranks span beams: it needs constrain_to_spans true")
        return self


class BundleSchema(Record):
    """``bundle.json``."""
    format: Literal[FORMAT]
    parts: list[Literal[PARTS]] = Field(min_length=1, max_length=3)
    decisions: DecisionsSchema
    decode: DecodeSchema
    claim_batch_size: int = Count
    files: dict[str, str] = Field(min_length=1, max_length=10_000)

    @field_validator("parts")
    @classmethod
    def _parts(cls, v):
        if len(set(v)) != len(v) or "generator" not in v:
            raise ValueError("parts must name the generator and no part twice")
        return v

    @field_validator("files")
    @classmethod
    def _files(cls, v):
        for name, digest in v.items():
            if not inside_name(name):
                raise ValueError(f"file name {name[:60]!r} is not a plain relative path inside the bundle")
            if not re.fullmatch(r"[0-9a-f]{64}", digest):
                raise ValueError(f"{name}: not a SHA-256 hex digest")
        return v


R = TypeVar("R", bound=Record)


def _depth(obj, limit: int) -> int:
    """Nesting depth of parsed JSON, without recursion (a hostile file cannot exhaust the stack)."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        x, d = stack.pop()
        if isinstance(x, (dict, list)):
            deepest = max(deepest, d)
            if deepest > limit:
                return deepest
            stack.extend((y, d + 1) for y in (x.values() if isinstance(x, dict) else x))
    return deepest


def read_json(path: Path, max_bytes: int = MAX_JSON_BYTES):
    """A JSON file of a model folder, parsed, or :class:`BundleError` naming it (missing, not a plain
    file, too large, not UTF-8, malformed, nested too deeply)."""
    path = Path(path)
    try:
        st = os.lstat(path)
    except (OSError, ValueError):
        raise BundleError(f"{path.name} not found in {path.parent}") from None
    if not stat.S_ISREG(st.st_mode):
        raise BundleError(f"{path} is not a plain file")
    if st.st_size > max_bytes:
        raise BundleError(f"{path} is larger than {max_bytes >> 20} MiB")
    try:
        text = path.read_bytes().decode("utf-8")
        obj = json.loads(text, parse_constant=lambda c: float("nan"))
    except UnicodeDecodeError:
        raise BundleError(f"{path} is not UTF-8") from None
    except RecursionError:
        raise BundleError(f"{path}: JSON nested too deeply") from None
    except ValueError as e:
        raise BundleError(f"{path} is not valid JSON ({str(e)[:80]})") from None
    if _depth(obj, MAX_DEPTH) > MAX_DEPTH:
        raise BundleError(f"{path}: JSON nested deeper than {MAX_DEPTH}")
    return obj


def first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    where = ".".join(str(x) for x in err["loc"]) or "(top level)"
    got = "" if err["type"] == "missing" or isinstance(err["input"], (dict, list)) else f" (got {str(err['input'])[:40]!r})"
    return f"{where}: {err['msg'].removeprefix('Value error, ')}{got}"


def read_record(path: Path, schema: type[R]) -> R:
    """A JSON record checked against its schema; a bad field is a :class:`BundleError` naming the
    file and the field."""
    obj = read_json(path)
    try:
        return schema.model_validate(obj)
    except ValidationError as e:
        raise BundleError(f"{path}: {first_error(e)}") from None


def check_record(obj: dict, schema: type[R], where: str) -> R:
    try:
        return schema.model_validate(obj)
    except ValidationError as e:
        raise BundleError(f"{where}: {first_error(e)}") from None


# --- decisions ---------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class KeepModel:
    """The numbers of a learned keep decision, fitted on val (deflate.answering.keep_model computes
    the features it names and fits it): P(right) = sigmoid(((x - mean) / scale) . coef + intercept)."""
    features: list[str]
    mean: list[float]
    scale: list[float]
    coef: list[float]
    intercept: float

    def probability(self, x: np.ndarray) -> np.ndarray:
        z = ((x - np.asarray(self.mean)) / np.asarray(self.scale)) @ np.asarray(self.coef) + self.intercept
        return 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))


@dataclass(frozen=True, kw_only=True)
class Decisions:
    """How a trained DEFLATE answers; made on validation by the stage that writes the bundle, or
    overridden by a user (``deflate predict --threshold``): checked by the same schema either way."""
    mode: str                   # free | constrained | rerank | fused
    threshold: float            # keep score an answer needs to be kept
    keep_all: bool              # answer every asked attribute (the question is which value, not whether)
    alpha: float                # rerank: weight of the generator against the discriminator
    weights: tuple[float, float, float]  # fused: generator, discriminator, lexical
    # keep score = P_gen^w * D^(1-w), P_gen = exp(mean token log-prob of the answer); 0 = the paper's D alone
    keep_weight: float = 0.0
    # the discriminator's own decision whether the product has the attribute, apart from whether
    # its value is kept: an answer (not None) whose claim has D >= this is present; None: present
    # means kept (the paper's rule)
    presence_threshold: float | None = None
    # a learned keep decision (eval.keep_decision: learned): the threshold then applies to its P(right)
    # instead of the keep score; the keep weight still chooses among re-ranked beams. None: the keep score
    keep_model: KeepModel | None = None

    def __post_init__(self):
        def num(x):  # numpy scalars from the val search are numbers; strings and booleans are not
            return float(x) if isinstance(x, numbers.Real) and not isinstance(x, bool) else x

        w, km = self.weights, self.keep_model
        if isinstance(km, KeepModel):
            km = asdict(km)
        if isinstance(km, dict):  # numbers from numpy are numbers; anything else meets the schema as given
            km = {k: [num(x) for x in v] if isinstance(v, (list, tuple)) and k != "features" else num(v)
                  for k, v in km.items()}
        given = {**asdict(self), "weights": [num(x) for x in w] if isinstance(w, (list, tuple)) else w,
                 "keep_model": km,
                 **{k: num(getattr(self, k)) for k in ("threshold", "alpha", "keep_weight", "presence_threshold")}}
        d = check_record(given, DecisionsSchema, "decisions")
        for k in ("threshold", "alpha", "keep_weight", "presence_threshold"):
            object.__setattr__(self, k, getattr(d, k))
        object.__setattr__(self, "weights", tuple(d.weights))
        object.__setattr__(self, "keep_model", None if d.keep_model is None else KeepModel(**d.keep_model.model_dump()))


# --- the folder ----------------------------------------------------------------------------------------
def inside_name(name: str) -> bool:
    """A relative POSIX path of plain names: no absolute path, no ``..``, no hidden tricks."""
    parts = name.split("/")
    return all(_SAFE_NAME.fullmatch(p) and p not in (".", "..") for p in parts)


def _walk(root: Path) -> list[str]:
    """Every file under ``root`` as relative names; a symlink or special file anywhere is refused."""
    found = []
    for here, dirs, files in os.walk(root, followlinks=False):
        for name in dirs + files:
            p = Path(here) / name
            rel = p.relative_to(root).as_posix()
            mode = os.lstat(p).st_mode
            if stat.S_ISLNK(mode):
                raise BundleError(f"bundle {root.name}: {rel} is a symlink (a bundle holds plain files only)")
            if name in files and not stat.S_ISREG(mode):
                raise BundleError(f"bundle {root.name}: {rel} is not a plain file")
            if name in files:
                found.append(rel)
    return sorted(found)


def manifest(root: Path) -> dict[str, str]:
    """SHA-256 of every file under ``root`` but ``bundle.json``."""
    return {rel: sha256(root / rel) for rel in _walk(root) if rel != BUNDLE_FILE}


def bundle_image_files(gen_dir: Path) -> None:
    """Copy the external files a generator's image tokenizer names into ``gen_dir`` and point
    ``image.json`` at the copies (relative), so a bundle names nothing outside itself."""
    path = gen_dir / "image.json"
    if not path.exists():
        return
    spec = read_json(path)
    changed = False
    for key in ("dalle_encoder_path", "vit_path"):
        src = spec["cfg"].get(key) or ""
        if not src or inside_name(src) and (gen_dir / src).exists():
            continue
        dest = Path(BUNDLED_IMAGE_FILES) / key.removesuffix("_path")
        target = gen_dir / dest
        target.parent.mkdir(parents=True, exist_ok=True)
        if Path(src).is_dir():
            shutil.copytree(src, target)
        else:
            target = target.with_suffix(Path(src).suffix)
            dest = dest.with_suffix(Path(src).suffix)
            shutil.copyfile(src, target)
        spec["cfg"][key] = dest.as_posix()
        changed = True
    if changed:
        write_text(path, json.dumps(spec, ensure_ascii=False, indent=1, sort_keys=True))


def write_bundle(out: Path, decisions: Decisions, decode: dict, claim_batch_size: int, generator: Path,
                 discriminator: Path | None = None, lexical: Path | None = None) -> Path:
    """The folder :func:`read_bundle` accepts: copies of the trained parts (with any external image
    tokenizer file) and ``bundle.json`` with every file's SHA-256. Built beside ``out`` and swapped
    in, so a reader never sees half a bundle."""
    parts = {"generator": generator, "discriminator": discriminator, "lexical": lexical}
    with atomic_dir(out) as tmp:
        for name, src in parts.items():
            if src is not None:
                shutil.copytree(src, tmp / name, symlinks=False)
        bundle_image_files(tmp / "generator")
        spec = {"format": FORMAT, "parts": [n for n, src in parts.items() if src is not None],
                # a bundle without a presence decision or a keep model keeps the bytes it had before the keys existed
                "decisions": {k: v for k, v in {**asdict(decisions), "weights": list(decisions.weights)}.items()
                              if not (k in ("presence_threshold", "keep_model") and v is None)},
                "decode": {k: decode[k] for k in DECODE_KEYS}, "claim_batch_size": claim_batch_size,
                "files": manifest(tmp)}
        check_record(spec, BundleSchema, "the bundle being written")
        write_text(tmp / BUNDLE_FILE, json.dumps(spec, ensure_ascii=False, indent=1, sort_keys=True))
    return out


NEEDED = {"generator": ("model.safetensors", "deflate.json", "config.json"),
          "discriminator": ("model.safetensors", "deflate.json"),
          "lexical": ("lexical.json", "lexical.safetensors")}


def read_bundle(bundle: Path) -> dict:
    """``bundle.json`` checked against its schema and every file against its SHA-256, before any
    file of a part is read: ``{"parts", "decisions": Decisions, "decode", "claim_batch_size"}``."""
    bundle = Path(bundle)
    path = bundle / BUNDLE_FILE
    if not bundle.is_dir() or not os.path.lexists(path):
        raise BundleError(f"{bundle} is not a DEFLATE bundle (no {BUNDLE_FILE}); the evaluate stage writes "
                          f"one to models/deflate")
    raw = read_json(path)
    if isinstance(raw, dict) and raw.get("format") == 1:
        raise BundleError(f"{path} is a format-1 bundle, written before bundles carried every file's SHA-256; "
                          "re-make it (dvc repro writes format 2)")
    spec = check_record(raw, BundleSchema, str(path))
    root = bundle.resolve()
    found = set(_walk(root)) - {BUNDLE_FILE}
    listed = set(spec.files)
    for name in spec.parts:
        for f in NEEDED[name]:
            if f"{name}/{f}" not in listed:
                raise BundleError(f"bundle {bundle} lacks its {name} ({name}/{f} not listed)")
    if listed - found:
        raise BundleError(f"bundle {bundle} lacks {sorted(listed - found)[0]}")
    if found - listed:
        raise BundleError(f"bundle {bundle} holds {sorted(found - listed)[0]}, which its manifest does not list")
    stray = sorted(f for f in found if f.split("/")[0] not in spec.parts)
    if stray:
        raise BundleError(f"bundle {bundle}: {stray[0]} belongs to no part it names")
    for rel in sorted(listed):
        if sha256(root / rel) != spec.files[rel]:
            raise BundleError(f"bundle {bundle}: {rel} is damaged or was changed (its SHA-256 differs from "
                              f"{BUNDLE_FILE}'s)")
    return {"parts": list(spec.parts), "decisions": Decisions(**spec.decisions.model_dump()),
            "decode": spec.decode.model_dump(), "claim_batch_size": spec.claim_batch_size}
