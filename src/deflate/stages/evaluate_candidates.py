"""Stage 4b (beyond the paper): closed-vocabulary evaluation on real data (ImplicitAVE), where every
question has a gold attribute and a known list of candidate values.

For each gold (test product, attribute) it reports, side by side: free decoding; the generator's
best candidate (exact scoring of every candidate); that re-ranked with the discriminator; the trie
beam search's top-k and those k re-ranked; and, with a lexical scorer, its own best candidate and
the three scores fused. Every weight is picked on val, never on test. The decisions (mode, weights)
and the trained parts go into the bundle (``models/deflate``), logged as an MLflow pyfunc.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deflate.answering.engine import SOURCES, Deflate, best_candidates
from deflate.answering.scores import combine, fuse, pick_alpha, pick_weights
from deflate.data.splits import grouped_labels, load_data
from deflate.evaluation.intervals import bootstrap_accuracy
from deflate.evaluation.metrics import accuracy_report, exact_hit, lenient_hit
from deflate.infra import distributed as dist
from deflate.infra.bundle import Decisions, write_bundle
from deflate.infra.config import Params
from deflate.infra.files import write_json
from deflate.model.questions import gold_questions
from deflate.stages.context import StageContext


@dataclass
class Scored:
    """One split's questions with every score the variants choose from."""
    records: list
    questions: list
    free: list[str]                       # free decoding
    options: list[list[str]]              # each question's candidates
    scores: dict[str, list[np.ndarray]]   # per source present: a score per candidate
    top_c: list[list[str]]                # the trie's top-k values
    top_g: list[np.ndarray]               # ... their mean token log-prob
    top_d: list[np.ndarray] | None        # ... their log D
    gold: list[str]


def gold_index(options: list[list[str]], gold: list[str]) -> list[int]:
    """Position of the gold value among each question's candidates (-2: not a candidate)."""
    return [o.index(g) if g in o else -2 for o, g in zip(options, gold)]


def score_split(engine: Deflate, processed: Path, tokens_dir: Path, split: str, limit: int | None, k: int) -> Scored:
    data = load_data(processed, tokens_dir, split)
    questions = gold_questions(data.records)[:limit]
    exs = engine.questions(data.records, questions)
    batcher = engine.batcher(data.image, data.has_image)
    free = engine.generate(batcher, exs, desc=f"free {split}")
    options = [engine.candidates.get(q.attribute, []) for q in questions]
    scores = {s: v for s, v in engine.candidate_scores(batcher, data.records, exs).items() if v is not None}
    gold = [engine.sep.join(grouped_labels(data.records[q.row])[q.attribute]) for q in questions]
    # the trie's top-k by beam search, each with its mean token log-prob and its discriminator score
    top = engine.topk(batcher, exs, k, desc=f"top-{k} {split}") if k else []
    top_c = [[v for v, _ in t] for t in top]
    top_g = [np.array([s / len(engine.qb.value(v)) for v, s in t], dtype=np.float32) for t in top]
    top_d = ([d[[engine.candidates[q.attribute].index(v) for v in c]]
              for q, c, d in zip(questions, top_c, scores["discriminator"])] if "discriminator" in scores else None)
    return Scored(data.records, questions, free, options, scores, top_c, top_g, top_d, gold)


