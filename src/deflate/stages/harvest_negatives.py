"""Stage 2 (paper §3.4): the generator's own answers become the discriminator's negatives.

``negatives.mode: absent`` (the paper): for ``per_product`` attributes a product lacks, the
generator's answer is a false claim. ``candidates`` (closed vocabularies, for re-ranking): for
each attribute a product has, the generator's answer when it is wrong, topped up with random
wrong candidates to ``per_product``. ``wrong_values`` (beyond the paper, with ``absent``): also the
generator's answer to each attribute a product has, where it is none of the right answers: the
claim names the right attribute with a wrong value, so the discriminator learns to refuse values,
not only attributes (a refused wrong value is a miss instead of a wrong answer)."""
from __future__ import annotations

import contextlib
import io
import itertools
import json
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from deflate.answering.engine import ANSWER_CHUNK, Deflate
from deflate.data.splits import (
    Split,
    attributes_of,
    candidate_vocab,
    grouped_labels,
    load_data,
    right_answers,
)
from deflate.infra import distributed as dist
from deflate.infra.bundle import Decisions
from deflate.infra.config import Params
from deflate.infra.files import atomic_writer, chunked, write_json
from deflate.model.questions import Question, absent_attributes, gold_questions
from deflate.model.tokenizer import answered
from deflate.stages import train_generator
from deflate.stages.context import StageContext

MODES = ("absent", "candidates")


def run(p: Params, processed: Path, tokens_dir: Path, gen_dir: Path, out: Path) -> dict:
    ctx = StageContext.open(p, "harvest_negatives", processed)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"enabled": p["model"]["use_discriminator"], "splits": {}}
    if not p["model"]["use_discriminator"]:  # d-: no discriminator, nothing to harvest
        dist.on_main(lambda: write_json(out / "summary.json", summary, indent=1))
        return summary
    k, mode = p["negatives"]["per_product"], p["negatives"]["mode"]
    if mode not in MODES:
        raise ValueError(f"negatives.mode must be one of {', '.join(MODES)}, not {mode!r}")
    engine = generator_only(p, gen_dir, ctx.device)
    summary["mode"] = mode
    for split, offset in (("train", 0), ("val", 1)):
        data = load_data(processed, tokens_dir, split)
        rng = np.random.default_rng([p["seed"], offset])
        if mode == "candidates":
            found = candidate_negatives(engine, data, candidate_vocab(ctx.schema), k, rng, split)
        else:
            questions = (Question(i, a) for i, r in enumerate(data.records)
                         for a in absent_attributes(r, attributes_of(ctx.schema, r.category), k, rng))
            # a generator that learned "None" (generator.absent_as_none) is made to name its value: the
            # negatives are the claims it would make, as the paper harvests them
            none = not train_generator.absent_as_none(p)
            found = absent_negatives(engine, data, questions, split, none)
            if p["negatives"]["wrong_values"]:
                found = itertools.chain(found, wrong_answers(engine, data, engine.sep, split, none))
        n = empty = 0
        with atomic_writer(out / f"{split}.jsonl") if dist.is_main() else contextlib.nullcontext(io.StringIO()) as f:
            for rows in found:  # a chunk of questions' negatives at a time
                f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
                n, empty = n + len(rows), empty + sum(not r["value"] for r in rows)
        summary["splits"][split] = {"negatives": n, "products": len(data.records), "empty_values": empty}
        print(f"[harvest_negatives] {split}: {n} negatives")
    dist.on_main(lambda: write_json(out / "summary.json", summary, indent=1))  # last: the folder is complete
    return summary


def generator_only(p: Params, gen_dir: Path, device: str) -> Deflate:
    """The engine on the trained generator alone (no discriminator exists yet), decoding as params say."""
    free = Decisions(mode="free", threshold=0.5, keep_all=True, alpha=1.0, weights=(1.0, 0.0, 0.0))
    return Deflate(gen_dir, discriminator=None, lexical=None, decisions=free,
                   decode=p["decode"], claim_batch_size=p["discriminator"]["eval_batch_size"], device=device)


def answers(engine: Deflate, data: Split, questions: list[Question], split: str, none: bool = True) -> list[str]:
    """The generator's free answer to each question (``none`` false: never "None")."""
    exs = engine.questions(data.records, questions)
    return engine.generate(engine.batcher(data.image, data.has_image), exs, desc=f"harvest {split}", none=none)


def absent_negatives(engine: Deflate, data: Split, questions: Iterable[Question], split: str,
                     none: bool = True) -> Iterator[list[dict]]:
    """The generator's answer to each question (attributes the products lack), a chunk at a time."""
    for chunk in chunked(questions, ANSWER_CHUNK):
        yield [{"row": q.row, "id": data.records[q.row].id, "attribute": q.attribute, "value": v}
               for q, v in zip(chunk, answers(engine, data, chunk, split, none))]


def wrong_answers(engine: Deflate, data: Split, sep: str, split: str, none: bool = True) -> Iterator[list[dict]]:
    """The generator's answer to each attribute a product has, where it is a value but a wrong one."""
    for chunk in chunked(gold_questions(data.records), ANSWER_CHUNK):
        values = answers(engine, data, chunk, f"{split} (present)", none)
        yield [{"row": q.row, "id": data.records[q.row].id, "attribute": q.attribute, "value": v}
               for q, v in zip(chunk, values)
               if answered(v) and v not in right_answers(data.records[q.row], q.attribute, sep)]


def candidate_negatives(engine: Deflate, data: Split, cands: dict[str, list[str]], k: int, rng,
                        split: str) -> Iterator[list[dict]]:
    """For each gold attribute, the generator's own answer when it is wrong, topped up with random
    wrong candidates to ``k``."""
    for chunk in chunked(gold_questions(data.records), ANSWER_CHUNK):
        rows = []
        for q, v in zip(chunk, answers(engine, data, chunk, split)):
            r = data.records[q.row]
            gold = set(grouped_labels(r)[q.attribute])
            wrong = [v] if v and v not in gold else []
            pool = [c for c in cands.get(q.attribute, []) if c not in gold and c not in wrong]
            if pool and len(wrong) < k:
                wrong += list(rng.choice(pool, min(k - len(wrong), len(pool)), replace=False))
            rows += [{"row": q.row, "id": r.id, "attribute": q.attribute, "value": str(w)} for w in wrong[:k]]
        yield rows
