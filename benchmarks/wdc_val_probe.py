"""What the WDC-PAVE val probes share (wdc_span_words, wdc_span_collisions, wdc_rerank_keep_score):
their common arguments, and the pipeline's params with its kernels pinned, its committed DEFLATE
bundle and its val split. Never eval_visible."""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deflate.infra import kernels
from deflate.infra.config import load_params


def parser(doc: str, out: str) -> argparse.ArgumentParser:
    """``--pipeline``, ``--bundle`` and ``--out`` (default ``out``); the probe adds its own."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--pipeline", type=Path, default=Path("pipelines/wdc_pave"))
    ap.add_argument("--bundle", type=Path, default=None, help="default: the pipeline's DEFLATE bundle")
    ap.add_argument("--out", type=Path, default=Path(out))
    return ap


@dataclass
class Val:
    params: dict
    bundle: Path
    engine: Any  # deflate.answering.engine.Deflate, imported once the kernels are pinned
    data: Any  # deflate.data.splits.Split
    processed: Path


def open_val(args: argparse.Namespace) -> Val:
    """The pipeline's params (kernels pinned before torch loads), its DEFLATE bundle and val."""
    p = load_params(args.pipeline / "params.yaml")
    kernels.pin(p["repro"]["kernels"], p["repro"]["num_threads"])

    from deflate.answering.engine import Deflate
    from deflate.data.splits import load_data

    bundle = args.bundle or args.pipeline / "models" / "systems" / "deflate-wdc_pave" / "deflate"
    processed = args.pipeline / "data" / "processed"
    return Val(p, bundle, Deflate.load(bundle), load_data(processed, args.pipeline / "data" / "no_tokens", "val"),
               processed)
