"""Why does the discriminator lose to d-? Variants of negatives and discriminator training on the
pipeline's trained generator, scored on **val only** (never test), beside d-'s val answers.

For each variant: harvest negatives, train the discriminator, answer every val question, then
* AUC: how well P(true) separates attributes the product has from those it lacks (threshold-free);
* AP / AVE F1 with a two-fold threshold (chosen on one half of the val products, applied to the
  other half, and the other way round), so no variant is scored at a threshold fit to its own data.
d- (models/systems/d_minus-desire, its val predictions) is the reference. Needs the default
pipeline's outputs (dvc repro). Every variant starts from BASE (the pre-#17 setting).

    python benchmarks/discriminator_dev.py [--variants base epochs6 all_absent ...]
    python benchmarks/discriminator_dev.py --pipeline pipelines/wdc_pave --variants base ...  # another pipeline
    python benchmarks/discriminator_dev.py --system deflate-mepave --variants base ...       # Table 3's twin
"""
import argparse
import copy
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from deflate import model as model_lib
from deflate import prediction_files
from deflate.config import load_params
from deflate.dataset import load_data, load_schema
from deflate.engine import Deflate
from deflate.metrics import evaluate, gold_from_records
from deflate.questions import Claim, gold_questions
from deflate.stages import harvest_negatives, train_discriminator
from deflate.stages.evaluate import FREE, answer_split, select

# every variant starts from the pre-#17 default (params.yaml then): the paper's claim with its value,
# 3 absent attributes per product as negatives, 2 epochs
BASE = {"negatives.per_product": 3, "discriminator.epochs": 2, "discriminator.claim_value": True}
# claims without their value, every absent attribute a negative
NO_VALUE = {"negatives.per_product": -1, "discriminator.claim_value": False}
VARIANTS = {  # name: overrides of params.yaml
    "base": {},  # = BASE
    "epochs6": {"discriminator.epochs": 6},
    "all_absent": {"negatives.per_product": -1},
    "all_absent_epochs6": {"negatives.per_product": -1, "discriminator.epochs": 6},
    "neg6_epochs4": {"negatives.per_product": 6, "discriminator.epochs": 4},
    "frozen_epochs6": {"discriminator.freeze_encoder": True, "discriminator.epochs": 6},
    "all_absent_epochs12": {"negatives.per_product": -1, "discriminator.epochs": 12},
    # not a param: the head reads an attention-weighted mean of every encoder state instead of <CLS>
    "attention_pool_all_absent_epochs6": {"negatives.per_product": -1, "discriminator.epochs": 6,
                                          "_pooling": "attention"},
    "attention_pool_no_value_all_absent_epochs6": {**NO_VALUE, "discriminator.epochs": 6, "_pooling": "attention"},
    # claims without their value ("<CLS> question"): discriminator.claim_value false (a param since #17)
    "no_value_all_absent_epochs6": {**NO_VALUE, "discriminator.epochs": 6},
    "no_value_all_absent_epochs12": {**NO_VALUE, "discriminator.epochs": 12},
    # the same with another training seed (generator unchanged): is the no-value gain more than noise?
    "no_value_all_absent_epochs6_seed43": {**NO_VALUE, "discriminator.epochs": 6, "seed": 43},
    # a gentler fine-tuning of the generator's encoder copy (val selection kept an early epoch at 2e-3)
    "no_value_all_absent_epochs6_lr1e-3": {**NO_VALUE, "discriminator.epochs": 6,
                                           "discriminator.lr": 0.001},
    "no_value_all_absent_epochs6_lr5e-4": {**NO_VALUE, "discriminator.epochs": 6,
                                           "discriminator.lr": 0.0005},
    "no_value_all_absent_epochs6_lr4e-3": {**NO_VALUE, "discriminator.epochs": 6,
                                           "discriminator.lr": 0.004},
    # not a param: positives also carry the generator's own answer (what evaluation asks D about)
    "generated_positives_all_absent_epochs6": {"negatives.per_product": -1, "discriminator.epochs": 6,
                                               "_generated_positives": True},
    # not a param: half of the *training* claims lose their value (scored with values, as the paper)
    "value_dropout50_all_absent_epochs6": {"negatives.per_product": -1, "discriminator.epochs": 6,
                                           "_value_dropout": 0.5},
    # discriminator.mark_value (since 2026-11-27): a learned mark on the claimed value's tokens
    "marked_value_all_absent_epochs6": {"negatives.per_product": -1, "discriminator.epochs": 6,
                                        "discriminator.mark_value": True},
}


