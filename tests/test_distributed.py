"""Several processes, one result (deflate.infra.distributed): 2 CPU processes (gloo) train the weights one
process trains at the same global batch, and write byte-identical answers."""
import itertools
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_pipeline import build_world, qa_setup, tiny_params

from deflate.infra import distributed

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("distributed_worker.py")
ANSWER_FILES = ("neg/train.jsonl", "neg/val.jsonl", "neg/summary.json", "pred.jsonl", "val.jsonl", "metrics.json",
                "bundle/bundle.json", "cand.json", "cand_attr.json", "cand_bundle/bundle.json")  # the worker's "answer"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _params(path: Path, processes: int, device: str = "cpu") -> Path:
    p = tiny_params()
    p["generator"].update(epochs=4, batch_size=8)  # >= 20 optimiser steps on the tiny world
    p["model"]["device"] = device
    p["tracking"]["enabled"] = False
    p["baselines"]["tagger"].update(epochs=1, emb=16, hidden=16, batch_size=8)
    p["baselines"]["jgave"].update(epochs=1, batch_size=8, max_target_len=16, val_max=8)
    p["distributed"].update(processes=processes, grad_accum=1, mixed_precision="no", config_file="",
                            port=_free_port())
    path.write_text(json.dumps(p))  # JSON is YAML
    return path


def _env() -> dict:
    """A child process's environment: the package importable, and not yet launched."""
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    return env


