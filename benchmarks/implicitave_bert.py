"""A pretrained BERT encoder under DEFLATE's generator on ImplicitAVE (#32 items 2-3, #31 item 3),
val only: the packaged all-MiniLM-L6-v2 (``minilm-l6``, 6 layers, hidden 384) as the encoder of an
encoder-decoder generator (transformers' ``EncoderDecoderModel``: ``BertModel`` + a ``BertLMHeadModel``
decoder of ``--decoder-layers`` layers with cross-attention, both over MiniLM's WordPiece vocabulary),
trained on ImplicitAVE's train rows to write each row's value, then asked to rank each val question's
closed option list by the mean token log-prob of every candidate: the pipeline's `constrained` mode,
the "DEFLATE alone" row. No lexical score enters. The arm `--init random` is the same architecture
from random weights (the checkpoint's config only).

The val questions are `implicitave_val_gap.py`'s seeded sample (4,000 of val's gold questions, the
committed bundle's option lists): its figures (generator 75.17, lexical 79.65) compare one to one.
Never reads eval_visible. Appends one JSON line per run to ``--out``.

    python benchmarks/implicitave_bert.py --checkpoint models/pretrained/minilm-l6 [--init random]
        [--epochs 1] [--train-max 0] [--kernels native]
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

from deflate.infra import kernels
from deflate.infra.config import load_params


def arguments() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pipeline", type=Path, default=Path("pipelines/implicitave"))
    ap.add_argument("--checkpoint", type=Path, required=True,
                    help="a folder made by `deflate checkpoint minilm-l6 --out DIR` (its files are verified)")
    ap.add_argument("--init", choices=("pretrained", "random"), default="pretrained")
    ap.add_argument("--decoder-layers", type=int, default=2)
    ap.add_argument("--epochs", type=float, default=1.0, help="passes over the (sub-sampled) train rows")
    ap.add_argument("--train-max", type=int, default=0, help="train rows, a seeded sample (0 = all)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr-encoder", type=float, default=1e-4)
    ap.add_argument("--lr-decoder", type=float, default=1e-3)
    ap.add_argument("--max-len", type=int, default=48, help="question word pieces (the pipeline's text.max_len)")
    ap.add_argument("--sample", type=int, default=4000, help="val questions (implicitave_val_gap.py's sample)")
    ap.add_argument("--kernels", default="", help="kernel setting (default: the pipeline's repro.kernels)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/implicitave_bert.jsonl"))
    return ap.parse_args()


def length_buckets(rows: list, size: int, epochs: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Batches of ``size`` row indices, ``epochs`` passes: each pass shuffled, cut in pools of 50
    batches, each pool sorted by text length (less padding), the batches' order shuffled again."""
    length = np.array([len(n) + len(d) for _, n, d, _ in rows])
    out = []
    for _ in range(epochs):
        perm = rng.permutation(len(rows))
        batches = []
        for pool in np.array_split(perm, max(1, math.ceil(len(rows) / (50 * size)))):
            pool = pool[np.argsort(length[pool], kind="stable")]
            batches += [pool[i:i + size] for i in range(0, len(pool), size)]
        out += [batches[i] for i in rng.permutation(len(batches))]
    return out


