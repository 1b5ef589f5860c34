"""The portable numeric mode (``repro`` in params.yaml, :mod:`deflate.infra.kernels`): a stage's
entry point, not the shell it was started from, decides which math kernels and threads compute."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from deflate.infra import kernels

ROOT = Path(__file__).resolve().parents[1]
# A short training through a stage's entry point (stage_params), printing a hash of the weights and
# what the process says it computed with.
CHILD = r"""
import hashlib, json, sys
from deflate.infra.config import stage_params
stage_params(sys.argv[1])
import torch
from transformers import T5Config, T5ForConditionalGeneration
from deflate.infra import kernels
torch.manual_seed(0)
m = T5ForConditionalGeneration(T5Config(vocab_size=300, d_model=64, d_ff=128, num_layers=2, num_heads=4, d_kv=16,
                                        decoder_start_token_id=0))
opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
g = torch.Generator().manual_seed(1)
for _ in range(12):
    x = torch.randint(2, 300, (8, 40), generator=g); y = torch.randint(2, 300, (8, 6), generator=g)
    m(input_ids=x, labels=y).loss.backward(); opt.step(); opt.zero_grad()
h = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in m.parameters())).hexdigest()[:16]
print(json.dumps({"hash": h, "kernels": kernels.describe()}))
"""
# two environments a user's shell could hand a stage: other ATen levels, MKL branches, thread counts
SHELLS = ({"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "AUTO", "OMP_NUM_THREADS": "1"},
          {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "OMP_NUM_THREADS": "2"})


def _params(tmp_path: Path, repro: dict | None) -> Path:
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p.pop("repro", None)
    if repro is not None:
        p = {"seed": p.pop("seed"), "repro": repro, **p}
    f = tmp_path / f"params_{'off' if repro is None else repro['kernels']}.yaml"
    f.write_text(yaml.safe_dump(p, sort_keys=False))
    return f


def _train(params: Path, shell: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in kernels.KERNEL_VARS + kernels.THREAD_VARS
           and not k.startswith(kernels.MARK)}
    out = subprocess.run([sys.executable, "-c", CHILD, str(params)], env={**env, **shell}, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not Path("/proc/cpuinfo").is_file() or "avx2" not in Path("/proc/cpuinfo").read_text(),
                    reason="needs an x86-64 CPU with AVX2 (two ATen levels to inherit)")
def test_the_entry_point_not_the_shell_decides_the_kernels(tmp_path):
    on = _params(tmp_path, {"kernels": "compatible", "num_threads": 2})
    a, b = (_train(on, s) for s in SHELLS)
    assert a["hash"] == b["hash"]  # overridden: the same weight bytes from either shell
    assert a["kernels"] == b["kernels"]
    assert a["kernels"]["kernels"] == "compatible" and a["kernels"]["threads"] == 2
    assert a["kernels"]["aten_capability"] == "AVX2"
    off = _params(tmp_path, None)  # no repro section: the process keeps what its shell gave it
    c, d = (_train(off, s) for s in SHELLS)
    assert c["hash"] != d["hash"]  # so the check above can fail
    assert {c["kernels"]["aten_capability"], d["kernels"]["aten_capability"]} == {"DEFAULT", "AVX2"}


BLAS_CHILD = r"""
import json, sys
from deflate.infra.config import stage_params
stage_params(sys.argv[1])
import numpy
from threadpoolctl import threadpool_info
print(json.dumps(sorted({i.get("architecture") for i in threadpool_info() if i["internal_api"] == "openblas"})))
"""


@pytest.mark.skipif(not Path("/proc/cpuinfo").is_file() or "avx2" not in Path("/proc/cpuinfo").read_text(),
                    reason="needs an x86-64 CPU with AVX2 (the pinned OpenBLAS kernels)")
def test_the_entry_point_pins_numpys_openblas_kernels_too(tmp_path):
    """numpy's and scipy's OpenBLAS (scikit-learn's logistic regression: the lexical scorer) pick
    kernels by CPU as well; a pinned setting fixes them, whatever the shell said."""
    env = {k: v for k, v in os.environ.items() if k not in kernels.KERNEL_VARS + kernels.THREAD_VARS
           and not k.startswith(kernels.MARK)}

    def arch(params: Path) -> list[str]:
        out = subprocess.run([sys.executable, "-c", BLAS_CHILD, str(params)], capture_output=True, text=True,
                             env={**env, "OPENBLAS_CORETYPE": "Sandybridge"}, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        return json.loads(out.stdout.strip().splitlines()[-1])

    assert arch(_params(tmp_path, {"kernels": "compatible", "num_threads": 2})) == ["Haswell"]
    assert arch(_params(tmp_path, None)) == ["Sandybridge"]  # unpinned, the shell's choice: the check can fail


def test_environment_names_every_pool_and_refuses_unknown_settings():
    env = kernels.environment("compatible", 3)
    assert env["MKL_CBWR"] == "COMPATIBLE" and env["ATEN_CPU_CAPABILITY"] == "avx2"
    assert env["OPENBLAS_CORETYPE"] == "Haswell" == kernels.environment("avx2", 3)["OPENBLAS_CORETYPE"]
    assert all(env[v] == "3" for v in kernels.THREAD_VARS) and env[kernels.MARK] == "compatible:3"
    assert "ATEN_CPU_CAPABILITY" not in kernels.environment("native", 2)  # the machine's own choice
    assert kernels.pinned("compatible", 3, env) and not kernels.pinned("compatible", 2, env)
    assert not kernels.pinned("native", 3, {**kernels.environment("native", 3), "MKL_CBWR": "AVX2"})
    with pytest.raises(kernels.KernelsError):
        kernels.environment("fast", 2)
    with pytest.raises(kernels.KernelsError):
        kernels.environment("avx2", 0)


def test_params_refuse_an_unknown_kernel_setting(tmp_path):
    from deflate.infra.config import load_params
    from deflate.infra.params_schema import ParamsError

    f = _params(tmp_path, {"kernels": "fastest", "num_threads": 2})
    with pytest.raises(ParamsError, match="repro"):
        load_params(f)


def test_the_pyfunc_warns_only_when_its_process_runs_other_kernels(monkeypatch):
    """A serving process cannot restart itself with the bundle's kernels: the MLflow model says so
    when its environment is not the recorded setting's (kernels.pinned), and is silent when it is."""
    import warnings
    from types import SimpleNamespace

    from deflate.answering import pyfunc

    class Engine:
        meta = {"kernels": {"kernels": "compatible", "threads": 2}}

    monkeypatch.setattr("deflate.answering.engine.Deflate.load", staticmethod(lambda path: Engine()))
    ctx = SimpleNamespace(artifacts={"bundle": "bundle"})
    want = kernels.environment("compatible", 2)
    for var in want:
        monkeypatch.delenv(var, raising=False)
    with pytest.warns(UserWarning, match="compatible:2"):
        pyfunc.DeflateModel().load_context(ctx)
    for var, value in want.items():
        monkeypatch.setenv(var, value)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pyfunc.DeflateModel().load_context(ctx)
    Engine.meta = {"kernels": {"kernels": "compatible", "threads": "two"}}  # a bad record: warned, not raised
    with pytest.warns(UserWarning, match="compatible:two"):
        pyfunc.DeflateModel().load_context(ctx)
