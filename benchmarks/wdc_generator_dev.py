"""WDC-PAVE generator development on val only: train the generator alone (as DEFLATE's first stage)
with params overridden, and report its per-epoch val exact-answer accuracy (the score that selects
its epoch) and wall time. Never reads eval_visible (wdc_dev.py's dev folder: test := val).

    python benchmarks/wdc_generator_dev.py [-S key.path=value ...] [--name NAME] [--d-minus]
        [--mix K] [--warmup EPOCHS [--warmup-len N] [--warmup-k K] [--marker]] [--synthetic SHORT LONG]

Copy questions (docs/wdc_pave.md): --mix adds K per product text to training; --warmup trains on
short ones first; --synthetic runs benchmarks/copy_learning.py's data-free task first. Appends one
JSON line to WORK/gen_results.jsonl (benchmarks/results/wdc_generator_dev.jsonl keeps this study's).
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import yaml

from deflate.batching import Example
from deflate.config import load_params
from deflate.questions import Question
from deflate.stages import train_generator
from deflate.text import QuestionBuilder

sys.path.insert(0, str(Path(__file__).parent))
import copy_learning  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PIPE = ROOT / "pipelines" / "wdc_pave"


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


def patch_attribute_prefix():
    """The decoder writes "{attribute}:" before the value (forced when answering): the first tokens
    it learns are a copy from a fixed place of the question, and the value is then asked with the
    attribute in the decoder's own context."""
    from deflate import questions
    from deflate.batching import to_device
    from deflate.decoding import span_trie
    from deflate.text import NONE_VALUE

    orig = questions.question_examples

    def question_examples(records, qb, qs, targets=None):
        ex = orig(records, qb, qs, targets)
        if targets is None:
            return ex
        return [Example(e.ids, e.row, qb.ids(e.key.attribute + ":") + e.target, e.key) for e in ex]

    @torch.no_grad()
    def generate_values(gen, qb, batcher, examples, decode, device="cpu", progress=False, spans=True, **_):
        gen.eval()
        out = [""] * len(examples)
        for idx in batcher.batches(examples, decode["batch_size"], shuffle=False, bucket=True):
            batch = to_device(batcher.collate([examples[i] for i in idx]), device)
            heads = [qb.ids(examples[i].key.attribute + ":") for i in idx]
            none = [qb.value(NONE_VALUE)[:-1]]  # as decoding.generate_values: a span, or d-'s None
            tries = [span_trie(examples[i].ids, qb.max_value_len, none) for i in idx]

            def allowed(b, sent):
                prefix, head = sent.tolist()[1:], heads[b]
                if len(prefix) < len(head):
                    return [head[len(prefix)]]
                rest = prefix[len(head):]
                nxt = tries[b].next_tokens(rest)
                return (nxt + [qb.eos_id] if rest else nxt) or [qb.eos_id]
            seqs = gen.generate(batch, max_new_tokens=decode["max_new_tokens"] + 8, num_beams=decode["num_beams"],
                                do_sample=False, prefix_allowed_tokens_fn=allowed)
            for i, s in zip(idx, seqs.tolist()):
                out[i] = qb.decode(s)
        return out

    questions.question_examples = question_examples
    train_generator.generate_values = generate_values


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
        return ex

    def fit(model, examples, batcher, cfg, **kw):
        t0 = time.perf_counter()
        if args.synthetic:  # data-free: copy_learning.py's task, short then long inputs
            short, long = args.synthetic
            g = torch.Generator().manual_seed(seed)
            opt = torch.optim.Adamax(model.t5.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
            model.train()
            for step in range(short + long):
                x, y = copy_learning.batch(g, cfg["batch_size"], 20 if step < short else 100, len(seen["qb"].tok))
                loss = model.t5(input_ids=x, labels=y).loss
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.t5.parameters(), cfg["grad_clip"])
                opt.step()
                if step % 250 == 0:
                    print(f"[synthetic copy] step {step}: loss {loss.item():.3f}", flush=True)
        if args.warmup:  # copy questions in short inputs
            q = seen["qb"]
            short_qb = QuestionBuilder(q.tok, "en", args.warmup_len, q.max_value_len, "as_in_text")
            warm = copy_questions(seen["records"], short_qb, args.warmup_k, np.random.default_rng(seed), args.marker)
            print(f"[warmup] {len(warm)} copy questions of <= {args.warmup_len} tokens, {args.warmup} epochs")
            orig_fit(model, warm, batcher, dict(cfg, epochs=args.warmup),
                     **dict(kw, ckpt_dir=kw["ckpt_dir"].parent / "warmup", validate=lambda m: {"score": 0.0},
                            run_hash=kw["run_hash"] + "-warmup", tracker=None, name="warmup"))
        print(f"[copy] warm-up {time.perf_counter() - t0:.0f}s")
        return orig_fit(model, examples, batcher, cfg, **kw)

    train_generator.qa_examples = qa
    if args.synthetic or args.warmup:
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
    ap.add_argument("--synthetic", type=int, nargs=2, default=None, metavar=("SHORT", "LONG"),
                    help="steps of copy_learning.py's synthetic task (20-token, then 100-token inputs) first")
    ap.add_argument("--attr-prefix", action="store_true", help="the decoder writes '{attribute}:' first")
    ap.add_argument("--marker", action="store_true", help="warm-up: copy after a <CLS> marker")
    ap.add_argument("--warmup-k", type=int, default=8, help="warm-up copy questions per product")
    args = ap.parse_args()
    p = load_params(PIPE / "params.yaml")
    for s in args.sets:
        key, _, val = s.partition("=")
        *head, last = key.split(".")
        node = p
        for k in head:
            node = node[k]
        node[last] = yaml.safe_load(val)
    p["tracking"]["enabled"] = False
    p["model"]["use_discriminator"] = not args.d_minus
    dev = args.work / "dev"
    if not (dev / "schema.json").exists():
        raise SystemExit("run benchmarks/wdc_dev.py once first (it builds the dev folder, test := val)")
    name = args.name or "gen_" + "_".join(s.replace("/", "_") for s in args.sets)
    out = args.work / "gen_runs" / name
    shutil.rmtree(out, ignore_errors=True)
    patch_training(args, p["seed"])
    if args.attr_prefix:
        patch_attribute_prefix()
    t0 = time.perf_counter()
    r = train_generator.run(p, dev, args.work / "no_tokens", out / "generator", out / "ckpt")
    hist = json.loads((out / "generator" / "history.json").read_text())
    res = {"name": name, "sets": args.sets, "d_minus": args.d_minus, "best": r["best_val_accuracy"],
           "curve": [h["val_score"] for h in hist], "loss": round(hist[-1]["train_loss"], 3),
           "seconds": round(time.perf_counter() - t0, 1)}
    print(json.dumps(res))
    with open(args.work / "gen_results.jsonl", "a") as f:
        f.write(json.dumps(res) + "\n")


if __name__ == "__main__":
    main()
