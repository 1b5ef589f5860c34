"""DDP training and distributed answering on a device (issue #18; step 5 of gpu_check.sh): the tiny
world of the tests, its generator trained by 1 and by 2 processes at the same global batch, largest
weight difference; then the answering stages (harvest, evaluate, evaluate_candidates) on 2 processes
against 1, byte for byte. On one GPU the two processes share it (gloo); on several, one each (NCCL).

Usage: python benchmarks/ddp_check.py [--device cuda] [--out FILE]"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

from safetensors.torch import load_file  # noqa: E402
from test_distributed import ANSWER_FILES, run_worker  # noqa: E402
from test_pipeline import build_world  # noqa: E402


def work(tmp: Path, device: str, processes: int, world: Path, out: Path, *extra: str) -> float:
    """Seconds of one worker run (the tests' runner; accelerate launch included)."""
    t0 = time.perf_counter()
    run_worker(tmp, processes, world, out, *extra, device=device)
    return round(time.perf_counter() - t0, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        world = build_world(tmp / "world", 3)
        one, two = tmp / "one", tmp / "two"
        secs = {"train_1": work(tmp, a.device, 1, world, one, "train"),
                "train_2": work(tmp, a.device, 2, world, two, "train")}
        w1, w2 = (load_file(str(d / "gen" / "model.safetensors")) for d in (one, two))
        diff = max(float((w1[k].float() - w2[k].float()).abs().max()) for k in w1)
        loss = [(x["train_loss"], y["train_loss"]) for x, y in zip(
            *(json.loads((d / "gen" / "history.json").read_text()) for d in (one, two)))]
        # answering: both from the one-process generator (the discriminator: its first run's)
        work(tmp, a.device, 1, world, one, "discriminator", str(one / "gen"))
        secs["answer_1"] = work(tmp, a.device, 1, world, one, "answer", str(one / "gen"), str(one / "disc"))
        secs["answer_2"] = work(tmp, a.device, 2, world, two, "answer", str(one / "gen"), str(one / "disc"))
        same = {f: (one / f).read_bytes() == (two / f).read_bytes() for f in ANSWER_FILES}
        steps = 4 * -(-json.loads((one / "train.json").read_text())["examples"] // 8)
    res = {"device": a.device, "optimiser_steps": steps, "max_weight_diff": diff, "epoch_losses_1_vs_2": loss,
           "answers_byte_identical": same, "seconds_incl_launch": secs}
    print(json.dumps(res, indent=1))
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
