"""Stage 3: the discriminator (shared-encoder <CLS> classifier) on true pairs vs harvested negatives."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from deflate.answering.scores import claim_probs
from deflate.data.splits import load_data
from deflate.infra import distributed as dist
from deflate.infra import kernels
from deflate.infra.config import Params
from deflate.infra.files import read_jsonl, write_json
from deflate.model.batching import Batcher
from deflate.model.mul_t5 import Discriminator, load_generator, save_model
from deflate.model.questions import claim_examples, training_claims
from deflate.model.tokenizer import QuestionBuilder
from deflate.model.train import TrainingJob, config_hash, file_digest, train_and_save
from deflate.stages.context import StageContext


def run(p: Params, processed: Path, tokens_dir: Path, gen_dir: Path, neg_dir: Path, out: Path,
        ckpt_dir: Path) -> dict:
    ctx = StageContext.open(p, "train_discriminator", processed)
    device = ctx.device
    out.mkdir(parents=True, exist_ok=True)
    if not p["model"]["use_discriminator"]:
        dist.on_main(lambda: write_json(out / "deflate.json", {"enabled": False}))
        return {"enabled": False}
    d = p["discriminator"]
    if not d["claim_value"] and (p["negatives"]["mode"] == "candidates" or p["negatives"]["wrong_values"]):
        raise ValueError("discriminator.claim_value false cannot learn from wrong values (negatives.mode candidates, "
                         "negatives.wrong_values): a wrong value of a present attribute is the same claim as the "
                         "true one without its value")
    gen, tok, meta = load_generator(gen_dir)
    qb = QuestionBuilder.from_meta(tok, meta, gen.encoder_states)
    train, val = load_data(processed, tokens_dir, "train"), load_data(processed, tokens_dir, "val")
    ex, val_ex = (claim_examples(data.records, qb, *training_claims(data.records, read_jsonl(neg_dir / f"{split}.jsonl"),
                                                                    meta["value_sep"]), with_value=d["claim_value"])
                  for data, split in ((train, "train"), (val, "val")))
    if d["mark_value"] and not d["claim_value"]:
        raise ValueError("discriminator.mark_value marks the claimed value; with claim_value false there is none")
    disc = Discriminator.from_generator(gen, d["freeze_encoder"], d["mark_value"])
    tr_b = Batcher(train.image, train.has_image, meta["use_image"], qb.img_id)
    va_b = Batcher(val.image, val.has_image, meta["use_image"], qb.img_id)
    y = np.array([e.target for e in val_ex])
    bce = torch.nn.BCEWithLogitsLoss()

    def validate(model):
        s = claim_probs(model, va_b, val_ex, d["eval_batch_size"], device, progress=False)
        ll = -np.mean(y * np.log(s + 1e-7) + (1 - y) * np.log(1 - s + 1e-7))
        return {"score": round(float(-ll), 5), "accuracy": round(float(np.mean((s > 0.5) == y)), 4)}

    tracker = ctx.tracker()
    run_hash = config_hash({k: p[k] for k in ("seed", "model", "discriminator", "negatives")},
                           file_digest(gen_dir / "model.safetensors", neg_dir / "train.jsonl", neg_dir / "val.jsonl"))
    print(f"[train_discriminator] {len(ex)} claims ({int(sum(e.target for e in ex))} positive), device {device}")

    def save(history: list[dict]) -> None:
        save_model(disc.cpu(), out, {"enabled": True, "device": device, "freeze_encoder": d["freeze_encoder"],
                                     "claim_value": d["claim_value"], "mark_value": d["mark_value"],
                                     "kernels": kernels.describe()})
        write_json(out / "history.json", history, indent=1)
        tracker.artifacts(out, "discriminator")

    job = TrainingJob(name="discriminator", model=disc, examples=ex, batcher=tr_b, cfg=d,
                      loss_fn=lambda mdl, b: bce(mdl(b).float(), b["labels"]), validate=validate, run_hash=run_hash,
                      ckpt_dir=ckpt_dir)
    history = train_and_save(job, out, seed=p["seed"], tracker=tracker, train_kw=ctx.train_kw, save=save)
    tracker.close()
    return {"examples": len(ex), "best_val_accuracy": max(h["val_accuracy"] for h in history)}
