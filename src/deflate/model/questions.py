"""What DEFLATE is asked, as typed records, and the one place they become model input.

A :class:`Question` is one (product, attribute) pair: "what is the [attribute] of this product?".
A :class:`Claim` is a question with a proposed value: "the [attribute] of this product is [value]",
which the discriminator accepts or rejects. :func:`question_examples` and :func:`claim_examples`
turn them into token-id examples for training and answering alike, so the generator is trained on
exactly the sequences it is later asked, and the discriminator likewise.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deflate.data.records import Record
from deflate.data.splits import attributes_of, grouped_labels
from deflate.model.batching import Example
from deflate.model.tokenizer import NONE_VALUE, QuestionBuilder


@dataclass(frozen=True)
class Question:
    row: int        # the product's position in its split (and in that split's image arrays)
    attribute: str


@dataclass(frozen=True)
class Claim:
    question: Question
    value: str


def question_examples(records: list[Record], qb: QuestionBuilder, questions: list[Question],
                      targets: list[str] | None = None) -> list[Example]:
    """Generator input per question; with ``targets``, the answer to learn (decoder ids, in the
    form :meth:`QuestionBuilder.value` chooses, after :meth:`QuestionBuilder.prefix`)."""
    out = []
    for k, q in enumerate(questions):
        r = records[q.row]
        ids = qb.question(r.name, r.description, q.attribute)
        target = qb.prefix(q.attribute) + qb.value(targets[k], ids) if targets is not None else None
        out.append(Example(ids, q.row, target=target, key=q, states=_states(qb, r, q.attribute, len(ids), 0, True)))
    return out


def _states(qb: QuestionBuilder, r: Record, attr: str, length: int, at: int, asked: bool):
    """The pretrained encoder's states under an example's question tokens (``qb.states``; None
    without one): the question starts at token ``at``; ``asked`` (a generator's question) follows
    the question layout, a claim always names its attribute."""
    if qb.states is None:
        return None
    _, spans = qb.question_spans(r.name, r.description, None if asked and qb.layout == "offer" else attr)
    return qb.states.under(qb.offer_text(r.name, r.description), spans, length, at)


def claim_examples(records: list[Record], qb: QuestionBuilder, claims: list[Claim],
                   labels: list[float] | None = None, with_value: bool = True) -> list[Example]:
    """Discriminator input per claim (``<CLS> question value``; ``<CLS> question`` without the value,
    ``discriminator.claim_value: false``); with ``labels``, 1.0 / 0.0."""
    out = []
    for k, c in enumerate(claims):
        r = records[c.question.row]
        head, v = qb.claim_parts(r.name, r.description, c.question.attribute, c.value if with_value else "")
        out.append(Example(head + v, c.question.row, target=labels[k] if labels is not None else None, key=c.question,
                           value_from=len(head) if with_value else -1,
                           states=_states(qb, r, c.question.attribute, len(head) + len(v), 1, False)))  # after <CLS>
    return out


# --- which questions --------------------------------------------------------------------------------
def gold_questions(records: list[Record]) -> list[Question]:
    """One question per (product, attribute it has), in label order."""
    return [Question(i, a) for i, r in enumerate(records) for a in grouped_labels(r)]


def all_questions(records: list[Record], schema: dict) -> list[Question]:
    """Every attribute of the schema asked of every product (what evaluation does); with
    per-category schemas, every attribute of the product's category."""
    return [Question(i, a) for i, r in enumerate(records) for a in attributes_of(schema, r.category)]


def absent_attributes(r: Record, attributes: list[str], k: int, rng: np.random.Generator) -> list[str]:
    """``k`` attributes the product lacks, drawn with ``rng`` (all of them when fewer, or k = -1)."""
    have = {lab["attribute"] for lab in r.labels}
    absent = [a for a in attributes if a not in have]
    if k == 0:
        return []
    if 0 < k < len(absent):
        absent = [str(a) for a in rng.choice(absent, k, replace=False)]
    return absent


def answer_questions(records: list[Record], schema: dict, sep: str, none_per_product: int = 0,
                     seed: int = 0) -> tuple[list[Question], list[str]]:
    """The generator's training questions and answers: each gold attribute with its values joined
    by ``sep``; with ``none_per_product`` != 0 (the d- variant) also absent attributes answered
    ``None`` (-1: every absent attribute)."""
    rng = np.random.default_rng(seed)
    questions, answers = [], []
    for i, r in enumerate(records):
        for a, vs in grouped_labels(r).items():
            questions.append(Question(i, a))
            answers.append(sep.join(vs))
        if none_per_product:
            for a in absent_attributes(r, attributes_of(schema, r.category), none_per_product, rng):
                questions.append(Question(i, a))
                answers.append(NONE_VALUE)
    return questions, answers


def qa_examples(records: list[Record], qb: QuestionBuilder, schema: dict, sep: str, none_per_product: int = 0,
                seed: int = 0) -> list[Example]:
    """Generator training examples (see :func:`answer_questions`)."""
    questions, answers = answer_questions(records, schema, sep, none_per_product, seed)
    return question_examples(records, qb, questions, answers)


def training_claims(records: list[Record], negatives: list[dict], sep: str) -> tuple[list[Claim], list[float]]:
    """The discriminator's training claims (paper §3.4): S+ every true (attribute, values) pair,
    then S- the harvested negatives (``{"row", "attribute", "value"}``)."""
    claims = [Claim(Question(i, a), sep.join(vs)) for i, r in enumerate(records) for a, vs in grouped_labels(r).items()]
    labels = [1.0] * len(claims)
    claims += [Claim(Question(n["row"], n["attribute"]), n["value"]) for n in negatives]
    return claims, labels + [0.0] * len(negatives)


def candidate_claims(questions: list[Question],
                     candidates: dict[str, list[str]]) -> tuple[list[Claim], list[tuple[int, int]]]:
    """Every known value of each question's attribute as a claim, with (question, candidate) positions."""
    claims, where = [], []
    for k, q in enumerate(questions):
        for j, c in enumerate(candidates.get(q.attribute, [])):
            claims.append(Claim(q, c))
            where.append((k, j))
    return claims, where
