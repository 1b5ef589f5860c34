"""What kind of wrong answers the WDC-PAVE generator gives, on val only (docs/wdc_pave.md).

Asks a trained generator every val question of a present attribute (greedy, inside the span trie,
as the pipeline answers) and sorts each answer against the gold spellings: exact, another case, too
short (inside a gold value), too long (contains one), overlapping words, or disjoint; and per
attribute, the share exact.

    python benchmarks/wdc_generator_errors.py [GENERATOR_DIR] [--beams N] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

import torch

from deflate.batching import Batcher
from deflate.config import load_params
from deflate.dataset import load_data, value_sep
from deflate.decoding import generate_values
from deflate.model import load_generator
from deflate.questions import qa_examples
from deflate.text import QuestionBuilder

sys.path.insert(0, str(Path(__file__).parent))
from wdc_dev import dev_folder

ROOT = Path(__file__).resolve().parents[1]
PIPE = ROOT / "pipelines" / "wdc_pave"


def kind(answer: str, golds: set[str]) -> str:
    if answer in golds:
        return "exact"
    if any(answer.lower() == g.lower() for g in golds):
        return "case"
    if any(answer and answer in g for g in golds):
        return "too_short"
    if any(g in answer for g in golds):
        return "too_long"
    if any(set(answer.split()) & set(g.split()) for g in golds):
        return "overlap"
    return "disjoint"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("generator", type=Path, nargs="?", default=PIPE / "models/systems/deflate-wdc_pave/generator")
    ap.add_argument("--beams", type=int, default=1)
    ap.add_argument("--work", type=Path, default=Path("/tmp/wdc_dev"))
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(2)
    p = load_params(PIPE / "params.yaml")
    processed = dev_folder(p, args.work)  # its val is the pipeline's val
    gen, tok, meta = load_generator(args.generator)
    schema = json.loads((processed / "schema.json").read_text())
    val = load_data(processed, args.work / "no_tokens", "val")
    # the committed generator's deflate.json predates target_form: the pipeline's params say it
    qb = QuestionBuilder.from_meta(tok, {"target_form": p["text"]["target_form"], **meta})
    ex = qa_examples(val.records, qb, schema, value_sep("en"), 0, p["seed"])
    got = generate_values(gen, qb, Batcher(val.image, val.has_image, False, qb.img_id), ex,
                          dict(p["decode"], num_beams=args.beams), progress=False, spans=True)
    kinds, per_attr = Counter(), defaultdict(Counter)
    for e, answer in zip(ex, got):
        golds = {g for lab in val.records[e.key.row].labels if lab["attribute"] == e.key.attribute
                 for g in lab.get("gold", [lab["value"]])}
        k = kind(answer, golds)
        kinds[k] += 1
        per_attr[e.key.attribute][k] += 1
    n = sum(kinds.values())
    where = args.generator.resolve()
    res = {"generator": str(where.relative_to(ROOT) if where.is_relative_to(ROOT) else where), "beams": args.beams, "questions": n,
           "share": {k: round(v / n, 3) for k, v in kinds.most_common()},
           "per_attribute_exact": {a: {"questions": sum(c.values()), "exact": round(c["exact"] / sum(c.values()), 2)}
                                   for a, c in sorted(per_attr.items(), key=lambda x: -sum(x[1].values()))}}
    print(json.dumps(res, indent=1))
    if args.out:
        args.out.write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