def run_worker(tmp: Path, processes: int, world: Path, out: Path, *extra: str, rc: int = 0,
               device: str = "cpu") -> None:
    """tests/distributed_worker.py on ``processes`` processes (also used by benchmarks/ddp_check.py)."""
    args = [sys.executable, str(WORKER), str(_params(tmp / f"params{processes}.yaml", processes, device)),
            str(world), str(out), *extra]
    r = subprocess.run(args, env=_env(), capture_output=True, text=True, timeout=600)
    assert (r.returncode == 0) == (rc == 0), r.stdout[-3000:] + r.stderr[-3000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist")
    world = build_world(tmp / "world", 3)
    one, two = tmp / "one", tmp / "two"
    run_worker(tmp, 1, world, one, "train")
    run_worker(tmp, 2, world, two, "train")
    run_worker(tmp, 1, world, one, "discriminator", str(one / "gen"))  # for the answering check
    run_worker(tmp, 1, world, one, "answer", str(one / "gen"), str(one / "disc"))
    run_worker(tmp, 2, world, two, "answer", str(one / "gen"), str(one / "disc"))
    run_worker(tmp, 2, world, tmp / "resumed", "train_killed", rc=1)
    run_worker(tmp, 2, world, tmp / "resumed", "train")
    return one, two


@pytest.mark.slow
def test_two_processes_train_the_one_process_weights(runs):
    one, two = runs
    examples = json.loads((one / "train.json").read_text())["examples"]
    assert 4 * -(-examples // 8) >= 20  # optimiser steps
    h1 = json.loads((one / "gen" / "history.json").read_text())
    h2 = json.loads((two / "gen" / "history.json").read_text())
    assert len(h1) == len(h2) == 4
    for x, y in zip(h1, h2):  # the same global loss, epoch by epoch
        assert abs(x["train_loss"] - y["train_loss"]) < 1e-4
    a, b = load_file(str(one / "gen" / "model.safetensors")), load_file(str(two / "gen" / "model.safetensors"))
    assert a.keys() == b.keys()
    diff = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    assert diff <= 1e-4, f"largest weight difference {diff}"


@pytest.mark.slow
def test_a_killed_two_process_run_resumes_to_the_same_weights(runs):
    _, two = runs
    resumed = two.parent / "resumed"
    hist = json.loads((resumed / "gen" / "history.json").read_text())
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4]
    a, b = load_file(str(two / "gen" / "model.safetensors")), load_file(str(resumed / "gen" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    for x, y in zip(json.loads((two / "gen" / "history.json").read_text()), hist):
        assert x["train_loss"] == y["train_loss"] and x["val_score"] == y["val_score"]


@pytest.mark.slow
def test_two_processes_write_byte_identical_answers(runs):
    one, two = runs
    for rel in ANSWER_FILES:
        assert (one / rel).read_bytes() == (two / rel).read_bytes(), rel
    assert (two / "pred.jsonl").stat().st_size > 0


@pytest.mark.slow
@pytest.mark.parametrize("system", ["jgave", "mjave"])
def test_baselines_train_on_two_processes(runs, system):
    one, _ = runs
    tmp, world = one.parent, one.parent / "world"
    run_worker(tmp, 2, world, tmp / "systems", "system", system)
    m = json.loads((tmp / "systems" / f"{system}.json").read_text())
    assert 0 <= m["ave"]["f1"] <= 100 and m["meta"]["epochs"] >= 1
    assert (tmp / "systems" / system / "predictions" / "test.jsonl").stat().st_size > 0


def test_one_process_changes_nothing(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    distributed.relaunch({"processes": 1, "config_file": ""})  # returns: runs here
    order = [[0, 1], [2], [3, 4]]
    assert distributed.share(order) == order
    out = ["a", "b", "c", "d", "e"]
    assert distributed.complete(out, order) is out
    assert distributed.from_main(lambda: 7) == 7 and distributed.all_sum(2.5) == 2.5


def test_batch_slices_cover_the_batch_once():
    idx = list(range(7))
    for n in (1, 2, 3, 8):
        parts = [distributed.slice_of(idx, k, n) for k in range(n)]
        assert sum(parts, []) == idx
        assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_launch_command_follows_params():
    cmd = distributed.launch_command({"processes": 2, "mixed_precision": "bf16", "config_file": "", "port": 29511},
                                     ["stages/evaluate.py"])
    assert cmd[1:3] == ["-m", "accelerate.commands.launch"] and cmd[-1] == "stages/evaluate.py"
    assert cmd[cmd.index("--num_processes") + 1] == "2" and cmd[cmd.index("--mixed_precision") + 1] == "bf16"
    cmd = distributed.launch_command({"processes": 2, "mixed_precision": "auto", "config_file": "multi_node.yaml"},
                                     ["x.py"])
    assert cmd[cmd.index("--config_file") + 1] == "multi_node.yaml" and "--num_processes" not in cmd
    with pytest.raises(ValueError, match="processes"):
        distributed.relaunch({"processes": 0, "config_file": ""})
    with pytest.raises(ValueError, match="mixed_precision"):
        distributed.autocast("fp16", "cpu")


@pytest.mark.slow
def test_predict_on_two_processes_writes_the_one_process_file(runs, tmp_path):
    from deflate.data.records import load_split

    one, _ = runs
    world = one.parent / "world"
    rows = [{"id": r.id, "name": r.name, "description": r.description} for r in load_split(world / "processed", "test")]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for n in (1, 2):
        r = subprocess.run([sys.executable, "-m", "deflate.cli", "predict", "--model", str(one / "bundle"),
                            "--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / f"out{n}.jsonl"),
                            "--processes", str(n), "--device", "cpu", "--batch-size", "4"],
                           env=_env(), capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    out1 = (tmp_path / "out1.jsonl").read_bytes()
    assert out1 == (tmp_path / "out2.jsonl").read_bytes() and out1.count(b"\n") == len(rows)


def test_the_paper_setting_names_only_real_params():
    import re

    import yaml

    doc = (ROOT / "docs" / "scale_out.md").read_text()
    keys = re.findall(r"-S ([\w.]+)=", doc)
    assert len(keys) >= 10
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for key in keys:
        d = params
        for part in key.split("."):
            assert isinstance(d, dict) and part in d, f"docs/scale_out.md sets {key}, which params.yaml lacks"
            d = d[part]


@pytest.mark.slow
def test_gradient_accumulation_gives_the_whole_batch_update(runs, tmp_path):
    from deflate.model.mul_t5 import build_generator
    from deflate.model.train import fit

    p = tiny_params()
    tok, ex, b = qa_setup(runs[0].parent / "world")
    cfg = dict(p["generator"], epochs=2, batch_size=8)
    weights = []
    for accum in (1, 3):  # 3 micro-batches of a batch of 8: sizes 3, 3, 2
        torch.manual_seed(0)
        gen = build_generator(p["model"], tok, 16, 0)
        ticks = itertools.count()  # a rising score: the last epoch is the best, and stays loaded
        fit(gen, ex, b, cfg, loss_fn=lambda m, batch: m(batch).loss, validate=lambda m: {"score": next(ticks)},
            ckpt_dir=tmp_path / f"a{accum}", run_hash="h", seed=0, grad_accum=accum)
        weights.append({k: v.clone() for k, v in gen.state_dict().items()})
    assert 2 * -(-len(ex) // 8) >= 20
    diff = max(float((weights[0][k] - weights[1][k]).abs().max()) for k in weights[0])
    assert diff <= 1e-4, f"largest weight difference {diff}"
