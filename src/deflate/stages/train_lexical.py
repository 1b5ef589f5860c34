"""Stage 3b (closed vocabularies): the lexical candidate scorer (TF-IDF + logistic regression per
attribute), fitted on train and reported on val."""
from __future__ import annotations

import time
from pathlib import Path

from deflate.answering.lexical import LexicalScorer, lexical_examples
from deflate.data.records import load_split
from deflate.infra.config import Params
from deflate.infra.files import write_json
from deflate.infra.runtime import peak_memory_mb, record_cost
from deflate.stages.context import StageContext


def run(p: Params, processed: Path, out: Path) -> dict:
    ctx = StageContext.open(p, "train_lexical", processed)
    cfg = p["lexical"]
    train = load_split(processed, "train")
    val = lexical_examples(load_split(processed, "val"))
    tracker = ctx.tracker()
    t0 = time.perf_counter()
    lex = LexicalScorer.fit(lexical_examples(train), cfg["max_features"], float(cfg["C"]))
    seconds = round(time.perf_counter() - t0, 1)
    hits = n = 0
    for attr, pairs in val.items():
        options = sorted({v for _, v in pairs} | set(ctx.schema["candidates"].get(attr, [])))
        best = lex.logprobs([t for t, _ in pairs], attr, options).argmax(1)
        hits += sum(options[b] == v for b, (_, v) in zip(best, pairs))
        n += len(pairs)
    report = {"val_accuracy": round(hits / max(n, 1), 4), "val_pairs": n, "attributes": len(lex.models)}
    lex.save(out)
    record_cost(out, {"train_seconds": seconds, "peak_memory_mb": peak_memory_mb()})
    write_json(out / "history.json", [{"epoch": 1, **report}], indent=1)
    tracker.metrics({"val_accuracy": report["val_accuracy"], "train_seconds": seconds}, step=1)
    tracker.artifacts(out, "lexical")
    tracker.close()
    print(f"[train_lexical] {report}")
    return report
