"""The paper's comparisons as runnable units, so one ``dvc repro`` rebuilds every table:

* :func:`run_system` — one system (DEFLATE or a variant of it, or a baseline) on one dataset,
  end to end, with its metrics, wall time and peak memory;
* :func:`learning_curve` — one system on nested fractions of the training products (Figure 3);
* :func:`subsample` — those nested fractions, as table folders the stages read unchanged.

DEFLATE variants (paper Tables 4 and 5) set the two switches explicitly, so a variant means the
same thing whatever ``model.use_image`` / ``model.use_discriminator`` say in params.yaml.
"""
from __future__ import annotations

import copy
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from deflate.baselines.systems import SYSTEMS as BASELINES
from deflate.data.splits import load_schema
from deflate.infra import distributed as dist
from deflate.infra import kernels
from deflate.infra.runtime import peak_memory_mb, record_cost
from deflate.stages import (
    evaluate,
    harvest_negatives,
    train_discriminator,
    train_generator,
)
from deflate.stages.baseline import run_baseline

VARIANTS = {  # name: (use_image, use_discriminator)
    "deflate": (True, True), "v_minus": (False, True), "d_minus": (True, False), "dv_minus": (False, False),
}


def run_deflate(p: dict, processed: Path, tokens_dir: Path, work: Path, use_image: bool, use_disc: bool) -> dict:
    """Generator -> negatives -> discriminator -> evaluation (and its bundle), in ``work``."""
    p = copy.deepcopy(p)
    p["model"]["use_image"], p["model"]["use_discriminator"] = use_image, use_disc
    train_generator.run(p, processed, tokens_dir, work / "generator", work / "checkpoints" / "generator")
    harvest_negatives.run(p, processed, tokens_dir, work / "generator", work / "negatives")
    train_discriminator.run(p, processed, tokens_dir, work / "generator", work / "negatives", work / "discriminator",
                            work / "checkpoints" / "discriminator")
    return evaluate.run(p, processed, tokens_dir, work / "generator", work / "discriminator", work / "metrics.json",
                        work / "predictions" / "test.jsonl", work / "deflate")


def run_system(system: str, p: dict, processed: Path, tokens_dir: Path, work: Path, dataset: str = "") -> dict:
    """Train and score one system; the metrics carry what produced them; how long it took and its
    peak memory are kept outside them (:func:`~deflate.infra.runtime.record_cost` under ``work``)."""
    p = copy.deepcopy(p)
    p["tracking"]["experiment"] = f"{p['tracking']['experiment']}-{system}{'-' + dataset if dataset else ''}"
    t0 = time.perf_counter()
    if system in VARIANTS:
        m = run_deflate(p, processed, tokens_dir, work, *VARIANTS[system])
    elif system in BASELINES:
        m = run_baseline(system, p, processed, tokens_dir, work)
    else:
        raise ValueError(f"unknown system {system!r}; choose one of {sorted(VARIANTS) + list(BASELINES)}")
    schema = load_schema(processed)
    m.setdefault("meta", {}).update({
        "system": system, "dataset": dataset or schema["format"], "seed": p["seed"],
        "train_products": len(pd.read_parquet(processed / "train.parquet", columns=["id"])),
        "image_tokens": str(tokens_dir) if (tokens_dir / "train.safetensors").exists() else "none"})
    m["meta"]["kernels"] = kernels.describe()
    dist.on_main(lambda: record_cost(work, {"seconds": round(time.perf_counter() - t0, 1),
                                            "peak_memory_mb": peak_memory_mb()}))
    return m


def subsample(processed: Path, tokens_dir: Path, fraction: float, seed: int, out: Path) -> tuple[Path, Path]:
    """``out/processed`` with the first ``fraction`` of a seeded permutation of the training
    products (so smaller fractions are subsets of larger ones) and val/test/schema unchanged."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if (tokens_dir / "train.safetensors").exists():
        raise ValueError("learning curves run on text-only data (image-token rows would need subsetting too)")
    dst = out / "processed"
    if dist.is_main():  # the others wait for the files
        dst.mkdir(parents=True, exist_ok=True)
        train = pd.read_parquet(processed / "train.parquet")
        keep = np.sort(np.random.default_rng(seed).permutation(len(train))[: max(1, round(fraction * len(train)))])
        train.iloc[keep].reset_index(drop=True).to_parquet(dst / "train.parquet")
        for f in ("val.parquet", "test.parquet", "schema.json"):
            shutil.copy(processed / f, dst / f)
    dist.barrier()
    return dst, out / "no_tokens"


def learning_curve(system: str, p: dict, processed: Path, tokens_dir: Path, work: Path,
                   proportions: list[float], dataset: str = "") -> list[dict]:
    """AVE / AP F1 of ``system`` trained on each proportion of the training products."""
    points = []
    for frac in sorted(proportions):
        sub, no_tokens = subsample(processed, tokens_dir, frac, p["seed"], work / f"p{frac:g}")
        m = run_system(system, p, sub, no_tokens, work / f"p{frac:g}" / "run", dataset)
        points.append({"system": system, "proportion": frac, "train_products": m["meta"]["train_products"],
                       "ave_f1": m["ave"]["f1"], "ap_f1": m["ap"]["f1"], "ave_f1_ci95": m["intervals"]["ave"],
                       "ap_f1_ci95": m["intervals"]["ap"]})
        print(f"[learning_curve] {system} {frac:.0%}: AVE F1 {m['ave']['f1']}, AP F1 {m['ap']['f1']}")
    return points
