"""Image -> tokens, precomputed once per dataset (paper §3.2).

Three tokenizers, chosen by ``image.tokenizer``:

* ``visual_words`` (default on CPU): a k-means codebook over image patches, fit on the training
  split only; an HxW grid of ids in [0, K). Seconds for thousands of images.
* ``dalle``: the real DALL-E dVAE encoder (``dall_e`` package), 32x32 ids over 8,192 codes, from a
  local ``encoder.pkl`` loaded without blind unpickling. About 3 s per 256px image on this CPU.
* ``patches``: continuous patch vectors (raw RGB patches, or a local ViT checkpoint), for the
  paper's Table 5 comparison of compressed tokens with full image features.

Products without a usable image get a row of ``pad_id`` (or zeros) and ``has_image = False``.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch
from PIL import Image
from safetensors.numpy import load_file, save_file
from tqdm import tqdm

from deflate.data.images import BadImage, open_rgb
from deflate.data.records import SPLITS, iter_records
from deflate.infra.bundle import BundleError, ImageSpec, inside_name, read_record
from deflate.infra.errors import UserError
from deflate.infra.files import read_json, write_json


@dataclass
class TokenSet:
    """Tokens of one split, row-aligned with the ingest table."""
    tokens: np.ndarray      # (N, L) int64 ids, or (N, L, D) float16 features
    has_image: np.ndarray   # (N,) bool
    problems: dict          # product id -> reason the image could not be used


def load_images(paths: list, size: int, desc: str, progress: bool = True):
    """Yield (index, RGB uint8 array of size x size or None, reason) with a progress bar in img/s;
    an item is a path, or a picture's bytes."""
    for i, p in enumerate(tqdm(paths, desc=desc, unit="img", disable=not progress, mininterval=1.0)):
        if not p:
            yield i, None, "no image"
            continue
        try:
            im = open_rgb(p).resize((size, size), Image.BILINEAR)
            yield i, np.asarray(im, dtype=np.uint8), ""
        except BadImage as e:
            yield i, None, str(e)


def to_patches_u8(img: np.ndarray, grid: int) -> np.ndarray:
    """(S, S, 3) uint8 -> (grid*grid, p*p*3) uint8, row-major over the grid."""
    s = img.shape[0]
    p = s // grid
    x = img[: p * grid, : p * grid].reshape(grid, p, grid, p, 3).transpose(0, 2, 1, 3, 4)
    return np.ascontiguousarray(x.reshape(grid * grid, p * p * 3))


def to_patches(img: np.ndarray, grid: int) -> np.ndarray:
    """(S, S, 3) uint8 -> (grid*grid, p*p*3) float32 in [0, 1], row-major over the grid."""
    return to_patches_u8(img, grid).astype(np.float32) / 255.0


# --- visual words ---------------------------------------------------------------------------------
def nearest_code(x: np.ndarray | torch.Tensor, codebook: np.ndarray, chunk: int = 16384) -> np.ndarray:
    """Index of the nearest codeword (squared distance, lowest index on ties) for each row of
    integer pixels (uint8 array, or the same values as a float64 tensor).

    Exact on every CPU: pixels and codewords are integers in [0, 255], so every product and partial
    sum of ``x @ codebook.T`` is an integer far below 2**53 and float64 holds it exactly whatever the
    BLAS kernel's summation order. ``argmin`` then sees identical numbers everywhere.
    """
    cb = torch.from_numpy(codebook.astype(np.float64))
    c2 = (cb * cb).sum(-1)
    out = np.empty(len(x), dtype=np.int64)
    for i in range(0, len(x), chunk):
        xi = x[i:i + chunk]
        xi = xi if isinstance(xi, torch.Tensor) else torch.from_numpy(xi.astype(np.float64))
        # ||x - c||^2 - ||x||^2: the dropped term is the same for every codeword
        out[i:i + chunk] = np.argmin((c2 - 2.0 * (xi @ cb.T)).numpy(), axis=1)  # numpy: first index on ties
    return out


