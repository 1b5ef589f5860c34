"""The generator's decoding: a value per question (greedy or beam), optionally inside a token trie
of the attribute's known values (closed vocabularies) or of the spans of its own question (open,
extractive values: the answer is a copy of input tokens), the candidate trie's top-k, and the
span trie's k best beams. Exact scoring is :mod:`deflate.answering.scores`."""
from __future__ import annotations

import torch

from deflate.answering.scores import target_mean_logprobs
from deflate.model.batching import Batcher, Example, infer
from deflate.model.tokenizer import NONE_VALUE


END = -1  # a trie key marking where a value may end (token ids are never negative)


class Trie:
    """Token-id trie of the allowed values of one attribute (each ending in </s>). With
    ``ends_marked``, each sequence's end carries :data:`END` (spans without </s>)."""

    def __init__(self, sequences: list[list[int]], ends_marked: bool = False):
        self.root: dict = {}
        self.ends_marked = ends_marked
        for seq in sequences:
            self.add(seq)

    def add(self, seq: list[int]) -> None:
        node = self.root
        for t in seq:
            node = node.setdefault(t, {})
        if self.ends_marked:
            node[END] = {}

    def node(self, prefix: list[int]) -> dict | None:
        node = self.root
        for t in prefix:
            node = node.get(t)
            if node is None:
                return None
        return node

    def next_tokens(self, prefix: list[int]) -> list[int]:
        node = self.node(prefix)
        return [] if node is None else self.children(node)

    @staticmethod
    def children(node: dict) -> list[int]:
        """The tokens that may follow a node (its end mark is not a token)."""
        return [t for t in node if t != END]


def span_trie(question: list[int], max_len: int, extra: list[list[int]] = (),
              starts: list[bool] | None = None) -> Trie:
    """Every contiguous span of ``question`` up to ``max_len`` tokens, plus the ``extra`` sequences
    (e.g. d-'s "None" answer), as one trie. Without ``starts`` any span may end anywhere; with
    ``starts`` (:meth:`QuestionBuilder.word_starts`) spans start at a word start and end before the
    next one or at the question's end, marked with :data:`END`."""
    if starts is None:
        trie = Trie(list(extra))
        for i in range(len(question)):
            trie.add(question[i:i + max_len])
        return trie
    trie = Trie(list(extra), ends_marked=True)
    ends = starts[1:] + [True]
    for i in (i for i, s in enumerate(starts) if s):
        last = max((j for j in range(i, min(i + max_len, len(question))) if ends[j]), default=None)
        node = trie.root
        for j in range(i, last + 1 if last is not None else i):  # no path past the last word end in reach
            node = node.setdefault(question[j], {})
            if ends[j]:
                node[END] = {}
    return trie


def _span_allowed(tries: list[Trie], end: int):
    def allowed(batch_id, sent):
        prefix = sent.tolist()[1:]  # drop the decoder start token
        trie = tries[batch_id]
        node = trie.node(prefix)
        if node is None:
            return [end]
        nxt = Trie.children(node)
        may_end = END in node if trie.ends_marked else bool(prefix)
        return (nxt + [end] if may_end else nxt) or [end]
    return allowed


def build_tries(values_by_attr: dict[str, list[str]], qb) -> dict[str, Trie]:
    return {a: Trie([qb.value(v) for v in vs]) for a, vs in values_by_attr.items() if vs}


def _allowed(tries: dict[str, Trie], attrs: list[str], qb):
    """``prefix_allowed_tokens_fn`` keeping each row inside its attribute's trie (transformers
    passes the example's index, the same for all of its beams)."""
    everything = list(range(len(qb.tok)))
    end = [qb.eos_id if qb.eos_id is not None else qb.tok.pad_token_id]

    def allowed(batch_id, sent):
        trie = tries.get(attrs[batch_id])
        if trie is None:
            return everything
        return trie.next_tokens(sent.tolist()[1:]) or end  # drop the decoder start token
    return allowed


