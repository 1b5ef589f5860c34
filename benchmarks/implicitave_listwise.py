"""Would the generator rank ImplicitAVE's option lists better if it were trained to rank them? Val
only (#31 item 3).

DEFLATE alone answers an ImplicitAVE question with the option of highest mean token log-prob under
the generator ("constrained"), yet the generator is trained by teacher forcing on the gold value
alone: nothing in its loss says the gold must beat the other options of the list. This probe
fine-tunes the committed generator with a listwise loss on that very score: for each training
question, a softmax over the mean token log-probs of the gold and up to ``--negatives`` other options
of the attribute, cross-entropy on the gold, plus ``--mle`` times the gold's own token loss. Then it
scores the same 4,000 val questions as ``implicitave_val_gap.py`` before and after (generator only;
no discriminator or lexical score enters) and writes the per-attribute figures.

    python benchmarks/implicitave_listwise.py [--rows 16000] [--negatives 7] [--lr 5e-4]
        [--out benchmarks/results/implicitave_listwise.json] [--smoke]

Never reads eval_visible. The settings are fixed before the run (docs/implicitave.md).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from deflate.data.splits import grouped_labels, load_data
from deflate.infra.files import write_json
from deflate.model.batching import Example, to_device
from deflate.model.questions import gold_questions
from deflate.model.train import make_optimizer

sys.path.insert(0, str(Path(__file__).parent))
from implicitave_val_gap import rank_of_gold, val_sample  # noqa: E402


def token_mean_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per row, the mean log-prob of its labelled tokens: ``target_mean_logprobs``'s score, with its
    gradient (the answering code's copy returns numpy)."""
    mask = labels != -100
    lp = torch.log_softmax(logits.float(), -1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (lp * mask).sum(1) / mask.sum(1)


def top1(engine, batcher, records, exs, golds: list[int]) -> tuple[float, list[bool]]:
    """Val exact of the generator's best option (a tie counts against the gold, as in val_gap)."""
    scores = engine.candidate_scores(batcher, records, exs, sources=("generator",), progress=False)["generator"]
    right = [rank_of_gold(s, g) == 1 for s, g in zip(scores, golds)]
    return round(100 * float(np.mean(right)), 2), right


def gold_index(engine, records, questions) -> list[int]:
    out = []
    for q in questions:
        opts = engine.candidates.get(q.attribute, [])
        gold = engine.sep.join(grouped_labels(records[q.row])[q.attribute])
        out.append(opts.index(gold) if gold in opts else -1)
    return out


def listwise_groups(engine, exs: list[Example], golds: list[int], negatives: int,
                    rng: np.random.Generator) -> list[list[Example]]:
    """Per training question whose gold is an option: the gold first, then up to ``negatives`` other
    options drawn without replacement, each as the same question with that option as target."""
    groups = []
    for e, g in zip(exs, golds):
        opts = engine.candidates.get(e.key.attribute, [])
        if g < 0 or len(opts) < 2:
            continue
        others = [j for j in range(len(opts)) if j != g]
        pick = rng.choice(others, size=min(negatives, len(others)), replace=False).tolist()
        groups.append([Example(e.ids, e.row, target=engine.qb.value(opts[j]), key=e.key) for j in [g, *pick]])
    return groups


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pipeline", type=Path, default=Path("pipelines/implicitave"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/implicitave_listwise.json"))
    ap.add_argument("--sample", type=int, default=4000, help="val questions (val_gap's seeded sample)")
    ap.add_argument("--rows", type=int, default=16000, help="training questions, a seeded sample")
    ap.add_argument("--negatives", type=int, default=7, help="other options per training question")
    ap.add_argument("--questions-per-step", type=int, default=16)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--mle", type=float, default=1.0, help="weight of the gold's own token loss")
    ap.add_argument("--smoke", action="store_true", help="200 rows, 200 val questions, no results file")
    args = ap.parse_args()
    if args.smoke:
        args.rows, args.sample = 200, 200
    p, engine, val, questions = val_sample(args.pipeline, args.sample)
    torch.manual_seed(p["seed"])
    rng = np.random.default_rng(p["seed"])
    vb = engine.batcher(val.image, val.has_image)
    val_exs, val_gold = engine.questions(val.records, questions), gold_index(engine, val.records, questions)
    t0 = time.perf_counter()
    before, right_before = top1(engine, vb, val.records, val_exs, val_gold)
    print(f"[listwise] val exact before: {before} ({time.perf_counter() - t0:.0f} s)")

    train = load_data(args.pipeline / "data" / "processed", args.pipeline / "data" / "tokens", "train")
    tq = gold_questions(train.records)
    tq = [tq[i] for i in np.sort(rng.choice(len(tq), min(args.rows, len(tq)), replace=False))]
    groups = listwise_groups(engine, engine.questions(train.records, tq), gold_index(engine, train.records, tq),
                             args.negatives, rng)
    tb = engine.batcher(train.image, train.has_image)
    gen = engine.gen.train()
    opt = make_optimizer(gen, {**p["generator"], "lr": args.lr})  # the generator's optimiser, at the probe's lr
    order = rng.permutation(len(groups))
    n = args.questions_per_step
    t1, losses = time.perf_counter(), []
    bar = tqdm(range(0, len(order), n), desc="listwise", unit="step")
    for s in bar:
        chunk = [groups[i] for i in order[s:s + n]]
        flat = [x for g in chunk for x in g]
        batch = to_device(tb.collate(flat), engine.device)
        score = token_mean_logprobs(gen(batch).logits, batch["labels"])
        sizes = [len(g) for g in chunk]
        padded = torch.full((len(chunk), max(sizes)), -torch.inf)
        starts = np.cumsum([0, *sizes[:-1]])
        for k, (a, m) in enumerate(zip(starts, sizes)):
            padded[k, :m] = score[a:a + m]
        gold_lp = padded[:, 0]
        loss = torch.nn.functional.cross_entropy(padded, torch.zeros(len(chunk), dtype=torch.long)) - args.mle * gold_lp.mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(gen.parameters(), p["generator"]["grad_clip"])
        opt.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
    train_seconds = round(time.perf_counter() - t1, 1)
    gen.eval()
    after, right_after = top1(engine, vb, val.records, val_exs, val_gold)
    print(f"[listwise] val exact after: {after} (before {before}); {train_seconds} s training, "
          f"{sum(len(g) for g in groups) / max(train_seconds, 1e-9):.0f} sequences/s")
    per: dict[str, Counter] = {}
    for q, b, a in zip(questions, right_before, right_after):
        c = per.setdefault(q.attribute, Counter())
        c["n"] += 1
        c["before"] += b
        c["after"] += a
    rows = [{"attribute": k, "n": c["n"], "before": round(100 * c["before"] / c["n"], 1),
             "after": round(100 * c["after"] / c["n"], 1)} for k, c in sorted(per.items(), key=lambda kv: -kv[1]["n"])]
    res = {"split": "val", "questions": len(questions), "before": before, "after": after,
           "settings": {k: getattr(args, k) for k in ("rows", "negatives", "questions_per_step", "lr", "mle")},
           "training_questions": len(groups), "training_sequences": sum(len(g) for g in groups),
           "train_seconds": train_seconds, "last_loss_mean50": round(float(np.mean(losses[-50:])), 4),
           "generator": str(engine.generator_dir), "by_attribute": rows}
    if not args.smoke:
        write_json(args.out, res, indent=1)
    print(json.dumps({k: v for k, v in res.items() if k != "by_attribute"}))


if __name__ == "__main__":
    main()