def main():
    args = arguments()
    p = load_params(args.pipeline / "params.yaml")
    kernels.pin(args.kernels or p["repro"]["kernels"], p["repro"]["num_threads"])

    import torch
    from transformers import (BertConfig, BertLMHeadModel, BertModel, BertTokenizerFast, EncoderDecoderModel)
    from transformers.utils import logging as hf_logging
    from tqdm import tqdm

    from deflate.answering.engine import Deflate
    from deflate.data.splits import grouped_labels, load_data
    from deflate.model.pretrained import materialized
    from deflate.model.questions import gold_questions

    hf_logging.set_verbosity_error()  # the decoder's fresh cross-attention is reported below instead
    provenance = materialized(args.checkpoint)
    torch.manual_seed(p["seed"])
    rng = np.random.default_rng(p["seed"])
    folder = str(args.checkpoint)
    tok = BertTokenizerFast.from_pretrained(folder)
    dcfg = BertConfig.from_pretrained(folder, is_decoder=True, add_cross_attention=True,
                                      num_hidden_layers=args.decoder_layers)
    missing = []
    if args.init == "pretrained":
        enc = BertModel.from_pretrained(folder, add_pooling_layer=False)
        dec, info = BertLMHeadModel.from_pretrained(folder, config=dcfg, output_loading_info=True)
        missing = sorted({k.split(".layer.")[-1].split(".", 1)[-1] if ".layer." in k else k
                          for k in info["missing_keys"]})
    else:
        enc = BertModel(BertConfig.from_pretrained(folder), add_pooling_layer=False)
        dec = BertLMHeadModel(dcfg)
    model = EncoderDecoderModel(encoder=enc, decoder=dec)
    model.config.decoder_start_token_id = tok.cls_token_id
    model.config.pad_token_id = tok.pad_token_id

    # --- data: the pipeline's processed splits and the committed bundle's option lists ---------------
    engine = Deflate.load(args.pipeline / "models" / "deflate")
    sep = engine.sep
    processed, tokens = args.pipeline / "data" / "processed", args.pipeline / "data" / "tokens"

    def rows(split: str):
        data = load_data(processed, tokens, split)
        qs = gold_questions(data.records)
        return [(q.attribute, data.records[q.row].name, data.records[q.row].description,
                 sep.join(grouped_labels(data.records[q.row])[q.attribute])) for q in qs]

    train = rows("train")
    if args.train_max and args.train_max < len(train):
        train = [train[i] for i in np.sort(rng.choice(len(train), args.train_max, replace=False))]
    val = rows("val")
    if args.sample and args.sample < len(val):  # implicitave_val_gap.val_sample's draw: same seed, same call
        keep = np.sort(np.random.default_rng(p["seed"]).choice(len(val), args.sample, replace=False))
        val = [val[i] for i in keep]

    def encode(batch):
        return tok([a for a, *_ in batch], [f"{n} {d}".strip() for _, n, d, _ in batch], truncation="only_second",
                   max_length=args.max_len, padding=True, return_tensors="pt")

    def value_ids(values: list[str]) -> torch.Tensor:
        ids = tok(values, add_special_tokens=False)["input_ids"]
        ids = [x[:15] + [tok.sep_token_id] for x in ids]  # [SEP] ends a value
        width = max(map(len, ids))
        return torch.tensor([x + [-100] * (width - len(x)) for x in ids])

    # --- training ------------------------------------------------------------------------------------
    steps = math.ceil(args.epochs * len(train) / args.batch)
    enc_params = list(model.encoder.parameters())
    dec_params = [q for n, q in model.named_parameters() if not n.startswith("encoder.")]
    opt = torch.optim.AdamW([{"params": enc_params, "lr": args.lr_encoder},
                             {"params": dec_params, "lr": args.lr_decoder}], weight_decay=0.01)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / warm, max(0.0, (steps - s) / (steps - warm))))
    model.train()
    t0 = time.perf_counter()
    batches = length_buckets(train, args.batch, math.ceil(args.epochs), rng)
    losses = []
    for s in tqdm(range(steps), desc=f"train {args.init}", mininterval=10):
        batch = [train[i] for i in batches[s]]
        x = encode(batch)
        out = model(input_ids=x["input_ids"], attention_mask=x["attention_mask"],
                    labels=value_ids([v for *_, v in batch]))
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(out.loss.item())
    train_s = time.perf_counter() - t0

    # --- val: every candidate of the attribute, by mean token log-prob ---------------------------------
    model.eval()
    t1 = time.perf_counter()
    right, n = 0, 0
    by_attr: dict[str, list[int]] = {}
    with torch.no_grad():
        for b in tqdm(range(0, len(val), 32), desc="val", mininterval=10):
            batch = val[b:b + 32]
            x = encode(batch)
            h = model.encoder(input_ids=x["input_ids"], attention_mask=x["attention_mask"]).last_hidden_state
            owner, cands = [], []
            for k, (a, *_rest) in enumerate(batch):
                for c in engine.candidates.get(a, []):
                    owner.append(k)
                    cands.append(c)
            labels = value_ids(cands)
            idx = torch.tensor(owner)
            dec_in = torch.cat([torch.full((len(cands), 1), tok.cls_token_id), labels[:, :-1].clamp(min=0)], 1)
            logits = model.decoder(input_ids=dec_in, encoder_hidden_states=h[idx],
                                   encoder_attention_mask=x["attention_mask"][idx]).logits
            lp = torch.log_softmax(logits.float(), -1).gather(-1, labels.clamp(min=0)[..., None]).squeeze(-1)
            keep = labels != -100
            mean = ((lp * keep).sum(1) / keep.sum(1)).tolist()
            best: dict[int, tuple[float, str]] = {}
            for k, c, m in zip(owner, cands, mean):
                if k not in best or m > best[k][0]:  # first of equal scores wins
                    best[k] = (m, c)
            for k, (a, _, _, gold) in enumerate(batch):
                ok = int(k in best and best[k][1] == gold)
                right += ok
                n += 1
                by_attr.setdefault(a, [0, 0])
                by_attr[a][0] += ok
                by_attr[a][1] += 1
    val_s = time.perf_counter() - t1
    res = {"init": args.init, "checkpoint": provenance.get("name"), "decoder_layers": args.decoder_layers,
           "epochs": args.epochs, "train_rows": len(train), "steps": steps, "batch": args.batch,
           "lr_encoder": args.lr_encoder, "lr_decoder": args.lr_decoder, "max_len": args.max_len,
           "val_questions": n, "val_exact": round(100 * right / n, 2),
           "train_loss_last_100": round(float(np.mean(losses[-100:])), 4),
           "train_seconds": round(train_s, 1), "train_examples_per_s": round(steps * args.batch / train_s, 1),
           "val_seconds": round(val_s, 1), "decoder_keys_not_in_checkpoint": missing,
           "by_attribute": {a: round(100 * r / m, 1) for a, (r, m) in sorted(by_attr.items(), key=lambda kv: -kv[1][1])},
           "kernels": kernels.describe()["kernels"], "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a", encoding="utf-8") as f:
        f.write(json.dumps(res) + "\n")
    print(json.dumps({k: v for k, v in res.items() if k != "by_attribute"}))


if __name__ == "__main__":
    main()
