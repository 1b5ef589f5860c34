"""params.yaml access and the small run-time conveniences every stage shares."""
from __future__ import annotations

import json
import os
import random
import time
from contextlib import contextmanager
from pathlib import Path

import yaml

from .distributed import is_main


class MissingParam(KeyError):
    """A setting the code needs is not in params.yaml: every setting has its default there."""

    def __str__(self) -> str:
        return str(self.args[0])


class Params(dict):
    """params.yaml as nested dicts whose missing keys are errors naming the dotted key
    (``params.yaml has no 'decode.top_k'``), never a silent code default."""

    def __init__(self, data: dict | None = None, where: str = ""):
        super().__init__({k: Params(v, f"{where}{k}.") if isinstance(v, dict) and not isinstance(v, Params) else v
                          for k, v in (data or {}).items()})
        self.where = where

    def __missing__(self, key):
        raise MissingParam(f"params.yaml has no '{self.where}{key}' (every setting has its default there)")

    def __setitem__(self, key, value):
        if isinstance(value, dict) and not isinstance(value, Params):
            value = Params(value, f"{self.where}{key}.")
        super().__setitem__(key, value)


def load_params(path: str | Path = "params.yaml") -> Params:
    """params.yaml, checked against :mod:`deflate.params_schema` (a bad value is a
    :class:`~deflate.params_schema.ParamsError` naming its key)."""
    from .params_schema import ParamsError, check_params

    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise ParamsError(f"{path} is not valid YAML ({str(e).splitlines()[0][:100]})") from None
    check_params(raw, str(path))
    return Params(raw)


def stage_params(path: str | Path = "params.yaml") -> Params:
    """What every stage script starts with: one-line errors and clean stops for this process
    (:mod:`deflate.errors`), then the checked params."""
    from . import errors

    errors.install()
    return load_params(path)


def load_pretrained(loader, name: str, what: str):
    """``loader(source)`` on a local checkpoint folder, or on a model id (``google-t5/t5-base``) that
    transformers resolves when the machine is online; anything else is a one-line error."""
    path = Path(name)
    looks_local = path.is_absolute() or name.startswith(".") or path.exists() or name.count("/") > 1
    if looks_local and not path.is_dir():
        raise FileNotFoundError(f"{what} {name} is not a folder with a checkpoint")
    try:
        return loader(str(path) if path.is_dir() else name)
    except OSError as e:
        if path.is_dir():
            raise
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise OSError(f"{what} {name!r} is no local folder and could not be fetched as a model id "
                      f"(offline, or no such model?): {first}") from None


def seed_everything(seed: int, deterministic: bool = True) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        # Cheap on CPU; warn_only keeps GPU runs going where a kernel has no deterministic twin.
        torch.use_deterministic_algorithms(True, warn_only=True)


def resolve_device(name: str = "auto") -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


@contextmanager
def stage_timer(stage: str, log: str | Path = "logs/timings.jsonl"):
    """Append the stage's wall time to a git-ignored log (not a DVC output: times vary)."""
    t0 = time.perf_counter()
    yield
    dt = time.perf_counter() - t0
    if not is_main():  # several processes: the main one logs
        return
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as f:
        f.write(json.dumps({"stage": stage, "seconds": round(dt, 2), "peak_memory_mb": peak_memory_mb(),
                            "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "pid": os.getpid()}) + "\n")
    print(f"[{stage}] done in {dt:.1f}s")
