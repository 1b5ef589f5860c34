"""Weights files (safetensors, never pickle), written so that the same tensors give the same bytes
and a reader never sees half a file.

``safetensors.torch.save_model`` records every dropped alias of a shared tensor in the header's
metadata, a map the library serialises in no fixed order: equal tensors then gave different files
(and different DVC hashes) run to run. Here aliases are dropped without metadata; ``load_model``
re-ties them from the module itself.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import load_model, save_file

from deflate.infra.bundle import BundleError
from deflate.infra.files import atomic_path


def unique_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``state_dict`` with one name per shared tensor (the first name in sorted order), contiguous."""
    state = model.state_dict()
    kept: dict[tuple, str] = {}
    for name in sorted(state):
        t = state[name]
        key = (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()))
        kept.setdefault(key, name)
    return {name: state[name].contiguous() for name in sorted(kept.values())}


def save_weights(model: torch.nn.Module, path: Path) -> None:
    """Write ``model``'s weights to ``path`` atomically (temp file, fsync, rename)."""
    with atomic_path(Path(path)) as tmp:
        save_file(unique_state(model), str(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())


def load_weights(model: torch.nn.Module, path: Path, device: str = "cpu") -> None:
    """Load ``path`` into ``model``; a missing, torn or mismatched file is one error naming it."""
    if not Path(path).is_file():
        raise BundleError(f"{path} not found")
    try:
        load_model(model, str(path), device=device)
    except Exception as e:  # safetensors' header errors and torch's shape/key mismatches alike
        raise BundleError(f"{path} is not this model's weights ({type(e).__name__}: {' '.join(str(e).split())[:160]})") from None
