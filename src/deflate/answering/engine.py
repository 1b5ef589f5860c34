"""The answering engine: a trained DEFLATE loaded once, every way of answering in one place.

A :class:`Deflate` holds the generator (with its tokenizer, question builder and image tokenizer),
the discriminator and the lexical scorer where they exist, and the :class:`Decisions` made on
validation (answer mode, threshold, weights). Evaluation, closed-vocabulary evaluation,
``deflate predict`` and the MLflow pyfunc all answer through it:

    question ──generate / score candidates──► value ──claim──► P(true) ──keep rule──► kept answer

A **bundle** is a folder with ``bundle.json`` (decisions + decode settings) and the trained parts
beside it (``generator/``, ``discriminator/``, ``lexical/``); the stage that makes the decisions on
val writes it as its own DVC output, and :meth:`Deflate.load` needs nothing else.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from deflate.answering import keep_model
from deflate.answering.decoding import Trie, build_tries, generate_scored, generate_values, span_beams, topk_values
from deflate.answering.lexical import LexicalScorer
from deflate.answering.predict_rows import checked_rows, row_pictures, shown
from deflate.answering.scores import (
    answer_logprobs,
    candidate_claim_logprobs,
    candidate_logprobs,
    claim_probs,
    combine,
    fuse,
)
from deflate.data.image_tokens import load_for_inference
from deflate.data.records import Record
from deflate.infra.bundle import (
    DECODE_KEYS,
    BundleError,
    Decisions,
    DecodeSchema,
    check_record,
    read_bundle,
)
from deflate.model.batching import Batcher, Example
from deflate.model.mul_t5 import load_discriminator, load_generator
from deflate.model.questions import (
    Claim,
    Question,
    candidate_claims,
    claim_examples,
    question_examples,
)
from deflate.model.tokenizer import NONE_VALUE, QuestionBuilder, answered

SOURCES = ("generator", "discriminator", "lexical")  # the order of fused weights
# Questions tokenised and answered at a time: memory stays flat on a whole catalogue, and every
# committed split fits in one chunk (its batches, so its numbers, are those of a single pass).
ANSWER_CHUNK = 65_536


@dataclass
class Beams:
    """What re-ranking (``decode.rerank_beams``) chooses from: each question's greedy answer and its
    span beams that name a value, each claim's D and the generator's mean token log-prob. Question
    ``i``'s candidates are ``values[starts[i]:starts[i + 1]]`` (none when every answer was "None")."""
    starts: np.ndarray
    values: list[str]
    probs: np.ndarray
    gen_logprobs: np.ndarray

    def best(self, weight: float) -> np.ndarray:
        """Each question's candidate (an index into ``values``) with the highest keep score; -1: none."""
        s = keep_scores(self.probs, self.gen_logprobs, weight)
        return np.asarray([a + int(np.argmax(s[a:b])) if b > a else -1
                           for a, b in zip(self.starts[:-1].tolist(), self.starts[1:].tolist())], dtype=np.int64)

    @staticmethod
    def joined(parts: list["Beams"]) -> "Beams":
        offsets = np.cumsum([0] + [len(b.values) for b in parts[:-1]])
        return Beams(np.concatenate([parts[0].starts[:1]] + [b.starts[1:] + o for b, o in zip(parts, offsets)]),
                     [v for b in parts for v in b.values], np.concatenate([b.probs for b in parts]),
                     np.concatenate([b.gen_logprobs for b in parts]))


