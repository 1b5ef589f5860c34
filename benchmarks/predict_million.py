"""A catalogue of a million lines through ``deflate predict``: wall time, peak memory, bad lines.

Writes N text-only product lines (``deflate.data.synth.make_product``: the default data's generator,
no pictures, so a million lines need no JPEGs and no DVC) in a temporary folder, with every 100th
line bad (1%: broken JSON, a missing name, an image path outside the input's folder, a non-list
``attributes``, a repeated id), then runs ``deflate predict`` on them as its own process with the
committed default bundle, once per size. Each row asks ``--asked`` attributes (taken in turn from the
bundle's), so the number of questions, not the number of lines, sets the time: a million products
with all 9 attributes would be 9M questions, hours on 2 cores at the rates in docs/performance.md.

It checks what #36 asks of a large file: the run finishes, the output has one line per input line
(nothing half written: the output appears only when complete, with its ``.done.json``), every bad
line gets an error record naming what is wrong, and no good line gets one. Peak RSS is the OS's count
(``wait4``), compared between the two largest sizes (#36's goal: at most 1.5x).

    python benchmarks/predict_million.py --sizes 100000 1000000 \\
        --out benchmarks/results/predict_million.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from kernel_settings import cpu  # noqa: E402
from scale import run  # noqa: E402

BAD_EVERY = 100  # 1% of lines
BAD_KINDS = ("broken_json", "missing_name", "image_outside", "attributes_not_a_list", "duplicate_id")


def line(i: int, attrs: list[str], asked: int, seed: int) -> tuple[str, str | None]:
    """Input line ``i`` (0-based) and, for a bad one, the kind of fault planted in it."""
    from deflate.data.synth import make_product

    p = make_product(i, seed, long_desc_fraction=0.25, label_noise=0.0)
    row = {"id": f"M{i:07d}", "name": p.name, "description": p.description,
           "attributes": [attrs[(i + k) % len(attrs)] for k in range(asked)]}
    if (i + 1) % BAD_EVERY:
        return json.dumps(row, ensure_ascii=False), None
    kind = BAD_KINDS[(i // BAD_EVERY) % len(BAD_KINDS)]
    if kind == "broken_json":
        return json.dumps(row, ensure_ascii=False)[:-3], kind
    if kind == "missing_name":
        row.pop("name")
    elif kind == "image_outside":
        row["image"] = "../../etc/passwd"
    elif kind == "attributes_not_a_list":
        row["attributes"] = 7
    else:  # the id and attributes of the line before: a duplicate question
        row["id"], row["attributes"] = f"M{i - 1:07d}", [attrs[(i - 1 + k) % len(attrs)] for k in range(asked)]
    return json.dumps(row, ensure_ascii=False), kind


def write_input(path: Path, n: int, attrs: list[str], asked: int, seed: int) -> dict[int, str]:
    """The input file; returns ``{line number (1-based): fault kind}`` of its bad lines."""
    bad = {}
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            text, kind = line(i, attrs, asked, seed)
            f.write(text + "\n")
            if kind:
                bad[i + 1] = kind
    return bad


def predict(model: Path, inp: Path, out: Path, kernels: str, log: Path, extra: list[str]) -> dict:
    """``deflate predict`` as its own process (``scale.run``: wall seconds and the OS's peak RSS),
    with its summary line."""
    cmd = [sys.executable, "-m", "deflate.cli", "predict", "--model", str(model), "--input", str(inp),
           "--output", str(out), "--kernels", kernels, "--threads", "2", "--batch-size", "256", *extra]
    got = run(cmd, ROOT, log, env={**os.environ, "TQDM_DISABLE": "1"})
    summary = [x for x in log.read_text(errors="replace").splitlines() if " rows, " in x]
    return {"seconds": round(got["seconds"], 1), "peak_rss_mb": got["peak_rss_mb"],
            "summary": summary[-1] if summary else ""}


def check_output(out: Path, n: int, bad: dict[int, str]) -> dict:
    """One output line per input line, in order; error records exactly on the bad lines, each
    naming its input line."""
    lines = errors = answered = 0
    wrong: list[str] = []
    with open(out, encoding="utf-8") as f:
        for k, text in enumerate(f, 1):
            r = json.loads(text)
            lines += 1
            if r.get("errors"):
                errors += 1
                if k not in bad:
                    wrong.append(f"line {k}: unexpected error {r['errors']}")
                elif r.get("line") != k:
                    wrong.append(f"line {k} ({bad[k]}): its error record names line {r.get('line')}")
            elif k in bad:
                wrong.append(f"line {k} ({bad[k]}): no error")
            else:
                answered += 1
    done = json.loads(out.with_name(out.name + ".done.json").read_text())
    return {"output_lines": lines, "input_lines": n, "error_records": errors, "bad_lines": len(bad),
            "answered_rows": answered, "done_rows": done.get("rows"), "mismatches": len(wrong),
            "first_mismatches": wrong[:5], "ok": lines == n and not wrong and done.get("rows") == n}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--asked", type=int, default=1, help="attributes asked per line")
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "deflate")
    ap.add_argument("--kernels", default="native", help="deflate predict --kernels (native: the fastest here)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--predict-args", default="", help="more deflate predict options, given as --predict-args=\"--prune\"")
    ap.add_argument("--work", type=Path, default=None, help="a folder for the files (default: a temporary one)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "predict_million.json")
    args = ap.parse_args()
    attrs = json.loads((args.model / "generator" / "deflate.json").read_text())["attributes"]
    res = {"what": __doc__.split("\n\n")[0], "model": str(args.model.relative_to(ROOT)), "asked": args.asked,
           "kernels": args.kernels, "predict_args": args.predict_args, "bad_every": BAD_EVERY, "bad_kinds": BAD_KINDS,
           "machine": f"{os.cpu_count()}-core {cpu()}",
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "sizes": {}}
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        tmp = Path(tmp)
        for n in args.sizes:
            inp, out = tmp / f"products_{n}.jsonl", tmp / f"predictions_{n}.jsonl"
            t0 = time.perf_counter()
            bad = write_input(inp, n, attrs, args.asked, args.seed)
            made = round(time.perf_counter() - t0, 1)
            ran = predict(args.model, inp, out, args.kernels, tmp / f"predict_{n}.log", args.predict_args.split())
            got = check_output(out, n, bad)
            # a picture outside the input's folder is refused and the row answered from its text
            questions = (n - sum(k != "image_outside" for k in bad.values())) * args.asked
            res["sizes"][str(n)] = {"lines": n, "questions": questions, "input_mb":
                                    round(inp.stat().st_size / 2**20, 1), "input_seconds": made, **ran,
                                    "questions_per_s": round(questions / ran["seconds"], 1), **got}
            print(json.dumps(res["sizes"][str(n)]), flush=True)
            inp.unlink()
            out.unlink()
    if len(args.sizes) > 1:
        a, b = (res["sizes"][str(s)] for s in args.sizes[-2:])
        res["peak_rss_ratio"] = round(b["peak_rss_mb"] / a["peak_rss_mb"], 3)
        res["rss_goal_met"] = res["peak_rss_ratio"] <= 1.5
        res["time_per_line_ratio"] = round((b["seconds"] / b["lines"]) / (a["seconds"] / a["lines"]), 3)
    args.out.write_text(json.dumps(res, indent=1, ensure_ascii=False) + "\n")
    print(json.dumps({k: v for k, v in res.items() if k != "sizes"}))


if __name__ == "__main__":
    main()
