"""Weight hashes of ../shared/checks/kernel_portability.py's tiny T5 under more kernel settings
than it tries (issue #35): each (setting, threads) twice in fresh processes, to tell a setting that
is stable on this machine from one that also matches another CPU (compare the hashes by hand with
the same script's output there; the check's own Intel hashes cover `portable` only).

    python benchmarks/kernel_settings.py [--out benchmarks/results/kernel_settings_<cpu>.json] \
        [--compare benchmarks/results/kernel_settings_amd_epyc.json ...]     # ~3-7 min

``--compare`` prints, per (setting, threads), whether this machine's hash equals each earlier
results file's (another CPU's run of this script). Two more rows hash a numpy float64 matrix product
under OpenBLAS's own core type and under ``OPENBLAS_CORETYPE=Haswell``, with the core type used.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

CHECK = Path(__file__).resolve().parents[2] / "shared" / "checks"
SETTINGS = {
    "native": {},
    "portable": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "portable_strict": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2,STRICT", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "compatible": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "COMPATIBLE", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "default_compatible": {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE", "ONEDNN_MAX_CPU_ISA": "SSE41"},
}

# numpy's and scipy's OpenBLAS picks its kernels by CPU too (the lexical scorer's logistic regression
# computes through it; docs/performance.md): a float64 matrix product's hash under the machine's own
# core type and under the Haswell kernels the pinned settings will name, with the core type it used
BLAS_CHILD = r"""
import hashlib, json, numpy as np
from threadpoolctl import threadpool_info
rng = np.random.default_rng(0)
a, b = rng.standard_normal((384, 512)), rng.standard_normal((512, 384))
for _ in range(3):
    a = np.tanh(a @ b @ b.T / 512)
core = sorted({i.get("architecture") for i in threadpool_info() if i["internal_api"] == "openblas"})
print(json.dumps([hashlib.sha256(a.tobytes()).hexdigest()[:16], core]))
"""
BLAS_SETTINGS = {"numpy_openblas_native": {}, "numpy_openblas_haswell": {"OPENBLAS_CORETYPE": "Haswell"}}


def cpu() -> str:
    """The CPU's name, family/model and the SIMD extensions that decide the kernels (AVX-512, AMX)."""
    info: dict[str, str] = {}
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        k, _, v = line.partition(":")
        info.setdefault(k.strip(), v.strip())
    if "model name" not in info:
        return platform.processor()
    flags = info.get("flags", "").split()
    simd = [f for f in flags if f in ("avx2", "fma") or f.startswith(("avx512", "amx"))]
    return (f"{info['model name']} (vendor {info.get('vendor_id', '?')}, family {info.get('cpu family', '?')}, "
            f"model {info.get('model', '?')}; {' '.join(simd) or 'no AVX2'})")


def compare(rows: list[dict], others: list[Path]) -> None:
    """Whether this run's hash equals each earlier results file's, per (setting, threads)."""
    for path in others:
        other = json.loads(path.read_text())
        theirs = {(r["setting"], r["threads"]): r["hashes"][0] for r in other["rows"]}
        print(f"against {path.name} ({other['cpu']}):")
        for r in rows:
            ref = theirs.get((r["setting"], r["threads"]))
            verdict = "not measured there" if ref is None else ("same" if ref == r["hashes"][0] else "differs")
            print(f"  {r['setting']:<20} {r['threads']} thread(s): {r['hashes'][0]} vs {ref}: {verdict}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--compare", type=Path, nargs="*", default=[], help="earlier results files (other CPUs)")
    args = ap.parse_args()
    sys.path.insert(0, str(CHECK))
    import torch
    from kernel_portability import CHILD, MEASURED_ON_INTEL_AVX512
    rows = []
    for name, env in SETTINGS.items():
        for threads in (1, 2):
            hashes = [subprocess.run([sys.executable, "-c", CHILD], env={**os.environ, **env, "KP_THREADS": str(threads)},
                                     capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
                      for _ in range(2)]
            rows.append({"setting": name, "threads": threads, "hashes": hashes, "stable": len(set(hashes)) == 1,
                         "intel_avx512": MEASURED_ON_INTEL_AVX512.get((name, threads))})
            print(rows[-1], flush=True)
    for name, env in BLAS_SETTINGS.items():
        runs = [json.loads(subprocess.run([sys.executable, "-c", BLAS_CHILD],
                                          env={**os.environ, **env, "OPENBLAS_NUM_THREADS": "2"},
                                          capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
                for _ in range(2)]
        hashes = [h for h, _ in runs]
        rows.append({"setting": name, "threads": 2, "hashes": hashes, "stable": len(set(hashes)) == 1,
                     "openblas_core": runs[0][1], "intel_avx512": None})
        print(rows[-1], flush=True)
    out = {"cpu": cpu(), "torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
           "rows": rows}
    if args.out:
        args.out.write_text(json.dumps(out, indent=1) + "\n")
    compare(rows, args.compare)


if __name__ == "__main__":
    main()