class AttentionPooled(model_lib.Discriminator):
    """Diagnostic only: one learned query scores every encoder state; the head reads their weighted mean."""

    def __init__(self, encoder, embed, freeze_encoder: bool = False, mark_value: bool = False):
        super().__init__(encoder, embed, freeze_encoder, mark_value)
        self.query = torch.nn.Linear(embed.text.embedding_dim, 1)

    def forward(self, batch):
        emb = self.embed(batch["input_ids"], batch.get("img_start"), batch.get("image"))
        h = self.encoder(inputs_embeds=emb, attention_mask=batch["attention_mask"]).last_hidden_state
        w = self.query(h).squeeze(-1).masked_fill(batch["attention_mask"] == 0, float("-inf")).softmax(-1)
        return self.head((w.unsqueeze(-1) * h).sum(1)).squeeze(-1)


def use_pooling(kind: str) -> None:
    """Swap the discriminator class the stage trains and the engine loads (this process only)."""
    cls = AttentionPooled if kind == "attention" else ORIGINAL
    model_lib.Discriminator = train_discriminator.Discriminator = cls


ORIGINAL = model_lib.Discriminator


ORIGINAL_CLAIMS = train_discriminator.training_claims


def use_generated_positives(p, gen_dir: Path, on: bool) -> None:
    """Positives: every true pair with its gold values, plus (when the answer differs) the same pair
    with the generator's own answer, so training claims look like the claims evaluation scores."""
    if not on:
        train_discriminator.training_claims = ORIGINAL_CLAIMS
        return
    engine = harvest_negatives.generator_only(p, gen_dir, "cpu")
    generated = {}
    for split in ("train", "val"):
        data = load_data(Path("data/processed"), Path("data/tokens"), split)
        qs = gold_questions(data.records)
        for q, v in zip(qs, harvest_negatives.answers(engine, data, qs, split)):
            generated[(data.records[q.row].id, q.attribute)] = v

    def claims(records, negatives, sep):
        out, labels = ORIGINAL_CLAIMS(records, negatives, sep)
        extra = [Claim(c.question, generated[(records[c.question.row].id, c.question.attribute)])
                 for c, y in zip(out, labels) if y == 1.0]
        extra = [c for c, o in zip(extra, out) if c.value and c.value != o.value]
        return out + extra, labels + [1.0] * len(extra)
    train_discriminator.training_claims = claims


ORIGINAL_EXAMPLES = train_discriminator.claim_examples


def use_value_dropout(rate: float, seed: int) -> None:
    """The stage's first claim_examples call (the training claims) blanks the value of ``rate`` of them."""
    calls = []

    def examples(records, qb, claims, labels=None, **kw):
        if not calls and rate:
            drop = np.random.default_rng(seed).random(len(claims)) < rate
            claims = [Claim(c.question, "") if d else c for c, d in zip(claims, drop)]
        calls.append(1)
        return ORIGINAL_EXAMPLES(records, qb, claims, labels, **kw)
    train_discriminator.claim_examples = examples if rate else ORIGINAL_EXAMPLES


