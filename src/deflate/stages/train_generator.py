"""Stage 1: the Mul-T5 generator, trained to answer each (product, attribute) question."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from deflate.answering.decoding import generate_values
from deflate.data.image_tokens import save_for_inference
from deflate.data.splits import candidate_vocab, image_spec, load_data, value_sep
from deflate.infra import distributed as dist
from deflate.infra import kernels
from deflate.infra.config import Params
from deflate.infra.files import write_json
from deflate.model import copy_warmup as copying
from deflate.model.batching import Batcher
from deflate.model.mul_t5 import build_generator, save_model
from deflate.model.questions import qa_examples
from deflate.model.tokenizer import (
    QuestionBuilder,
    corpus,
    load_tokenizer,
    train_tokenizer,
)
from deflate.model.train import TrainingJob, config_hash, file_digest, train_and_save
from deflate.stages.context import StageContext


def run(p: Params, processed: Path, tokens_dir: Path, out: Path, ckpt_dir: Path) -> dict:
    ctx = StageContext.open(p, "train_generator", processed)
    schema, device = ctx.schema, ctx.device
    m, g, t = p["model"], p["generator"], p["text"]
    train, val = load_data(processed, tokens_dir, "train"), load_data(processed, tokens_dir, "val")
    tok = generator_tokenizer(p, train.records, schema)
    lang = schema["language"]
    qb = QuestionBuilder(tok, lang, t["max_len"], t["max_value_len"], t["target_form"], t["answer_prefix"],
                         m["question"])
    image_vocab, feature_dim = image_spec(train.meta)
    use_image = m["use_image"] and train.image is not None
    gen = build_generator(m, tok, image_vocab if use_image else 0, feature_dim if use_image else 0)
    none = g["none_per_product"] if absent_as_none(p) else 0
    sep = value_sep(lang)
    examples = qa_examples(train.records, qb, schema, sep, none, p["seed"])
    val_ex = qa_examples(val.records, qb, schema, sep, none, p["seed"] + 1)[: g["val_max"]]
    tr_b = Batcher(train.image, train.has_image, use_image, qb.img_id, together=qb.layout == "offer")
    va_b = Batcher(val.image, val.has_image, use_image, qb.img_id)
    targets = [qb.answer(e.target, e.key.attribute) for e in val_ex]

    def validate(model):
        got = generate_values(model, qb, va_b, val_ex, p["decode"], device, progress=False,
                              spans=p["decode"]["constrain_to_spans"])
        return {"score": round(float(np.mean([a == b for a, b in zip(got, targets)])), 4)}

    tracker = ctx.tracker()
    run_hash = config_hash({k: p[k] for k in ("seed", "text", "model", "generator", "decode")}, len(tok),
                           file_digest(*(d / f"{s}.{ext}" for s in ("train", "val")
                                         for d, ext in ((processed, "parquet"), (tokens_dir, "safetensors")))))
    print(f"[train_generator] {len(examples)} QA examples, {sum(x.numel() for x in gen.parameters()) / 1e6:.2f}M "
          f"params, device {device}, image {'on' if use_image else 'off'}, none targets {none}")
    warmed = ""
    if g["copy_warmup"] and not m["pretrained_path"]:  # a from-scratch T5 learns to copy in short inputs first
        plan = copying.schedule(g["copy_warmup"])
        # the key hashes every weight: only where there is a saved warm-up to match
        if g["copy_warmup_from"] and copying.load_warm(gen.t5, g["copy_warmup_from"],
                                                       copying.warm_key(gen.t5, plan, g, p["seed"])):
            warmed = "loaded"  # the pipeline's shared copy_warmup stage ran exactly this warm-up
            print(f"[train_generator] copy warm-up: {g['copy_warmup']} steps, loaded from {g['copy_warmup_from']}")
        else:
            warmed = "here"
            last = copying.warm_up(gen.t5, plan, g, p["seed"], device)
            print(f"[train_generator] copy warm-up: {g['copy_warmup']} steps, last loss {last:.3f}")

    def save(history: list[dict]) -> None:
        save_model(gen.cpu(), out, generator_meta(), tok, gen.t5)
        if use_image:
            save_for_inference(tokens_dir, p["image"], out)
        write_json(out / "history.json", history, indent=1)
        tracker.artifacts(out, "generator")

    def generator_meta() -> dict:
        meta = {"image_vocab": gen.image_vocab, "feature_dim": gen.feature_dim, "use_image": use_image,
                "use_discriminator": m["use_discriminator"], "language": lang, "value_sep": sep,
                "max_len": t["max_len"], "max_value_len": t["max_value_len"], "device": device,
                "answer_prefix": t["answer_prefix"],  # what the engine forces and strips when answering
                "target_form": t["target_form"],  # how its training targets were tokenised
                "copy_warmup": {"steps": g["copy_warmup"] if warmed else 0, "run": warmed},
                "attributes": schema["attributes"], "params": sum(x.numel() for x in gen.parameters()),
                "candidates": candidate_vocab(schema),  # closed-vocabulary answers (the engine's candidates)
                "kernels": kernels.describe()}  # what computed it (the same on every machine when portable)
        if "category_attributes" in schema:  # per-category schemas: what predict asks a product of a category
            meta["category_attributes"] = schema["category_attributes"]
        return meta

    job = TrainingJob(name="generator", model=gen, examples=examples, batcher=tr_b, cfg=g,
                      loss_fn=lambda mdl, b: mdl(b).loss, validate=validate, run_hash=run_hash, ckpt_dir=ckpt_dir)
    history = train_and_save(job, out, seed=p["seed"], tracker=tracker, train_kw=ctx.train_kw, save=save)
    tracker.close()
    return {"examples": len(examples), "best_val_accuracy": max(h["val_score"] for h in history)}


def absent_as_none(p: Params) -> bool:
    """Whether the generator learns to answer ``None`` for attributes a product lacks: d- always (it has
    no discriminator), DEFLATE where ``generator.absent_as_none`` says so (beyond the paper, whose
    generator learns values only)."""
    return not p["model"]["use_discriminator"] or p["generator"]["absent_as_none"]


def generator_tokenizer(p: Params, records, schema: dict):
    """The generator's tokenizer: loaded (``model.tokenizer_path`` or the pretrained model's), or
    trained on the training products, once, by the main process, so every process holds the same."""
    m, t = p["model"], p["text"]
    path = m["tokenizer_path"] or m["pretrained_path"]
    return load_tokenizer(path) if path else dist.from_main(lambda: train_tokenizer(corpus(records, schema),
                                                                                   t["vocab_size"]))
