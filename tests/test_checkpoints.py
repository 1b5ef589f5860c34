"""Checkpoints under real kills (SIGKILL in a child process) and tampering: training always goes on
from the last consistent epoch or from scratch, and ends at the uninterrupted run's weights."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from deflate.infra import checkpoints
from deflate.infra.files import atomic_dir

ROOT = Path(__file__).resolve().parents[1]

# A tiny regression trained with deflate.model.train.fit; KILL=<what>:<epoch> SIGKILLs the process at
# one point of that epoch's checkpoint: before the manifest, or halfway through the weights file.
SCRIPT = textwrap.dedent('''
    import os, signal, sys
    from pathlib import Path
    import numpy as np, torch
    from safetensors.torch import save_file
    from deflate.infra import checkpoints, weights
    from deflate.model import train

    ckpt, out = Path(sys.argv[1]), Path(sys.argv[2])
    kill, ema = os.environ.get("KILL", ""), float(os.environ.get("EMA", "0"))
    what, at = (kill.split(":") + [""])[:2] if kill else ("", "")
    if what == "manifest":
        real = checkpoints.write_json
        def write_json(path, obj, **kw):
            if path.name == checkpoints.MANIFEST and obj["epoch"] == int(at):
                os.kill(os.getpid(), signal.SIGKILL)
            real(path, obj, **kw)
        checkpoints.write_json = write_json
    if what == "weights":
        def torn(tensors, path, metadata=None):
            if Path(path).parent.name == f"epoch-{int(at):03d}":
                save_file(tensors, path)
                data = Path(path).read_bytes()
                Path(path).write_bytes(data[: len(data) // 2])
                os.kill(os.getpid(), signal.SIGKILL)
            save_file(tensors, path, metadata=metadata)
        weights.save_file = torn

    class Batcher:
        def batches(self, examples, bs, shuffle, bucket, seed):
            idx = np.random.default_rng(seed).permutation(len(examples))
            return [idx[i:i + bs].tolist() for i in range(0, len(idx), bs)]
        def collate(self, exs):
            return {"x": torch.stack([e[0] for e in exs]), "y": torch.stack([e[1] for e in exs])}

    g = torch.Generator().manual_seed(0)
    X = torch.randn(64, 8, generator=g)
    examples = [(x, x.sum(0, keepdim=True)) for x in X]
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Dropout(0.1), torch.nn.Linear(16, 1))
    cfg = {"optimizer": "adamax", "lr": 1e-2, "weight_decay": 0.0, "epochs": 4, "batch_size": 8,
           "bucketing": False, "grad_clip": 1.0}
    train.fit(model, examples, Batcher(), cfg, loss_fn=lambda m, b: ((m(b["x"]) - b["y"]) ** 2).mean(),
              validate=lambda m: {"score": float(torch.sin(1e4 * m[0].weight.sum()))}, ckpt_dir=ckpt, run_hash="h", seed=3, ema=ema)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out))
''')


def run(tmp: Path, ckpt: Path, out: Path, kill: str = "", ema: float = 0.0) -> subprocess.CompletedProcess:
    script = tmp / "fit_tiny.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "KILL": kill, "EMA": str(ema), "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, str(script), str(ckpt), str(out)], env=env, capture_output=True,
                          text=True, timeout=120)


def same(a: Path, b: Path) -> bool:
    x, y = load_file(str(a)), load_file(str(b))
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("ref")
    r = run(tmp, tmp / "ckpt", tmp / "final.safetensors")
    assert r.returncode == 0, r.stderr
    return tmp / "final.safetensors", tmp / "ckpt"


def test_the_manifest_names_one_epoch_and_the_best_weights_with_hashes(reference):
    _, ckpt = reference
    m = json.loads((ckpt / checkpoints.MANIFEST).read_text())
    best = max(m["history"], key=lambda h: h["val_score"])["epoch"]
    assert m["epoch"] == 4 and m["best_epoch"] == best and [h["epoch"] for h in m["history"]] == [1, 2, 3, 4]
    assert m["files"]["best"] == f"epoch-{best:03d}/model.safetensors"
    assert all("examples_per_s" not in h for h in m["history"])  # no measured speed: the bytes repeat
    assert sorted(p.name for p in ckpt.iterdir()) == sorted({f"epoch-{best:03d}", "epoch-004", "manifest.json"})
    if best != 4:
        assert [p.name for p in (ckpt / f"epoch-{best:03d}").iterdir()] == ["model.safetensors"]  # optimiser pruned
    assert all(checkpoints.sha256(ckpt / rel) == d for rel, d in m["sha256"].items())


@pytest.mark.parametrize("kill", ["manifest:3", "weights:3", "manifest:1", "weights:1"])
def test_a_sigkill_while_checkpointing_resumes_to_the_same_weights(reference, tmp_path, kill):
    final, ref_ckpt = reference
    ckpt, out = tmp_path / "ckpt", tmp_path / "final.safetensors"
    r = run(tmp_path, ckpt, out, kill)
    assert r.returncode == -9 and not out.exists()
    epoch = int(kill.split(":")[1])
    if epoch > 1:  # the manifest still names the epoch before, whose files are whole
        assert json.loads((ckpt / checkpoints.MANIFEST).read_text())["epoch"] == epoch - 1
    r = run(tmp_path, ckpt, out)
    assert r.returncode == 0, r.stderr
    assert ("resuming after epoch 2/4" in r.stdout) == (epoch == 3)
    assert same(final, out)  # the best epoch's weights
    assert same(ref_ckpt / "epoch-004" / "model.safetensors", ckpt / "epoch-004" / "model.safetensors")
    assert not list(tmp_path.glob("ckpt.set-aside-*"))


def test_a_run_that_averages_its_weights_keeps_the_average_and_resumes_it(reference, tmp_path):
    """generator.ema: the best epoch's file is the average, the raw weights train as without it, and a
    kill while checkpointing resumes to the uninterrupted run's average."""
    final, ref_ckpt = reference
    whole = tmp_path / "whole"
    whole.mkdir()
    assert run(whole, whole / "ckpt", whole / "final.safetensors", ema=0.5).returncode == 0
    m = json.loads((whole / "ckpt" / checkpoints.MANIFEST).read_text())
    assert m["files"]["best"] == f"epoch-{m['best_epoch']:03d}/{checkpoints.AVERAGE}"
    assert same(ref_ckpt / "epoch-004" / "model.safetensors", whole / "ckpt" / "epoch-004" / "model.safetensors")
    assert not same(final, whole / "final.safetensors")
    ckpt, out = tmp_path / "ckpt", tmp_path / "final.safetensors"
    assert run(tmp_path, ckpt, out, "manifest:3", ema=0.5).returncode == -9
    r = run(tmp_path, ckpt, out, ema=0.5)
    assert r.returncode == 0 and "resuming after epoch 2/4" in r.stdout, r.stderr
    assert same(whole / "final.safetensors", out)


