"""A pretrained encoder's states under the generator's question tokens (``model.encoder_states``; #32).

The checkpoint's whole encoder (a BERT-family folder that ``deflate checkpoint`` materialised and
verified) reads each product text once, frozen: its name, then " (description)", as the question holds
them, at most :data:`MAX_PIECES` word pieces (fewer where the checkpoint has fewer positions).
Each question token of the product reads the mean of the
encoder's last states over the word pieces its characters overlap
(:meth:`~deflate.model.tokenizer.QuestionBuilder.question_spans` gives the characters); template tokens,
``<CLS>`` and a claim's value read none. :class:`~deflate.model.mul_t5.MultimodalEmbedding` adds them
through a learned projection that starts at zero, so an untrained model is the model without them.

Why frozen and beside the generator's own embeddings: fine-tuning a 22.7M encoder per (product,
attribute) does not fit 2 CPU cores (docs/implicitave.md), and the checkpoint's uncased pieces would
lowercase every copied answer; the generator keeps its own cased pieces and copy path. WDC-PAVE val:
docs/wdc_pave.md, "The pretrained MiniLM encoder under DEFLATE's generator".
"""
from __future__ import annotations

import bisect
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from deflate.infra.errors import UserError
from deflate.model.pretrained import PROVENANCE, materialized

MAX_PIECES = 320   # word pieces of a product text the encoder reads (the question holds <= max_len pieces)
FOLDER = "encoder_states"  # in a generator's folder: the verified checkpoint it reads with
CACHE_BYTES = 1 << 30  # states kept per checkpoint in a process; past it the cache starts again


class _Texts(dict):
    """text -> (states, piece starts, piece ends), with the bytes its states hold."""
    nbytes = 0


_TEXTS: dict[tuple, _Texts] = {}  # per checkpoint (its files' SHA-256)


@dataclass(frozen=True)
class TokenStates:
    """What one example's tokens read: the product text's states (pieces x dim, float16) and, per
    token, the range ``[start, end)`` of word pieces under it (empty: none)."""
    states: np.ndarray
    start: np.ndarray
    end: np.ndarray

    def pooled(self) -> np.ndarray:
        """(tokens, dim) float32: the mean state under each token, zeros where there is none."""
        s = self.states.astype(np.float32)
        out = np.zeros((len(self.start), s.shape[1]), np.float32)
        has = self.end > self.start
        if has.any():
            sums = np.concatenate([np.zeros((1, s.shape[1]), np.float32), np.cumsum(s, 0, dtype=np.float32)])
            width = (self.end - self.start)[has, None].astype(np.float32)
            out[has] = (sums[self.end[has]] - sums[self.start[has]]) / width
        return out


class EncoderStates:
    """A frozen BERT-family encoder that reads product texts (one at a time, so a product's states
    never depend on which others are read with it) and says which of its states lie under a span."""

    def __init__(self, folder: Path):
        from transformers import AutoTokenizer, BertModel  # only where a model reads states

        folder = Path(folder)
        if not folder.is_dir():
            raise UserError(f"model.encoder_states: {folder} is not a folder (make it with `deflate checkpoint NAME --out {folder}`)")
        self.folder = folder
        self.provenance = materialized(folder)  # every pinned file checked against its SHA-256
        if self.provenance.get("family") != "bert":
            raise UserError(f"model.encoder_states: {folder} holds a {self.provenance.get('family')} checkpoint; "
                            "a BERT-family encoder is needed")
        self.tok = AutoTokenizer.from_pretrained(str(folder))
        self.bert = BertModel.from_pretrained(str(folder), add_pooling_layer=False).eval()
        for p in self.bert.parameters():
            p.requires_grad_(False)
        self.dim = int(self.bert.config.hidden_size)
        # a checkpoint with fewer positions reads fewer pieces (MiniLM: 512, so MAX_PIECES)
        self.max_pieces = min(MAX_PIECES, int(self.bert.config.max_position_embeddings))
        # the same verified files read a text the same way: a process that loads the checkpoint again
        # (a saved model's own copy, in the next step of a stage) reuses what it has encoded
        self._texts = _TEXTS.setdefault(tuple(sorted(self.provenance["sha256"].items())), _Texts())

    def __deepcopy__(self, memo):  # frozen and read-only: a copied model (EMA, the discriminator) shares it
        return self

    def record(self) -> dict:
        """What a generator's ``deflate.json`` says of the encoder it reads with."""
        keep = ("name", "package", "version", "sha256")
        return {**{k: self.provenance[k] for k in keep}, "dim": self.dim, "max_pieces": self.max_pieces}

    def save(self, out: Path) -> None:
        """The verified checkpoint's files, with their provenance, into ``out`` (a model folder's
        :data:`FOLDER`): the model answers without the package installed."""
        out.mkdir(parents=True, exist_ok=True)
        for rel in [*self.provenance["sha256"], PROVENANCE]:
            shutil.copyfile(self.folder / rel, out / rel)

    @torch.no_grad()
    def text_states(self, text: str) -> tuple[np.ndarray, list[int], list[int]]:
        """The encoder's last states of ``text``'s word pieces (float16) and each piece's characters."""
        if text not in self._texts:
            if self._texts.nbytes > CACHE_BYTES:  # a catalogue answered in chunks: keep memory bounded
                self._texts.clear()
                self._texts.nbytes = 0
            enc = self.tok(text, truncation=True, max_length=self.max_pieces, return_tensors="pt",
                           return_offsets_mapping=True)
            offsets = enc.pop("offset_mapping")[0].tolist()
            states = self.bert(**enc).last_hidden_state[0]
            keep = [j for j, (a, b) in enumerate(offsets) if b > a]  # not [CLS], [SEP]
            kept = states[keep].to(torch.float16).numpy()
            self._texts[text] = (kept, [offsets[j][0] for j in keep], [offsets[j][1] for j in keep])
            self._texts.nbytes += kept.nbytes
        return self._texts[text]

    def under(self, text: str, spans: list[tuple[int, int]], length: int, at: int = 0) -> TokenStates:
        """For an example of ``length`` tokens whose tokens ``at ..`` have the character ``spans`` in
        ``text`` (``(0, 0)``: none), the word pieces of ``text`` under each token."""
        states, starts, ends = self.text_states(text)
        lo, hi = np.zeros(length, np.int64), np.zeros(length, np.int64)
        for j, (a, b) in enumerate(spans):
            if b > a:  # pieces with start < b and end > a; both lists ascend
                lo[at + j] = bisect.bisect_right(ends, a)
                hi[at + j] = max(lo[at + j], bisect.bisect_left(starts, b))
        return TokenStates(states, lo, hi)


def load(folder: Path | str) -> EncoderStates | None:
    """``model.encoder_states`` (a checkpoint folder, "" for none), or a model folder's copy."""
    return EncoderStates(Path(folder)) if str(folder) else None
