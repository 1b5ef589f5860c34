"""Text tokenizer (trained on the training split, or loaded from a pretrained path) and the
question templates of paper §3.1 / §3.4.

Generator question:      "[name]（[description]）的[attribute]是"      (zh)
                         "The [attribute] of [name] ([description]) is"  (en)
Discriminator sequence:  "<CLS>" + question + value   (the image part is appended by the batcher)

The description is cut first when a question is longer than ``max_len`` tokens: the attribute
and the name are what the model cannot answer without.
"""
from __future__ import annotations

import re
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from deflate.model.pretrained import load_pretrained

PAD, EOS, UNK, IMG, CLS = "<pad>", "</s>", "<unk>", "<IMG>", "<CLS>"
SPECIALS = [PAD, EOS, UNK, IMG, CLS]  # ids 0..4: T5 wants pad=0 (decoder start) and eos=1
NONE_VALUE = "None"  # the d- generator's answer for an attribute the product lacks (paper §5.4)
CJK = "[\u3400-\u9fff\uf900-\ufaff\u3000-\u303f\uff00-\uffef]"
PUNCTUATION = r"[\p{P}\x21-\x2f\x3a-\x40\x5b-\x60\x7b-\x7e]"  # Unicode punctuation and ASCII symbols, as BERT's


def answered(value: str) -> bool:
    """Whether the generator gave a value: neither empty nor d-'s ``None``."""
    return bool(value) and value != NONE_VALUE


TEMPLATES = {
    "zh": {"head": "{name}", "desc": "（{desc}）", "tail": "的{attr}是", "sep": ""},
    "en": {"head": "The {attr} of {name}", "desc": " ({desc})", "tail": " is", "sep": " "},
}


