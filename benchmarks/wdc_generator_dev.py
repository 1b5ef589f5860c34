"""WDC-PAVE generator development on val only: train the generator alone (as DEFLATE's first stage)
with params overridden, and report its per-epoch val exact-answer accuracy (the score that selects
its epoch) and wall time. Never reads eval_visible (wdc_dev.py's dev folder: test := val).

    python benchmarks/wdc_generator_dev.py [-S key.path=value ...] [--name NAME] [--d-minus]
        [--mix K] [--warmup EPOCHS [--warmup-len N] [--warmup-k K] [--marker]]
        [--lr-decay linear|cosine] [--span-loss WEIGHT]

Copy questions (docs/wdc_pave.md): --mix adds K per product text to training; --warmup trains on
short ones first. The two that helped are now params: -S text.answer_prefix=true (was --attr-prefix)
and -S generator.copy_warmup=3000 (was --synthetic 2000 1000). Two that did not help (2026-11-27):
--lr-decay (the learning rate falls to 0 over the run instead of staying at generator.lr) and
--span-loss (an auxiliary pointer loss: a linear head on the encoder marks the question tokens that
are the gold value, the supervision a tagger gets; training only, the saved generator is the plain
one). Appends one
JSON line to WORK/gen_results.jsonl (benchmarks/results/wdc_generator_dev.json keeps this study's).
"""
from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from torch import nn

from deflate import train
from deflate.batching import Batcher, Example
from deflate.questions import Question
from deflate.stages import train_generator
from deflate.text import QuestionBuilder

sys.path.insert(0, str(Path(__file__).parent))
from wdc_dev import dev_folder, params_with, record

WORD = re.compile(r"\S+")


def copy_questions(records, qb, k: int, rng, marker: bool = False) -> list[Example]:
    """Self-supervised copy questions, ``k`` per product text (title, the description's first 400
    characters). Cue form: "The {w} of {title} ({description}) is" -> the 1-3 words after the word
    ``w`` (unique in its text). Marker form: "The copy of {text with <CLS> before a word} is" -> the
    1-3 words after the marker. Kept only when the answer lies inside the (possibly short) question."""
    out = []
    for i, r in enumerate(records):
        texts = [r.name + " " + (r.description or "")[:200]] if marker else [r.name, (r.description or "")[:400]]
        for t, text in enumerate(texts):
            words = [(m.start(), m.end(), m.group()) for m in WORD.finditer(text)]
            counts = Counter(w for _, _, w in words)
            starts = range(len(words)) if marker else [j + 1 for j in range(len(words) - 1) if counts[words[j][2]] == 1]
            for j in rng.permutation(list(starts))[:k]:
                s, e = words[j][0], words[min(j + int(rng.integers(1, 4)), len(words)) - 1][1]
                if marker:
                    attr, name, desc = "copy", text[:s] + "<CLS> " + text[s:], ""
                else:
                    attr, (name, desc) = words[j - 1][2], ((text, "") if t == 0 else (r.name, text))
                ids = qb.question(name, desc, attr)
                tgt = qb.value(text[s:e], ids)
                if all(x in ids for x in tgt[:-1]):
                    out.append(Example(ids, i, tgt, Question(i, attr)))
    return out


class DecayingAdamax(torch.optim.Adamax):
    """Adamax whose learning rate falls from its base to 0 over ``total`` steps (linear or cosine)."""

    def __init__(self, params, total: int, kind: str, **kw):
        super().__init__(params, **kw)
        self.total, self.kind, self.t, self.base = total, kind, 0, kw["lr"]

    def step(self, closure=None):
        frac = min(self.t / self.total, 1.0)
        mult = 1 - frac if self.kind == "linear" else 0.5 * (1 + math.cos(math.pi * frac))
        for g in self.param_groups:
            g["lr"] = self.base * mult
        self.t += 1
        return super().step(closure)


def value_spans(ids: list[int], value: list[int]) -> list[tuple[int, int]]:
    """Every place the value's tokens stand in the question."""
    n = len(value)
    return [(i, i + n) for i in range(len(ids) - n + 1) if n and ids[i:i + n] == value]


class SpanBatcher(Batcher):
    """Batches that also carry ``span_mask``: 1 on the question tokens that are the gold value."""

    def collate(self, exs, pad_to=0, pad_target_to=0):
        b = super().collate(exs, pad_to, pad_target_to)
        m = torch.zeros_like(b["input_ids"], dtype=torch.float)
        for r, e in enumerate(exs):
            for s, t in getattr(e, "spans", ()):
                m[r, s:t] = 1.0
        b["span_mask"] = m
        return b


class WithPointer(nn.Module):
    """The generator and a training-only head that marks the value's tokens on its encoder."""

    def __init__(self, gen, weight: float):
        super().__init__()
        self.gen, self.weight = gen, weight
        self.head = nn.Linear(gen.t5.config.d_model, 1)

    def loss(self, b):
        out = self.gen(b)
        logits = self.head(out.encoder_last_hidden_state).squeeze(-1)
        att = b["attention_mask"].float()
        aux = nn.functional.binary_cross_entropy_with_logits(logits, b["span_mask"], reduction="none")
        return out.loss + self.weight * (aux * att).sum() / att.sum()


