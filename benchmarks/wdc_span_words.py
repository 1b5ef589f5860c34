"""Do the WDC-PAVE generator's wrong spans cut words? (val only; #31 item 1)

The span trie (`decoding.span_trie`) lets an answer start and end at any word piece of its question,
so "GB" out of "16GB" or "Sams" out of "Samsung" are answers it may write. This script answers every
attribute val offers have with the committed generator (greedy, in its span trie, as DEFLATE and d−
decode) and sorts the answers: right (any gold spelling), `None`, wrong on word boundaries, wrong
cutting a word. It also counts how many gold values sit on word boundaries in their question, the
ceiling of any rule that keeps answers whole words. Then it decodes again with `decode.span_words`
(the package's word-aligned span trie: `QuestionBuilder.word_starts`, `decoding.span_trie`).
Never reads eval_visible.

    python benchmarks/wdc_span_words.py [--bundle pipelines/wdc_pave/models/systems/deflate-wdc_pave/deflate]
        [--processed pipelines/wdc_pave/data/processed]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

from deflate.infra import kernels

sys.path.insert(0, str(Path(__file__).parent))
from wdc_val_probe import open_val, parser  # noqa: E402


def arguments() -> argparse.Namespace:
    ap = parser(__doc__, "benchmarks/results/wdc_span_words.json")
    ap.add_argument("--num-beams", type=int, default=0, help="beams for both decodings (0 = the bundle's decode.num_beams)")
    return ap.parse_args()


def occurrences(seq: list[int], part: list[int]) -> list[int]:
    k = len(part)
    return [i for i in range(len(seq) - k + 1) if k and seq[i:i + k] == part]


def aligned(seq: list[int], part: list[int], starts: list[bool]) -> bool | None:
    """Whether some occurrence of ``part`` in ``seq`` is word-aligned (``starts``: which pieces start a
    word); None where it does not occur."""
    occ = occurrences(seq, part)
    if not occ:
        return None
    ends = starts[1:] + [True]
    return any(starts[i] and ends[i + len(part) - 1] for i in occ)


def main():
    args = arguments()
    val = open_val(args)
    bundle, engine, data = val.bundle, val.engine, val.data

    from deflate.answering.decoding import generate_values
    from deflate.data.splits import grouped_labels, right_answers
    from deflate.model.questions import gold_questions
    from deflate.model.tokenizer import NONE_VALUE

    gen, qb = engine.gen, engine.qb
    questions = gold_questions(data.records)
    exs = engine.questions(data.records, questions)
    batcher = engine.batcher(None, None)
    starts = [qb.word_starts(e.ids) for e in exs]
    decode = {**engine.decode, **({"num_beams": args.num_beams} if args.num_beams else {})}

    def classify(values: list[str], attribute: str | None = None) -> Counter:
        c = Counter()
        for e, q, v, st in zip(exs, questions, values, starts):
            if attribute is not None and q.attribute != attribute:
                continue
            c["n"] += 1
            right = right_answers(data.records[q.row], q.attribute, engine.sep)
            if v in right:
                c["right"] += 1
                c["right_ci"] += 1
            elif not v or v == NONE_VALUE:
                c["none"] += 1
            else:
                c["right_ci"] += v.lower() in {r.lower() for r in right}
                # a boundary error (the answer inside a gold value or around one) or another value
                c["wrong_overlaps_gold"] += any(v.lower() in r.lower() or r.lower() in v.lower() for r in right)
                # the wrong answer is another attribute's gold value of the same offer
                c["wrong_other_attribute"] += any(v in right_answers(data.records[q.row], a, engine.sep)
                                                  for a in grouped_labels(data.records[q.row]) if a != q.attribute)
                a = aligned(e.ids, qb.value(v, e.ids)[:-1], st)
                c["wrong_whole_words" if a else "wrong_cuts_a_word" if a is False else "wrong_not_a_span"] += 1
        return c

    def shares(c: Counter) -> dict:
        return {"n": c["n"], **{k: round(100 * v / c["n"], 2) for k, v in c.items() if k != "n"}}

    t0 = time.perf_counter()
    plain = generate_values(gen, qb, batcher, exs, {**decode, "span_words": False}, spans=True, desc="span trie")
    t_plain = time.perf_counter() - t0

    gold = Counter()
    for e, q, st in zip(exs, questions, starts):
        values = grouped_labels(data.records[q.row])[q.attribute]
        a = [aligned(e.ids, qb.value(v, e.ids)[:-1], st) for v in values]
        gold["aligned" if any(a) else "cut" if any(x is False for x in a) else "not_in_question"] += 1

    t1 = time.perf_counter()
    words = generate_values(gen, qb, batcher, exs, {**decode, "span_words": True}, spans=True,
                            desc="word-aligned spans")
    t_words = time.perf_counter() - t1
    n = len(exs)
    res = {"split": "val", "questions": n, "bundle": str(bundle), "num_beams": decode["num_beams"],
           "gold": {k: round(100 * v / n, 2) for k, v in gold.items()},
           "span_trie": shares(classify(plain)),
           "word_aligned_trie": shares(classify(words)),
           "word_aligned_by_attribute": {a: shares(classify(words, a))
                                         for a in sorted({q.attribute for q in questions})},
           "answers_changed": round(100 * sum(a != b for a, b in zip(plain, words)) / n, 2),
           "seconds": {"span_trie": round(t_plain, 1), "word_aligned_trie": round(t_words, 1)},
           "kernels": kernels.describe()["kernels"]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
