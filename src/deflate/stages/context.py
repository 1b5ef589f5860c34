"""What every stage starts with: seeds, threads and device from params, the dataset's schema, and
its MLflow run."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from deflate.data.splits import load_schema
from deflate.infra import distributed as dist
from deflate.infra.config import Params
from deflate.infra.runtime import resolve_device, seed_everything
from deflate.infra.tracking import Tracker

TRACKED = ("seed", "data", "image", "text", "model", "generator", "negatives", "discriminator", "lexical",
           "decode", "eval", "distributed")  # the params sections an MLflow run records


@dataclass
class StageContext:
    params: Params
    name: str
    schema: dict
    device: str

    @classmethod
    def open(cls, p: Params, name: str, processed: Path) -> "StageContext":
        seed_everything(p["seed"])
        # several processes on one machine share its threads instead of each taking them all
        torch.set_num_threads(max(1, p["model"]["num_threads"] // dist.world_size()))
        return cls(p, name, load_schema(processed), dist.device(resolve_device(p["model"]["device"])))

    @property
    def train_kw(self) -> dict:
        """How :func:`deflate.model.train.fit` runs here: device, mixed precision, gradient accumulation."""
        d = self.params["distributed"]
        return {"device": self.device, "precision": d["mixed_precision"], "grad_accum": d["grad_accum"]}

    def tracker(self, name: str | None = None) -> Tracker:
        """This stage's MLflow run (the main process's alone: the others log nothing)."""
        kept = {k: v for k, v in self.params.items() if k in TRACKED}
        cfg = self.params["tracking"] if dist.is_main() else {**self.params["tracking"], "enabled": False}
        return Tracker(cfg, name or self.name, kept, self.device)
