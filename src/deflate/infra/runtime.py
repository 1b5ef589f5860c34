"""The run-time conveniences every stage shares: seeds, the device, peak memory, the stage timer."""
from __future__ import annotations

import json
import os
import random
import time
from contextlib import contextmanager
from pathlib import Path

from deflate.infra.distributed import is_main


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


LOGS = Path("logs")  # git-ignored, not a DVC output: what differs run to run (seconds, MLflow ids)


def _log_file(kind: str, key: Path, ext: str) -> Path:
    return LOGS / kind / (Path(key).as_posix().strip("/").replace("/", "__") + ext)


def _writable(f: Path) -> Path:
    """``f`` with its folder made (a writer's first use of a log folder)."""
    f.parent.mkdir(parents=True, exist_ok=True)
    return f


def _cost_file(key: Path) -> Path:
    return _log_file("costs", key, ".json")


def model_uri_file(bundle_dir: Path) -> Path:
    """Where the URI of the MLflow model logged from ``bundle_dir`` (``models:/m-...``, a per-run
    id) is kept, outside the outputs: ``logs/mlflow/models__deflate.txt`` for ``models/deflate``."""
    return _log_file("mlflow", bundle_dir, ".txt")


def record_model_uri(bundle_dir: Path, uri: str) -> Path:
    from deflate.infra.files import write_text

    f = _writable(model_uri_file(bundle_dir))
    write_text(f, uri + "\n")
    return f


def record_cost(key: Path, cost: dict) -> None:
    """Keep what producing ``key`` (a model folder) cost, beside the outputs rather than in them:
    a file whose hash must match across runs and machines holds no measured seconds."""
    from deflate.infra.files import write_json

    write_json(_writable(_cost_file(key)), cost, indent=1, sort_keys=True)


def read_cost(key: Path) -> dict:
    """What :func:`record_cost` kept for ``key``; empty where it was not measured in this checkout."""
    from deflate.infra.files import read_json

    f = _cost_file(key)
    return read_json(f) if f.is_file() else {}


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