def _after_prefix(heads: list[list[int]], inner, everything: list[int]):
    """Forces each row's answer prefix (:meth:`QuestionBuilder.prefix`), then leaves the rest of the
    answer to ``inner`` (a trie, the spans) as if the prefix were not there."""
    def allowed(batch_id, sent):
        head, n = heads[batch_id], sent.shape[0] - 1  # tokens after the decoder start
        if n < len(head):
            return [head[n]]
        return inner(batch_id, torch.cat([sent[:1], sent[1 + len(head):]])) if inner else everything
    return allowed


def generate_values(gen, qb, batcher: Batcher, examples: list[Example], decode: dict, device: str = "cpu",
                    tries: dict[str, Trie] | None = None, desc: str = "generate", progress: bool = True,
                    spans: bool = False, none: bool = True) -> list[str]:
    """One decoded string per example (its ``key`` Question's attribute picks the trie; with
    ``spans``, each answer is a span of its own question or, unless ``none`` is false, "None").
    ``decode``: ``batch_size``, ``max_new_tokens``, ``num_beams`` (params.yaml's ``decode``)."""
    def step(idx, batch):
        attrs = _attributes(examples, idx)
        seqs = gen.generate(batch, **_decode_kwargs(qb, [examples[i] for i in idx], attrs, decode, tries, spans,
                                                    none))
        return [qb.answer(s[1:], a) for a, s in zip(attrs, seqs.tolist())]  # after the decoder start
    return infer(gen, batcher, examples, decode["batch_size"], step, device, desc, progress)


def generate_scored(gen, qb, batcher: Batcher, examples: list[Example], decode: dict, device: str = "cpu",
                    desc: str = "generate", progress: bool = True, spans: bool = False) -> list[tuple[str, float]]:
    """:func:`generate_values` (open or span decoding) with each answer's mean token log-prob, the
    keep score's generator term: per batch the encoder runs once, for the greedy answers and then
    for the teacher-forced pass over them. That pass reads the answers as
    :func:`deflate.answering.scores.answer_logprobs` does (re-tokenised, an empty one as ``None``,
    the prefix left out), and the batches are the same, so the numbers are its numbers, byte for byte."""
    def step(idx, batch):
        exs = [examples[i] for i in idx]
        attrs = _attributes(examples, idx)
        enc = gen.encode(batch)
        seqs = gen.generate(batch, encoder_outputs=enc, **_decode_kwargs(qb, exs, attrs, decode, None, spans))
        values = [qb.answer(s[1:], a) for a, s in zip(attrs, seqs.tolist())]
        labels = Batcher.labels([qb.prefix(a) + qb.value(v or NONE_VALUE, e.ids)
                                 for e, a, v in zip(exs, attrs, values)]).to(device)
        lp = target_mean_logprobs(gen({**batch, "labels": labels}, encoder_outputs=enc).logits, labels,
                                  [len(qb.prefix(a)) for a in attrs])
        return list(zip(values, lp.tolist()))
    return infer(gen, batcher, examples, decode["batch_size"], step, device, desc, progress)


def _attributes(examples: list[Example], idx: list[int]) -> list[str]:
    return [examples[i].key.attribute if examples[i].key is not None else "" for i in idx]


def _decode_kwargs(qb, exs: list[Example], attrs: list[str], decode: dict, tries: dict[str, Trie] | None,
                   spans: bool, none: bool = True) -> dict:
    """``generate``'s arguments for one batch: greedy or beams, inside the candidate tries, inside each
    question's spans, or free after the forced answer prefix."""
    kw = {"max_new_tokens": decode["max_new_tokens"], "num_beams": decode["num_beams"], "do_sample": False}
    if tries:
        qb.refuse_prefix("candidate tries (decode.constrain_to_vocab, candidate modes)")
        kw["prefix_allowed_tokens_fn"] = _allowed(tries, attrs, qb)
    elif spans:
        kw["prefix_allowed_tokens_fn"], extra = span_constraint(qb, exs, none, decode["span_words"])
        kw["max_new_tokens"] += extra
    else:
        heads = [qb.prefix(a) if a else [] for a in attrs]
        if any(heads):  # free decoding after the forced prefix
            kw["max_new_tokens"] += max(map(len, heads))
            kw["prefix_allowed_tokens_fn"] = _after_prefix(heads, None, list(range(len(qb.tok))))
    return kw


