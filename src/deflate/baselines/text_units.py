"""What the taggers read (``baselines.tagger.text``): characters, or the word pieces of a BERT-family
checkpoint (``baselines.tagger.pretrained_path``, a folder ``deflate checkpoint NAME --out`` made and
whose files are checked again on load), with their character offsets.

* ``chars``: characters, ids from the training texts; embeddings learned from scratch.
* ``pieces``: the checkpoint's word pieces; embeddings learned from scratch (the control).
* ``embeddings``: the pieces, with the checkpoint's word-embedding table as the starting embeddings
  (paper A.1: its BiLSTM-CRF reads "the word embedding from pretrained BERT").
* ``encoder``: the pieces through the checkpoint's whole encoder, frozen, once per text; its last
  hidden states are the BiLSTM's input (paper A.1: M-JAVE's texts "preprocessed into vectors using
  pretrained BERT-base").
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

import torch

from deflate.baselines.taggers import UNK, char_vocab
from deflate.infra.errors import UserError
from deflate.infra.params_schema import TextUnits
from deflate.model.pretrained import PROVENANCE, load_pretrained, materialized

MODES = get_args(TextUnits)  # the params schema's modes: chars, pieces, embeddings, encoder
ENCODE_BATCH = 16  # texts per frozen-encoder pass


@dataclass
class Units:
    mode: str
    vocab: dict[str, int] | None = None   # chars
    tokenizer: Any = None                  # a fast tokenizer (offsets), every mode but chars
    embeddings: torch.Tensor | None = None  # embeddings: the starting table
    encoder: Any = None                    # encoder: the frozen BertModel
    provenance: dict = field(default_factory=dict)  # the checkpoint's name, package, version, SHA-256
    loading: dict = field(default_factory=dict)     # missing / unexpected keys of the encoder's load

    @classmethod
    def build(cls, cfg: dict, train_texts, system: str = "bilstm_crf") -> "Units":
        """The units ``cfg`` (``baselines.tagger``) names for ``system`` (``text`` is one mode for both
        taggers, or one each); a chars vocabulary comes from ``train_texts``."""
        mode = cfg["text"] if isinstance(cfg["text"], str) else cfg["text"][system]
        if mode not in MODES:
            raise UserError(f"baselines.tagger.text: {mode!r} is none of {MODES}")
        if mode == "chars":
            return cls("chars", vocab=char_vocab(train_texts))
        from transformers import AutoTokenizer, BertModel

        path = cfg["pretrained_path"]
        what = "baselines.tagger.pretrained_path"
        provenance = None
        if (Path(path) / PROVENANCE).is_file():  # a materialised named checkpoint: its pins checked once, here
            provenance = materialized(Path(path))

        def load(loader):
            return loader(path) if provenance is not None else load_pretrained(loader, path, what)

        tok = load(AutoTokenizer.from_pretrained)
        if not tok.is_fast:
            raise UserError(f"{what} {path}: the taggers need a fast tokenizer (tokenizer.json) for offsets")
        units = cls(mode, tokenizer=tok)
        if provenance is not None:
            units.provenance = {k: v for k, v in provenance.items()
                                if k in ("name", "package", "version", "sha256", "licence")}
        if mode in ("embeddings", "encoder"):
            bert, info = load(lambda f: BertModel.from_pretrained(f, output_loading_info=True))
            units.loading = {k: sorted(info[k]) for k in ("missing_keys", "unexpected_keys")}
            if mode == "embeddings":
                units.embeddings = bert.get_input_embeddings().weight.detach().clone()
            else:
                units.encoder = bert.eval().requires_grad_(False)
        return units

    @property
    def size(self) -> int:
        return len(self.vocab) if self.vocab is not None else len(self.tokenizer)

    @property
    def feature_dim(self) -> int:
        return self.encoder.config.hidden_size if self.encoder is not None else 0

    def split(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """The ids of ``text``'s units and each unit's characters (start, end); never empty."""
        if self.vocab is not None:
            return [self.vocab.get(c, UNK) for c in text] or [UNK], [(i, i + 1) for i in range(len(text))] or [(0, 0)]
        limit = self.encoder.config.max_position_embeddings - 2 if self.encoder is not None else None
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True,
                             truncation=limit is not None, max_length=limit)
        if not enc["input_ids"]:
            return [self.tokenizer.unk_token_id], [(0, 0)]
        return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]

    @torch.no_grad()
    def features(self, ids: list[list[int]]) -> list[torch.Tensor] | None:
        """With a frozen encoder, each text's unit vectors (its [CLS] and [SEP] read, then dropped)."""
        if self.encoder is None:
            return None
        tok, out = self.tokenizer, [None] * len(ids)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # similar lengths pad little
        for k in range(0, len(order), ENCODE_BATCH):
            part = order[k:k + ENCODE_BATCH]
            T = max(len(ids[i]) for i in part) + 2
            x = torch.full((len(part), T), tok.pad_token_id, dtype=torch.long)
            mask = torch.zeros(len(part), T, dtype=torch.long)
            for b, i in enumerate(part):
                seq = [tok.cls_token_id, *ids[i], tok.sep_token_id]
                x[b, :len(seq)], mask[b, :len(seq)] = torch.tensor(seq), 1
            h = self.encoder(input_ids=x, attention_mask=mask).last_hidden_state
            for b, i in enumerate(part):
                out[i] = h[b, 1:1 + len(ids[i])].clone()
        return out
