"""Do the WDC-PAVE generator's wrong spans cut words? (val only; #31 item 1)

The span trie (`decoding.span_trie`) lets an answer start and end at any word piece of its question,
so "GB" out of "16GB" or "Sams" out of "Samsung" are answers it may write. This script answers every
attribute val offers have with the committed generator (greedy, in its span trie, as DEFLATE and d−
decode) and sorts the answers: right (any gold spelling), `None`, wrong on word boundaries, wrong
cutting a word. It also counts how many gold values sit on word boundaries in their question, the
ceiling of any rule that keeps answers whole words. Then it decodes again inside a trie of
word-aligned spans only: a span starts where a word starts (a piece with the word-start mark, or
after a piece of punctuation) and ends where one ends (before a word start or punctuation, or at the
question's end). Never reads eval_visible.

    python benchmarks/wdc_span_words.py [--bundle pipelines/wdc_pave/models/systems/deflate-wdc_pave/deflate]
        [--processed pipelines/wdc_pave/data/processed]
"""
from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

from deflate.infra import kernels
from deflate.infra.config import load_params

END = -1  # a trie key: the answer may end here


def arguments() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pipeline", type=Path, default=Path("pipelines/wdc_pave"))
    ap.add_argument("--bundle", type=Path, default=None, help="default: the pipeline's DEFLATE bundle")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/wdc_span_words.json"))
    return ap.parse_args()


def boundaries(pieces: list[str]) -> tuple[set[int], set[int]]:
    """Positions where a word-aligned span may start, and positions after which it may end."""
    def core(p):
        return p[1:] if p[:1] in ("▁", "Ġ") else p[2:] if p.startswith("##") else p

    def punct(p):
        c = core(p)
        return bool(c) and not any(ch.isalnum() for ch in c)

    def word_start(p):
        return p[:1] in ("▁", "Ġ")

    n = len(pieces)
    starts = {i for i in range(n) if i == 0 or word_start(pieces[i]) or punct(pieces[i]) or punct(pieces[i - 1])}
    ends = {i for i in range(n) if i == n - 1 or word_start(pieces[i + 1]) or punct(pieces[i + 1]) or punct(pieces[i])}
    return starts, ends


def occurrences(seq: list[int], part: list[int]) -> list[int]:
    k = len(part)
    return [i for i in range(len(seq) - k + 1) if k and seq[i:i + k] == part]


def aligned(seq: list[int], part: list[int], starts: set[int], ends: set[int]) -> bool | None:
    """Whether some occurrence of ``part`` in ``seq`` is word-aligned; None where it does not occur."""
    occ = occurrences(seq, part)
    if not occ:
        return None
    return any(i in starts and i + len(part) - 1 in ends for i in occ)


def word_trie(question: list[int], starts: set[int], ends: set[int], max_len: int, extra: list[list[int]]) -> dict:
    root: dict = {}
    for seq in extra:
        node = root
        for t in seq:
            node = node.setdefault(t, {})
        node[END] = {}
    for i in sorted(starts):
        node = root
        for j in range(i, min(i + max_len, len(question))):
            node = node.setdefault(question[j], {})
            if j in ends:
                node[END] = {}
    return root


def main():
    args = arguments()
    p = load_params(args.pipeline / "params.yaml")
    kernels.pin(p["repro"]["kernels"], p["repro"]["num_threads"])

    from deflate.answering.decoding import generate_values
    from deflate.answering.engine import Deflate
    from deflate.data.splits import grouped_labels, load_data, right_answers
    from deflate.model.batching import infer
    from deflate.model.questions import gold_questions
    from deflate.model.tokenizer import NONE_VALUE

    bundle = args.bundle or args.pipeline / "models" / "systems" / "deflate-wdc_pave" / "deflate"
    engine = Deflate.load(bundle)
    gen, qb = engine.gen, engine.qb
    data = load_data(args.pipeline / "data" / "processed", args.pipeline / "data" / "no_tokens", "val")
    questions = gold_questions(data.records)
    exs = engine.questions(data.records, questions)
    batcher = engine.batcher(None, None)
    tok = qb.tok
    bounds = [boundaries(tok.convert_ids_to_tokens(e.ids)) for e in exs]

    def classify(values: list[str]) -> Counter:
        c = Counter()
        for e, q, v, (st, en) in zip(exs, questions, values, bounds):
            right = right_answers(data.records[q.row], q.attribute, engine.sep)
            if v in right:
                c["right"] += 1
                c["right_ci"] += 1
            elif not v or v == NONE_VALUE:
                c["none"] += 1
            else:
                c["right_ci"] += v.lower() in {r.lower() for r in right}
                a = aligned(e.ids, qb.value(v, e.ids)[:-1], st, en)
                c["wrong_whole_words" if a else "wrong_cuts_a_word" if a is False else "wrong_not_a_span"] += 1
        return c

    t0 = time.perf_counter()
    plain = generate_values(gen, qb, batcher, exs, engine.decode, spans=True, desc="span trie")
    t_plain = time.perf_counter() - t0

    gold = Counter()
    for e, q, (st, en) in zip(exs, questions, bounds):
        values = grouped_labels(data.records[q.row])[q.attribute]
        a = [aligned(e.ids, qb.value(v, e.ids)[:-1], st, en) for v in values]
        gold["aligned" if any(a) else "cut" if any(x is False for x in a) else "not_in_question"] += 1

    none_ids = qb.value(NONE_VALUE)[:-1]
    eos = qb.eos_id

    def step(idx, batch):
        es = [exs[i] for i in idx]
        tries = [word_trie(e.ids, *bounds[i], qb.max_value_len, [none_ids]) for i, e in zip(idx, es)]

        heads = [qb.prefix(e.key.attribute) for e in es]

        def allowed(batch_id, sent):
            # force the answer prefix first, then walk the word trie (as decoding's span path does)
            head, n = heads[batch_id], sent.shape[0] - 1
            if n < len(head):
                return [head[n]]
            node = tries[batch_id]
            for t in sent.tolist()[1 + len(head):]:
                node = node.get(t)
                if node is None:
                    return [eos]
            nxt = [k for k in node if k != END] + ([eos] if END in node else [])
            return nxt or [eos]
        seqs = gen.generate(batch, max_new_tokens=engine.decode["max_new_tokens"] + max(map(len, heads)),
                            num_beams=engine.decode["num_beams"], do_sample=False, prefix_allowed_tokens_fn=allowed)
        return [qb.answer(s[1:], e.key.attribute) for e, s in zip(es, seqs.tolist())]

    t1 = time.perf_counter()
    words = infer(gen, batcher, exs, engine.decode["batch_size"], step, "cpu", "word-aligned spans")
    t_words = time.perf_counter() - t1
    n = len(exs)
    res = {"split": "val", "questions": n, "bundle": str(bundle),
           "gold": {k: round(100 * v / n, 2) for k, v in gold.items()},
           "span_trie": {k: round(100 * v / n, 2) for k, v in classify(plain).items()},
           "word_aligned_trie": {k: round(100 * v / n, 2) for k, v in classify(words).items()},
           "answers_changed": round(100 * sum(a != b for a, b in zip(plain, words)) / n, 2),
           "seconds": {"span_trie": round(t_plain, 1), "word_aligned_trie": round(t_words, 1)},
           "kernels": kernels.describe()["kernels"]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