def span_constraint(qb, examples: list[Example], none: bool = True, words: bool = False):
    """``prefix_allowed_tokens_fn`` for a batch of questions: each answer a span of its own question
    (whole words with ``words``: ``decode.span_words``) or "None", unless ``none`` is false, after the
    forced answer prefix where the generator writes one."""
    extra = [qb.value(NONE_VALUE)[:-1]] if none else []
    inner = _span_allowed([span_trie(e.ids, qb.max_value_len, extra, qb.word_starts(e.ids) if words else None)
                           for e in examples], qb.eos_id)
    heads = [qb.prefix(e.key.attribute) if e.key is not None and e.key.attribute else [] for e in examples]
    if not any(heads):
        return inner, 0
    return _after_prefix(heads, inner, list(range(len(qb.tok)))), max(map(len, heads))


def span_beams(gen, qb, batcher: Batcher, examples: list[Example], k: int, decode: dict, device: str = "cpu",
               desc: str = "span beams", progress: bool = True) -> list[list[tuple[str, float]]]:
    """Beam search inside each question's span trie: up to ``k`` distinct non-empty answers with the
    generator's length-normalised log-probability, best first (diagnostics: how often some beam is
    right, re-ranking beams; the product answers with :func:`generate_values`)."""
    def step(idx, batch):
        exs = [examples[i] for i in idx]
        allowed, extra = span_constraint(qb, exs, words=decode["span_words"])
        res = gen.generate(batch, max_new_tokens=decode["max_new_tokens"] + extra,
                           num_beams=k, num_return_sequences=k, do_sample=False, output_scores=True,
                           return_dict_in_generate=True, prefix_allowed_tokens_fn=allowed)
        attrs = [e.key.attribute if e.key is not None else "" for e in exs]
        return _distinct_beams(res, len(idx), k, lambda j, s: qb.answer(s[1:], attrs[j]), keep_empty=False)
    return infer(gen, batcher, examples, max(1, decode["batch_size"] // k), step, device, desc, progress)


def topk_values(gen, qb, batcher: Batcher, examples: list[Example], tries: dict[str, Trie], k: int,
                decode: dict, device: str = "cpu", desc: str = "top-k",
                progress: bool = True) -> list[list[tuple[str, float]]]:
    """Beam search inside each example's candidate trie: up to ``k`` distinct candidates with their
    total generator log-probability, best first (fewer when the attribute has fewer candidates)."""
    qb.refuse_prefix("top-k candidates")

    def step(idx, batch):
        res = gen.generate(batch, max_new_tokens=decode["max_new_tokens"], num_beams=k,
                           num_return_sequences=k, do_sample=False, length_penalty=0.0, early_stopping="never",
                           output_scores=True, return_dict_in_generate=True,
                           prefix_allowed_tokens_fn=_allowed(tries, [examples[i].key.attribute for i in idx], qb))
        return [sorted(found, key=lambda t: -t[1])
                for found in _distinct_beams(res, len(idx), k, lambda j, s: qb.decode(s), keep_empty=True)]
    return infer(gen, batcher, examples, max(1, decode["batch_size"] // k), step, device, desc, progress)


def _distinct_beams(res, n: int, k: int, text_of, keep_empty: bool) -> list[list[tuple[str, float]]]:
    """Per example of a ``generate`` result with ``k`` returned beams: its distinct answers with their
    scores, in beam order (``text_of(example position, sequence)`` gives the answer)."""
    seqs, scores = res.sequences.view(n, k, -1).tolist(), res.sequences_scores.view(n, k).tolist()
    out = []
    for j, (row, sc) in enumerate(zip(seqs, scores)):
        seen: dict[str, float] = {}
        for s, v in zip(row, sc):
            text = text_of(j, s)
            if v > -1e8 and (text or keep_empty) and text not in seen:  # beams past the last answer score -1e9
                seen[text] = float(v)
        out.append(list(seen.items()))
    return out
