"""The DEFLATE stages (paper Fig. 2): train_generator -> harvest_negatives ->
train_discriminator -> evaluate. Each function reads params, writes what DVC expects, and
tracks itself in MLflow. Stage scripts in ``stages/`` only call these."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .batching import Batcher, Example
from .config import peak_memory_mb, resolve_device, seed_everything
from .data import Record, load_split
from .imaging import load_tokens, save_for_inference
from .infer import build_tries, generate_values, score_claims
from .metrics import evaluate as compute_metrics
from .metrics import gold_from_records, majority_baseline
from .model import Discriminator, build_generator, load_discriminator, load_generator, save_model
from .text import NONE_VALUE, QuestionBuilder, corpus, load_tokenizer, train_tokenizer
from .tracking import Tracker
from .train import config_hash, file_digest, fit

VALUE_SEP = {"zh": "、", "en": ", "}


@dataclass
class Split:
    records: list[Record]
    image: np.ndarray
    has_image: np.ndarray
    meta: dict


TEXT_ONLY = {"continuous": False, "vocab_size": 0, "feature_dim": 0, "tokenizer": None}


def load_data(processed: Path, tokens_dir: Path, split: str) -> Split:
    records = load_split(processed, split)
    if not (tokens_dir / f"{split}.safetensors").exists():  # a text-only pipeline (no image stage)
        return Split(records, None, None, dict(TEXT_ONLY))
    image, has, meta = load_tokens(tokens_dir, split)
    if len(image) != len(records):
        raise RuntimeError(f"{split}: {len(records)} products but {len(image)} image-token rows; rerun image_tokens")
    return Split(records, image, has, meta)


def image_spec(meta: dict) -> tuple[int, int]:
    """(image vocab, feature dim): discrete tokens or continuous features."""
    return (0, meta["feature_dim"]) if meta["continuous"] else (meta["vocab_size"], 0)


def grouped_labels(r: Record) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for lab in r.labels:
        out.setdefault(lab["attribute"], []).append(lab["value"])
    return out


def qa_examples(records: list[Record], qb: QuestionBuilder, schema: dict, sep: str, none_per_product: int = 0,
                seed: int = 0) -> list[Example]:
    """Generator examples: one question per gold attribute (values joined by ``sep``); with
    ``none_per_product`` != 0 (the d- variant) also absent attributes with the answer ``None``
    (-1: every absent attribute)."""
    rng = np.random.default_rng(seed)
    out = []
    for i, r in enumerate(records):
        labels = grouped_labels(r)
        for a, vs in labels.items():
            out.append(Example(qb.question(r.name, r.description, a), i, qb.value(sep.join(vs)), (i, a)))
        if none_per_product:
            absent = [a for a in schema["attributes"] if a not in labels]
            if 0 < none_per_product < len(absent):
                absent = list(rng.choice(absent, none_per_product, replace=False))
            out += [Example(qb.question(r.name, r.description, a), i, qb.value(NONE_VALUE), (i, a)) for a in absent]
    return out


def gold_pair_examples(records: list[Record], qb: QuestionBuilder) -> list[Example]:
    """One question per (product, gold attribute), no target."""
    return [Example(qb.question(r.name, r.description, a), i, None, (i, a))
            for i, r in enumerate(records) for a in grouped_labels(r)]


def all_pair_examples(records: list[Record], qb: QuestionBuilder, attributes: list[str]) -> list[Example]:
    return [Example(qb.question(r.name, r.description, a), i, None, (i, a))
            for i, r in enumerate(records) for a in attributes]


def _setup(p: dict, processed: Path):
    seed_everything(p["seed"])
    torch.set_num_threads(p["model"].get("num_threads", 2))
    schema = json.loads((processed / "schema.json").read_text(encoding="utf-8"))
    return schema, resolve_device(p["model"].get("device", "auto"))


def _tracker(p: dict, stage: str, device: str) -> Tracker:
    keep = {k: v for k, v in p.items() if k in ("seed", "data", "image", "text", "model", "generator", "negatives",
                                                 "discriminator", "lexical", "decode", "eval")}
    return Tracker(p.get("tracking", {}), stage, keep, device)


# --- stage 1: generator ------------------------------------------------------------------------------
def train_generator(p: dict, processed: Path, tokens_dir: Path, out: Path, ckpt_dir: Path) -> dict:
    schema, device = _setup(p, processed)
    m, g, t = p["model"], p["generator"], p["text"]
    train, val = load_data(processed, tokens_dir, "train"), load_data(processed, tokens_dir, "val")
    tok_path = m.get("tokenizer_path") or m.get("pretrained_path")
    tok = load_tokenizer(tok_path) if tok_path else train_tokenizer(corpus(train.records, schema), t["vocab_size"])
    lang = schema["language"]
    qb = QuestionBuilder(tok, lang, t["max_len"], t["max_value_len"])
    image_vocab, feature_dim = image_spec(train.meta)
    use_image = m["use_image"] and train.image is not None
    gen = build_generator(m, tok, image_vocab if use_image else 0, feature_dim if use_image else 0)
    none = 0 if m["use_discriminator"] else g["none_per_product"]
    sep = VALUE_SEP[lang if lang in VALUE_SEP else "en"]
    examples = qa_examples(train.records, qb, schema, sep, none, p["seed"])
    val_ex = qa_examples(val.records, qb, schema, sep, none, p["seed"] + 1)[: g.get("val_max", 1000)]
    tr_b = Batcher(train.image, train.has_image, use_image, qb.img_id)
    va_b = Batcher(val.image, val.has_image, use_image, qb.img_id)
    targets = [qb.decode(e.target) for e in val_ex]

    def validate(model):
        got = generate_values(model, qb, va_b, val_ex, p["decode"], device, progress=False)
        return {"score": round(float(np.mean([a == b for a, b in zip(got, targets)])), 4)}

    tracker = _tracker(p, "train_generator", device)
    run_hash = config_hash({k: p[k] for k in ("seed", "text", "model", "generator", "decode")}, len(tok),
                           file_digest(*(d / f"{s}.{ext}" for s in ("train", "val")
                                         for d, ext in ((processed, "parquet"), (tokens_dir, "safetensors")))))
    print(f"[train_generator] {len(examples)} QA examples, {sum(x.numel() for x in gen.parameters()) / 1e6:.2f}M "
          f"params, device {device}, image {'on' if use_image else 'off'}, none targets {none}")
    t0 = time.perf_counter()
    history = fit(gen, examples, tr_b, g, lambda mdl, b: mdl(b).loss, validate, ckpt_dir, run_hash, tracker,
                  device, p["seed"], "generator")
    cost = {"train_seconds": round(time.perf_counter() - t0, 1), "peak_memory_mb": peak_memory_mb()}
    meta = {"image_vocab": gen.image_vocab, "feature_dim": gen.feature_dim, "use_image": use_image,
            "use_discriminator": m["use_discriminator"], "language": lang, "value_sep": sep,
            "max_len": t["max_len"], "max_value_len": t["max_value_len"], "device": device,
            "attributes": schema["attributes"], "params": sum(x.numel() for x in gen.parameters()),
            "candidates": candidate_vocab(schema),  # closed-vocabulary answers in `deflate predict`
            "cost": cost}  # measured (varies run to run): Table 5's efficiency columns
    save_model(gen.cpu(), out, meta, tok, gen.t5)
    if use_image:
        save_for_inference(tokens_dir, p["image"], out)
    (out / "history.json").write_text(json.dumps(history, indent=1))
    tracker.artifacts(out, "generator")
    tracker.close()
    return {"examples": len(examples), "best_val_accuracy": max(h["val_score"] for h in history)}


# --- stage 2: harvested negatives --------------------------------------------------------------------
def harvest_negatives(p: dict, processed: Path, tokens_dir: Path, gen_dir: Path, out: Path) -> dict:
    """Paper §3.4: for attributes a product lacks, the generator's own answer is a negative."""
    schema, device = _setup(p, processed)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"enabled": p["model"]["use_discriminator"], "splits": {}}
    if not p["model"]["use_discriminator"]:  # d-: no discriminator, nothing to harvest
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
        return summary
    gen, tok, meta = load_generator(gen_dir)
    qb = QuestionBuilder(tok, meta["language"], meta["max_len"], meta["max_value_len"])
    k = p["negatives"]["per_product"]
    mode = p["negatives"].get("mode", "absent")
    summary["mode"] = mode
    for split, offset in (("train", 0), ("val", 1)):
        data = load_data(processed, tokens_dir, split)
        rng = np.random.default_rng([p["seed"], offset])
        batcher = Batcher(data.image, data.has_image, meta["use_image"], qb.img_id)
        if mode == "candidates":
            rows = candidate_negatives(data, qb, schema, gen, batcher, p, device, k, rng, split)
        else:
            exs = []
            for i, r in enumerate(data.records):
                have = {lab["attribute"] for lab in r.labels}
                absent = [a for a in schema["attributes"] if a not in have]
                pick = absent if len(absent) <= k else list(rng.choice(absent, k, replace=False))
                exs += [Example(qb.question(r.name, r.description, a), i, None, (i, a)) for a in pick]
            values = generate_values(gen, qb, batcher, exs, p["decode"], device, desc=f"harvest {split}")
            rows = [{"row": e.key[0], "id": data.records[e.key[0]].id, "attribute": e.key[1], "value": v}
                    for e, v in zip(exs, values)]
        with open(out / f"{split}.jsonl", "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        summary["splits"][split] = {"negatives": len(rows), "products": len(data.records),
                                    "empty_values": sum(not r["value"] for r in rows)}
        print(f"[harvest_negatives] {split}: {len(rows)} negatives")
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def candidate_vocab(schema: dict) -> dict[str, list[str]]:
    return {a: schema["candidates"].get(a) or schema["values"].get(a, []) for a in schema["attributes"]}