@dataclass
class Answers:
    """One value per question, the discriminator's P(true) of each claim (None: no discriminator),
    the generator's mean token log-prob of each answer (None: not computed), and each answer's keep
    score (what the threshold is compared with: see :func:`keep_scores`); whether the product has
    each asked attribute (see :func:`presence`); the beams re-ranking chose from (None: greedy)."""
    questions: list[Question]
    values: list[str]
    probs: np.ndarray | None
    kept: list[bool] = field(default_factory=list)
    gen_logprobs: np.ndarray | None = None
    scores: np.ndarray | None = None
    present: list[bool] = field(default_factory=list)
    beams: Beams | None = None

    @staticmethod
    def joined(parts: list["Answers"]) -> "Answers":
        """The answers of consecutive chunks of questions as one."""
        if len(parts) == 1:
            return parts[0]

        def arrays(name: str) -> np.ndarray | None:
            got = [getattr(p, name) for p in parts]
            return None if got[0] is None else np.concatenate(got)

        return Answers([q for p in parts for q in p.questions], [v for p in parts for v in p.values],
                       arrays("probs"), [k for p in parts for k in p.kept], arrays("gen_logprobs"), arrays("scores"),
                       [k for p in parts for k in p.present],
                       None if parts[0].beams is None else Beams.joined([p.beams for p in parts]))

    def at_weight(self, weight: float) -> "Answers":
        """The answers re-ranking gives under a generator weight in the keep score (the same answers
        without beams). Keep decisions are not made here: the caller applies its threshold."""
        if self.beams is None:
            return self
        values, probs, glp = list(self.values), self.probs.copy(), None
        pick = self.beams.best(weight)
        has = np.flatnonzero(pick >= 0)
        for k in has.tolist():
            values[k] = self.beams.values[pick[k]]
        probs[has] = self.beams.probs[pick[has]]
        if self.gen_logprobs is not None:
            glp = self.gen_logprobs.copy()
            glp[has] = self.beams.gen_logprobs[pick[has]]
        return replace(self, values=values, probs=probs, gen_logprobs=glp, scores=None, kept=[], present=[])


def product_chunks(questions: list[Question], size: int) -> Iterator[list[Question]]:
    """Consecutive lists of about ``size`` questions that never part a product's consecutive questions:
    a learned keep decision reads the other answers of the same product (``keep_model.features``)."""
    chunk: list[Question] = []
    for q in questions:
        if len(chunk) >= size and q.row != chunk[-1].row:
            yield chunk
            chunk = []
        chunk.append(q)
    if chunk:
        yield chunk


def keep_scores(probs: np.ndarray | None, gen_logprobs: np.ndarray | None, weight: float) -> np.ndarray | None:
    """Each answer's keep score: D, or with a generator weight w the geometric mix P_gen^w * D^(1-w)
    (beyond the paper: the generator's confidence in its value, which a discriminator that does not
    read the value cannot judge). None without a discriminator."""
    if probs is None or not weight:
        return probs  # the paper's rule, compared as the float32 probability itself
    if gen_logprobs is None:
        raise ValueError("a keep weight needs the generator's answer log-probs")
    return np.exp(weight * gen_logprobs.astype(np.float64)
                  + (1 - weight) * np.log(np.maximum(probs.astype(np.float64), 1e-7)))


def keep(value: str, score: float | None, threshold: float) -> bool:
    """The keep rule: an answer that is not ``None`` and, with a discriminator, whose keep score
    (the claim's P(true) in the paper) is at least the threshold."""
    return answered(value) and (score is None or score >= threshold)


def presence(values: list[str], probs: np.ndarray | None, kept: list[bool], threshold: float | None) -> list[bool]:
    """Whether the product has each asked attribute. The paper's rule (``threshold`` None): its value
    is kept. With a presence threshold, also an answer that is not ``None`` whose claim has D at
    least the threshold: the keep threshold is chosen for values, so a right attribute with a
    doubtful value is then reported present, its value withheld."""
    if threshold is None or probs is None:
        return list(kept)
    return [k or (answered(v) and float(p) >= threshold) for v, p, k in zip(values, probs, kept)]


def best_candidates(scores: dict[str, list[np.ndarray] | None], mode: str, alpha: float,
                    weights: tuple[float, float, float]) -> list[int]:
    """Index of each question's chosen candidate (-1: its attribute has none) under an answer mode."""
    g, d, lex = (scores.get(s) for s in SOURCES)
    if mode == "constrained":
        return combine(g, None, 1.0)
    if mode == "rerank":
        return combine(g, d, alpha)
    if mode == "fused":
        return fuse([g, d, lex], weights)  # a source with weight 0 is skipped, so it may be absent
    raise ValueError(f"mode {mode!r} answers without candidates")