class VisualWords:
    """A k-means codebook of uint8 image patches; a patch's token is its nearest codeword.

    Lloyd's k-means in integer arithmetic so that the same images give the same codebook and tokens
    on any machine: seeded initial codewords drawn from distinct patches, exact distances
    (:func:`nearest_code`), codewords rounded to integer pixel values, empty clusters keep their
    codeword, and it stops when no assignment changes (or after ``max_iter`` rounds).
    """
    name = "visual_words"

    def __init__(self, grid: int = 8, vocab_size: int = 512, resize: int = 64, seed: int = 0, max_iter: int = 30):
        if resize % grid:
            raise ValueError(f"image.resize ({resize}) must be a multiple of image.grid ({grid})")
        self.grid, self.vocab_size, self.resize, self.seed, self.max_iter = grid, vocab_size, resize, seed, max_iter
        self.codebook: np.ndarray | None = None   # (k <= vocab_size, p*p*3) uint8

    def fit(self, train_images: Iterable[np.ndarray], max_patches: int = 200_000, progress: bool = True) -> "VisualWords":
        """Fit the codebook on training images only (never val/test).

        ``train_images`` is iterated once, or twice when they hold more than ``max_patches``
        patches: the first pass counts them, the second keeps the seeded sample's patches, so
        memory is bounded by ``max_patches`` whatever the number of images, and the sample is the
        one drawn from all patches at once."""
        rng = np.random.default_rng(self.seed)
        x = self._patches(train_images, max_patches, rng)
        distinct = np.unique(x, axis=0)  # sorted rows: the draw below does not depend on patch order
        k = min(self.vocab_size, len(distinct))
        cb = distinct[np.sort(rng.choice(len(distinct), k, replace=False))].astype(np.int64)
        xf, xl = torch.from_numpy(x.astype(np.float64)), torch.from_numpy(x.astype(np.int64))
        assign = None
        for _ in tqdm(range(self.max_iter), desc="visual-words k-means", disable=not progress, mininterval=1.0):
            new = nearest_code(xf, cb)
            if assign is not None and np.array_equal(new, assign):
                break
            assign = new
            counts = np.bincount(assign, minlength=k)
            sums = torch.zeros(cb.shape, dtype=torch.int64).index_add_(0, torch.from_numpy(assign), xl).numpy()
            used = counts > 0
            # round(sum / count) in integers: the same on every machine
            cb[used] = (2 * sums[used] + counts[used, None]) // (2 * counts[used, None])
        self.codebook = cb.astype(np.uint8)
        return self

    def _patches(self, images: Iterable[np.ndarray], cap: int, rng: np.random.Generator) -> np.ndarray:
        """Every image's patches in order, or a sorted sample of ``cap`` of them drawn by ``rng``."""
        held, total = [], 0
        for im in images:
            p = to_patches_u8(im, self.grid)
            total += len(p)
            if total <= cap:
                held.append(p)
            else:
                held.clear()  # over the cap: count now, gather the sample in a second pass
        if not total:
            raise ValueError("no usable training image to fit the visual-words codebook")
        if total <= cap:
            return np.concatenate(held)
        keep = np.sort(rng.choice(total, cap, replace=False))
        parts, start = [], 0
        for im in images:
            p = to_patches_u8(im, self.grid)
            parts.append(p[keep[np.searchsorted(keep, start):np.searchsorted(keep, start + len(p))] - start])
            start += len(p)
        if start != total:
            raise RuntimeError("the training images changed between the codebook's two passes")
        return np.concatenate(parts)

    def encode(self, images: list[np.ndarray]) -> np.ndarray:
        assert self.codebook is not None, "fit or load the codebook first"
        x = np.stack([to_patches_u8(im, self.grid) for im in images])  # (B, P, D)
        return nearest_code(x.reshape(-1, x.shape[-1]), self.codebook).reshape(x.shape[:2])

    def save(self, path: Path) -> str:
        save_file({"codebook": self.codebook}, str(path))
        return hashlib.sha256(self.codebook.tobytes()).hexdigest()[:16]

    def load(self, path: Path) -> "VisualWords":
        cb = load_file(str(path))["codebook"]
        if cb.dtype != np.uint8 or cb.ndim != 2 or len(cb) > self.vocab_size:
            raise ValueError(f"{path}: not a uint8 visual-words codebook of at most {self.vocab_size} codewords "
                             f"(got {cb.dtype} {tuple(cb.shape)}); codebooks made before the integer k-means held float "
                             "centres: re-run the image_tokens stage and retrain")
        self.codebook = cb
        return self