def candidate_negatives(data: Split, qb, schema: dict, gen, batcher, p: dict, device: str, k: int, rng,
                        split: str) -> list[dict]:
    """Negatives for re-ranking (``negatives.mode: candidates``): for each gold attribute, the
    generator's own answer when it is wrong, topped up with random wrong candidates to ``k``."""
    cands = candidate_vocab(schema)
    exs = gold_pair_examples(data.records, qb)
    values = generate_values(gen, qb, batcher, exs, p["decode"], device, desc=f"harvest {split}")
    rows = []
    for e, v in zip(exs, values):
        r = data.records[e.key[0]]
        gold = set(grouped_labels(r)[e.key[1]])
        wrong = [v] if v and v not in gold else []
        pool = [c for c in cands.get(e.key[1], []) if c not in gold and c not in wrong]
        if pool and len(wrong) < k:
            wrong += list(rng.choice(pool, min(k - len(wrong), len(pool)), replace=False))
        rows += [{"row": e.key[0], "id": r.id, "attribute": e.key[1], "value": str(w)} for w in wrong[:k]]
    return rows


# --- stage 3: discriminator --------------------------------------------------------------------------
def claim_examples(data: Split, qb: QuestionBuilder, negatives: list[dict], sep: str) -> list[Example]:
    out = []
    for i, r in enumerate(data.records):  # S+: true (attribute, value) pairs
        for a, vs in grouped_labels(r).items():
            out.append(Example(qb.claim(r.name, r.description, a, sep.join(vs)), i, 1.0, (i, a)))
    for n in negatives:  # S-: the generator's answers for absent attributes
        r = data.records[n["row"]]
        out.append(Example(qb.claim(r.name, r.description, n["attribute"], n["value"]), n["row"], 0.0,
                           (n["row"], n["attribute"])))
    return out


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def train_discriminator(p: dict, processed: Path, tokens_dir: Path, gen_dir: Path, neg_dir: Path, out: Path,
                        ckpt_dir: Path) -> dict:
    schema, device = _setup(p, processed)
    out.mkdir(parents=True, exist_ok=True)
    if not p["model"]["use_discriminator"]:
        (out / "deflate.json").write_text(json.dumps({"enabled": False}))
        return {"enabled": False}
    d = p["discriminator"]
    gen, tok, meta = load_generator(gen_dir)
    qb = QuestionBuilder(tok, meta["language"], meta["max_len"], meta["max_value_len"])
    train, val = load_data(processed, tokens_dir, "train"), load_data(processed, tokens_dir, "val")
    ex = claim_examples(train, qb, _read_jsonl(neg_dir / "train.jsonl"), meta["value_sep"])
    val_ex = claim_examples(val, qb, _read_jsonl(neg_dir / "val.jsonl"), meta["value_sep"])
    disc = Discriminator.from_generator(gen, d["freeze_encoder"])
    tr_b = Batcher(train.image, train.has_image, meta["use_image"], qb.img_id)
    va_b = Batcher(val.image, val.has_image, meta["use_image"], qb.img_id)
    y = np.array([e.target for e in val_ex])
    bce = torch.nn.BCEWithLogitsLoss()

    def validate(model):
        s = score_claims(model, va_b, val_ex, d.get("eval_batch_size", 256), device, progress=False)
        ll = -np.mean(y * np.log(s + 1e-7) + (1 - y) * np.log(1 - s + 1e-7))
        return {"score": round(float(-ll), 5), "accuracy": round(float(np.mean((s > 0.5) == y)), 4)}

    tracker = _tracker(p, "train_discriminator", device)
    run_hash = config_hash({k: p[k] for k in ("seed", "model", "discriminator", "negatives")},
                           file_digest(gen_dir / "model.safetensors", neg_dir / "train.jsonl", neg_dir / "val.jsonl"))
    print(f"[train_discriminator] {len(ex)} claims ({int(sum(e.target for e in ex))} positive), device {device}")
    t0 = time.perf_counter()
    history = fit(disc, ex, tr_b, d, lambda mdl, b: bce(mdl(b).float(), b["labels"]), validate, ckpt_dir,
                  run_hash, tracker, device, p["seed"], "discriminator")
    cost = {"train_seconds": round(time.perf_counter() - t0, 1), "peak_memory_mb": peak_memory_mb()}
    save_model(disc.cpu(), out, {"enabled": True, "device": device, "freeze_encoder": d["freeze_encoder"],
                                 "cost": cost})
    (out / "history.json").write_text(json.dumps(history, indent=1))
    tracker.artifacts(out, "discriminator")
    tracker.close()
    return {"examples": len(ex), "best_val_accuracy": max(h["val_accuracy"] for h in history)}


