"""One training loop for the generator, the discriminator and the baselines (:func:`fit`), and one
training-stage skeleton around it (:func:`train_and_save`).

Adamax (lr 2e-3, wd 1e-4, paper A.1) by default; per-epoch validation picks the best epoch
(the paper picked the best of 20 *test* evaluations; we never look at test while training).
After each epoch the weights, optimiser state and progress go to ``ckpt_dir`` (see
:mod:`deflate.infra.checkpoints`): a killed run started again with the same config resumes after the last
consistently written epoch; a training stage that finishes removes them (:func:`train_and_save`).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from deflate.infra import checkpoints
from deflate.infra import distributed as dist
from deflate.infra.files import write_json
from deflate.infra.runtime import peak_memory_mb, record_cost
from deflate.model.batching import Batcher, Example, to_device


def make_optimizer(model: torch.nn.Module, cfg: dict) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    kind = cfg["optimizer"].lower()
    if kind == "adamax":
        return torch.optim.Adamax(params, lr=cfg["lr"], betas=(0.9, 0.999), weight_decay=cfg["weight_decay"])
    if kind == "adamw":
        return torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    raise ValueError(f"unknown optimizer {kind!r} (adamax | adamw)")


# The code a training stage depends on: the same folders as its deps in dvc.yaml, so that a change
# elsewhere (cli.py, the baselines, the reports) neither stales a training stage nor moves its key.
TRAINING_CODE = ("__init__.py", "infra", "data", "model", "answering", "stages")


def code_fingerprint() -> str:
    """Hash of the training code: a checkpoint left by other code must never be resumed."""
    root = Path(__file__).parents[1]  # the deflate package
    h = hashlib.sha256()
    files = [f for part in TRAINING_CODE for f in ([root / part] if part.endswith(".py") else (root / part).rglob("*.py"))]
    for f in sorted(files):
        h.update(f.relative_to(root).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def file_digest(*paths: Path) -> str:
    """Hash of the bytes of the files a model trains on (missing files hash as absent)."""
    h = hashlib.sha256()
    for path in paths:
        h.update(str(Path(path).name).encode())
        if Path(path).is_file():
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()[:16]


def config_hash(*parts) -> str:
    """Resume key: the given config parts plus the code fingerprint."""
    return hashlib.sha256(json.dumps([parts, code_fingerprint()], sort_keys=True, default=str).encode()).hexdigest()[:16]


def fit(model: torch.nn.Module, examples: list[Example], batcher: Batcher, cfg: dict, *,
        loss_fn: Callable, validate: Callable[[torch.nn.Module], dict], ckpt_dir: Path, run_hash: str, seed: int,
        tracker=None, device: str = "cpu", name: str = "train", stop_after_epochs: int | None = None,
        precision: str = "auto", grad_accum: int = 1, speeds: list[float] | None = None,
        ema: float = 0.0) -> list[dict]:
    """Train for ``cfg['epochs']`` epochs; returns per-epoch history; leaves the best weights loaded.

    The history (saved with the model and in the checkpoint) holds no measured time, so its bytes
    repeat run to run; each epoch's training examples/s goes to ``speeds`` (and the tracker) instead.

    ``validate(model)`` returns a dict with ``score`` (higher is better). ``stop_after_epochs``
    simulates a kill (tests). ``cfg['batch_size']`` is the global batch: under several processes
    (:mod:`deflate.infra.distributed`) each takes a slice of it, in ``grad_accum`` micro-batches, and its
    loss (a mean over its targets) is weighted by its share of the batch's targets, so the summed
    gradient is the one-process gradient. ``precision``: bf16 autocast (``auto``: on GPUs).

    ``ema`` > 0: an exponential moving average of the weights (decay ``ema`` per optimiser step) is
    what each epoch validates, what the best epoch keeps and what is left loaded; the raw weights
    still train on (and resume) as without it.
    """
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    model.to(device)
    opt = make_optimizer(model, cfg)
    avg = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(ema)) if ema else None
    done = None
    for turn in (True, False):  # the main process first: it sets a torn checkpoint aside, the others then read
        if dist.is_main() == turn:
            done = checkpoints.resume(ckpt_dir, run_hash=run_hash, model=model, opt=opt, device=device, name=name,
                                      average=avg)
        dist.barrier()
    done = done or checkpoints.Progress(epoch=0, best=float("-inf"), best_epoch=0, history=[])
    start, history = done.epoch, done.history
    if start:
        print(f"[{name}] resuming after epoch {start}/{cfg['epochs']}")
    net, world = model, dist.world_size()
    if world > 1:  # DDP: gradients summed across processes during backward
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[torch.device(device).index] if device.startswith("cuda") else None,
            find_unused_parameters=True)  # e.g. image embeddings on a slice without pictures
    amp = dist.autocast(precision, device)
    for epoch in range(start, cfg["epochs"]):
        torch.manual_seed(seed * 1000 + epoch)  # dropout stream independent of resumes
        order = batcher.batches(examples, cfg["batch_size"], shuffle=True, bucket=cfg["bucketing"],
                                seed=seed * 1000 + epoch)  # the same on every process
        model.train()
        t0, total, n = time.perf_counter(), 0.0, 0
        bar = tqdm(order, desc=f"{name} epoch {epoch + 1}/{cfg['epochs']}", unit="batch", mininterval=2.0,
                   disable=not dist.is_main())
        for idx in bar:
            opt.zero_grad(set_to_none=True)
            total += step(net, loss_fn, batcher, examples, idx, device, amp, world, grad_accum) * len(idx)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["grad_clip"])
            opt.step()
            if avg is not None:
                avg.update_parameters(model)
            n += len(idx)
            bar.set_postfix(loss=f"{total / n:.4f}", ex_s=f"{n / (time.perf_counter() - t0):.0f}", refresh=False)
        train_time = time.perf_counter() - t0
        model.eval()
        val = validate(avg.module.eval() if avg is not None else model)
        rec = {"epoch": epoch + 1, "train_loss": total / max(n, 1), **{f"val_{k}": v for k, v in val.items()}}
        history.append(rec)
        rate = n / train_time
        if speeds is not None:
            speeds.append(round(rate, 1))
        if val["score"] > done.best:
            done.best, done.best_epoch = val["score"], epoch + 1
        done.epoch = epoch + 1
        if dist.is_main():
            checkpoints.save(ckpt_dir, run_hash=run_hash, progress=done, model=model, opt=opt,
                             average=avg.module if avg is not None else None)
            print(f"[{name}] epoch {epoch + 1}: loss {rec['train_loss']:.4f}, val {val}, "
                  f"{rate:.0f} ex/s")
            if tracker is not None:
                tracker.metrics({**{k: v for k, v in rec.items() if k != "epoch"}, "examples_per_s": rate},
                                step=epoch + 1)
        dist.barrier()
        if stop_after_epochs is not None and epoch + 1 - start >= stop_after_epochs and epoch + 1 < cfg["epochs"]:
            raise KeyboardInterrupt(f"stopped after epoch {epoch + 1} (simulated kill)")
    if done.epoch:
        checkpoints.load_best(ckpt_dir, model, device=device)
    return history


@dataclass(kw_only=True)
class TrainingJob:
    """What one training stage trains: everything :func:`fit` needs but the run's settings."""
    name: str                   # generator, discriminator, bilstm_crf, ...: progress, MLflow, checkpoints
    model: torch.nn.Module
    examples: list[Example]
    batcher: Batcher
    cfg: dict                   # its params section: epochs, batch_size, lr, optimizer, ...
    loss_fn: Callable
    validate: Callable[[torch.nn.Module], dict]
    run_hash: str               # resume key (:func:`config_hash`)
    ckpt_dir: Path
    ema: float = 0.0            # > 0: validate and keep an EMA of the weights (:func:`fit`)