# --- DALL-E dVAE ----------------------------------------------------------------------------------
class NotADalleEncoder(ValueError):
    pass


def load_dalle_encoder(path: str | Path, n_hid: int = 256, vocab_size: int = 8192, n_blk_per_group: int = 2):
    """Load a DALL-E encoder without blind unpickling.

    Accepts OpenAI's ``encoder.pkl`` (a whole pickled ``Encoder``), unpickled with
    ``weights_only=True`` and an explicit allow-list of the dall_e and torch classes it holds;
    or a plain state dict (``.pt`` / ``.safetensors``) for an Encoder built from the given sizes.
    Anything else raises :class:`NotADalleEncoder`.
    """
    from collections import OrderedDict

    from dall_e.encoder import Encoder, EncoderBlock
    from dall_e.utils import Conv2d

    path = Path(path)
    if not path.is_file():
        raise UserError(f"DALL-E encoder not found at {path} (set image.dalle_encoder_path)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file as load_st
        obj = load_st(str(path))
    else:
        allowed = [Encoder, EncoderBlock, Conv2d, OrderedDict, torch.nn.Sequential, torch.nn.ReLU,
                   torch.nn.MaxPool2d, torch.nn.Identity, torch.device]
        try:
            with torch.serialization.safe_globals(allowed):
                obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # the weights-only unpickler names what it refused
            raise NotADalleEncoder(f"{path} is not a DALL-E encoder (refused to unpickle: {str(e)[:200]})") from None
    if isinstance(obj, Encoder):
        enc = obj
    elif isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        enc = Encoder(n_hid=n_hid, vocab_size=vocab_size, n_blk_per_group=n_blk_per_group, requires_grad=False)
        try:
            enc.load_state_dict(obj)
        except RuntimeError as e:
            raise NotADalleEncoder(f"{path}: state dict does not fit a DALL-E encoder: {str(e)[:200]}") from None
    else:
        raise NotADalleEncoder(f"{path} holds a {type(obj).__name__}, not a DALL-E encoder")
    return enc.eval()


class Dalle:
    name = "dalle"

    def __init__(self, encoder_path: str, resize: int = 256, batch_size: int = 8, **sizes):
        # channels_last: oneDNN's faster convolution layout on CPU (~10% here)
        self.encoder = load_dalle_encoder(encoder_path, **sizes).to(memory_format=torch.channels_last)
        self.vocab_size = self.encoder.vocab_size
        self.resize, self.batch_size = resize, batch_size

    @torch.inference_mode()
    def encode(self, images: list[np.ndarray]) -> np.ndarray:
        from dall_e import map_pixels

        out = []
        for i in range(0, len(images), self.batch_size):
            x = torch.from_numpy(np.stack(images[i:i + self.batch_size])).permute(0, 3, 1, 2).float() / 255.0
            logits = self.encoder(map_pixels(x).contiguous(memory_format=torch.channels_last))
            out.append(logits.argmax(1).flatten(1).numpy().astype(np.int64))
        return np.concatenate(out)


# --- continuous patches (Table 5) -------------------------------------------------------------------
class Patches:
    name = "patches"

    def __init__(self, grid: int = 8, resize: int = 64, vit_path: str = ""):
        self.grid, self.resize, self.vit = grid, resize, None
        if vit_path:
            from transformers import ViTImageProcessor, ViTModel
            self.vit = ViTModel.from_pretrained(vit_path, add_pooling_layer=False).eval()
            self.proc = ViTImageProcessor.from_pretrained(vit_path)
            self.resize = self.proc.size["height"]

    @torch.no_grad()
    def encode(self, images: list[np.ndarray]) -> np.ndarray:
        if self.vit is None:
            return np.stack([to_patches(im, self.grid) for im in images]).astype(np.float16)
        px = self.proc(images=list(images), return_tensors="pt", do_resize=False)["pixel_values"]
        return self.vit(pixel_values=px).last_hidden_state[:, 1:].numpy().astype(np.float16)


# --- the stage ----------------------------------------------------------------------------------------
def tokenize_split(tok, paths: list[str], pic_tokens: list | None, desc: str, batch: int = 64,
                   progress: bool = True) -> TokenSet:
    """Encode one split in batches; images that cannot be used give a padded row, never a crash."""
    n = len(paths)
    rows: list[np.ndarray | None] = [None] * n
    problems: dict = {}
    if pic_tokens is not None:  # real DESIRE ships DALL-E tokens: use them as they are
        for i, t in enumerate(pic_tokens):
            if t is not None:
                rows[i] = np.asarray(t, dtype=np.int64)
    todo = [p if rows[i] is None else "" for i, p in enumerate(paths)]
    buf_i, buf = [], []

    def flush():
        if buf:
            for j, r in zip(buf_i, tok.encode(buf)):
                rows[j] = r
            buf_i.clear()
            buf.clear()

    for i, img, why in load_images(todo, tok.resize, desc, progress):
        if img is None:
            if rows[i] is None:
                problems[i] = why
            continue
        buf_i.append(i)
        buf.append(img)
        if len(buf) >= batch:
            flush()
    flush()
    example = next((r for r in rows if r is not None), None)
    if example is None:
        example = tok.encode([np.zeros((tok.resize, tok.resize, 3), np.uint8)])[0]
    pad = np.zeros_like(example) if example.dtype != np.int64 else np.full_like(example, tok.vocab_size)
    has = np.array([r is not None for r in rows])
    return TokenSet(np.stack([r if r is not None else pad for r in rows]), has, problems)


def make_tokenizer(cfg: dict, seed: int):
    name = cfg["tokenizer"]
    if name == "visual_words":
        return VisualWords(cfg["grid"], cfg["vocab_size"], cfg["resize"], seed)
    if name == "dalle":
        if not cfg["dalle_encoder_path"]:
            raise ValueError("image.tokenizer=dalle needs image.dalle_encoder_path (a local encoder.pkl)")
        return Dalle(cfg["dalle_encoder_path"], cfg["dalle_resize"], cfg["batch_size"], **cfg["dalle_sizes"])
    if name == "patches":
        return Patches(cfg["grid"], cfg["resize"], cfg["vit_path"])
    raise ValueError(f"unknown image.tokenizer {name!r}; choose visual_words, dalle or patches")


def tokenize_processed(processed: Path, cfg: dict, out: Path, seed: int) -> dict:
    """The image tokens stage: :func:`run_stage` on every split of an ingested folder (only the
    columns it needs are read: texts and labels stay on disk)."""
    return run_stage({s: list(iter_records(processed, s, ["id", "image", "pic_tokens"])) for s in SPLITS},
                     cfg, out, seed)


@dataclass(frozen=True)
class ImageStream:
    """Pictures decoded as they are iterated, again on each iteration (nothing held between)."""
    paths: list[str]
    size: int
    desc: str
    progress: bool = True

    def __iter__(self) -> Iterator[np.ndarray]:
        return (im for _, im, _ in load_images(self.paths, self.size, self.desc, self.progress) if im is not None)


def run_stage(records_by_split: dict, cfg: dict, out: Path, seed: int, progress: bool = True) -> dict:
    """Fit (visual words: on train only), encode every split, write safetensors + meta.json."""
    torch.set_num_threads(cfg["num_threads"])
    out.mkdir(parents=True, exist_ok=True)
    tok = make_tokenizer(cfg, seed)
    meta = {"tokenizer": tok.name, "splits": {}}
    if isinstance(tok, VisualWords):
        train_imgs = ImageStream([r.image for r in records_by_split["train"]], tok.resize,
                                 "load train images for codebook", progress)
        if next(iter(replace(train_imgs, progress=False)), None) is None:  # e.g. MEPAVE, ImplicitAVE train: no picture
            print("[image_tokens] no usable training picture: the dataset is text-only for the model")
            meta.update(text_only=True, splits={s: {"n": len(r), "with_image": 0} for s, r in records_by_split.items()})
            write_json(out / "meta.json", meta, ensure_ascii=False, indent=1, sort_keys=True)
            return meta
        tok.fit(train_imgs, progress=progress)
        meta["codebook_sha256"] = tok.save(out / "codebook.safetensors")
    for split, recs in records_by_split.items():
        pic = [r.pic_tokens for r in recs] if tok.name == "dalle" else None
        ts = tokenize_split(tok, [r.image for r in recs], pic, f"{tok.name} {split}", cfg["batch_size"], progress)
        save_file({"tokens": ts.tokens, "has_image": ts.has_image.astype(np.uint8)}, str(out / f"{split}.safetensors"))
        meta["splits"][split] = {"n": len(recs), "with_image": int(ts.has_image.sum()),
                                 "without_image": int((~ts.has_image).sum()),
                                 "problems": {recs[i].id: why for i, why in sorted(ts.problems.items())[:50]}}
        print(f"[image_tokens] {split}: {int(ts.has_image.sum())}/{len(recs)} with image tokens")
    example = ts.tokens
    meta.update({"continuous": example.dtype != np.int64, "seq_len": int(example.shape[1]),
                 "feature_dim": int(example.shape[2]) if example.ndim == 3 else 0,
                 "vocab_size": int(getattr(tok, "vocab_size", 0)),
                 "pad_id": int(getattr(tok, "vocab_size", 0)), "grid": cfg["grid"]})
    write_json(out / "meta.json", meta, ensure_ascii=False, indent=1, sort_keys=True)
    return meta


def save_for_inference(tokens_dir: Path, cfg: dict, out: Path) -> None:
    """Copy what tokenizes a new product's picture (settings + codebook) next to a trained model."""
    import shutil

    write_json(out / "image.json", {"cfg": cfg, "meta": read_json(tokens_dir / "meta.json")},
               ensure_ascii=False, indent=1, sort_keys=True)
    if (tokens_dir / "codebook.safetensors").exists():
        shutil.copy(tokens_dir / "codebook.safetensors", out / "codebook.safetensors")


def load_for_inference(model_dir: Path):
    """The image tokenizer a model was trained with, or None (text-only model)."""
    path = model_dir / "image.json"
    if not os.path.lexists(path):
        return None
    saved = read_record(path, ImageSpec)
    # the tokenizer that made the training features (the patches variant runs with image.* of params
    # naming visual_words), else the params' one
    cfg = {**saved.cfg.model_dump(), "tokenizer": saved.meta.tokenizer}
    for key in ("dalle_encoder_path", "vit_path"):  # files a bundle carries, relative to the model folder
        if cfg[key]:
            if not inside_name(cfg[key]):
                raise BundleError(f"{path}: cfg.{key} must name a file inside the model folder "
                                  "(write_bundle copies it there)")
            cfg[key] = str(model_dir / cfg[key])
    if cfg["tokenizer"] == "visual_words" and not (model_dir / "codebook.safetensors").is_file():
        raise BundleError(f"{model_dir} lacks codebook.safetensors (its image tokenizer's codebook)")
    tok = make_tokenizer(cfg, 0)
    if isinstance(tok, VisualWords):
        try:
            tok.load(model_dir / "codebook.safetensors")
        except Exception as e:
            raise BundleError(f"{model_dir / 'codebook.safetensors'}: {str(e)[:160]}") from None
    return tok


def load_tokens(tokens_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray, dict]:
    d = load_file(str(tokens_dir / f"{split}.safetensors"))
    meta = read_json(tokens_dir / "meta.json")
    return d["tokens"], d["has_image"].astype(bool), meta
