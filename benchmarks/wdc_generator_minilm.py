"""Does the pretrained MiniLM encoder (``minilm-l6``, #32) under DEFLATE's generator answer WDC-PAVE
better than the generator from scratch? WDC-PAVE val only (wdc_dev.py's dev folder: eval_visible
never read).

The arm: the checkpoint's whole 6-layer encoder, frozen, reads each offer once (its name and
description, as the question holds them); each question token of the product gets the mean of the
encoder's last states over the word pieces its characters overlap, through a learned
``Linear(384, d_model)`` that starts at zero, added to the token's embedding at the T5 encoder's
input. The T5 (its 2 encoder layers over those inputs, its decoder and the copy path) trains as the
pipeline trains the shared generator: same examples, seed, kernels, EMA and selection by val exact.
At step 0 the model is the committed one; the pretrained states come in only as far as training
finds them useful. The answers stay in the generator's own cased pieces, so the copy path copies
them as written (MiniLM's vocabulary is uncased: docs/wdc_pave.md, "Values that span decoding cannot
reach").

Why frozen and beside, not instead: fine-tuning the 22.7M encoder per (offer, attribute) costs
13 examples/s on ImplicitAVE's 48-token questions (docs/implicitave.md); WDC's are ~117 tokens, and
the generator sees 16k of them per epoch, 16 epochs. Frozen, the encoder runs once per offer.

    python benchmarks/wdc_generator_minilm.py --checkpoint DIR [--work DIR] [--smoke]

DIR is ``deflate checkpoint minilm-l6 --out DIR`` (verified here again). Writes
``benchmarks/results/wdc_generator_minilm.json``: the val exact curve beside the committed one.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch
from torch import nn
from transformers import AutoTokenizer, BertModel

from deflate.infra import kernels
from deflate.infra.runtime import read_cost
from deflate.model import mul_t5
from deflate.model import train as training
from deflate.model.pretrained import materialized
from deflate.stages import train_generator

sys.path.insert(0, str(Path(__file__).parent))
from wdc_dev import dev_folder, params_with  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "wdc_generator_minilm.json"
# the committed shared generator's curve: the EMA 0.998 copy of that probe, byte for byte the pipeline's (docs/wdc_pave.md)
COMMITTED = Path(__file__).parent / "results" / "wdc_generator_ema.json"
MAX_PIECES = 320  # the question holds at most 160 of the generator's pieces of the offer


class OfferStates:
    """The frozen encoder's last states per offer text, and per question the states under its tokens."""

    def __init__(self, folder: Path):
        self.provenance = materialized(folder)  # every file checked against its pinned SHA-256
        self.tok = AutoTokenizer.from_pretrained(str(folder))
        self.bert = BertModel.from_pretrained(str(folder), add_pooling_layer=False).eval()
        self.dim = self.bert.config.hidden_size
        self.by_text: dict[str, tuple[torch.Tensor, list[tuple[int, int]]]] = {}
        self.by_question: dict[tuple[int, ...], torch.Tensor] = {}
        self.seconds, self.missed = 0.0, 0

    @torch.no_grad()
    def encode(self, texts: list[str], batch: int = 16) -> None:
        todo = sorted({t for t in texts if t not in self.by_text}, key=len)
        t0 = time.perf_counter()
        for i in range(0, len(todo), batch):
            part = todo[i:i + batch]
            enc = self.tok(part, truncation=True, max_length=MAX_PIECES, padding=True, return_tensors="pt",
                           return_offsets_mapping=True)
            offsets = enc.pop("offset_mapping")
            states = self.bert(**enc).last_hidden_state
            for k, text in enumerate(part):
                keep = [j for j, (a, b) in enumerate(offsets[k].tolist()) if b > a]  # not [CLS], [SEP], pad
                self.by_text[text] = (states[k, keep].to(torch.float16), [tuple(offsets[k, j].tolist()) for j in keep])
        self.seconds += time.perf_counter() - t0

    def question(self, qb, name: str, desc: str, attr: str, ids: list[int]) -> None:
        """The states under each token of ``ids`` (``qb.attribute_question`` rebuilt with character
        offsets; template tokens and the tail get zeros). A question that does not rebuild to ``ids``
        is counted in ``missed`` and gets zeros."""
        t = qb.t
        head_text = t["head"].format(name=name, attr=attr)
        desc_text = t["desc"].format(desc=desc) if desc else ""
        text = name + desc_text  # the offer as the encoder read it: name, then " (desc)"
        name_at = head_text.rindex(name) if name else len(head_text)
        head, head_off = self._pieces(qb, head_text)
        tail = qb.ids(t["tail"].format(attr=attr))
        budget = qb.max_len - len(tail)
        keep_head = max(budget, 1)
        head, head_off = head[:keep_head], head_off[:keep_head]
        spans = [(a - name_at, b - name_at) for a, b in head_off]
        d, d_off = [], []
        if desc and budget - len(head) > 3:
            d, d_off = self._pieces(qb, desc_text)
            room = budget - len(head)
            if len(d) > room:
                d, d_off = d[: room - 1] + d[-1:], d_off[: room - 1] + d_off[-1:]
        spans += [(a + len(name), b + len(name)) for a, b in d_off] + [(0, 0)] * len(tail)
        out = torch.zeros(len(ids), self.dim, dtype=torch.float16)
        if head + d + tail != ids:
            self.missed += 1
        else:
            states, wp = self.by_text[text]
            for j, (a, b) in enumerate(spans):
                under = [k for k, (x, y) in enumerate(wp) if x < b and a < y and b > 0]
                if under:
                    out[j] = states[under].float().mean(0).to(torch.float16)
        self.by_question[tuple(ids)] = out

    @staticmethod
    def _pieces(qb, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        enc = qb.tok(text, add_special_tokens=False, return_offsets_mapping=True)
        if enc["input_ids"] != qb.ids(text):
            raise RuntimeError(f"offsets tokenization differs from the builder's for {text[:60]!r}")
        return enc["input_ids"], [tuple(o) for o in enc["offset_mapping"]]

    def batch(self, input_ids: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(*input_ids.shape, self.dim)
        for b, row in enumerate(input_ids.tolist()):
            n = len(row)
            while n and row[n - 1] == 0:  # right padding (pad id 0)
                n -= 1
            f = self.by_question[tuple(row[:n])]
            out[b, : len(f)] = f.float()
        return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", type=Path, required=True, help="a `deflate checkpoint minilm-l6 --out` folder")
    ap.add_argument("--work", type=Path, default=Path("/tmp/wdc_dev"))
    ap.add_argument("--smoke", action="store_true", help="1 epoch, 50 val questions, no results file (a check)")
    args = ap.parse_args()
    p = params_with(["generator.epochs=1", "generator.val_max=50"] if args.smoke else [])
    kernels.pin(p["repro"]["kernels"], p["repro"]["num_threads"])
    p["generator"]["shared_from"] = ""  # trained here
    dev = dev_folder(p, args.work)
    states = OfferStates(args.checkpoint)

    qa_examples = train_generator.qa_examples

    def with_states(records, qb, *a, **kw):  # the examples, and the encoder's states under each question
        examples = qa_examples(records, qb, *a, **kw)
        states.encode([r.name + (qb.t["desc"].format(desc=r.description) if r.description else "") for r in records])
        for e in examples:
            r = records[e.key.row]
            states.question(qb, r.name, r.description, e.key.attribute, e.ids)
        return examples

    make_optimizer = training.make_optimizer

    def with_projection(model, cfg):  # the projection joins the model (and so its optimiser and EMA copy)
        proj = nn.Linear(states.dim, model.embed.text.embedding_dim)
        nn.init.zeros_(proj.weight)
        nn.init.zeros_(proj.bias)
        model.embed.minilm = proj
        return make_optimizer(model, cfg)

    embed = mul_t5.MultimodalEmbedding.forward

    def with_offer_states(self, input_ids, img_start=None, image=None):
        e = embed(self, input_ids, img_start, image)
        proj = getattr(self, "minilm", None)
        return e if proj is None else e + proj(states.batch(input_ids)).to(e.dtype)

    train_generator.qa_examples = with_states
    training.make_optimizer = with_projection
    mul_t5.MultimodalEmbedding.forward = with_offer_states
    out = args.work / "gen_runs" / "minilm"
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    train_generator.run(p, dev, args.work / "no_tokens", out / "generator", out / "ckpt")
    seconds = round(time.perf_counter() - t0, 1)

    curve = [h["val_score"] for h in json.loads((out / "generator" / "history.json").read_text())]
    committed = json.loads(COMMITTED.read_text())["ema"]["0.998"]["val_exact"]
    cost = read_cost(out / "generator")
    result = {"arm": "frozen minilm-l6 states added to the T5 encoder's input (zero-initialised projection)",
              "val_exact": curve, "best": max(curve), "best_epoch": curve.index(max(curve)) + 1,
              "committed_val_exact": committed, "committed_best": max(committed),
              "questions": len(states.by_question), "questions_not_rebuilt": states.missed,
              "offers_encoded": len(states.by_text), "encoder_seconds": round(states.seconds, 1),
              "seconds": seconds, "examples_per_s": cost.get("examples_per_s"),
              "checkpoint": {k: states.provenance[k] for k in ("name", "package", "version")},
              "kernels": kernels.describe()["kernels"]}
    if not args.smoke:
        RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
