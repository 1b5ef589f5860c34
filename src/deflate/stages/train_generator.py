"""Stage 1: the Mul-T5 generator, trained to answer each (product, attribute) question."""
from __future__ import annotations

import copy
import shutil
from pathlib import Path

import numpy as np

from deflate.answering.decoding import generate_values
from deflate.data.image_tokens import save_for_inference
from deflate.data.splits import candidate_vocab, image_spec, load_data, value_sep
from deflate.infra import distributed as dist
from deflate.infra import kernels
from deflate.infra.config import Params
from deflate.infra.files import atomic_dir, read_json, write_json
from deflate.model import copy_warmup as copying
from deflate.model import encoder_states
from deflate.model.batching import Batcher
from deflate.model.mul_t5 import META, build_generator, save_model, write_meta
from deflate.model.questions import qa_examples
from deflate.model.tokenizer import (
    QuestionBuilder,
    corpus,
    load_tokenizer,
    train_tokenizer,
)
from deflate.model.train import TrainingJob, config_hash, file_digest, train_and_save
from deflate.stages.context import StageContext

SHARED_KEY = "shared.json"  # in a shared generator's folder: what it was trained from (see use_shared)


def run(p: Params, processed: Path, tokens_dir: Path, out: Path, ckpt_dir: Path) -> dict:
    ctx = StageContext.open(p, "train_generator", processed)
    schema, device = ctx.schema, ctx.device
    m, g, t = p["model"], p["generator"], p["text"]
    train, val = load_data(processed, tokens_dir, "train"), load_data(processed, tokens_dir, "val")
    tok = generator_tokenizer(p, train.records, schema)
    lang = schema["language"]
    states = encoder_states.load(m["encoder_states"])  # the frozen encoder's files checked first
    qb = QuestionBuilder(tok, lang, t["max_len"], t["max_value_len"], t["target_form"], t["answer_prefix"],
                         m["question"], states)
    image_vocab, feature_dim = image_spec(train.meta)
    use_image = m["use_image"] and train.image is not None
    gen = build_generator(m, tok, image_vocab if use_image else 0, feature_dim if use_image else 0, states)
    none = g["none_per_product"] if absent_as_none(p) else 0
    sep = value_sep(lang)
    data = file_digest(*(d / f"{s}.{ext}" for s in ("train", "val")
                         for d, ext in ((processed, "parquet"), (tokens_dir, "safetensors"))))
    key = shared_key(p, use_image, none, len(tok), data)
    if g["shared_from"] and use_shared(Path(g["shared_from"]), key, out, m["use_discriminator"]):
        tracker = ctx.tracker()
        tracker.artifacts(out, "generator")
        tracker.close()
        history = read_json(out / "history.json")
        counted = copy.copy(qb)
        counted.states = None  # counting the examples needs no encoder pass over every product
        return {"examples": len(qa_examples(train.records, counted, schema, sep, none, p["seed"])),
                "best_val_accuracy": max(h["val_score"] for h in history), "shared_from": g["shared_from"], "key": key}
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
    run_hash = config_hash({k: p[k] for k in ("seed", "text", "model", "generator", "decode")}, len(tok), data)
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
                      loss_fn=lambda mdl, b: mdl(b).loss, validate=validate, run_hash=run_hash, ckpt_dir=ckpt_dir,
                      ema=g["ema"])
    history = train_and_save(job, out, seed=p["seed"], tracker=tracker, train_kw=ctx.train_kw, save=save)
    tracker.close()
    return {"examples": len(examples), "best_val_accuracy": max(h["val_score"] for h in history), "key": key}


def run_shared(p: Params, processed: Path, tokens_dir: Path, out: Path, ckpt_dir: Path) -> dict:
    """The ``shared_generator`` stage: the generator trained once, as :func:`run` trains it, with the
    key that every system training the same generator matches (``generator.shared_from``): d- and
    DEFLATE with ``generator.absent_as_none`` learn the same examples from the same start."""
    p = copy.deepcopy(p)
    p["generator"]["shared_from"] = ""  # trained here, never copied
    result = run(p, processed, tokens_dir, out, ckpt_dir)
    dist.on_main(lambda: write_json(out / SHARED_KEY, {"key": result["key"]}, indent=1))
    dist.barrier()
    return result


def shared_key(p: Params, use_image: bool, none: int, n_tokens: int, data: str) -> str:
    """What a trained generator's bytes depend on, whichever system trains it: params (not the
    switches that only say who uses it), whether it reads pictures (a variant asks for them on
    text-only data: it reads none), its "None" targets, tokenizer size, data and code."""
    model = {**{k: v for k, v in p["model"].items() if k != "use_discriminator"}, "use_image": use_image}
    gen = {k: v for k, v in p["generator"].items() if k not in ("shared_from", "absent_as_none", "copy_warmup_from")}
    return config_hash({"seed": p["seed"], "repro": p["repro"], "text": p["text"], "model": model, "generator": gen,
                        "decode": p["decode"], "distributed": p["distributed"], "none_targets": none}, n_tokens, data)


def use_shared(folder: Path, key: str, out: Path, use_discriminator: bool) -> bool:
    """Copy the generator in ``folder`` (the ``shared_generator`` stage's) into ``out`` if it was
    trained exactly as this system's would be (``key``); otherwise say why and return False."""
    saved = folder / SHARED_KEY
    if not saved.is_file():
        print(f"[train_generator] {folder} holds no shared generator ({SHARED_KEY}); training here")
        return False
    if read_json(saved).get("key") != key:
        print(f"[train_generator] {folder} was trained with other settings, data or code; training here")
        return False
    if dist.is_main():
        with atomic_dir(out) as tmp:
            shutil.copytree(folder, tmp, dirs_exist_ok=True)
            (tmp / SHARED_KEY).unlink()
            meta = read_json(tmp / META)
            write_meta(tmp, {**meta, "use_discriminator": use_discriminator})  # who uses it: all that differs
    dist.barrier()
    print(f"[train_generator] the generator trained once in {folder}, copied (key {key})")
    return True


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
                                                                                   t["vocab_size"],
                                                                                   t["split_punctuation"]))
