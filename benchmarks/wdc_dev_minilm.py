"""``wdc_dev.py`` with the frozen ``minilm-l6`` states under the generator *and* the discriminator
(step 2 of docs/wdc_pave.md, "The pretrained MiniLM encoder under DEFLATE's generator"). WDC-PAVE
val only: the test split is val, as in wdc_dev.py.

Every model built here carries the zero-initialised ``Linear(384, d_model)`` of
``wdc_generator_minilm.py`` (on the shared embedding, so the discriminator, which starts from a copy
of the generator's encoder and embeddings, reads the states too: the `[CLS]` arm of #32). Every
question and claim made anywhere in the system (training, harvesting, answering, the keep model)
gets the states under its tokens: a claim's are its question's, with zeros on ``<CLS>`` and the
claimed value.

    python benchmarks/wdc_dev_minilm.py --checkpoint DIR SYSTEM [wdc_dev.py's options]

e.g. ``deflate --generator-from WORK/gen_runs/minilm`` (the generator that wdc_generator_minilm.py
trained), then ``d_minus --generator-from`` the same.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

from deflate.answering import engine
from deflate.model import mul_t5, questions
from deflate.stages import train_discriminator

sys.path.insert(0, str(Path(__file__).parent))
import wdc_dev  # noqa: E402
from wdc_generator_minilm import OfferStates  # noqa: E402


def install(states: OfferStates) -> None:
    """Every model gets the projection; every example made gets its states."""
    init = mul_t5.MulT5.__init__

    def with_projection(self, *a, **kw):
        init(self, *a, **kw)
        proj = nn.Linear(states.dim, self.embed.text.embedding_dim)
        nn.init.zeros_(proj.weight)
        nn.init.zeros_(proj.bias)
        self.embed.minilm = proj

    embed = mul_t5.MultimodalEmbedding.forward

    def with_offer_states(self, input_ids, img_start=None, image=None):
        e = embed(self, input_ids, img_start, image)
        proj = getattr(self, "minilm", None)
        return e if proj is None else e + proj(states.batch(input_ids)).to(e.dtype)

    def encode(records, qb):
        states.encode([r.name + (qb.t["desc"].format(desc=r.description) if r.description else "") for r in records])

    question_examples = questions.question_examples

    def with_question_states(records, qb, qs, targets=None):
        examples = question_examples(records, qb, qs, targets)
        encode(records, qb)
        for e, q in zip(examples, qs):
            r = records[q.row]
            if tuple(e.ids) not in states.by_question:
                states.question(qb, r.name, r.description, q.attribute, e.ids)
        return examples

    claim_examples = questions.claim_examples

    def with_claim_states(records, qb, claims, labels=None, with_value=True):
        examples = claim_examples(records, qb, claims, labels, with_value)
        encode(records, qb)
        for e, c in zip(examples, claims):
            if tuple(e.ids) in states.by_question:
                continue
            r, attr = records[c.question.row], c.question.attribute
            q = qb.attribute_question(r.name, r.description, attr)
            if tuple(q) not in states.by_question:
                states.question(qb, r.name, r.description, attr, q)
            under = states.by_question[tuple(q)]
            out = torch.zeros(len(e.ids), states.dim, dtype=under.dtype)
            out[1:1 + len(q)] = under  # <CLS>, the question, the value
            states.by_question[tuple(e.ids)] = out
        return examples

    mul_t5.MulT5.__init__ = with_projection
    mul_t5.MultimodalEmbedding.forward = with_offer_states
    questions.question_examples = with_question_states  # qa_examples calls it through the module
    engine.question_examples = with_question_states
    questions.claim_examples = with_claim_states
    engine.claim_examples = with_claim_states
    train_discriminator.claim_examples = with_claim_states


def main():
    argv = sys.argv[1:]
    if "--checkpoint" not in argv:
        raise SystemExit("usage: wdc_dev_minilm.py --checkpoint DIR SYSTEM [wdc_dev.py options]")
    i = argv.index("--checkpoint")
    folder = Path(argv[i + 1])
    sys.argv = [sys.argv[0], *argv[:i], *argv[i + 2:]]
    states = OfferStates(folder)
    install(states)
    wdc_dev.main()
    print(f"[wdc_dev_minilm] {len(states.by_text)} offers encoded in {states.seconds:.0f} s; "
          f"{len(states.by_question)} sequences with states, {states.missed} not rebuilt")


if __name__ == "__main__":
    main()
