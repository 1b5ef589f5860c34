"""Seed spread: the compared systems trained with several seeds on the default data (the data,
image tokens and test set fixed; the seed moves weight init, batch order, dropout, negatives and the
bootstrap), so a table's gaps can be read against run-to-run noise as well as against the
bootstrap intervals over test products.

Runs each system with each seed through the same code the `system` stage runs
(:func:`deflate.experiments.run_system`), writes every run's scores and the mean / standard
deviation / range per metric to ``benchmarks/results/seed_spread.json`` (the tables stage copies it
into each table's meta) and prints a Markdown table for docs/performance.md. Needs the default
pipeline's data (dvc repro image_tokens).

    python benchmarks/seed_spread.py [--seeds 42 43 44] [--systems deflate d_minus jgave bilstm_crf mjave]
"""
import argparse
import copy
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from deflate.infra.config import stage_params
from deflate.infra.files import write_json
from deflate.reports.paper_tables import CI_KEYS
from deflate.stages.system import run_system

# table column -> its path in a metrics file (the tables' own mapping)
METRICS = {c: tuple(CI_KEYS[c].split(".")) for c in ("ave_f1", "ap_f1", "fuzzy_f1", "eav_ave_f1", "image_only_ave_f1")}


def scores(m: dict) -> dict:
    out = {}
    for name, path in METRICS.items():
        v = m
        for k in path:
            v = v.get(k, {})
        out[name] = v.get("f1")
    return out


ORDER = ["deflate", "d_minus", "jgave", "bilstm_crf", "mjave"]


def summary(runs: list[dict]) -> dict:
    out = {}
    for name in METRICS:
        xs = [r[name] for r in runs if r[name] is not None]
        if xs:
            out[name] = {"mean": round(statistics.mean(xs), 2), "sd": round(statistics.stdev(xs), 2) if len(xs) > 1 else 0.0,
                         "min": min(xs), "max": max(xs)}
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    ap.add_argument("--systems", nargs="+", default=ORDER, choices=ORDER)
    ap.add_argument("--out", default="benchmarks/results/seed_spread.json")
    ap.add_argument("--keep-others", action="store_true",
                    help="keep the other systems' runs already in --out (when a change touched only these systems)")
    ap.add_argument("--keep-models", type=Path, default=None,
                    help="keep each DEFLATE run's generator and discriminator here (DIR/deflate-SEED/), "
                         "for benchmarks/threshold_rules.py")
    a = ap.parse_args()
    base = stage_params()  # the pipeline's kernels and threads (repro), as its own stages get them
    base["tracking"]["enabled"] = False
    result = {"data": "default synthetic data (params.yaml synth/data/image, seed 42): fixed across runs",
              "seeds": a.seeds, "repro": dict(base["repro"]), "systems": {}}
    if a.keep_others and Path(a.out).exists():
        kept = json.loads(Path(a.out).read_text())
        assert kept["seeds"] == a.seeds, f"{a.out} has seeds {kept['seeds']}, not {a.seeds}"
        result["systems"] = {k: v for k, v in kept["systems"].items() if k not in a.systems}
    with tempfile.TemporaryDirectory() as tmp:
        for system in a.systems:
            runs = []
            for seed in a.seeds:
                p = copy.deepcopy(base)
                p["seed"] = seed
                t = time.perf_counter()
                m = run_system(system, p, Path("data/processed"), Path("data/tokens"), Path(tmp) / f"{system}-{seed}",
                               dataset="desire")
                runs.append({"seed": seed, **scores(m), "seconds": round(time.perf_counter() - t, 1)})
                work = Path(tmp) / f"{system}-{seed}"
                if a.keep_models and system == "deflate":
                    for part in ("generator", "discriminator"):
                        shutil.copytree(work / part, a.keep_models / f"{system}-{seed}" / part, dirs_exist_ok=True)
                print(json.dumps({"system": system, **runs[-1]}), flush=True)
            result["systems"][system] = {"runs": runs, "summary": summary(runs)}
    result["systems"] = {k: result["systems"][k] for k in sorted(result["systems"], key=ORDER.index)}
    write_json(Path(a.out), result, indent=1)
    print("| system | " + " | ".join(f"{m} mean ± sd [min–max]" for m in ("ave_f1", "ap_f1", "image_only_ave_f1"))
          + " |\n|---|" + "---:|" * 3)
    for system, r in result["systems"].items():
        s = r["summary"]
        print(f"| {system} | " + " | ".join(
            f"{s[m]['mean']:.2f} ± {s[m]['sd']:.2f} [{s[m]['min']:.2f}–{s[m]['max']:.2f}]" if m in s else "–"
            for m in ("ave_f1", "ap_f1", "image_only_ave_f1")) + " |")


if __name__ == "__main__":
    main()