def train_and_save(job: TrainingJob, out: Path, *, seed: int, tracker, train_kw: dict,
                   save: Callable[[list[dict]], None]) -> list[dict]:
    """The one training-stage skeleton: :func:`fit` (validated each epoch, resumable, the best
    epoch's weights kept), then ``save(history)`` into ``out`` by the main process while the others
    wait (the folder is complete before any process reads it). The measured seconds of the fit and
    the peak memory (Table 5's efficiency columns) and each epoch's examples/s are kept outside ``out``
    (:func:`~deflate.infra.runtime.record_cost`), so the folder's bytes do not vary run to run.
    ``train_kw``: :attr:`StageContext.train_kw`."""
    t0, speeds = time.perf_counter(), []
    history = fit(job.model, job.examples, job.batcher, job.cfg, loss_fn=job.loss_fn, validate=job.validate,
                  ckpt_dir=job.ckpt_dir, run_hash=job.run_hash, seed=seed, tracker=tracker, name=job.name,
                  speeds=speeds, ema=job.ema, **train_kw)
    cost = {"train_seconds": round(time.perf_counter() - t0, 1), "peak_memory_mb": peak_memory_mb(),
            "examples_per_s": speeds}  # the epochs this process trained (a resumed run: the later ones)
    dist.on_main(lambda: (save(history), write_training_record(job, out, seed, history), record_cost(out, cost),
                          _drop_resume_state(job.ckpt_dir)))
    return history