class Deflate:
    def __init__(self, generator: Path, *, discriminator: Path | None, lexical: Path | None, decisions: Decisions,
                 decode: dict, claim_batch_size: int, device: str = "cpu"):
        """The trained parts from their folders; ``decode``: params.yaml's ``decode`` keys
        (batch_size, max_new_tokens, num_beams, constrain_to_vocab, constrain_to_spans, span_words,
        rerank_beams)."""
        self.gen, tok, self.meta = load_generator(generator)
        self.qb = QuestionBuilder.from_meta(tok, self.meta, self.gen.encoder_states)
        self.disc, disc_meta = load_discriminator(discriminator, self.gen) if discriminator is not None else (None, {})
        self.claim_value: bool = disc_meta.get("claim_value", True)  # models saved before the switch read values
        self.lexical = LexicalScorer.load(lexical) if lexical is not None else None
        self.generator_dir = generator
        self._image_tok = None
        self.decode = check_record({k: decode[k] for k in DECODE_KEYS if k in decode}, DecodeSchema,
                                   "decode settings").model_dump()
        self.device = device
        self.claim_batch_size = claim_batch_size
        check_record({**self.decode, "batch_size": claim_batch_size}, DecodeSchema, "claim_batch_size")
        self.candidates: dict[str, list[str]] = self.meta["candidates"]
        self.attributes: list[str] = self.meta["attributes"]
        self.sep: str = self.meta["value_sep"]
        self.decisions = decisions
        # answer_rows skips generating what D alone rules out (Deflate.live; deflate predict --prune): the
        # same kept values, but answers batched with other neighbours can differ in their last bits
        self.prune = False
        self._tries: dict[str, Trie] | None = None
        self.check(decisions)

    # --- the bundle ---------------------------------------------------------------------------------
    @classmethod
    def load(cls, bundle: Path, device: str = "cpu") -> "Deflate":
        """A bundle, verified (schema, every file's SHA-256, nothing outside it) before anything loads."""
        spec = read_bundle(bundle)
        parts = {name: bundle / name if name in spec["parts"] else None for name in ("generator", "discriminator", "lexical")}
        engine = cls(parts["generator"], discriminator=parts["discriminator"], lexical=parts["lexical"],
                     decisions=spec["decisions"], decode=spec["decode"], claim_batch_size=spec["claim_batch_size"],
                     device=device)
        engine.image_tok  # a bundle answers new pictures: its image tokenizer is checked and loaded now
        return engine

    def check(self, d: Decisions) -> None:
        """Refuse decisions this model cannot carry out (a missing part or candidate list)."""
        if d.mode != "free" and not self.candidates:
            raise BundleError("this model was saved without candidate values; use mode 'free'")
        if self.qb.answer_prefix and (d.mode != "free" or self.decode["constrain_to_vocab"]):
            raise BundleError("this generator writes an answer prefix (text.answer_prefix): it answers in mode "
                              "'free' with open or span decoding only")
        if d.presence_threshold is not None and self.disc is None:
            raise BundleError("a presence threshold needs the discriminator, which this bundle lacks")
        if d.keep_model is not None:
            if self.disc is None or d.mode != "free" or d.keep_all:
                raise BundleError("a learned keep decision judges free answers with the discriminator's D: it "
                                  "needs the discriminator, mode 'free' and keep_all false")
            if list(d.keep_model.features) != list(keep_model.FEATURES):
                raise BundleError(f"this bundle's keep model reads the features {d.keep_model.features}; this "
                                  f"version of deflate computes {list(keep_model.FEATURES)}")
        if d.mode == "rerank" and self.disc is None:
            raise BundleError("mode 'rerank' needs the discriminator, which this bundle lacks")
        # both weigh candidate values by D, which a claim without its value cannot give
        reads_values = "mode 'rerank'" if d.mode == "rerank" else "decode.rerank_beams" if self.reranks_beams else ""
        if reads_values and not self.ranks_candidates:
            raise BundleError(f"{reads_values} needs a discriminator that reads the value; this one was trained "
                              "with discriminator.claim_value false")
        if d.mode == "fused":
            disc = self.disc if self.ranks_candidates else None
            for w, name, part in zip(d.weights, SOURCES, (self.gen, disc, self.lexical)):
                if w and part is None:
                    raise BundleError(f"mode 'fused' gives the {name} weight {w} but this bundle has no {name} "
                                      "that scores candidates")

    @property
    def ranks_candidates(self) -> bool:
        """Whether the discriminator can score candidate values: it must exist and read the value
        (a claim without its value, ``discriminator.claim_value: false``, ranks no candidate)."""
        return self.disc is not None and self.claim_value

    @property
    def reranks_beams(self) -> bool:
        """Whether free answers are chosen among span beams by the keep score (``decode.rerank_beams``):
        only where a discriminator judges the claims. A model without one (d-) answers greedily."""
        return bool(self.decode["rerank_beams"]) and self.disc is not None

    def with_decisions(self, **changes) -> "Deflate":
        """The same loaded model answering under other decisions (a user's override)."""
        d = replace(self.decisions, **changes)
        self.check(d)
        self.decisions = d
        return self

    @property
    def image_tok(self):
        """The image tokenizer the generator was trained with (None: text-only), loaded on first use:
        only new products' pictures need it; the stages read precomputed tokens."""
        if self._image_tok is None and self.meta["use_image"]:
            self._image_tok = load_for_inference(self.generator_dir)
        return self._image_tok

    # --- building blocks ---------------------------------------------------------------------------
    def batcher(self, image: np.ndarray | None, has_image: np.ndarray | None) -> Batcher:
        return Batcher(image, has_image, self.meta["use_image"], self.qb.img_id)

    def questions(self, records: list[Record], questions: list[Question]) -> list[Example]:
        return question_examples(records, self.qb, questions)

    def claims(self, records: list[Record], questions: list[Question], values: list[str]) -> list[Example]:
        return claim_examples(records, self.qb, [Claim(q, v) for q, v in zip(questions, values)],
                              with_value=self.claim_value)

    def tries(self) -> dict[str, Trie]:
        """Token tries of the known values (plus ``None`` for a model without discriminator, which
        answers ``None`` for an absent attribute)."""
        if self._tries is None:
            vocab = self.candidates if self.disc is not None else {a: vs + [NONE_VALUE]
                                                                 for a, vs in self.candidates.items()}
            self._tries = build_tries(vocab, self.qb)
        return self._tries

    def generate(self, batcher: Batcher, exs: list[Example], constrained: bool = False, desc: str = "generate",
                 progress: bool = True, none: bool = True) -> list[str]:
        """Free answers (span-constrained where the decode settings say; ``none`` false refuses the
        span trie's "None", so a generator that learned it still names a value)."""
        return generate_values(self.gen, self.qb, batcher, exs, self.decode, self.device,
                               self.tries() if constrained else None, desc, progress,
                               spans=not constrained and self.decode["constrain_to_spans"], none=none)

    def topk(self, batcher: Batcher, exs: list[Example], k: int, desc: str = "top-k",
             progress: bool = True) -> list[list[tuple[str, float]]]:
        """The candidate trie's k best values per question by beam search, with total log-probs."""
        return topk_values(self.gen, self.qb, batcher, exs, build_tries(self.candidates, self.qb), k, self.decode,
                           self.device, desc, progress)

    def claim_probs(self, batcher: Batcher, claims: list[Example], desc: str = "discriminate",
                    progress: bool = True) -> np.ndarray:
        return claim_probs(self.disc, batcher, claims, self.claim_batch_size, self.device, desc, progress)

    def answer_logprobs(self, batcher: Batcher, records: list[Record], questions: list[Question], values: list[str],
                        desc: str = "score answers", progress: bool = True) -> np.ndarray:
        """The generator's mean token log-prob of each answer (an empty one scored as ``None``)."""
        exs = question_examples(records, self.qb, questions, [v or NONE_VALUE for v in values])
        return answer_logprobs(self.gen, self.qb, batcher, exs, self.decode["batch_size"], self.device, desc,
                               progress)

    def candidate_scores(self, batcher: Batcher, records: list[Record], exs: list[Example],
                         sources: tuple[str, ...] = SOURCES,
                         progress: bool = True) -> dict[str, list[np.ndarray] | None]:
        """Every known value of each question scored by each source this model has (None where it
        lacks one or it was not asked for): generator mean token log-prob, discriminator log D of
        the claim, lexical log-prob."""
        out: dict[str, list[np.ndarray] | None] = dict.fromkeys(SOURCES)
        questions = [e.key for e in exs]
        if "generator" in sources:
            out["generator"] = candidate_logprobs(self.gen, self.qb, batcher, exs, self.candidates,
                                                  self.decode["batch_size"], self.device, progress)
        if "discriminator" in sources and self.ranks_candidates:
            claims, where = candidate_claims(questions, self.candidates)
            out["discriminator"] = candidate_claim_logprobs(
                self.disc, batcher, exs, claim_examples(records, self.qb, claims), where, self.candidates,
                self.claim_batch_size, self.device, progress)
        if "lexical" in sources and self.lexical is not None:
            out["lexical"] = self.lexical.question_logprobs(records, questions, self.candidates)
        return out

    # --- answering ---------------------------------------------------------------------------------
    def answer(self, records: list[Record], questions: list[Question], batcher: Batcher, desc: str = "",
               progress: bool = True, gen_logprobs: bool = False, prune: bool = False) -> Answers:
        """Answer each question under the current decisions, score every answer's claim with the
        discriminator, and apply the keep rule; the generator's log-prob of each answer is computed
        where the keep rule needs it, or where asked (``gen_logprobs``: to choose its weight).
        ``prune`` (answering under fixed decisions, as ``deflate predict`` does): a question whose
        claim's D alone rules out both keeping and presence is not generated (see :meth:`live`); its
        answer is empty, which changes nothing the caller reports. :data:`ANSWER_CHUNK` questions at
        a time, so a catalogue's examples are never all in memory."""
        parts = [self._answer(records, chunk, batcher, desc, progress, gen_logprobs, prune)
                 for chunk in product_chunks(questions, ANSWER_CHUNK)]
        return (Answers.joined(parts) if parts
                else self._answer(records, [], batcher, desc, progress, gen_logprobs, prune))

    def live(self, probs: np.ndarray) -> np.ndarray:
        """Which questions could still be kept or reported present, from their claims' D alone (a
        discriminator that does not read the value): the keep score P_gen^w * D^(1-w) is at most its
        value at P_gen = 1, computed by the same function (every step is monotone, so the rounded bound
        holds too), and presence needs D at least its threshold."""
        d = self.decisions
        if d.keep_all or d.mode != "free" or d.keep_model is not None:  # a learned decision has no bound in D
            return np.ones(len(probs), dtype=bool)
        bound = keep_scores(probs, np.zeros(len(probs), dtype=np.float32), d.keep_weight)
        live = bound >= d.threshold
        if d.presence_threshold is not None:
            live |= probs >= d.presence_threshold
        return live

    def _answer(self, records: list[Record], questions: list[Question], batcher: Batcher, desc: str,
                progress: bool, gen_logprobs: bool, prune: bool = False) -> Answers:
        d = self.decisions
        exs = self.questions(records, questions)
        probs = None
        if self.disc is not None and not self.claim_value:  # D reads no value: scored once, before any answer
            probs = self.claim_probs(batcher, self.claims(records, questions, [""] * len(questions)),
                                     f"discriminate {desc}".strip(), progress)
        live = self.live(probs) if prune and probs is not None else np.ones(len(exs), dtype=bool)
        asked = np.flatnonzero(live).tolist()  # the questions generated: all, unless pruned
        # free text where asked, and for attributes without known values (the fallback of the other modes)
        free = [k for k, q in enumerate(questions)
                if live[k] and (d.mode == "free" or not self.candidates.get(q.attribute))]
        values = [""] * len(questions)
        constrained = d.mode == "free" and self.decode["constrain_to_vocab"]
        glp = None
        rerank = self.reranks_beams and d.mode == "free"
        # re-ranking and a learned keep decision weigh the generator: every answer's log-prob
        gen_logprobs = gen_logprobs or rerank or d.keep_model is not None
        if self.disc is not None and (gen_logprobs or d.keep_weight) and d.mode == "free" and not constrained:
            # every asked question (all, unless pruned) is generated here: one encoder pass per batch serves
            # the answer and its score
            both = generate_scored(self.gen, self.qb, batcher, [exs[k] for k in asked], self.decode, self.device,
                                   f"generate {desc}".strip(), progress, spans=self.decode["constrain_to_spans"])
            glp = np.full(len(questions), -np.inf, dtype=np.float32)  # a pruned question: never kept
            for k, (v, s) in zip(asked, both):
                values[k], glp[k] = v, s
        else:
            generated = self.generate(batcher, [exs[k] for k in free], constrained, f"generate {desc}".strip(),
                                      progress)
            for k, v in zip(free, generated):
                values[k] = v
        if d.mode != "free":
            needed = {"constrained": ("generator",), "rerank": ("generator", "discriminator"),
                      "fused": tuple(s for s, w in zip(SOURCES, d.weights) if w)}[d.mode]
            scores = self.candidate_scores(batcher, records, exs, ("generator",) + needed, progress)
            best = best_candidates(scores, d.mode, d.alpha, d.weights)
            values = [self.candidates[q.attribute][b] if b >= 0 else v for q, b, v in zip(questions, best, values)]
        if self.disc is not None and probs is None:
            probs = self.claim_probs(batcher, self.claims(records, questions, values), f"discriminate {desc}".strip(),
                                     progress)
        if glp is None and probs is not None and (gen_logprobs or d.keep_weight):
            glp = self.answer_logprobs(batcher, records, questions, values, f"score answers {desc}".strip(), progress)
        beams = None
        if rerank:
            beams = self.beams(batcher, records, questions, exs, values, desc, progress)
            picked = Answers(questions, values, probs, gen_logprobs=glp, beams=beams).at_weight(d.keep_weight)
            values, probs, glp = picked.values, picked.probs, picked.gen_logprobs
        ans = Answers(questions, values, probs, gen_logprobs=glp, beams=beams)
        scores = (keep_model.scores(d.keep_model, ans, records) if d.keep_model is not None
                  else keep_scores(probs, glp, d.keep_weight))
        kept = [keep(v, None if scores is None else scores[k], d.threshold) or (d.keep_all and bool(v))
                for k, v in enumerate(values)]
        return replace(ans, kept=kept, scores=scores, present=presence(values, probs, kept, d.presence_threshold))

    def beams(self, batcher: Batcher, records: list[Record], questions: list[Question], exs: list[Example],
              greedy: list[str], desc: str, progress: bool) -> Beams:
        """Each question's greedy answer and its ``decode.rerank_beams`` span beams that name a value,
        every claim scored by the discriminator and the generator (what :meth:`Beams.best` picks from)."""
        found = span_beams(self.gen, self.qb, batcher, exs, self.decode["rerank_beams"], self.decode, self.device,
                           f"span beams {desc}".strip(), progress)
        cands = [list(dict.fromkeys(v for v in [g] + [b for b, _ in bs] if answered(v)))
                 for g, bs in zip(greedy, found)]
        flat_q = [q for q, cs in zip(questions, cands) for _ in cs]
        flat_v = [v for cs in cands for v in cs]
        probs = self.claim_probs(batcher, self.claims(records, flat_q, flat_v), f"discriminate beams {desc}".strip(),
                                 progress)
        glp = self.answer_logprobs(batcher, records, flat_q, flat_v, f"score beams {desc}".strip(), progress)
        return Beams(np.cumsum([0] + [len(cs) for cs in cands]), flat_v, probs, glp)

    def answer_rows(self, rows: list[dict], images_dir: Path | None = None, progress: bool = True,
                    seen: dict | None = None) -> list[dict]:
        """``deflate predict`` and the pyfunc: one result per input row, ``{"id", "line",
        "predictions": [{"attribute", "value", "score"}], "errors"}``, and with a presence decision
        ``"withheld": [{"attribute", "value", "presence"}]`` (attributes the product has whose value
        was not kept; ``presence`` is the claim's D); a bad row gets its errors and
        every other row is answered (a row asking again what an earlier row asked, same id and
        attributes, is an error of the later row; pass the same ``seen`` to every chunk of one input).
        Image paths resolve inside ``images_dir`` only."""
        checked = checked_rows(rows, set(self.attributes), self.meta.get("category_attributes"), seen)
        good = [(i, p) for i, (p, _) in enumerate(checked) if p is not None]
        withheld = self.decisions.presence_threshold is not None
        results = [{"id": shown(r.get("id", "")), "line": r.get("_line"), "predictions": [], "errors": errs,
                    **({"withheld": []} if withheld else {})} for r, (_, errs) in zip(rows, checked)]
        if not good:
            return results
        products = [p for _, p in good]
        image, has = row_pictures(self.image_tok, products, images_dir, [results[i]["errors"] for i, _ in good])
        records = [Record(p["id"], p["name"], p["description"], p["category"]) for p in products]
        questions = [Question(j, a) for j, p in enumerate(products) for a in p["attributes"]]
        ans = self.answer(records, questions, self.batcher(image, has), "predict", progress, prune=self.prune)
        for k, (q, v) in enumerate(zip(questions, ans.values)):
            if ans.kept[k]:
                s = None if ans.scores is None else round(float(ans.scores[k]), 4)
                results[good[q.row][0]]["predictions"].append({"attribute": q.attribute, "value": v, "score": s})
            elif withheld and ans.present[k]:  # the product has it; its value was not kept
                results[good[q.row][0]]["withheld"].append(
                    {"attribute": q.attribute, "value": v, "presence": round(float(ans.probs[k]), 4)})
        return results
