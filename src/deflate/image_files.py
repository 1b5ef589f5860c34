"""Guarded image loading: every external image goes through here.

Refuses decompression bombs before decoding, turns every decoder error into a one-line reason,
and normalises mode (CMYK, greyscale, palette, alpha) to RGB.
"""
from __future__ import annotations

import warnings
from pathlib import Path

from PIL import Image

MAX_PIXELS = 20_000_000  # > 20 MP is refused, not decompressed
MIN_SIDE = 2


class BadImage(ValueError):
    """An image that cannot be used; the message is the one-line reason."""


def open_rgb(path: str | Path, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open, check and fully decode an image as RGB, or raise :class:`BadImage`."""
    path = Path(path)
    if not path.is_file():
        raise BadImage(f"image not found: {path.name}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise BadImage(f"image too large: {w}x{h} > {max_pixels} pixels")
                if min(w, h) < MIN_SIDE:
                    raise BadImage(f"image too small: {w}x{h}")
                im.load()  # full decode: truncated files fail here, not later in training
                return im.convert("RGB")
    except BadImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise BadImage(f"image too large: {e}") from None
    except (OSError, SyntaxError, ValueError, Image.UnidentifiedImageError) as e:
        raise BadImage(f"unreadable image: {type(e).__name__}: {str(e)[:80]}") from None