@pytest.mark.parametrize("tamper", ["truncate", "older_epoch", "garbage_manifest", "missing_file"])
def test_a_torn_or_mixed_checkpoint_is_set_aside_and_training_restarts(reference, tmp_path, tamper):
    final, _ = reference
    ckpt, out = tmp_path / "ckpt", tmp_path / "final.safetensors"
    assert run(tmp_path, ckpt, out, "manifest:4").returncode == -9  # epochs 1-3 checkpointed
    weights = ckpt / "epoch-003" / "model.safetensors"
    if tamper == "truncate":
        weights.write_bytes(weights.read_bytes()[:100])
    elif tamper == "older_epoch":  # e.g. a file from another epoch: every byte parses
        from safetensors.torch import save_file

        save_file({k: v + 1e-3 for k, v in load_file(str(weights)).items()}, str(weights))
    elif tamper == "garbage_manifest":
        (ckpt / checkpoints.MANIFEST).write_text('{"epoch": 3, "files"')
    else:
        (ckpt / "epoch-003" / "optimizer.safetensors").unlink()
    r = run(tmp_path, ckpt, out)
    assert r.returncode == 0, r.stderr
    assert "inconsistent" in r.stderr and "set aside" in r.stderr and "resuming" not in r.stdout
    assert [p.name for p in tmp_path.glob("ckpt.set-aside-*")] == ["ckpt.set-aside-1"]
    assert same(final, out)


def test_a_checkpoint_of_another_run_is_ignored_not_set_aside(reference, tmp_path):
    _, ref_ckpt = reference
    import shutil

    shutil.copytree(ref_ckpt, tmp_path / "ckpt")
    m = json.loads((tmp_path / "ckpt" / checkpoints.MANIFEST).read_text())
    (tmp_path / "ckpt" / checkpoints.MANIFEST).write_text(json.dumps(dict(m, hash="other")))
    model = torch.nn.Linear(8, 16)
    opt = torch.optim.Adamax(model.parameters())
    assert checkpoints.resume(tmp_path / "ckpt", run_hash="h", model=model, opt=opt) is None
    assert not list(tmp_path.glob("*.set-aside-*"))


def test_atomic_dir_swaps_whole_folders_and_leaves_the_old_one_on_failure(tmp_path):
    target = tmp_path / "model"
    with atomic_dir(target) as d:
        (d / "a.txt").write_text("1")
    assert (target / "a.txt").read_text() == "1"
    assert oct(target.stat().st_mode & 0o777) != oct(0o700)  # not mkdtemp's private mode
    with pytest.raises(RuntimeError), atomic_dir(target) as d:
        (d / "a.txt").write_text("2")
        raise RuntimeError("killed halfway")
    assert (target / "a.txt").read_text() == "1" and sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    with atomic_dir(target) as d:
        (d / "b.txt").write_text("3")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_weights_files_are_byte_identical_for_equal_tensors(tmp_path):
    """Tied embeddings used to put an alias map in the header in no fixed order."""
    from deflate.infra.weights import load_weights

    code = ("import sys, torch; from deflate.infra.weights import save_weights\n"
            "torch.manual_seed(0); m = torch.nn.Sequential(torch.nn.Embedding(50, 8), torch.nn.Linear(8, 50))\n"
            "m[1].weight = m[0].weight\nsave_weights(m, sys.argv[1])\n")
    outs = []
    for i, seed in enumerate(["1", "2", "3"]):  # different hash seeds: set/dict orders differ
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT / "src")}
        subprocess.run([sys.executable, "-c", code, str(tmp_path / f"{i}.safetensors")], env=env, check=True)
        outs.append((tmp_path / f"{i}.safetensors").read_bytes())
    assert outs[0] == outs[1] == outs[2]
    torch.manual_seed(1)
    m = torch.nn.Sequential(torch.nn.Embedding(50, 8), torch.nn.Linear(8, 50))
    m[1].weight = m[0].weight
    load_weights(m, tmp_path / "0.safetensors")
    assert m[1].weight is m[0].weight and torch.equal(m[0].weight, load_file(str(tmp_path / "0.safetensors"))["0.weight"])
