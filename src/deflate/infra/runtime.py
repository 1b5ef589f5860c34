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