# --- stage 3b: lexical candidate scorer (real data with candidate lists) ---------------------------------
def lexical_examples(records) -> dict[str, list[tuple[str, str]]]:
    from .lexical import lexical_text

    out: dict[str, list[tuple[str, str]]] = {}
    for r in records:
        for lab in r.labels:
            out.setdefault(lab["attribute"], []).append((lexical_text(r.name, r.description), lab["value"]))
    return out


def train_lexical(p: dict, processed: Path, out: Path) -> dict:
    """Fit the per-attribute TF-IDF + logistic-regression scorer on train; report val accuracy."""
    from .lexical import LexicalScorer

    schema, device = _setup(p, processed)
    cfg = p["lexical"]
    train = load_split(processed, "train")
    val = lexical_examples(load_split(processed, "val"))
    tracker = _tracker(p, "train_lexical", device)
    t0 = time.perf_counter()
    lex = LexicalScorer.fit(lexical_examples(train), cfg.get("max_features"), float(cfg.get("C", 10.0)))
    seconds = round(time.perf_counter() - t0, 1)
    hits = n = 0
    for attr, pairs in val.items():
        options = sorted({v for _, v in pairs} | set(schema.get("candidates", {}).get(attr, [])))
        best = lex.logprobs([t for t, _ in pairs], attr, options).argmax(1)
        hits += sum(options[b] == v for b, (_, v) in zip(best, pairs))
        n += len(pairs)
    report = {"val_accuracy": round(hits / max(n, 1), 4), "val_pairs": n, "train_seconds": seconds,
              "attributes": len(lex.models)}
    lex.save(out)
    (out / "history.json").write_text(json.dumps([{"epoch": 1, **report}], indent=1))
    tracker.metrics({"val_accuracy": report["val_accuracy"], "train_seconds": seconds}, step=1)
    tracker.artifacts(out, "lexical")
    tracker.close()
    print(f"[train_lexical] {report}")
    return report