def train_tokenizer(texts, vocab_size: int, split_punctuation: bool = False) -> PreTrainedTokenizerFast:
    """BPE over isolated CJK characters (Chinese stays char-level) and Latin sub-words. With
    ``split_punctuation`` (``text.split_punctuation``) every punctuation character is a piece of its
    own (with the space before it), as in BERT's pre-tokenizer: no piece runs across a bracket, comma or hyphen, so a value
    written next to one ("(Black)", "Size:XL") is still a run of whole pieces of its offer, which
    span decoding can copy (WDC-PAVE val: 94.8% of present values are whole-word spans, 85.0% without)."""
    tok = Tokenizer(models.BPE(unk_token=UNK))
    steps = [pre_tokenizers.Metaspace(prepend_scheme="never"), pre_tokenizers.Split(Regex(CJK), "isolated")]
    if split_punctuation:  # a punctuation character alone, with the space before it if any: "▁(", "Black", ")"
        steps.append(pre_tokenizers.Split(Regex("\u2581?" + PUNCTUATION), "isolated"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(steps)
    tok.decoder = decoders.Metaspace(prepend_scheme="never")
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                                        show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=EOS, unk_token=UNK,
                                   additional_special_tokens=[IMG, CLS])


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """Our saved tokenizer, or a pretrained one (e.g. T5-pegasus); <IMG>/<CLS> are added if missing."""
    tok = load_pretrained(AutoTokenizer.from_pretrained, str(path), "model.tokenizer_path")
    missing = [t for t in (IMG, CLS) if t not in tok.get_vocab()]
    if missing:
        tok.add_special_tokens({"additional_special_tokens": missing})
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or PAD
    return tok


def corpus(records, schema: dict):
    """Everything the tokenizer should know: texts, attribute names, values, templates."""
    for r in records:
        yield r.name
        if r.description:
            yield r.description
        for lab in r.labels:
            yield lab["value"]
    for a in schema["attributes"]:
        yield a
        yield from schema.get("candidates", {}).get(a, [])
    for t in TEMPLATES.values():
        yield "".join(t.values())
    yield NONE_VALUE


TARGET_FORMS = ("standalone", "as_in_text")
# model.question: "attribute" asks the encoder "The [attribute] of [product] is" (the paper's layout,
# one encoder pass per question); "offer" gives the encoder the product alone, the same sequence for
# every attribute asked of it, and the attribute to the decoder through its answer prefix, so one
# encoder pass serves all of a product's questions (deflate.model.mul_t5.MulT5.encode)
LAYOUTS = ("attribute", "offer")

# --- token shapes (model.token_shapes) ------------------------------------------------------------
# A piece's shape: where it sits in its word (a word-start marker such as Metaspace's "▁", a
# continuation marker such as WordPiece's "##", or neither), which character classes it holds
# (digit, upper, lower, other letter such as CJK, anything else) and its length (1, 2-3, 4+).
# Specials have their own class. Values never seen in training (part numbers, UPCs) are made of
# rare pieces whose own embeddings learn little; their shapes are shared with every other piece.
WORD_START = ("▁", "Ġ")  # Metaspace's and byte-level BPE's word-start markers
CONTINUATION = "##"      # WordPiece's continuation marker
_CLASSES = (str.isdigit, str.isupper, str.islower, lambda ch: ch.isalpha() and not (ch.isupper() or ch.islower()))
N_SHAPES = 2 + 3 * 32 * 3


def _marked(piece: str) -> tuple[int, str]:
    """A piece's marker (1 word start, 2 continuation, 0 none) and what it holds after it."""
    if piece[:1] in WORD_START:
        return 1, piece[1:]
    if piece.startswith(CONTINUATION):
        return 2, piece[len(CONTINUATION):]
    return 0, piece


def piece_shape(piece: str) -> int:
    """The shape class of one vocabulary piece, in ``1 .. N_SHAPES - 1`` (0 is for specials)."""
    mark, core = _marked(piece)
    if not core:
        return 1  # a bare word-start marker (a space)
    bits = 0
    for ch in core:
        hit = next((i for i, is_ in enumerate(_CLASSES) if is_(ch)), 4)
        bits |= 1 << hit
    size = 0 if len(core) == 1 else 1 if len(core) <= 3 else 2
    return 2 + (mark * 32 + bits) * 3 + size


def token_shapes(tokenizer) -> list[int]:
    """The shape class of every token id of ``tokenizer`` (ids past its vocabulary get class 0)."""
    out = [0] * len(tokenizer)
    special = set(tokenizer.all_special_ids)
    for piece, i in tokenizer.get_vocab().items():
        if i < len(out):
            out[i] = 0 if i in special else piece_shape(piece)
    return out


def word_starts(pieces: list[str], wordpiece: bool, cuts: set[str]) -> list[bool]:
    """Whether each piece of a tokenized question starts a word: the first piece, a word-start
    marker, punctuation or a piece of ``cuts`` (the specials but the unknown token: an unknown
    character stays in its word) and the piece after one, a CJK character (each its own word), and
    with a WordPiece vocabulary every piece but a continuation. Word-aligned answers
    (``decode.span_words``) start at such a piece and end before the next one."""
    def cut(p: str) -> bool:  # a piece no word runs through
        core = _marked(p)[1]
        return p in cuts or not any(ch.isalnum() for ch in core) or bool(re.fullmatch(CJK, core))

    cut_at = [cut(p) for p in pieces]
    return [i == 0 or p[:1] in WORD_START or cut_at[i] or cut_at[i - 1] or (wordpiece and not p.startswith(CONTINUATION))
            for i, p in enumerate(pieces)]


def _contains(seq: list[int], part: list[int]) -> bool:
    n = len(part)
    return n > 0 and any(seq[i:i + n] == part for i in range(len(seq) - n + 1))


class QuestionBuilder:
    """Turns (product, attribute[, value]) into token ids with a length budget."""

    def __init__(self, tokenizer, language: str, max_len: int, max_value_len: int, target_form: str = "standalone",
                 answer_prefix: bool = False, layout: str = "attribute", states=None):
        """``states``: a :class:`deflate.model.encoder_states.EncoderStates` whose states each example
        made from these questions carries (``model.encoder_states``), or None."""
        if target_form not in TARGET_FORMS:
            raise ValueError(f"text.target_form must be one of {TARGET_FORMS}, not {target_form!r}")
        if layout not in LAYOUTS:
            raise ValueError(f"model.question must be one of {LAYOUTS}, not {layout!r}")
        if layout == "offer" and not answer_prefix:  # the decoder's prefix is then the only place the attribute is
            raise ValueError("model.question: offer needs text.answer_prefix: true (the attribute goes to the decoder)")
        self.layout, self.states = layout, states
        self.tok, self.t = tokenizer, TEMPLATES["zh" if language == "zh" else "en"]
        self.max_len, self.max_value_len, self.target_form = max_len, max_value_len, target_form
        self.answer_prefix = answer_prefix
        self.img_id = tokenizer.convert_tokens_to_ids(IMG)
        self.cls_id = tokenizer.convert_tokens_to_ids(CLS)
        self.eos_id = tokenizer.eos_token_id
        self._cache: dict[str, list[int]] = {}
        self._words: tuple[bool, set[str]] | None = None  # (WordPiece vocabulary?, specials that cut words)
        self._spans: dict = {}  # (name, desc, attr) -> question_spans

    @classmethod
    def from_meta(cls, tokenizer, meta: dict, states=None) -> QuestionBuilder:
        """The builder a trained generator was trained with, from its ``deflate.json`` (and the
        encoder whose states it reads, which its loader gives); a model saved before a setting was
        recorded gets that setting's old default."""
        return cls(tokenizer, meta["language"], meta["max_len"], meta["max_value_len"],
                   meta.get("target_form", "standalone"), meta.get("answer_prefix", False),
                   meta.get("question", "attribute"), states)

    def ids(self, text: str) -> list[int]:
        if text not in self._cache:
            if len(self._cache) > 200_000:
                self._cache.clear()
            self._cache[text] = self.tok.encode(text, add_special_tokens=False)
        return self._cache[text]

    def question(self, name: str, desc: str, attr: str) -> list[int]:
        """The generator's question: with ``model.question: offer`` the product alone (its attribute
        is the decoder's prefix), else :meth:`attribute_question`."""
        return self.attribute_question(name, desc, None if self.layout == "offer" else attr)

    def attribute_question(self, name: str, desc: str, attr: str | None) -> list[int]:
        """"The [attr] of [name] ([desc]) is" in the language's template; ``attr`` None: "[name] ([desc])"."""
        head = self.ids(self.t["head"].format(name=name, attr=attr) if attr is not None else name)
        tail = self.ids(self.t["tail"].format(attr=attr)) if attr is not None else []
        return self._fit(head, tail, lambda: self.ids(self.t["desc"].format(desc=desc)) if desc else [])

    def _fit(self, head: list, tail: list, desc) -> list:
        """The question's length budget: the tail whole, the head cut to what is left, the description
        (``desc()``, tokenised only when there is room) in the rest with its closing bracket kept.
        The items are token ids, or (id, span) pairs (:meth:`question_spans`)."""
        budget = self.max_len - len(tail)
        head = head[:max(budget, 1)]
        d = []
        if budget - len(head) > 3:
            d = desc()
            room = budget - len(head)
            if len(d) > room:  # keep the closing bracket
                d = d[: room - 1] + d[-1:]
        return head + d + tail

    def offer_text(self, name: str, desc: str) -> str:
        """The product as a pretrained encoder reads it (``model.encoder_states``): the name, then the
        description in the question's template; :meth:`question_spans` counts characters in it."""
        return name + (self.t["desc"].format(desc=desc) if desc else "")

    def question_spans(self, name: str, desc: str, attr: str | None) -> tuple[list[int], list[tuple[int, int]]]:
        """:meth:`attribute_question`'s ids and, per token, its characters in :meth:`offer_text`
        (``(0, 0)``: a template token, outside the product's text)."""
        key = (name, desc, attr)
        if key not in self._spans:  # a product's claims ask it again, one per candidate value
            if len(self._spans) > 50_000:
                self._spans.clear()
            head_text = self.t["head"].format(name=name, attr=attr) if attr is not None else name
            name_at = head_text.rindex(name) if name else len(head_text)
            tail = [(i, (0, 0)) for i in (self.ids(self.t["tail"].format(attr=attr)) if attr is not None else [])]
            desc_text = self.t["desc"].format(desc=desc) if desc else ""
            got = self._fit(self._pieces(head_text, -name_at), tail,
                            lambda: self._pieces(desc_text, len(name)) if desc else [])
            ids = [i for i, _ in got]
            if ids != self.attribute_question(name, desc, attr):  # the offsets' tokenisation is the question's
                raise ValueError(f"question_spans: the tokenizer's offsets do not rebuild the question of {name[:60]!r}")
            self._spans[key] = (ids, [span for _, span in got])
        return self._spans[key]

    def product_spans(self, name: str, desc: str) -> tuple[list[int], list[tuple[int, int]]]:
        """The product's own tokens, the name's then the description's, cut to ``max_len`` (JG-AVE's
        input: no template), and each token's characters in :meth:`offer_text`."""
        got = self._pieces(name, 0)
        if desc:
            got += self._pieces(desc, self.offer_text(name, desc).index(desc, len(name)))
        got = got[: self.max_len]
        return [i for i, _ in got], [span for _, span in got]

    def _pieces(self, text: str, shift: int) -> list[tuple[int, tuple[int, int]]]:
        """``text``'s token ids, each with its characters shifted by ``shift`` (``(0, 0)`` where that
        lands before the product's text: a template's characters)."""
        enc = self.tok(text, add_special_tokens=False, return_offsets_mapping=True)
        return [(i, (a + shift, b + shift) if b + shift > 0 else (0, 0))
                for i, (a, b) in zip(enc["input_ids"], enc["offset_mapping"])]

    def word_starts(self, ids: list[int]) -> list[bool]:
        """:func:`word_starts` of a question's ids (the vocabulary's style read once)."""
        if self._words is None:
            self._words = (any(p.startswith(CONTINUATION) for p in self.tok.get_vocab()),
                           set(self.tok.all_special_tokens) - {self.tok.unk_token})
        return word_starts(self.tok.convert_ids_to_tokens(ids), *self._words)

    def value(self, value: str, context: list[int] | None = None) -> list[int]:
        """Decoder target: value tokens + </s>. With ``target_form`` ``as_in_text`` and the question's
        ids as ``context``, the tokens the value has inside the question where they occur there (after
        a space a word starts with the ``▁`` piece, alone it does not): the answer is then a copy of
        input tokens. Both forms decode to the same string."""
        ids = self.ids(value)
        if self.target_form == "as_in_text" and context is not None and self.t["sep"]:
            spaced = self.ids(self.t["sep"] + value)
            ids = spaced if _contains(context, spaced) else ids
        return ids[: self.max_value_len] + [self.eos_id]

    def prefix(self, attr: str) -> list[int]:
        """What the decoder writes before the value (``text.answer_prefix``): ``{attribute}:``, or
        nothing. A from-scratch decoder learns to copy from this fixed place of its question first,
        and then answers with the attribute in its own context (docs/wdc_pave.md)."""
        return self.ids(attr + ":") if self.answer_prefix else []

    def answer(self, ids: list[int], attr: str) -> str:
        """The answer a decoder sequence (``ids``, after the decoder start) gives: without its prefix."""
        return self.decode(ids[len(self.prefix(attr)):])

    def refuse_prefix(self, what: str) -> None:
        """Only free and span decoding force the prefix; scoring or tries of bare values would not."""
        if self.answer_prefix:
            raise ValueError(f"text.answer_prefix works with free or span decoding, not with {what}")

    def claim(self, name: str, desc: str, attr: str, value: str) -> list[int]:
        """Discriminator text: <CLS> question value (paper: <CLS> The [a] of [T] is [v])."""
        head, v = self.claim_parts(name, desc, attr, value)
        return head + v

    def claim_parts(self, name: str, desc: str, attr: str, value: str) -> tuple[list[int], list[int]]:
        """The claim as ``<CLS> question`` and the value's tokens (an empty value still brings the
        separator's piece in English, as claims always have)."""
        v = self.ids((self.t["sep"] + value) if self.t["sep"] else value)[: self.max_value_len]
        return [self.cls_id] + self.attribute_question(name, desc, attr), v  # D is asked of one attribute in any layout

    def decode(self, ids) -> str:
        return self.tok.decode(ids, skip_special_tokens=True).strip()
