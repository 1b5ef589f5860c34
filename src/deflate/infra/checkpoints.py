"""Training checkpoints a kill cannot tear or mix.

Each finished epoch writes its weights and optimiser state into its own folder ``epoch-NNN/``; then
``manifest.json`` (written last, atomically) names that epoch's files and the best epoch's weights
with their SHA-256. Resume trusts only the manifest: a kill before it is written leaves the previous
manifest, whose files are untouched, so training goes on from the last consistent epoch. A manifest
that does not parse or names a missing or changed file is reported, the folder is set aside (renamed,
never deleted) and training starts from scratch. Files no manifest names are removed after each save.
"""
from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch.optim.swa_utils import AveragedModel

from deflate.infra.files import atomic_path, read_json, sha256, write_json
from deflate.infra.weights import load_weights, save_weights

MANIFEST = "manifest.json"
AVERAGE = "average.safetensors"  # the EMA of the weights, beside them, when training keeps one
FORMAT = 1


@dataclass
class Progress:
    """What a run had finished: ``epoch`` is the last finished epoch (1-based), ``history`` its records."""
    epoch: int
    best: float
    best_epoch: int
    history: list[dict]


def _save_optimizer(opt: torch.optim.Optimizer, folder: Path) -> None:
    sd = opt.state_dict()
    tensors = {f"{i}/{k}": (v if torch.is_tensor(v) else torch.tensor(v)).contiguous()
               for i, st in sd["state"].items() for k, v in st.items()}
    with atomic_path(folder / "optimizer.safetensors") as tmp:
        save_file(tensors, str(tmp))
    write_json(folder / "optimizer.json", sd["param_groups"])


def _load_optimizer(opt: torch.optim.Optimizer, folder: Path) -> None:
    state: dict = {}
    for key, v in load_file(str(folder / "optimizer.safetensors")).items():
        i, k = key.split("/", 1)
        state.setdefault(int(i), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": read_json(folder / "optimizer.json")})


def save(ckpt_dir: Path, *, run_hash: str, progress: Progress, model: torch.nn.Module,
         opt: torch.optim.Optimizer, average: torch.nn.Module | None = None) -> None:
    """Checkpoint the epoch just finished (``progress.epoch``); the manifest goes last. With an
    ``average`` of the weights (the training's EMA), the best epoch's file is that average's."""
    folder = ckpt_dir / f"epoch-{progress.epoch:03d}"
    shutil.rmtree(folder, ignore_errors=True)  # leftovers of a torn earlier attempt at this epoch
    folder.mkdir(parents=True)
    save_weights(model, folder / "model.safetensors")
    _save_optimizer(opt, folder)
    kept = AVERAGE if average is not None else "model.safetensors"  # what the best epoch's weights are
    files = {"model": f"{folder.name}/model.safetensors", "optimizer": f"{folder.name}/optimizer.safetensors",
             "optimizer_groups": f"{folder.name}/optimizer.json", "best": f"epoch-{progress.best_epoch:03d}/{kept}"}
    if average is not None:
        save_weights(average, folder / AVERAGE)
        files["average"] = f"{folder.name}/{AVERAGE}"
    manifest = {"format": FORMAT, "hash": run_hash, "epoch": progress.epoch, "best": progress.best,
                "best_epoch": progress.best_epoch, "history": progress.history, "files": files,
                "sha256": {rel: sha256(ckpt_dir / rel) for rel in sorted(set(files.values()))}}
    write_json(ckpt_dir / MANIFEST, manifest, indent=1)
    _prune(ckpt_dir, set(files.values()))


def _prune(ckpt_dir: Path, keep: set[str]) -> None:
    """Remove what the manifest no longer names (older epochs, torn attempts, old formats)."""
    keep_dirs = {rel.split("/")[0] for rel in keep}
    for entry in ckpt_dir.iterdir():
        if entry.name == MANIFEST:
            continue
        if entry.is_dir() and entry.name in keep_dirs:
            for f in entry.iterdir():
                if f"{entry.name}/{f.name}" not in keep:
                    f.unlink()
        elif entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _check(ckpt_dir: Path) -> dict:
    """The manifest, verified against the files it names; ``ValueError`` says what is wrong."""
    try:
        m = read_json(ckpt_dir / MANIFEST)
        files, sums = m["files"], m["sha256"]
        if m["format"] != FORMAT or set(files.values()) != set(sums):
            raise ValueError("manifest lists files without their hashes")
        for rel, digest in sums.items():
            path = ckpt_dir / rel
            if not path.is_file():
                raise ValueError(f"{rel} is missing")
            if sha256(path) != digest:
                raise ValueError(f"{rel} does not match its hash")
        int(m["epoch"]), float(m["best"]), int(m["best_epoch"]), list(m["history"])
        return m
    except (OSError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{type(e).__name__}: {e}") from e


def set_aside(ckpt_dir: Path, reason: str, name: str = "train") -> Path:
    """Rename a checkpoint folder that cannot be trusted (kept for inspection, never deleted)."""
    n = 1
    while (dest := ckpt_dir.with_name(f"{ckpt_dir.name}.set-aside-{n}")).exists():
        n += 1
    ckpt_dir.rename(dest)
    print(f"[{name}] checkpoint in {ckpt_dir} is inconsistent ({reason}); set aside as {dest.name}, "
          "training starts from scratch", file=sys.stderr)
    return dest


def resume(ckpt_dir: Path, *, run_hash: str, model: torch.nn.Module, opt: torch.optim.Optimizer,
           device: str = "cpu", name: str = "train", average: AveragedModel | None = None) -> Progress | None:
    """Load the last consistent epoch of a run with this ``run_hash``; ``None`` to start afresh.
    ``average``: the run's EMA of the weights, loaded too (the run hash says whether it keeps one).

    A checkpoint of another run (other config or code) is not an error: it is ignored and replaced
    by this run's first save.
    """
    if not (ckpt_dir / MANIFEST).exists():
        return None
    try:
        m = _check(ckpt_dir)
    except ValueError as e:
        set_aside(ckpt_dir, str(e), name)
        ckpt_dir.mkdir(parents=True)
        return None
    if m["hash"] != run_hash:
        return None
    folder = ckpt_dir / Path(m["files"]["model"]).parent
    load_weights(model, folder / "model.safetensors", device=device)
    _load_optimizer(opt, folder)
    if average is not None:
        load_weights(average.module, ckpt_dir / m["files"]["average"], device=device)
        average.n_averaged.fill_(1)  # started: the next step averages instead of copying (EMA ignores the count)
    return Progress(m["epoch"], m["best"], m["best_epoch"], m["history"])


def load_best(ckpt_dir: Path, model: torch.nn.Module, device: str = "cpu") -> None:
    m = read_json(ckpt_dir / MANIFEST)
    load_weights(model, ckpt_dir / m["files"]["best"], device=device)