# --- stage 4: evaluate -------------------------------------------------------------------------------
def predict_split(p: dict, data: Split, gen, disc, qb, meta: dict, attributes: list[str], device: str,
                  tries=None, name: str = "") -> tuple[list[Example], list[str], np.ndarray | None]:
    exs = all_pair_examples(data.records, qb, attributes)
    batcher = Batcher(data.image, data.has_image, meta["use_image"], qb.img_id)
    values = generate_values(gen, qb, batcher, exs, p["decode"], device, tries, desc=f"generate {name}")
    scores = None
    if disc is not None:
        claims = [Example(qb.claim(data.records[e.key[0]].name, data.records[e.key[0]].description, e.key[1], v),
                          e.key[0], None, e.key) for e, v in zip(exs, values)]
        scores = score_claims(disc, batcher, claims, p["discriminator"].get("eval_batch_size", 256), device,
                              desc=f"discriminate {name}")
    return exs, values, scores


def select(exs, values, scores, records, threshold: float, sep: str) -> dict:
    """Kept predictions {(pid, attr): [values]}: discriminator score >= threshold (or, without a
    discriminator, any answer but ``None``)."""
    pred: dict = {}
    for j, (e, v) in enumerate(zip(exs, values)):
        if keep(v, None if scores is None else scores[j], threshold):
            pred[(records[e.key[0]].id, e.key[1])] = [x for x in v.split(sep) if x]
    return pred


def keep(value: str, score: float | None, threshold: float) -> bool:
    """The one rule, in evaluation and in ``deflate predict``: an answer that is not ``None`` and,
    with a discriminator, scores at least the threshold."""
    return bool(value) and value != NONE_VALUE and (score is None or score >= threshold)


