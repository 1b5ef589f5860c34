"""Image tokens under different CPU kernels: the image_tokens stage (visual words) re-run in
subprocesses that force other BLAS / ATen code paths (MKL instruction set, ATen CPU capability,
thread count), as a stand-in for another machine. Prints each setting's SHA-256 of the codebook and
token files; all must be equal. Needs the default pipeline's data/processed (dvc repro ingest).

    python benchmarks/image_token_determinism.py [--processed data/processed]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

SETTINGS = [
    {"threads": 2},
    {"threads": 1},
    {"threads": 2, "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    {"threads": 2, "MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "ATEN_CPU_CAPABILITY": "default"},
    {"threads": 1, "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"},
]

CHILD = """
import hashlib, json, sys
from pathlib import Path
from deflate.infra.config import load_params
from deflate.data.records import SPLITS, load_split
from deflate.data.image_tokens import run_stage
processed, out, threads = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
p = load_params()
records = {s: load_split(processed, s) for s in SPLITS}
run_stage(records, {**p["image"], "num_threads": threads}, out, p["seed"], progress=False)
h = hashlib.sha256()
for f in sorted(out.glob("*.safetensors")):
    h.update(f.name.encode() + f.read_bytes())
print(json.dumps({"sha256": h.hexdigest()}))
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--processed", default="data/processed")
    a = ap.parse_args()
    digests = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, s in enumerate(SETTINGS):
            env = {**os.environ, **{k2: v for k2, v in s.items() if k2 != "threads"}}
            out = subprocess.run([sys.executable, "-c", CHILD, a.processed, f"{tmp}/{k}", str(s["threads"])],
                                 env=env, capture_output=True, text=True, check=True)
            d = json.loads(out.stdout.strip().splitlines()[-1])["sha256"]
            digests.append(d)
            print(f"| {json.dumps(s)} | {d[:16]} |", flush=True)
    print("all equal:", len(set(digests)) == 1)
    sys.exit(0 if len(set(digests)) == 1 else 1)


if __name__ == "__main__":
    main()
