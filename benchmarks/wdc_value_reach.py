"""How many of WDC-PAVE's present values span decoding can reach, per tokenizer (train and val only;
never opens the test split). A value is reachable when its target ids (``QuestionBuilder.value``,
the tokens it has inside the question) are a run of the question's ids ("span"), and for
``decode.span_words`` when such a run also starts and ends at word boundaries ("words"). A value
that is not reachable can never be answered right by DEFLATE's span decoding, whatever it learns.

Arms: the committed generator's tokenizer; our BPE trained again as the pipeline trains it, without
and with ``text.split_punctuation``; and, if ``--wordpiece DIR`` names one, a checkpoint's WordPiece
tokenizer (uncased: it cannot write the offer's surface back, see "round trip").

    python benchmarks/wdc_value_reach.py [--wordpiece pipelines/wdc_pave/models/pretrained]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from deflate.data.splits import load_data, value_sep
from deflate.infra.config import load_params
from deflate.model.questions import answer_questions
from deflate.model.tokenizer import QuestionBuilder, corpus, load_tokenizer, train_tokenizer

sys.path.insert(0, str(Path(__file__).parent))
from wdc_span_words import aligned  # noqa: E402

PIPE = Path("pipelines/wdc_pave")


def reach(tok, records, schema: dict, max_len: int, max_value_len: int) -> dict:
    """Shares of the present (product, attribute) pairs whose value is a span / a whole-word span of
    the question cut at ``max_len`` tokens, and whose target decodes back to the value itself."""
    qb = QuestionBuilder(tok, schema["language"], max_len, max_value_len, "as_in_text", True)
    questions, answers = answer_questions(records, schema, value_sep(schema["language"]))
    span = words = round_trip = 0
    lengths = []
    for q, a in zip(questions, answers):
        r = records[q.row]
        ids = qb.question(r.name, r.description, q.attribute)
        lengths.append(len(ids))
        v = qb.value(a, ids)[:-1]
        round_trip += qb.decode(v) == a
        whole = aligned(ids, v, qb.word_starts(ids))  # None: not a span at all
        span += whole is not None
        words += bool(whole)
    n = len(questions)
    return {"pairs": n, "span": round(span / n, 4), "words": round(words / n, 4),
            "round_trip": round(round_trip / n, 4), "median_tokens": float(np.median(lengths))}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--wordpiece", type=Path, default=None, help="a checkpoint folder with a WordPiece tokenizer")
    ap.add_argument("--params", type=Path, default=PIPE / "params.yaml")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/wdc_value_reach.json"))
    args = ap.parse_args()
    p = load_params(args.params)
    t = p["text"]
    processed = PIPE / "data" / "processed"
    schema = json.loads((processed / "schema.json").read_text())
    splits = {s: load_data(processed, PIPE / "no_tokens", s).records for s in ("train", "val")}
    arms = {"committed (models/shared_generator/tokenizer)": lambda: load_tokenizer(PIPE / "models/shared_generator/tokenizer")}
    for flag in (False, True):
        arms[f"bpe {t['vocab_size']}, split_punctuation {str(flag).lower()}"] = (
            lambda flag=flag: train_tokenizer(corpus(splits["train"], schema), t["vocab_size"], flag))
    if args.wordpiece:
        def wordpiece():
            tok = load_tokenizer(args.wordpiece)
            tok.eos_token = tok.eos_token or tok.sep_token  # BERT's vocabularies have no end token
            return tok
        arms[f"wordpiece ({args.wordpiece})"] = wordpiece
    out = {"max_len": t["max_len"], "arms": {}}
    for name, make in arms.items():
        t0 = time.perf_counter()
        tok = make()
        out["arms"][name] = {split: {"cut": reach(tok, recs, schema, t["max_len"], t["max_value_len"]),
                                     "whole": reach(tok, recs, schema, 1 << 20, t["max_value_len"])}
                             for split, recs in splits.items()}
        out["arms"][name]["seconds"] = round(time.perf_counter() - t0, 1)
        v = out["arms"][name]["val"]
        print(f"{name:50s} val: span {v['cut']['span']:.3f} words {v['cut']['words']:.3f} "
              f"(whole offer: {v['whole']['span']:.3f} / {v['whole']['words']:.3f}), round trip "
              f"{v['cut']['round_trip']:.3f}, median tokens {v['whole']['median_tokens']:.0f}")
    args.out.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
