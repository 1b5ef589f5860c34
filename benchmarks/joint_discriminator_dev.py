"""Hypothesis test for #17, val only: does a discriminator that *shares* the generator's encoder
(the paper's "shared encoder", trained jointly: generator loss + discriminator loss on one encoder)
separate present from absent attributes better than the pipeline's discriminator, which trains a
*copy* of the encoder after the generator is done?

Starts from the pipeline's trained generator (models/generator), harvests negatives for every
absent attribute, then trains generator + discriminator head together for ``--epochs`` epochs
(one QA batch and one claim batch per step). The control is the copy design with the same
negatives and epochs. Both are scored like benchmarks/discriminator_dev.py (AUC, two-fold-threshold
AP/AVE F1 on val), beside d-'s val answers. A prototype to decide what to build, not product code.

    python benchmarks/joint_discriminator_dev.py [--epochs 6]
"""
import argparse
import itertools
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from deflate.batching import Batcher
from deflate.config import load_params, seed_everything
from deflate.dataset import load_data, load_schema, value_sep
from deflate.engine import Deflate
from deflate.files import read_jsonl
from deflate.metrics import gold_from_records
from deflate.model import Discriminator, build_generator, load_generator, save_model
from deflate.questions import claim_examples, qa_examples, training_claims
from deflate.stages import harvest_negatives, train_discriminator
from deflate.stages.evaluate import FREE, answer_split
from deflate.text import QuestionBuilder
from deflate.train import make_optimizer

sys.path.insert(0, str(Path(__file__).parent))
from discriminator_dev import auc, d_minus_reference, override, report, two_fold  # noqa: E402


def joint(p, processed, tokens, gen_dir: Path, neg_dir: Path, out: Path, epochs: int, with_value: bool,
          from_scratch: bool = False) -> None:
    """Generator + discriminator head on one shared encoder, trained together (from the trained
    generator, or from_scratch: fresh weights, the trained generator's tokenizer and settings)."""
    seed_everything(p["seed"])
    gen, tok, meta = load_generator(gen_dir)
    if from_scratch:
        seed_everything(p["seed"])
        gen = build_generator(p["model"], tok, meta["image_vocab"], meta["feature_dim"])
    qb = QuestionBuilder.from_meta(tok, {"target_form": p["text"]["target_form"], **meta})
    train = load_data(processed, tokens, "train")
    schema, sep = load_schema(processed), value_sep(meta["language"])
    qa = qa_examples(train.records, qb, schema, sep, 0, p["seed"])
    claims = claim_examples(train.records, qb, *training_claims(train.records, read_jsonl(neg_dir / "train.jsonl"), sep),
                            with_value=with_value)
    disc = Discriminator(gen.t5.get_encoder(), gen.embed)  # shared, not copied
    model = torch.nn.ModuleDict({"gen": gen, "head": disc.head})
    opt = make_optimizer(model, p["discriminator"])
    b = Batcher(train.image, train.has_image, meta["use_image"], qb.img_id)
    bce = torch.nn.BCEWithLogitsLoss()
    bs = p["discriminator"]["batch_size"]
    for epoch in range(epochs):
        model.train()
        g_order = b.batches(qa, bs, shuffle=True, bucket=True, seed=p["seed"] * 1000 + epoch)
        c_order = b.batches(claims, bs, shuffle=True, bucket=True, seed=p["seed"] * 1000 + epoch + 500)
        total = 0.0
        if from_scratch:  # an epoch is one pass over the QA examples (d-'s epoch), a claim batch beside each
            pairs = zip(g_order, itertools.cycle(c_order))
        else:
            pairs = zip(itertools.cycle(g_order) if len(c_order) > len(g_order) else g_order,
                        itertools.cycle(c_order) if len(g_order) >= len(c_order) else c_order)
        for gi, ci in pairs:
            gb, cb = b.collate([qa[i] for i in gi]), b.collate([claims[i] for i in ci])
            loss = gen(gb).loss + bce(disc(cb).float(), cb["labels"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            total += loss.item()
        steps = len(g_order) if from_scratch else max(len(g_order), len(c_order))
        print(f"[joint] epoch {epoch + 1}: loss {total / steps:.4f}", flush=True)
    gen.eval()
    save_model(gen, out / "gen", meta, tok, gen.t5)
    for f in ("image.json", "codebook.safetensors"):
        if (gen_dir / f).exists():
            shutil.copy(gen_dir / f, out / "gen" / f)
    save_model(disc.eval(), out / "disc", {"enabled": True, "device": "cpu", "freeze_encoder": False,
                                           "claim_value": with_value})


def score(p, gen_dir, disc_dir, val, schema, gold) -> dict:
    engine = Deflate(gen_dir, discriminator=disc_dir, lexical=None, decisions=FREE, decode=p["decode"],
                     claim_batch_size=p["discriminator"]["eval_batch_size"], device="cpu")
    ans = answer_split(engine, val, schema, "val")
    present = np.array([(val.records[q.row].id, q.attribute) in gold for q in ans.questions])
    return {**two_fold(ans, val.records, engine.sep), "auc": round(auc(ans.probs, present), 4)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--no-value", action="store_true", help="claims without their value (discriminator.claim_value false)")
    ap.add_argument("--skip-copy", action="store_true", help="skip the copy-of-the-encoder control (already measured)")
    ap.add_argument("--from-scratch", action="store_true",
                    help="joint training from fresh weights for --epochs (d-'s budget: generator.epochs), not after the generator")
    ap.add_argument("--out", default="benchmarks/results/joint_discriminator_dev.json")
    a = ap.parse_args()
    p = override(load_params(), {"negatives.per_product": -1, "discriminator.epochs": a.epochs,
                                 "discriminator.claim_value": not a.no_value})
    tag = (", claims without the value" if a.no_value else "") + (", from scratch" if a.from_scratch else "")
    p["tracking"]["enabled"] = False
    processed, tokens, gen_dir = Path("data/processed"), Path("data/tokens"), Path("models/generator")
    val, schema = load_data(processed, tokens, "val"), load_schema(processed)
    gold, texts = gold_from_records(val.records)
    rows = d_minus_reference(gold, texts)
    with tempfile.TemporaryDirectory() as tmp:
        w = Path(tmp)
        harvest_negatives.run(p, processed, tokens, gen_dir, w / "neg")
        if not a.skip_copy:
            train_discriminator.run(p, processed, tokens, gen_dir, w / "neg", w / "copy", w / "ckpt")
            rows[f"copy encoder, {a.epochs} epochs{tag}"] = score(p, gen_dir, w / "copy", val, schema, gold)
            print(json.dumps(rows), flush=True)
        joint(p, processed, tokens, gen_dir, w / "neg", w / "joint", a.epochs, not a.no_value, a.from_scratch)
        rows[f"shared encoder, joint, {a.epochs} epochs{tag}"] = score(p, w / "joint" / "gen", w / "joint" / "disc", val,
                                                                  schema, gold)
    report(rows, Path(a.out))


if __name__ == "__main__":
    main()
