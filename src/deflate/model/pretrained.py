"""Loading a pretrained checkpoint: a local folder, or a model id where the machine is online."""
from __future__ import annotations

from pathlib import Path

from deflate.infra.errors import UserError


def load_pretrained(loader, name: str, what: str):
    """``loader(source)`` on a local checkpoint folder, or on a model id (``google-t5/t5-base``) that
    transformers resolves when the machine is online; anything else is a one-line :class:`UserError`."""
    path = Path(name)
    looks_local = path.is_absolute() or name.startswith(".") or path.exists() or name.count("/") > 1
    if looks_local and not path.is_dir():
        raise UserError(f"{what} {name} is not a folder with a checkpoint")
    try:
        return loader(str(path) if path.is_dir() else name)
    except OSError as e:
        if path.is_dir():
            raise
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise UserError(f"{what} {name!r} is no local folder and could not be fetched as a model id "
                      f"(offline, or no such model?): {first}") from None
