"""Wall time of train_generator -> harvest_negatives -> train_discriminator -> evaluate on the
default data, each stage run as DVC runs it (a fresh process). Usage:
    python benchmarks/bench_pipeline.py        (needs data/processed and data/tokens)
"""
import json
import subprocess
import sys
import time

STAGES = ["train_generator", "harvest_negatives", "train_discriminator", "evaluate"]


def main():
    times = {}
    t_all = time.perf_counter()
    for s in STAGES:
        t = time.perf_counter()
        subprocess.run([sys.executable, f"stages/{s}.py"], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        times[s] = round(time.perf_counter() - t, 1)
    times["total_s"] = round(time.perf_counter() - t_all, 1)
    print(json.dumps(times, indent=1))


if __name__ == "__main__":
    main()