def patch_training(args, seed: int):
    """Wrap the generator stage's example builder (its first call is the training split) and its
    ``fit``, to add copy questions to training or run a copy warm-up before it."""
    seen = {}
    orig_qa, orig_fit = train_generator.qa_examples, train_generator.fit

    def qa(records, qb, *a):
        ex = orig_qa(records, qb, *a)
        if "records" not in seen:
            seen.update(records=records, qb=qb)
            if args.mix:
                extra = copy_questions(records, qb, args.mix, np.random.default_rng(seed))
                print(f"[copy] {len(extra)} copy questions added to {len(ex)}")
                ex = ex + extra
            if args.span_loss:
                for e in ex:  # the value's tokens: the target after the answer prefix, before </s>
                    e.spans = value_spans(e.ids, e.target[len(qb.prefix(e.key.attribute)):-1])
                print(f"[span] the value stands in the question in {sum(bool(e.spans) for e in ex)}/{len(ex)}")
        return ex

    def fit(model, examples, batcher, cfg, **kw):
        t0 = time.perf_counter()
        if args.warmup:  # copy questions in short inputs
            q = seen["qb"]
            short_qb = QuestionBuilder(q.tok, "en", args.warmup_len, q.max_value_len, "as_in_text")
            warm = copy_questions(seen["records"], short_qb, args.warmup_k, np.random.default_rng(seed), args.marker)
            print(f"[warmup] {len(warm)} copy questions of <= {args.warmup_len} tokens, {args.warmup} epochs")
            orig_fit(model, warm, batcher, dict(cfg, epochs=args.warmup),
                     **dict(kw, ckpt_dir=kw["ckpt_dir"].parent / "warmup", validate=lambda m: {"score": 0.0},
                            run_hash=kw["run_hash"] + "-warmup", tracker=None, name="warmup"))
            print(f"[copy] warm-up {time.perf_counter() - t0:.0f}s")
        if args.lr_decay:  # the loop builds its optimizer with train.make_optimizer
            steps = cfg["epochs"] * len(batcher.batches(examples, cfg["batch_size"], shuffle=True,
                                                        bucket=cfg["bucketing"], seed=0))
            train.make_optimizer = lambda m, c: DecayingAdamax(
                [q for q in m.parameters() if q.requires_grad], steps, args.lr_decay, lr=c["lr"],
                betas=(0.9, 0.999), weight_decay=c["weight_decay"])
        if args.span_loss:
            sb = SpanBatcher.__new__(SpanBatcher)  # the stage's batcher, as it is, with span masks
            sb.__dict__.update(batcher.__dict__)
            validate = kw.pop("validate")
            kw.update(loss_fn=lambda m, b: m.loss(b), validate=lambda m: validate(m.gen))
            return orig_fit(WithPointer(model, args.span_loss), examples, sb, cfg, **kw)
        return orig_fit(model, examples, batcher, cfg, **kw)

    train_generator.qa_examples = qa
    if args.warmup or args.lr_decay or args.span_loss:
        train_generator.fit = fit


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-S", dest="sets", action="append", default=[], help="key.path=value (YAML value)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/wdc_dev"))
    ap.add_argument("--name", default="")
    ap.add_argument("--d-minus", action="store_true", help="train d-'s generator (with None targets)")
    ap.add_argument("--mix", type=int, default=0, help="copy questions per product text mixed into training")
    ap.add_argument("--warmup", type=int, default=0, help="epochs of short copy questions first")
    ap.add_argument("--warmup-len", type=int, default=32, help="question tokens of the warm-up")
    ap.add_argument("--marker", action="store_true", help="warm-up: copy after a <CLS> marker")
    ap.add_argument("--warmup-k", type=int, default=8, help="warm-up copy questions per product")
    ap.add_argument("--lr-decay", choices=["linear", "cosine"], help="learning rate falls to 0 over the run")
    ap.add_argument("--span-loss", type=float, default=0.0,
                    help="weight of an auxiliary loss marking the value's question tokens (0 = off)")
    args = ap.parse_args()
    p = params_with(args.sets)
    p["model"]["use_discriminator"] = not args.d_minus
    dev = dev_folder(p, args.work)
    name = args.name or "gen_" + "_".join(s.replace("/", "_") for s in args.sets)
    out = args.work / "gen_runs" / name
    shutil.rmtree(out, ignore_errors=True)
    patch_training(args, p["seed"])
    t0 = time.perf_counter()
    r = train_generator.run(p, dev, args.work / "no_tokens", out / "generator", out / "ckpt")
    hist = json.loads((out / "generator" / "history.json").read_text())
    res = {"name": name, "sets": args.sets, "d_minus": args.d_minus, "lr_decay": args.lr_decay,
           "span_loss": args.span_loss, "best": r["best_val_accuracy"],
           "curve": [h["val_score"] for h in hist], "loss": round(hist[-1]["train_loss"], 3),
           "seconds": round(time.perf_counter() - t0, 1)}
    record(args.work, "gen_results.jsonl", res)


if __name__ == "__main__":
    main()