TRAINING_RECORD = "training.json"


def write_training_record(job: TrainingJob, out: Path, seed: int, history: list[dict]) -> None:
    """The settings that trained the weights in ``out``, beside them (nanoGPT keeps its config in the
    checkpoint): the params section, the seed, the weight average and the epoch kept. Nothing measured,
    so the bytes repeat run to run."""
    best = max(history, key=lambda h: h["val_score"]) if history else None
    write_json(Path(out) / TRAINING_RECORD,
               {"name": job.name, "seed": seed, "settings": job.cfg, "ema": job.ema,
                "epochs_run": len(history), "best_epoch": best["epoch"] if best else None}, indent=1)


def _drop_resume_state(ckpt_dir: Path) -> None:
    """A finished run needs no resume state: its weights, optimiser state and manifest (which names
    the code's fingerprint) go, so an output folder that holds them (the compared systems') has the
    same bytes whatever else changed in the package; an emptied parent goes too."""
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    with contextlib.suppress(OSError):
        ckpt_dir.parent.rmdir()


def _targets(batch: dict) -> int:
    """What a batch's loss is a mean over: its labelled tokens (or claims), else its rows."""
    labels = batch.get("labels")
    return int((labels != -100).sum()) if labels is not None else len(next(iter(batch.values())))


def step(net, loss_fn: Callable, batcher: Batcher, examples: list[Example], idx: list[int], device: str, amp,
          world: int, grad_accum: int) -> float:
    """Forward and backward of one global batch; returns its mean loss (gradients left in place)."""
    if world == 1 and grad_accum == 1:  # the plain loop, bit for bit
        with amp:
            loss = loss_fn(net, to_device(batcher.collate([examples[i] for i in idx]), device))
        loss.backward()
        return loss.item()
    mine = dist.slice_of(idx)
    parts = [dist.slice_of(mine, k, grad_accum) for k in range(grad_accum)]
    batches = [batcher.collate([examples[i] for i in (part or idx[:1])]) for part in parts]  # empty: a 0-weight stand-in
    counts = [_targets(b) if part else 0 for b, part in zip(batches, parts)]
    n_global = dist.all_sum(sum(counts))
    local = 0.0
    for k, (batch, count) in enumerate(zip(batches, counts)):
        last = k == grad_accum - 1  # DDP all-reduces on the last micro-batch only
        with (net.no_sync() if not last and world > 1 else contextlib.nullcontext()), amp:
            loss = loss_fn(net, to_device(batch, device))
        w = world * count / n_global  # DDP averages over processes: undo that, weight by target share
        (loss * w).backward()
        local += loss.item() * count / n_global
    return dist.all_sum(local)
