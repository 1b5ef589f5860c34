"""ImplicitAVE accuracy of every answer variant, overall and per domain, from the metrics the
real-data pipeline writes (`dvc repro pipelines/implicitave/dvc.yaml`), with the generator's size,
the fused weights picked on val and the stage times. Usage:

    python benchmarks/implicitave_accuracy.py [--dir pipelines/implicitave]
"""
import argparse
import json
from pathlib import Path


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, default=Path("pipelines/implicitave"))
    a = ap.parse_args()
    m = json.loads((a.dir / "metrics" / "implicitave.json").read_text())
    variants = [k for k, v in m.items() if isinstance(v, dict) and "overall" in v]
    domains = sorted(m[variants[0]]["by_domain"])
    print(f"test rows {m['n_test']}, generator {m['generator_params'] / 1e6:.2f}M params, "
          f"re-rank alpha {m['alpha']}, fused weights {m.get('fused_weights', {})}\n")
    print("| variant | exact | lenient | " + " | ".join(domains) + " |")
    print("|---|---:|---:|" + "---:|" * len(domains))
    for v in variants:
        o, d = m[v]["overall"], m[v]["by_domain"]
        print(f"| {v} | {o['exact']:.2f} | {o['lenient']:.2f} | " + " | ".join(f"{d[x]['exact']:.2f}" for x in domains) + " |")
    log = a.dir / "logs" / "timings.jsonl"
    if log.is_file():
        last = {}
        for r in map(json.loads, filter(str.strip, log.read_text().splitlines())):
            last[r["stage"]] = r
        print("\n| stage | seconds (newest run) |\n|---|---:|")
        for s, r in last.items():
            print(f"| {s} | {r['seconds']:.1f} |")
        print(f"| sum | {sum(r['seconds'] for r in last.values()):.1f} |")


if __name__ == "__main__":
    main()
