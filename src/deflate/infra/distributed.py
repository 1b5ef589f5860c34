"""Several processes, one result: the same stages on N processes (CPU gloo, GPUs nccl, many nodes).

``distributed.processes: 1`` (the default) changes nothing: every function here is the identity.
With more, a stage script calls :func:`relaunch` first, which runs the same command again under
``accelerate launch`` (or an accelerate config file, for several nodes), and each process joins
the process group it describes (NCCL between GPUs, gloo between CPU processes). Then

* training (:func:`deflate.model.train.fit`) wraps the model in DDP and gives each process a slice of
  every global batch (``batch_size`` in params is the global batch), weighting each slice's loss
  by its share of the batch's targets, so the update is the one-process update;
* inference loops give each process whole batches of the one-process batch list (:func:`share`)
  and :func:`complete` gathers the answers in input order, so every process holds, and the main
  process writes, exactly what one process would have written;
* only the main process writes files and MLflow runs (:func:`is_main`); :func:`barrier` makes
  the others wait until what they read next is on disk.
"""
from __future__ import annotations

import os
import subprocess
import sys
from functools import lru_cache
from typing import Any, Callable, Sequence

from tqdm import tqdm

PRECISIONS = ("auto", "no", "bf16")


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


@lru_cache(maxsize=None)
def _group() -> str:
    """Join the process group the launcher described (``MASTER_ADDR``/``PORT``, ``RANK``, ``WORLD_SIZE``),
    once per process: NCCL when every process of this machine has a GPU of its own, else gloo
    (CPU processes, or several processes sharing one GPU). Returns the backend."""
    import torch
    import torch.distributed as td

    if not td.is_initialized():
        local = int(os.environ.get("LOCAL_WORLD_SIZE", world_size()))
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        td.init_process_group("nccl" if gpus >= local > 0 and gpus else "gloo")
    return td.get_backend()


def device(name: str) -> str:
    """The device this process trains and answers on: ``cuda`` becomes this process's own GPU."""
    if world_size() > 1 and name.startswith("cuda"):
        import torch

        gpu = int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count()  # more processes than GPUs: shared
        torch.cuda.set_device(gpu)
        return f"cuda:{gpu}"
    return name


def autocast(precision: str, device_name: str):
    """bf16 autocast where asked (``auto``: on GPUs only, where it is fast and CPUs differ in it)."""
    import torch

    if precision not in PRECISIONS:
        raise ValueError(f"distributed.mixed_precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    kind = "cuda" if device_name.startswith("cuda") else "cpu"
    on = precision == "bf16" or (precision == "auto" and kind == "cuda")
    return torch.autocast(kind, dtype=torch.bfloat16, enabled=on)


def barrier() -> None:
    if world_size() > 1:
        import torch.distributed as td

        _group()
        td.barrier()


def on_main(write: Callable[[], Any]) -> None:
    """``write()`` by the main process alone; every process returns once it has (the files exist)."""
    if is_main():
        write()
    barrier()


def from_main(make: Callable[[], Any]) -> Any:
    """``make()`` run by the main process alone and sent to every process (e.g. a tokenizer trained
    once, so every process holds the very same one)."""
    if world_size() == 1:
        return make()
    import torch.distributed as td

    _group()
    box = [make() if is_main() else None]
    td.broadcast_object_list(box, src=0)
    return box[0]


def all_sum(x: float) -> float:
    """Sum of ``x`` over the processes."""
    if world_size() == 1:
        return x
    import torch
    import torch.distributed as td

    _group()
    on = f"cuda:{torch.cuda.current_device()}" if _group() == "nccl" else "cpu"
    t = torch.tensor([float(x)], dtype=torch.float64, device=on)
    td.all_reduce(t)
    return float(t.item())


def share(order: Sequence[list[int]]) -> list[list[int]]:
    """This process's batches: every ``world``-th of the one-process batch list, whole."""
    return list(order) if world_size() == 1 else list(order[rank()::world_size()])


def progress(order: Sequence[list[int]], desc: str, show: bool = True):
    """This process's share of ``order`` (see :func:`share`), with a progress bar on the main process."""
    return tqdm(share(order), desc=desc, unit="batch", disable=not show or not is_main(), mininterval=2.0)


def complete(out, order: Sequence[list[int]]):
    """After each process filled ``out[i]`` for the indices of its :func:`share` of ``order``,
    every process gets every answer, at its input position (``out`` is a list or an array)."""
    if world_size() == 1:
        return out
    import torch.distributed as td

    _group()
    mine = [(i, out[i]) for idx in share(order) for i in idx]
    parts: list = [None] * world_size()
    td.all_gather_object(parts, mine)
    for part in parts:
        for i, v in part:
            out[i] = v
    return out


def slice_of(idx: list[int], k: int | None = None, n: int | None = None) -> list[int]:
    """Part ``k`` of ``n`` (default: this process's part of a global batch), contiguous, sizes
    differing by at most one; may be empty when the batch has fewer examples than parts."""
    k, n = rank() if k is None else k, world_size() if n is None else n
    q, r = divmod(len(idx), n)
    start = k * q + min(k, r)
    return idx[start:start + q + (k < r)]


def launch_command(cfg: dict, argv: Sequence[str]) -> list[str]:
    """``accelerate launch`` of ``argv`` (a script and its arguments) as ``distributed`` params say."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    if cfg.get("config_file"):
        cmd += ["--config_file", str(cfg["config_file"])]
    else:
        precision = {"auto": "no", "no": "no", "bf16": "bf16"}[cfg["mixed_precision"]]  # autocast is ours
        cmd += ["--multi_gpu", "--num_processes", str(int(cfg["processes"])), "--num_machines", "1",
                "--mixed_precision", precision, "--dynamo_backend", "no",
                "--main_process_port", str(int(cfg.get("port", 29500)))]
    return cmd + list(argv)


def relaunch(cfg: dict, argv: Sequence[str] | None = None) -> None:
    """With ``cfg['processes'] > 1`` (or a config file) and not already launched, run this command
    under ``accelerate launch`` and exit with its status; otherwise return and run here."""
    n = int(cfg["processes"])
    if n < 1:
        raise ValueError(f"distributed.processes must be >= 1, not {n}")
    if (n == 1 and not cfg.get("config_file")) or "WORLD_SIZE" in os.environ:
        return
    cmd = launch_command(cfg, argv if argv is not None else sys.argv)
    print(f"[distributed] {' '.join(cmd)}", flush=True)
    env = dict(os.environ)
    # threads per process: the machine's cores shared out, not oversubscribed
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // n)))
    sys.exit(subprocess.call(cmd, env=env))