def best_threshold(exs, values, scores, data: Split, sep: str, metric: str = "ave") -> float:
    gold, texts = gold_from_records(data.records)
    grid = sorted(set(np.round(np.quantile(scores, np.linspace(0, 1, 101)), 4).tolist()) | {0.5})
    best = max(grid, key=lambda t: (compute_metrics(gold, select(exs, values, scores, data.records, t, sep),
                                                    texts)[metric]["f1"], -abs(t - 0.5)))
    return float(best)


def evaluate(p: dict, processed: Path, tokens_dir: Path, gen_dir: Path, disc_dir: Path, metrics_path: Path,
             predictions_path: Path) -> dict:
    schema, device = _setup(p, processed)
    gen, tok, meta = load_generator(gen_dir)
    qb = QuestionBuilder(tok, meta["language"], meta["max_len"], meta["max_value_len"])
    use_disc = p["model"]["use_discriminator"]
    disc = load_discriminator(disc_dir, gen_dir)[0] if use_disc else None
    tries = None
    if p["decode"].get("constrain_to_vocab"):
        vocab = candidate_vocab(schema)
        if not use_disc:
            vocab = {a: vs + [NONE_VALUE] for a, vs in vocab.items()}
        tries = build_tries(vocab, qb)
    sep = meta["value_sep"]
    attrs = schema["attributes"]
    val, test = load_data(processed, tokens_dir, "val"), load_data(processed, tokens_dir, "test")
    thr = 0.5
    thr_cfg = p["eval"].get("threshold", "auto")
    if use_disc and thr_cfg == "auto":  # chosen on validation, never on test
        v_ex, v_val, v_sc = predict_split(p, val, gen, disc, qb, meta, attrs, device, tries, "val")
        thr = best_threshold(v_ex, v_val, v_sc, val, sep, p["eval"].get("threshold_metric", "ave"))
    elif use_disc:
        thr = float(thr_cfg)
    exs, values, scores = predict_split(p, test, gen, disc, qb, meta, attrs, device, tries, "test")
    pred = select(exs, values, scores, test.records, thr, sep)
    gold, texts = gold_from_records(test.records)
    metrics = compute_metrics(gold, pred, texts)
    train_records = load_split(processed, "train")
    metrics["threshold"] = round(thr, 4)
    metrics["majority_baseline"] = {k: majority_baseline(train_records, test.records)[k] for k in ("ave",)}
    metrics["meta"] = {"dataset": schema["format"], "language": schema["language"],
                       "test_products": len(test.records), "train_products": len(train_records),
                       "attributes": len(attrs), "seed": p["seed"],
                       "use_image": meta["use_image"], "use_discriminator": use_disc,
                       "generator_params": meta["params"], "constrained_decoding": bool(tries)}
    metrics_path.parent.mkdir(parents=True, exist_ok=True)
    metrics_path.write_text(json.dumps(metrics, ensure_ascii=False, indent=1, sort_keys=True))
    write_predictions(predictions_path, test.records, exs, values, scores, pred)
    # the finished model as an MLflow pyfunc (`mlflow models predict`, `deflate predict --model <uri>`)
    tracker = _tracker(p, "evaluate", device)
    tracker.metrics({f"test_{k}_f1": metrics[k]["f1"] for k in ("ap", "ave", "ave_fuzzy")}, step=0)
    uri = tracker.log_pyfunc(gen_dir, disc_dir if use_disc else None, {"threshold": round(thr, 4), "mode": "free"})
    tracker.close()
    if uri:
        (predictions_path.parent / "mlflow_model.txt").write_text(uri + "\n")
    return metrics


def write_predictions(path: Path, records, exs, values, scores, pred: dict):
    """One line per product: kept predictions with scores, plus every generated candidate."""
    path.parent.mkdir(parents=True, exist_ok=True)
    per: dict[int, list] = {}
    for j, (e, v) in enumerate(zip(exs, values)):
        per.setdefault(e.key[0], []).append((e.key[1], v, None if scores is None else round(float(scores[j]), 4)))
    with open(path, "w", encoding="utf-8") as f:
        for i, r in enumerate(records):
            kept = [{"attribute": a, "value": v, "score": s} for a, v, s in per.get(i, [])
                    if (r.id, a) in pred]
            cands = [{"attribute": a, "value": v, "score": s} for a, v, s in per.get(i, [])]
            f.write(json.dumps({"id": r.id, "predictions": kept, "candidates": cands, "errors": [],
                                "gold": r.labels}, ensure_ascii=False) + "\n")
