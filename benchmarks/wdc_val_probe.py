"""What the WDC-PAVE val probes share (wdc_span_words, wdc_span_collisions, wdc_rerank_keep_score,
wdc_keep_model, wdc_learned_select): their common arguments, the pipeline's params with its kernels
pinned, its committed DEFLATE bundle and its val split, and the answers of a subset of val's offers
(out-of-fold protocols). Never eval_visible."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

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


def offers(ans: Any, records: list, rows, with_beams: bool = False) -> tuple[Any, list, np.ndarray]:
    """The answers (``engine.Answers``) of the offers ``rows`` only, renumbered as those offers are;
    the offers' records; and which questions of ``ans`` they are (to take the same subset of
    per-question scores). Without beams unless ``with_beams`` (an answer without beams is final:
    ``at_weight`` does not pick again among them)."""
    new = {int(r): j for j, r in enumerate(rows)}
    ks = np.asarray([k for k, q in enumerate(ans.questions) if q.row in new], dtype=np.int64)
    part = lambda a: None if a is None else a[ks]  # noqa: E731
    beams = ans.beams if with_beams else None
    if beams is not None:  # each kept question's candidates, in order
        spans = [(int(beams.starts[k]), int(beams.starts[k + 1])) for k in ks.tolist()]
        at = np.asarray([i for a, z in spans for i in range(a, z)], dtype=np.int64)
        beams = type(beams)(np.cumsum([0] + [z - a for a, z in spans]), [beams.values[i] for i in at],
                            beams.probs[at], beams.gen_logprobs[at])
    a = type(ans)([replace(ans.questions[k], row=new[ans.questions[k].row]) for k in ks],
                  [ans.values[k] for k in ks], part(ans.probs), gen_logprobs=part(ans.gen_logprobs), beams=beams)
    return a, [records[int(r)] for r in rows], ks


def folds(n_rows: int, seed: int, halvings: int = 5) -> tuple[list, list]:
    """The out-of-fold splits of val's offers: the parity halves, and ``halvings`` seeded random
    halvings (each a pair of sorted row arrays)."""
    rows = np.arange(n_rows)
    rng = np.random.default_rng(seed)
    random = []
    for _ in range(halvings):
        perm = rng.permutation(n_rows)
        random.append([np.sort(perm[: n_rows // 2]), np.sort(perm[n_rows // 2:])])
    return [rows[rows % 2 == 0], rows[rows % 2 == 1]], random
