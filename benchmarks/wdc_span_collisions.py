"""One span, one attribute? (WDC-PAVE val only; #31 item 1)

In train, two attributes of one offer share a value in 0.13% of pairs, yet the generator often
answers one attribute with another's value. This probe answers every attribute of every val offer's
category with the pipeline's generator (beam search inside the whole-word span trie, k beams, as
`decoding.span_beams` gives them) and compares two ways to pick each answer:
- **alone:** each question's best beam, as today;
- **exclusive:** per offer, greedily by beam score, a question takes its best beam that no
  higher-scored question of the offer took (case-insensitive; `None` is never taken), or no answer
  when its k beams are all taken.
It reports right answers on present attributes and the authors' counts with every answer kept (d−'s
way; the discriminator is not run), and how often any of a present attribute's k beams is right (the
most a re-ranker of the beams could reach). Never reads eval_visible.

    python benchmarks/wdc_span_collisions.py [--pipeline pipelines/wdc_pave] [--k 3]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

from deflate.infra import kernels

sys.path.insert(0, str(Path(__file__).parent))
from wdc_val_probe import open_val, parser  # noqa: E402


def arguments() -> argparse.Namespace:
    ap = parser(__doc__, "benchmarks/results/wdc_span_collisions.json")
    ap.add_argument("--k", type=int, default=3, help="beams per question")
    return ap.parse_args()


def exclusive(beams: list[list[tuple[str, float]]], rows: list[int], none: str) -> list[str]:
    """Per row (offer), each question's best beam not taken by a higher-scored question of the row."""
    by_row = defaultdict(list)
    for i, r in enumerate(rows):
        by_row[r].append(i)
    out = [""] * len(beams)
    for idx in by_row.values():
        pointer = {i: 0 for i in idx if beams[i]}
        taken: set[str] = set()
        while pointer:
            i = max(pointer, key=lambda j: (beams[j][pointer[j]][1], -j))  # ties: question order
            value = beams[i][pointer[i]][0]
            if value == none or value.lower() not in taken:
                out[i] = value
                if value != none:
                    taken.add(value.lower())
                del pointer[i]
            elif pointer[i] + 1 < len(beams[i]):
                pointer[i] += 1
            else:
                del pointer[i]  # every beam taken: no answer
    return out


def main():
    args = arguments()
    val = open_val(args)
    bundle, engine, data, processed = val.bundle, val.engine, val.data, val.processed

    import numpy as np

    from deflate.answering.decoding import span_beams
    from deflate.data.splits import load_schema, right_answers
    from deflate.evaluation.wdc_pave_rule import OUTCOMES, outcome, rule_prf
    from deflate.model.questions import all_questions
    from deflate.model.tokenizer import NONE_VALUE

    questions = all_questions(data.records, load_schema(processed))
    exs = engine.questions(data.records, questions)
    t0 = time.perf_counter()
    beams = span_beams(engine.gen, engine.qb, engine.batcher(None, None), exs, args.k, engine.decode,
                       engine.device, desc=f"span beams (k={args.k})")
    seconds = round(time.perf_counter() - t0, 1)
    arms = {"alone": [b[0][0] if b else "" for b in beams],
            "exclusive": exclusive(beams, [q.row for q in questions], NONE_VALUE)}

    def counts(values: list[str]) -> dict:
        c = Counter()
        for q, v in zip(questions, values):
            right = right_answers(data.records[q.row], q.attribute, engine.sep)  # {""} when absent
            c[outcome(None if v in ("", NONE_VALUE) else v, sorted(x for x in right if x))] += 1
        prf = rule_prf(np.array([c[o] for o in OUTCOMES]))
        return {**{o: c[o] for o in OUTCOMES}, "f1_every_answer_kept": float(prf["f1"])}

    def in_beams(i: int) -> bool:
        q = questions[i]
        right = {x for x in right_answers(data.records[q.row], q.attribute, engine.sep) if x}
        return bool(right) and any(outcome(v, sorted(right)) == "VC" for v, _ in beams[i])

    present = [i for i, q in enumerate(questions)
               if any(right_answers(data.records[q.row], q.attribute, engine.sep) - {""})]
    changed = [i for i, (a, b) in enumerate(zip(arms["alone"], arms["exclusive"])) if a != b]
    res = {"split": "val", "questions": len(questions), "k": args.k, "bundle": str(bundle),
           "arms": {name: counts(v) for name, v in arms.items()},
           "present": len(present), "right_in_k_beams": sum(in_beams(i) for i in present),
           "answers_changed": len(changed),
           "changed_examples": [{"attribute": questions[i].attribute, "alone": arms["alone"][i],
                                 "exclusive": arms["exclusive"][i]} for i in changed[:25]],
           "seconds": seconds, "kernels": kernels.describe()["kernels"]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps({k: res[k] for k in ("questions", "arms", "present", "right_in_k_beams",
                                                "answers_changed", "seconds")}, indent=1))


if __name__ == "__main__":
    main()
