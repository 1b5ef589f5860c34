"""Which math kernels, and how many threads, a process computes with (``repro`` in params.yaml).

Floating-point results follow the CPU: ATen picks its SIMD level (AVX-512, AVX2, default) from the
CPU, MKL its code branch from the CPU and the thread count, oneDNN its ISA. Each reads its
environment variable once, when it first loads, so a process must have them *before* torch is
imported. :func:`pin` gives a stage (or ``deflate predict``) the environment its params name and,
when the process started with another one (the user's shell, a launcher), starts the same command
again in its place (``os.execve``) so that nothing computed with the wrong kernels.

Settings:

* ``native``: the machine's own choice (fastest; weights follow the CPU);
* ``avx2``: ATen and oneDNN capped at AVX2, MKL's AVX2 branch (one hash per thread count on a
  machine; measured not to match between an AMD EPYC and an Intel Xeon);
* ``compatible``: as ``avx2`` but MKL's ``COMPATIBLE`` branch, the one MKL documents for the same
  results on Intel and non-Intel processors (SSE2 without the approximate ``rcpps``/``rsqrtps``,
  whose results differ between vendors).

Both pinned settings also fix the OpenBLAS that numpy and scipy ship (scikit-learn's logistic
regression, the lexical scorer, computes through it) to its ``Haswell`` (AVX2) kernels: it too picks
kernels by CPU, and an AVX-512 machine's gave other lexical weights than an AVX2 one's
(docs/performance.md).

This module imports nothing heavy: it runs before torch.
"""
from __future__ import annotations

import os
import sys

KERNELS = {
    "native": {},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2",
             "OPENBLAS_CORETYPE": "Haswell"},
    "compatible": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "COMPATIBLE", "ONEDNN_MAX_CPU_ISA": "AVX2",
                   "OPENBLAS_CORETYPE": "Haswell"},
}
KERNEL_VARS = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS",
               "OPENBLAS_CORETYPE")
# every thread pool that would otherwise follow the machine's core count (torch's intra-op pool
# reads OMP_NUM_THREADS; numpy/scikit-learn's BLAS read MKL/OpenBLAS's)
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
MARK = "DEFLATE_KERNELS"  # set by pin: "<setting>:<threads>", what this process computes with


class KernelsError(RuntimeError):
    pass


def environment(kernels: str, threads: int) -> dict[str, str]:
    """The variables a process computing with ``kernels`` on ``threads`` threads must start with;
    a kernel variable not named is absent (the setting decides, not the shell)."""
    if kernels not in KERNELS:
        raise KernelsError(f"kernels must be one of {', '.join(KERNELS)}, not {kernels!r}")
    if not isinstance(threads, int) or threads < 1:
        raise KernelsError(f"threads must be a positive integer, not {threads!r}")
    return {**KERNELS[kernels], **{v: str(threads) for v in THREAD_VARS}, MARK: f"{kernels}:{threads}"}


def pinned(kernels: str, threads: int, env=None) -> bool:
    """Whether ``env`` (default: this process's) already is that setting's environment."""
    env = os.environ if env is None else env
    want = environment(kernels, threads)
    return all(env.get(v) == want.get(v) for v in (*KERNEL_VARS, *THREAD_VARS, MARK))


def pin(kernels: str, threads: int) -> None:
    """Make this process compute with ``kernels`` on ``threads`` threads: nothing to do when it
    started so; else run the same command again in its place with that environment (once: a
    process that was already restarted and still differs is an error, never a loop)."""
    if pinned(kernels, threads):
        return
    want = environment(kernels, threads)
    if os.environ.get(MARK + "_RESTARTED") == want[MARK]:
        raise KernelsError(f"could not start with kernels {kernels!r} on {threads} threads")
    env = {k: v for k, v in os.environ.items() if k not in KERNEL_VARS}
    env.update(want)
    env[MARK + "_RESTARTED"] = want[MARK]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def describe() -> dict:
    """What this process computes with, for the metadata of what it writes: the setting, threads,
    torch and MKL versions and the SIMD level ATen uses. Under a portable setting every field is the
    same on any x86-64 machine, so it can sit in files whose hashes must match."""
    import torch

    mkl = next((line.split("Version", 1)[1].strip(" :") for line in torch.__config__.show().splitlines()
                if "Math Kernel Library Version" in line), "none")
    setting, _, threads = os.environ.get(MARK, "unpinned:").partition(":")
    return {"kernels": setting, "threads": int(threads) if threads else torch.get_num_threads(),
            "torch": torch.__version__, "mkl": mkl, "aten_capability": torch.backends.cpu.get_cpu_capability()}