def run(p: Params, processed: Path, tokens_dir: Path, gen_dir: Path, disc_dir: Path, metrics_path: Path,
        breakdown_path: Path, bundle_dir: Path, lexical_dir: Path | None = None) -> dict:
    """Accuracy of every variant (see the module doc) in ``metrics_path``, per attribute in
    ``breakdown_path``; the bundle in ``bundle_dir``; returns the metrics."""
    ctx = StageContext.open(p, "evaluate_candidates", processed)
    use_disc = p["model"]["use_discriminator"]
    claim_bs = p["discriminator"]["eval_batch_size"]
    provisional = Decisions(mode="constrained", threshold=0.5, keep_all=True, alpha=1.0, weights=(1.0, 0.0, 0.0))
    engine = Deflate(gen_dir, discriminator=disc_dir if use_disc else None, lexical=lexical_dir,
                     decisions=provisional, decode=p["decode"], claim_batch_size=claim_bs, device=ctx.device)
    k = int(p["decode"]["top_k"])
    has_disc, has_lex = engine.ranks_candidates, engine.lexical is not None
    alpha = {"constrained_rerank": 1.0, "topk_rerank": 1.0}
    fused_w: tuple = ()
    if has_disc or has_lex:
        v = score_split(engine, processed, tokens_dir, "val", p["eval"]["val_max"], k)
        v_index = gold_index(v.options, v.gold)
        if has_disc:
            alpha["constrained_rerank"] = pick_alpha(v.scores["generator"], v.scores["discriminator"], v_index)
            if k:
                alpha["topk_rerank"] = pick_alpha(v.top_g, v.top_d, gold_index(v.top_c, v.gold))
        if has_lex:
            fused_w = pick_weights(list(v.scores.values()), v_index)
    t = score_split(engine, processed, tokens_dir, "test", None, k)

    def pick(best, opts):
        return [o[b] if b >= 0 else f for o, b, f in zip(opts, best, t.free)]

    weights = dict(zip(t.scores, fused_w))
    decisions = (Decisions(mode="fused", threshold=0.5, keep_all=True, alpha=alpha["constrained_rerank"],
                           weights=tuple(weights.get(s, 0.0) for s in SOURCES))
                 if has_lex else Decisions(mode="rerank", threshold=0.5, keep_all=True, alpha=alpha["constrained_rerank"],
                                           weights=(1.0, 0.0, 0.0))
                 if has_disc else provisional)
    variants = {"free": t.free,
                "constrained": pick(best_candidates(t.scores, "constrained", 1.0, (1, 0, 0)), t.options)}
    if has_disc:
        variants["constrained_rerank"] = pick(best_candidates(t.scores, "rerank", alpha["constrained_rerank"],
                                                              (1, 0, 0)), t.options)
    if k:
        variants["topk"] = pick(combine(t.top_g, None, 1.0), t.top_c)
        if t.top_d is not None:
            variants["topk_rerank"] = pick(combine(t.top_g, t.top_d, alpha["topk_rerank"]), t.top_c)
    if has_lex:
        variants["lexical"] = pick(fuse([t.scores["lexical"]], [1.0]), t.options)
        variants["fused"] = pick(fuse(list(t.scores.values()), fused_w), t.options)
    out: dict = {"alpha": alpha["constrained_rerank"], "alpha_topk": alpha["topk_rerank"], "top_k": k,
                 "fused_weights": weights, "n_test": len(t.questions), "dataset": ctx.schema["format"],
                 "seed": p["seed"], "generator_params": engine.meta["params"]}
    breakdown: dict = {}
    for name, preds in variants.items():
        rows = [{"id": t.records[q.row].id, "domain": t.records[q.row].category.split("/")[0],
                 "attribute": q.attribute, "gold": g, "pred": v} for q, g, v in zip(t.questions, t.gold, preds)]
        out[name], breakdown[name] = accuracy_report(rows)
        for metric, hit in (("exact", exact_hit), ("lenient", lenient_hit)):  # products resampled, seeded
            out[name]["overall"][f"{metric}_ci95"] = bootstrap_accuracy(rows, hit, p["eval"]["n_boot"], p["seed"])
        print(f"[evaluate_candidates] {name}: exact {out[name]['overall']['exact']}%, "
              f"lenient {out[name]['overall']['lenient']}%")
    if not dist.is_main():  # the main process writes; the others wait until it has
        dist.barrier()
        return out
    write_json(metrics_path, out, ensure_ascii=False, indent=1, sort_keys=True)
    write_json(breakdown_path, breakdown, ensure_ascii=False, indent=1, sort_keys=True)
    write_bundle(bundle_dir, decisions, p["decode"], claim_bs, gen_dir, disc_dir if has_disc else None, lexical_dir)
    tracker = ctx.tracker()
    tracker.metrics({f"test_{name}_exact": v["overall"]["exact"] for name, v in out.items()
                     if isinstance(v, dict) and "overall" in v}, step=0)
    uri = tracker.log_pyfunc(bundle_dir)
    tracker.close()
    if uri:
        print(f"[evaluate_candidates] MLflow model: {uri} (deflate predict --model {uri} ...)")
    dist.barrier()
    return {**out, "mlflow_model": uri}  # the URI differs per run: not part of the metrics file
