"""Stage 4b (beyond the paper): closed-vocabulary evaluation on real data (ImplicitAVE), where every
question has a gold attribute and a known list of candidate values.

For each gold (test product, attribute) it reports, side by side: free decoding; the generator's
best candidate (exact scoring of every candidate); that re-ranked with the discriminator; the trie
beam search's top-k and those k re-ranked; and, with a lexical scorer, its own best candidate and
the three scores fused. Every weight is picked on val, never on test. The finished model (with the
variant's settings) is logged as an MLflow pyfunc, as the evaluate stage does for the default data.

Its own module so that changing how we evaluate never invalidates the training stages in DVC.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .batching import Batcher
from .candidates import candidate_logprobs, combine, discriminator_logprobs, fuse, pick_alpha, pick_weights
from .infer import build_tries, generate_values, topk_values
from .lexical import LexicalScorer
from .metrics import accuracy_report
from .model import load_discriminator, load_generator
from .pipeline import _setup, _tracker, candidate_vocab, gold_pair_examples, grouped_labels, load_data
from .text import QuestionBuilder

SOURCES = ("generator", "discriminator", "lexical")


def present(scores: dict[str, list | None]) -> dict[str, list]:
    """The score sources a run has (a pipeline without discriminator or lexical scorer lacks them)."""
    return {name: s for name, s in scores.items() if s is not None}


def gold_index(options: list[list[str]], gold: list[str]) -> list[int]:
    """Position of the gold value among each question's candidates (-2: not a candidate)."""
    return [o.index(g) if g in o else -2 for o, g in zip(options, gold)]


