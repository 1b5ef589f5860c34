"""How close does another machine's run come to the committed figures (issue #35)? Every figure that
carries a 95% interval in the metrics JSON of the four pipelines (tables' ``rows`` with ``ci95``,
systems' ``intervals``, ``X`` beside ``X_ci95``), in the working tree against a git revision (the
committed run of another CPU): identical, inside the revision's interval, or outside it.

    python benchmarks/machine_gap.py REV [--out benchmarks/results/machine_gap_<a>_vs_<b>.json]

Run it after ``dvc repro`` of the pipelines on this machine, before committing their metrics.
"""
import argparse
import json
import subprocess
from pathlib import Path

FILES = ["metrics/table2.json", "metrics/table3.json", "metrics/table4.json", "metrics/table5.json",
         "pipelines/mepave/metrics/mepave.json", "pipelines/wdc_pave/metrics/wdc_pave.json",
         "pipelines/implicitave/metrics/implicitave.json"]


def get(tree, dotted: str):
    for k in dotted.split("."):
        if not isinstance(tree, dict) or k not in tree:
            return None
        tree = tree[k]
    return tree


def with_intervals(tree, path=""):
    """(dotted path, value, [lo, hi]) of every figure with an interval in one metrics tree."""
    if not isinstance(tree, dict):
        return
    if isinstance(tree.get("rows"), dict) and isinstance(tree.get("ci95"), dict):  # tables 2-5
        for system, figures in tree["ci95"].items():
            for name, ci in figures.items():
                yield f"{path}rows.{system}.{name}", get(tree, f"rows.{system}.{name}"), ci
    if isinstance(tree.get("intervals"), dict):  # one system's metrics
        for dotted, ci in tree["intervals"].items():  # the interval is of the figure's F1
            v = get(tree, dotted)
            yield f"{path}{dotted}", v.get("f1") if isinstance(v, dict) else v, ci
    for k, v in tree.items():
        if f"{k}_ci95" in tree and isinstance(v, (int, float)):
            yield f"{path}{k}", v, tree[f"{k}_ci95"]
        elif isinstance(v, dict) and k not in ("ci95", "intervals"):
            yield from with_intervals(v, f"{path}{k}.")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("rev", help="the git revision holding the other machine's committed metrics")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    rows = []
    for f in FILES:
        old = json.loads(subprocess.run(["git", "show", f"{args.rev}:{f}"], capture_output=True, text=True,
                                        check=True).stdout)
        new = json.loads(Path(f).read_text())
        new_at = {p: v for p, v, _ in with_intervals(new)}
        for p, v, (lo, hi) in with_intervals(old):
            here = new_at.get(p)
            verdict = ("missing" if here is None else "identical" if here == v
                       else "inside" if lo <= here <= hi else "outside")
            rows.append({"file": f, "figure": p, "committed": v, "ci95": [lo, hi], "here": here, "verdict": verdict,
                         "diff": None if here is None else round(here - v, 2)})
    counts = {k: sum(r["verdict"] == k for r in rows) for k in ("identical", "inside", "outside", "missing")}
    print(f"{len(rows)} figures with intervals: {counts}")
    for r in rows:
        if r["verdict"] in ("outside", "missing"):
            print(f"  {r['verdict']}: {r['file']} {r['figure']}: {r['here']} vs {r['committed']} {r['ci95']}")
    diffs = [abs(r["diff"]) for r in rows if r["diff"] is not None]
    print(f"|difference|: median {sorted(diffs)[len(diffs) // 2]:.2f}, max {max(diffs):.2f}")
    if args.out:
        args.out.write_text(json.dumps({"rev": args.rev, "counts": counts, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
