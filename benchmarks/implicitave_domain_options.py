"""ImplicitAVE's option lists are per domain, the bundle's per attribute (val only; #31 item 3).

The release ships one options file per domain group (`options_Clothing_Shoes_and_Jewelry.json`,
`options_Food.json`, `options_Home.json`), and two attributes sit in two of them with other lists:
Material (5 options for clothing and jewellery, 13 for home) and Shape (5 and 4). The ingest merges
them per attribute (`ImplicitAveAdapter.candidates`), so a home product may be answered "Canvas" and
a ring "Ceramic/Melamine": answers that no label of its domain can have. This script measures what
that costs on val: each source of the committed bundle (generator, discriminator, lexical scorer)
ranks each question's candidates, once over the merged list and once over its domain's list only.
A product's domain is the first part of its category (the file it came from); which options file
serves a domain is read off train: the file whose list holds most of the values train gives that
(domain, attribute) (train has a few values outside every list, e.g. Home's Location "Outdoor").
Same 4,000 val questions as `implicitave_val_gap.py`; never reads eval_visible.

    python benchmarks/implicitave_domain_options.py [--pipeline pipelines/implicitave] [--sample 4000]
"""
from __future__ import annotations

import json
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from implicitave_val_gap import arguments, rank_of_gold, val_sample  # noqa: E402  (the same sample and bundle)

from deflate.data.records import load_split  # noqa: E402
from deflate.data.splits import grouped_labels  # noqa: E402
from deflate.infra.files import read_json, write_json  # noqa: E402


def domain(record) -> str:
    return record.category.split("/", 1)[0]


def domain_options(data_root: Path, processed: Path, sep: str) -> dict[tuple[str, str], list[str]]:
    """(domain, attribute) -> the option list of the file that holds every value train gives it."""
    files = {p.stem: read_json(p) for p in sorted(data_root.glob("options_*.json"))}
    seen: dict[tuple[str, str], set] = defaultdict(set)
    for r in load_split(processed, "train"):
        for a, vs in grouped_labels(r).items():
            seen[(domain(r), a)].add(sep.join(vs))
    out = {}
    for key, values in seen.items():
        cover = {f: len(values & set(opts[key[1]])) for f, opts in files.items() if key[1] in opts}
        best = [f for f, n in cover.items() if n == max(cover.values(), default=0) and n > 0]
        if len(best) != 1:
            raise SystemExit(f"{key}: no single options file holds most of train's values ({cover})")
        out[key] = files[best[0]][key[1]]
    return out


def main():
    args = arguments(__doc__, "benchmarks/results/implicitave_domain_options.json")
    p, engine, data, questions = val_sample(args.pipeline, args.sample)
    processed = args.pipeline / "data" / "processed"
    data_root = (args.pipeline / p["data"]["path"]).resolve()
    allowed = domain_options(data_root, processed, engine.sep)
    t0 = time.perf_counter()
    exs = engine.questions(data.records, questions)
    scores = engine.candidate_scores(engine.batcher(data.image, data.has_image), data.records, exs)
    seconds = round(time.perf_counter() - t0, 1)
    sources = [s for s in ("generator", "discriminator", "lexical") if scores.get(s) is not None]
    total, per = Counter(), defaultdict(Counter)
    for k, q in enumerate(questions):
        rec = data.records[q.row]
        opts = engine.candidates.get(q.attribute, [])
        gold = engine.sep.join(grouped_labels(rec)[q.attribute])
        g = opts.index(gold) if gold in opts else -1
        mine = allowed.get((domain(rec), q.attribute), opts)
        mask = np.array([o in mine for o in opts])
        c = per[q.attribute]
        for counter in (total, c):
            counter["n"] += 1
            counter["gold_outside_domain"] += g >= 0 and not mask[g]
        for s in sources:
            sc = np.asarray(scores[s][k], dtype=float)
            masked = np.where(mask, sc, -np.inf)
            for counter in (total, c):
                counter[f"{s}_merged"] += rank_of_gold(sc, g) == 1
                counter[f"{s}_domain"] += rank_of_gold(masked, g) == 1 if g >= 0 and mask[g] else 0
                counter[f"{s}_merged_pick_outside"] += not mask[int(np.argmax(sc))]
    several = sorted({a for (_, a) in allowed if len({tuple(v) for (_, b), v in allowed.items() if b == a}) > 1})
    pct = lambda c: {k: round(100 * v / c["n"], 2) for k, v in c.items() if k != "n"}  # noqa: E731
    res = {"split": "val", "questions": total["n"], "sample_seed": p["seed"], "seconds_scoring": seconds,
           "overall": pct(total), "attributes_with_several_lists": several,
           "by_attribute": {a: {"n": per[a]["n"], **pct(per[a])} for a in several if per[a]["n"]},
           "bundle": str(args.pipeline / "models" / "deflate")}
    write_json(args.out, res, indent=1)
    print(json.dumps(res["overall"]))
    print(json.dumps(res["by_attribute"], indent=1))


if __name__ == "__main__":
    main()
