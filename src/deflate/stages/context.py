"""What every stage starts with: seeds, threads and device from params, the dataset's schema, and
its MLflow run."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import Params, resolve_device, seed_everything
from ..dataset import load_schema
from ..tracking import Tracker

TRACKED = ("seed", "data", "image", "text", "model", "generator", "negatives", "discriminator", "lexical",
           "decode", "eval")  # the params sections an MLflow run records


@dataclass
class StageContext:
    params: Params
    name: str
    schema: dict
    device: str

    @classmethod
    def open(cls, p: Params, name: str, processed: Path) -> "StageContext":
        seed_everything(p["seed"])
        torch.set_num_threads(p["model"]["num_threads"])
        return cls(p, name, load_schema(processed), resolve_device(p["model"]["device"]))

    def tracker(self, name: str | None = None) -> Tracker:
        kept = {k: v for k, v in self.params.items() if k in TRACKED}
        return Tracker(self.params["tracking"], name or self.name, kept, self.device)