def evaluate_candidates(p: dict, processed: Path, tokens_dir: Path, gen_dir: Path, disc_dir: Path,
                        metrics_path: Path, breakdown_path: Path, lexical_dir: Path | None = None) -> dict:
    """Accuracy of every variant (see the module doc) in ``metrics_path``, per attribute in
    ``breakdown_path``; returns the metrics."""
    schema, device = _setup(p, processed)
    gen, tok, meta = load_generator(gen_dir)
    qb = QuestionBuilder(tok, meta["language"], meta["max_len"], meta["max_value_len"])
    disc = load_discriminator(disc_dir, gen_dir)[0] if p["model"]["use_discriminator"] else None
    cands = candidate_vocab(schema)
    bs = p["decode"].get("batch_size", 256)
    sep = meta["value_sep"]
    k = int(p["decode"].get("top_k", 0))
    tries = build_tries(cands, qb)
    lex = LexicalScorer.load(lexical_dir) if lexical_dir is not None else None

    def run(split: str, limit: int | None):
        data = load_data(processed, tokens_dir, split)
        exs = gold_pair_examples(data.records, qb)[:limit]
        batcher = Batcher(data.image, data.has_image, meta["use_image"], qb.img_id)
        free = generate_values(gen, qb, batcher, exs, p["decode"], device, desc=f"free {split}")
        options = [cands.get(e.key[1], []) for e in exs]
        scores = {"generator": candidate_logprobs(gen, qb, batcher, exs, cands, bs, device),
                  "discriminator": discriminator_logprobs(disc, qb, batcher, exs, data.records, cands, bs, device)
                  if disc else None,
                  "lexical": lex.question_logprobs(data.records, [e.key for e in exs], cands) if lex else None}
        gold = [sep.join(grouped_labels(data.records[e.key[0]])[e.key[1]]) for e in exs]
        # the trie's top-k by beam search, each with its mean token log-prob and its discriminator score
        top = topk_values(gen, qb, batcher, exs, tries, k, p["decode"], device, desc=f"top-{k} {split}") if k else []
        top_c = [[v for v, _ in t] for t in top]
        top_g = [np.array([s / len(qb.value(v)) for v, s in t], dtype=np.float32) for t in top]
        top_d = ([d[[cands[e.key[1]].index(v) for v in c]] for e, c, d in zip(exs, top_c, scores["discriminator"])]
                 if disc else None)
        return data, exs, free, options, present(scores), (top_g, top_d, top_c), gold

    alpha = {"constrained_rerank": 1.0, "topk_rerank": 1.0}
    fused_w: tuple = ()
    if disc is not None or lex is not None:
        _, _, _, v_opts, v_scores, v_top, v_gold = run("val", p["eval"].get("val_max", 2000))
        v_index = gold_index(v_opts, v_gold)
        if disc is not None:
            alpha["constrained_rerank"] = pick_alpha(v_scores["generator"], v_scores["discriminator"], v_index)
            if k:
                alpha["topk_rerank"] = pick_alpha(v_top[0], v_top[1], gold_index(v_top[2], v_gold))
        if lex is not None:
            fused_w = pick_weights(list(v_scores.values()), v_index)
    data, exs, free, options, scores, (top_g, top_d, top_c), gold = run("test", None)

    def pick(best, opts):
        return [o[b] if b >= 0 else f for o, b, f in zip(opts, best, free)]

    g_lp, d_lp = scores["generator"], scores.get("discriminator")
    variants = {"free": free, "constrained": pick(combine(g_lp, None, 1.0), options)}
    if d_lp is not None:
        variants["constrained_rerank"] = pick(combine(g_lp, d_lp, alpha["constrained_rerank"]), options)
    if k:
        variants["topk"] = pick(combine(top_g, None, 1.0), top_c)
        if top_d is not None:
            variants["topk_rerank"] = pick(combine(top_g, top_d, alpha["topk_rerank"]), top_c)
    if lex is not None:
        variants["lexical"] = pick(fuse([scores["lexical"]], [1.0]), options)
        variants["fused"] = pick(fuse(list(scores.values()), fused_w), options)
    out: dict = {"alpha": alpha["constrained_rerank"], "alpha_topk": alpha["topk_rerank"], "top_k": k,
                 "fused_weights": dict(zip(scores, fused_w)),
                 "n_test": len(exs), "dataset": schema["format"], "seed": p["seed"], "generator_params": meta["params"]}
    breakdown: dict = {}
    for name, preds in variants.items():
        rows = [{"domain": data.records[e.key[0]].category.split("/")[0], "attribute": e.key[1], "gold": g,
                 "pred": v} for e, g, v in zip(exs, gold, preds)]
        out[name], breakdown[name] = accuracy_report(rows)
        print(f"[evaluate_candidates] {name}: exact {out[name]['overall']['exact']}%, "
              f"lenient {out[name]['overall']['lenient']}%")
    metrics_path.parent.mkdir(parents=True, exist_ok=True)
    metrics_path.write_text(json.dumps(out, ensure_ascii=False, indent=1, sort_keys=True))
    breakdown_path.parent.mkdir(parents=True, exist_ok=True)
    breakdown_path.write_text(json.dumps(breakdown, ensure_ascii=False, indent=1, sort_keys=True))
    uri = log_model(p, device, gen_dir, disc_dir if disc else None, lexical_dir, out)
    if uri:
        print(f"[evaluate_candidates] MLflow model: {uri} (deflate predict --model {uri} ...)")
    return {**out, "mlflow_model": uri}  # the URI differs per run: not part of the metrics file


def serving_config(out: dict, has_disc: bool, has_lexical: bool) -> dict:
    """The answer settings the logged model carries: every asked attribute gets a value (the
    question is which one), scored the way picked on val: fused when a lexical scorer exists,
    else re-ranked, else the generator's best candidate."""
    if has_lexical:
        w = out["fused_weights"]
        return {"mode": "fused", "weights": [w.get(s, 0.0) for s in SOURCES], "keep_all": True}
    if has_disc:
        return {"mode": "rerank", "alpha": out["alpha"], "keep_all": True}
    return {"mode": "constrained", "keep_all": True}


def log_model(p: dict, device: str, gen_dir: Path, disc_dir: Path | None, lexical_dir: Path | None,
              out: dict) -> str:
    """Test accuracies and the pyfunc model (generator, discriminator, lexical scorer) in MLflow;
    the model's URI, or "" with tracking off."""
    tracker = _tracker(p, "evaluate_candidates", device)
    tracker.metrics({f"test_{name}_exact": v["overall"]["exact"] for name, v in out.items()
                     if isinstance(v, dict) and "overall" in v}, step=0)
    uri = tracker.log_pyfunc(gen_dir, disc_dir, serving_config(out, disc_dir is not None, lexical_dir is not None),
                             lexical_dir)
    tracker.close()
    return uri