def override(p, changes: dict):
    p = copy.deepcopy(p)
    for key, v in changes.items():
        if key.startswith("_"):
            continue
        *head, last = key.split(".")
        d = p
        for h in head:
            d = d[h]
        d[last] = v
    return p


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Probability that a present attribute scores above an absent one (ties count half)."""
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores))
    s = scores[order]
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and s[j + 1] == s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    pos = labels.astype(bool)
    n1, n0 = pos.sum(), (~pos).sum()
    return float((ranks[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def two_fold(ans, records, sep, metric="ave") -> dict:
    """AP/AVE F1 on val with each half's threshold chosen on the other half."""
    gold, texts = gold_from_records(records)
    halves = [{r.id for k, r in enumerate(records) if k % 2 == h} for h in (0, 1)]
    grid = sorted(set(np.round(np.quantile(ans.probs, np.linspace(0, 1, 101)), 4).tolist()) | {0.5})

    def sub(d, ids):
        return {k: v for k, v in d.items() if k[0] in ids}

    pred, thresholds = {}, []
    for fit, apply in ((0, 1), (1, 0)):
        best = max(grid, key=lambda t: (evaluate(sub(gold, halves[fit]), sub(select(ans, records, t, sep), halves[fit]),
                                                 texts)[metric]["f1"], -abs(t - 0.5)))
        thresholds.append(best)
        pred.update(sub(select(ans, records, best, sep), halves[apply]))
    m = evaluate(gold, pred, texts)
    return {"ap_f1": m["ap"]["f1"], "ap_p": m["ap"]["p"], "ap_r": m["ap"]["r"], "ave_f1": m["ave"]["f1"],
            "thresholds": thresholds}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS))
    ap.add_argument("--out", default="benchmarks/results/discriminator_dev.json")
    ap.add_argument("--answers", default="", help="folder to keep each variant's val answers in (for analysis)")
    ap.add_argument("--pipeline", default="", help="another pipeline's folder (e.g. pipelines/wdc_pave): its params, "
                    "data, system@deflate generator and system@d_minus val answers instead of the default pipeline's")
    ap.add_argument("--system", default="", help="a system@ run of DEFLATE on other data (e.g. deflate-mepave), "
                    "with --system-data")
    ap.add_argument("--system-data", nargs=2, metavar=("TABLES", "TOKENS"),
                    default=("data/mepave/processed", "data/mepave"), help="that system's tables and image tokens")
    a = ap.parse_args()
    out = Path(a.out).resolve()
    processed, tokens, gen = Path("data/processed"), Path("data/tokens"), Path("models/generator")
    d_minus = Path("models/systems/d_minus-desire/predictions/val.jsonl")
    if a.pipeline:
        name = Path(a.pipeline).name
        os.chdir(a.pipeline)
        tokens = tokens if tokens.exists() else Path("data/no_tokens")  # text-only pipelines have no image tokens
        gen = gen if gen.exists() else Path(f"models/systems/deflate-{name}/generator")
        d_minus = Path(f"models/systems/d_minus-{name}/predictions/val.jsonl")
        d_minus = d_minus if d_minus.exists() else None
    if a.system:  # e.g. deflate-mepave: its tables, image tokens and generator (no d- was trained there)
        processed, tokens = Path(a.system_data[0]), Path(a.system_data[1])
        gen, d_minus = Path(f"models/systems/{a.system}/generator"), None
    base = load_params()
    base["tracking"]["enabled"] = False
    val = load_data(processed, tokens, "val")
    schema = load_schema(processed)
    gold, texts = gold_from_records(val.records)
    rows = d_minus_reference(gold, texts, d_minus)
    print(json.dumps(rows), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name in a.variants:
            changes = {**BASE, **VARIANTS[name]}
            p, w = override(base, changes), Path(tmp) / name
            use_pooling(VARIANTS[name].get("_pooling", "cls"))
            use_generated_positives(p, gen, VARIANTS[name].get("_generated_positives", False))
            use_value_dropout(VARIANTS[name].get("_value_dropout", 0.0), p["seed"])
            harvest_negatives.run(p, processed, tokens, gen, w / "neg")
            info = train_discriminator.run(p, processed, tokens, gen, w / "neg", w / "disc", w / "ckpt")
            engine = Deflate(gen, discriminator=w / "disc", lexical=None, decisions=FREE, decode=p["decode"],
                             claim_batch_size=p["discriminator"]["eval_batch_size"], device="cpu")
            ans = answer_split(engine, val, schema, "val")
            present = np.array([(val.records[q.row].id, q.attribute) in gold for q in ans.questions])
            if a.answers:
                Path(a.answers).mkdir(parents=True, exist_ok=True)
                Path(a.answers, f"{name}.jsonl").write_text("".join(json.dumps(
                    {"id": val.records[q.row].id, "attribute": q.attribute, "value": v, "p": float(s), "present": bool(t)},
                    ensure_ascii=False) + "\n" for q, v, s, t in zip(ans.questions, ans.values, ans.probs, present)))
            rows[name] = {**two_fold(ans, val.records, engine.sep), "auc": round(auc(ans.probs, present), 4),
                          "claims": info["examples"], "overrides": VARIANTS[name]}
            print(json.dumps({name: rows[name]}), flush=True)
    report(rows, out)


def d_minus_reference(gold: dict, texts: dict,
                      path: Path | None = Path("models/systems/d_minus-desire/predictions/val.jsonl")) -> dict:
    """d-'s own val answers (the pipeline's system@d_minus), scored like the variants (none: {})."""
    return {} if path is None else {"d_minus (reference)": score_answers(gold, texts, path)}


def score_answers(gold: dict, texts: dict, path: Path) -> dict:
    """AP / AVE F1 of a predictions file's val answers, as they are (no threshold to choose)."""
    m = evaluate(gold, prediction_files.read(path), texts)
    return {"ap_f1": m["ap"]["f1"], "ap_p": m["ap"]["p"], "ap_r": m["ap"]["r"], "ave_f1": m["ave"]["f1"]}


def report(rows: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=1, ensure_ascii=False) + "\n")
    print("| variant | AUC | AP F1 (P / R) | AVE F1 |\n|---|---:|---:|---:|")
    for n, r in rows.items():
        print(f"| {n} | {r.get('auc', '–')} | {r['ap_f1']} ({r['ap_p']} / {r['ap_r']}) | {r['ave_f1']} |")


if __name__ == "__main__":
    main()
