"""Guarded image loading: every external image goes through here.

Refuses decompression bombs before decoding, turns every decoder error into a one-line reason,
normalises every mode (16-bit and 32-bit greyscale, float, CMYK, palette, alpha) to correct 8-bit
RGB, and keeps paths from requests inside one allowed folder.
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

MAX_PIXELS = 20_000_000  # > 20 MP is refused, not decompressed
MIN_SIDE = 2


class BadImage(ValueError):
    """An image that cannot be used; the message is the one-line reason."""


def confine(root: Path, name: str) -> Path | None:
    """The file ``name`` (relative to ``root``) after symlinks, or None when it lies outside ``root``.
    Nothing is opened: the answer does not depend on whether the file exists."""
    if "\x00" in name:
        return None
    base = Path(root).resolve()
    target = (base / name).resolve()
    return target if target.is_relative_to(base) else None


def to_rgb(im: Image.Image) -> Image.Image:
    """8-bit RGB of any mode: 16/32-bit and float greyscale scaled (not clipped to white), alpha and
    palette transparency composited on white, CMYK and the rest through PIL's conversion."""
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        if im.mode == "F" and a.size and np.nanmax(a) <= 1.0:
            a = a * 255.0                       # float pictures in [0, 1]
        elif im.mode.startswith("I;16") or (a.size and np.nanmax(a) > 255):
            a = a / 257.0                       # 16-bit range onto 8 bits
        a = np.nan_to_num(np.clip(a, 0, 255))
        return Image.fromarray(np.round(a).astype(np.uint8), "L").convert("RGB")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def open_rgb(source: str | Path | bytes, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open, check and fully decode an image (a file, or its bytes) as RGB, or raise :class:`BadImage`."""
    if isinstance(source, bytes):
        stream = io.BytesIO(source)
    else:
        source = Path(source)
        if not source.is_file():
            raise BadImage(f"image not found: {source.name}")
        stream = source
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(stream) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise BadImage(f"image too large: {w}x{h} > {max_pixels} pixels")
                if min(w, h) < MIN_SIDE:
                    raise BadImage(f"image too small: {w}x{h}")
                im.load()  # full decode: truncated files fail here, not later in training
                return to_rgb(im)
    except BadImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise BadImage(f"image too large: {e}") from None
    except (OSError, SyntaxError, ValueError, Image.UnidentifiedImageError) as e:
        raise BadImage(f"unreadable image: {type(e).__name__}: {str(e)[:80]}") from None
