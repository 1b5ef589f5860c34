"""Extractive baselines (paper §5.1): BIO tagging with a CRF (``pytorch-crf``).

* **BiLSTM-CRF**: text units -> BiLSTM -> emissions -> CRF, one tag set ``B-a / I-a`` per attribute.
* **M-JAVE** (Zhu et al. 2020): the same text encoder, plus the product's image regions (the image
  stage's tokens, or patch features) through a *regional-gated cross-modality attention* (each
  character attends over the regions; a sigmoid gate decides how much of the visual context enters),
  and a joint multi-label attribute classifier over pooled text + gated global image; a tagged span
  is kept only when its attribute is predicted (the joint decoding of the paper).

The text units (``baselines.tagger.text``): ``chars``, characters with embeddings learned from
scratch; or a BERT-family checkpoint's word pieces (``baselines.tagger.pretrained_path``), as the
paper's A.1 builds its baselines: ``pieces`` (the pieces, embeddings from scratch: the control),
``embeddings`` (the checkpoint's word embeddings, fine-tuned: the paper's BiLSTM-CRF) or ``encoder``
(the checkpoint's whole encoder, frozen, its last hidden states as the BiLSTM's input: the paper's
M-JAVE, whose texts are "preprocessed into vectors using pretrained BERT"). Pieces keep their
character offsets, so a tagged run of pieces is cut out of the original text (case and all).

Training targets follow the paper's A.1: every gold value that occurs in the text is tagged (for
values that are not explicit, only when at least 2 characters long); values that never occur in
the text cannot be extracted by these models, nor, with pieces, values that start or end inside a
piece.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torchcrf import CRF

from deflate.model.batching import Batcher, Example

PAD, UNK = 0, 1


# --- characters and tags -------------------------------------------------------------------------
def char_vocab(texts, min_count: int = 1) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in texts:
        for c in t:
            counts[c] = counts.get(c, 0) + 1
    vocab = {"<pad>": PAD, "<unk>": UNK}
    for c in sorted(k for k, n in counts.items() if n >= min_count):
        vocab[c] = len(vocab)
    return vocab


def tag_names(attributes: list[str]) -> list[str]:
    return ["O"] + [f"{p}-{a}" for a in attributes for p in ("B", "I")]


def spans_of(text: str, labels: list[dict]) -> list[tuple[int, int, str]]:
    """(start, end, attribute) of the gold values to tag: first occurrence, no overlaps."""
    taken = np.zeros(len(text), dtype=bool)
    out = []
    for lab in sorted(labels, key=lambda lab: -len(lab["value"])):  # longer values first
        v = lab["value"]
        if not v or (lab.get("source") != "explicit" and len(v) < 2):
            continue
        s = text.find(v)
        while s >= 0 and taken[s:s + len(v)].any():
            s = text.find(v, s + 1)
        if s >= 0:
            taken[s:s + len(v)] = True
            out.append((s, s + len(v), lab["attribute"]))
    return sorted(out)


def encode_tags(n: int, spans, tag_id: dict[str, int]) -> list[int]:
    tags = [0] * n
    for s, e, a in spans:
        if e <= n:
            tags[s] = tag_id[f"B-{a}"]
            for i in range(s + 1, e):
                tags[i] = tag_id[f"I-{a}"]
    return tags


def tag_runs(tags: list[int], names: list[str]) -> list[tuple[str, int, int]]:
    """(attribute, first, end) of each B(-I)* run of units; a stray I- starts a run too."""
    out, cur, start = [], None, 0
    for i, t in enumerate(list(tags) + [0]):
        name = names[t] if i < len(tags) else "O"
        kind, attr = (name.split("-", 1) + [None])[:2] if name != "O" else ("O", None)
        if cur is not None and (kind != "I" or attr != cur):
            out.append((cur, start, i))
            cur = None
        if kind == "B" or (kind == "I" and cur is None):
            cur, start = attr, i
    return out


def decode_spans(text: str, tags: list[int], names: list[str]) -> list[tuple[str, str]]:
    """(attribute, value) of each run of character tags."""
    return [(a, text[s:e]) for a, s, e in tag_runs(tags, names)]


# --- word pieces ---------------------------------------------------------------------------------
def piece_tags(offsets: list[tuple[int, int]], spans, tag_id: dict[str, int]) -> tuple[list[int], int]:
    """Tags of word pieces (``offsets``: each piece's characters) for character ``spans``, and how
    many spans could not be tagged because they start or end inside a piece."""
    tags, lost = [0] * len(offsets), 0
    for s, e, a in spans:
        inside = [j for j, (ps, pe) in enumerate(offsets) if pe > ps and ps >= s and pe <= e]
        if not inside or offsets[inside[0]][0] != s or offsets[inside[-1]][1] != e:
            lost += 1
            continue
        tags[inside[0]] = tag_id[f"B-{a}"]
        for j in inside[1:]:
            tags[j] = tag_id[f"I-{a}"]
    return tags, lost


def decode_piece_spans(text: str, offsets: list[tuple[int, int]], tags: list[int],
                       names: list[str]) -> list[tuple[str, str]]:
    """(attribute, value) of each run of piece tags: the original text from its first piece's start
    to its last piece's end."""
    return [(a, text[offsets[s][0]:offsets[e - 1][1]]) for a, s, e in tag_runs(tags, names)]


class TagBatcher(Batcher):
    """Pads unit ids and tags; carries the product's image row, attribute targets and, with a frozen
    encoder, each row's precomputed unit vectors (``features``)."""

    def __init__(self, image, has_image, use_image: bool, attr_targets: np.ndarray | None = None,
                 features: list[torch.Tensor] | None = None):
        super().__init__(image, has_image, use_image, img_id=-1)
        self.attr_targets = attr_targets
        self.features = features

    def length(self, ex: Example) -> int:
        return len(ex.ids)

    def collate(self, exs: list[Example], pad_to: int = 0, pad_target_to: int = 0) -> dict:
        T = max(1, max(len(e.ids) for e in exs))
        ids = torch.zeros(len(exs), T, dtype=torch.long)
        tags = torch.zeros(len(exs), T, dtype=torch.long)
        for b, e in enumerate(exs):
            ids[b, :len(e.ids)] = torch.tensor(e.ids)
            if e.target is not None:
                tags[b, :len(e.target)] = torch.tensor(e.target)
        batch = {"input_ids": ids, "mask": ids != PAD, "tags": tags}
        if self.features is not None:
            f = torch.zeros(len(exs), T, self.features[0].shape[-1])
            for b, e in enumerate(exs):
                f[b, :len(e.ids)] = self.features[e.row][:len(e.ids)]
            batch["features"] = f
        rows = torch.tensor([max(e.row, 0) for e in exs])
        if self.use_image:
            batch["image"] = self.image[rows]
            batch["has_image"] = torch.tensor([bool(self.has_image[e.row]) if e.row >= 0 else False for e in exs])
        if self.attr_targets is not None:
            batch["attributes"] = torch.from_numpy(self.attr_targets[[e.row for e in exs]]).float()
        return batch


# --- models --------------------------------------------------------------------------------------
class BiLSTMCRF(nn.Module):
    """``embeddings``: the input table to start from (a checkpoint's word embeddings; its width
    replaces ``emb``); ``features``: the width of precomputed unit vectors, read instead of any table."""

    def __init__(self, n_chars: int, n_tags: int, emb: int = 128, hidden: int = 128,
                 embeddings: torch.Tensor | None = None, features: int = 0):
        super().__init__()
        if features:
            self.emb, emb = None, features
        elif embeddings is not None:
            self.emb, emb = nn.Embedding.from_pretrained(embeddings.clone(), freeze=False, padding_idx=PAD), embeddings.shape[1]
        else:
            self.emb = nn.Embedding(n_chars, emb, padding_idx=PAD)
        self.lstm = nn.LSTM(emb, hidden, batch_first=True, bidirectional=True)
        self.emit = nn.Linear(2 * hidden, n_tags)
        self.crf = CRF(n_tags, batch_first=True)

    def encode(self, batch) -> torch.Tensor:
        lengths = batch["mask"].sum(1).clamp(min=1).cpu()
        x = batch["features"] if self.emb is None else self.emb(batch["input_ids"])
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        h, _ = self.lstm(packed)
        return nn.utils.rnn.pad_packed_sequence(h, batch_first=True, total_length=batch["input_ids"].shape[1])[0]

    def heads(self, batch) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(emissions, attribute logits or None)."""
        return self.emit(self.encode(batch)), None

    def forward(self, batch) -> torch.Tensor:  # the training loss: what DDP wraps
        return self.loss(batch)

    def loss(self, batch) -> torch.Tensor:
        emissions, attr_logits = self.heads(batch)
        loss = -self.crf(emissions, batch["tags"], mask=batch["mask"], reduction="mean") / emissions.shape[1]
        if attr_logits is not None:
            loss = loss + nn.functional.binary_cross_entropy_with_logits(attr_logits, batch["attributes"])
        return loss

    @torch.no_grad()
    def predict(self, batch) -> tuple[list[list[int]], np.ndarray | None]:
        emissions, attr_logits = self.heads(batch)
        paths = self.crf.decode(emissions, mask=batch["mask"])
        return paths, None if attr_logits is None else torch.sigmoid(attr_logits).cpu().numpy()


class MJAVE(BiLSTMCRF):
    def __init__(self, n_chars: int, n_tags: int, n_attrs: int, image_vocab: int = 0, feature_dim: int = 0,
                 emb: int = 128, hidden: int = 128, embeddings: torch.Tensor | None = None, features: int = 0):
        super().__init__(n_chars, n_tags, emb, hidden, embeddings, features)
        d = 2 * hidden
        self.region = (nn.Embedding(image_vocab + 1, d) if image_vocab else
                       nn.Linear(feature_dim, d) if feature_dim else None)
        self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.gate = nn.Linear(2 * d, d)          # regional gate: how much visual context per character
        self.global_gate = nn.Linear(2 * d, d)   # the same for the pooled image in the attribute head
        self.attr = nn.Linear(2 * d, n_attrs)

    def heads(self, batch):
        h = self.encode(batch)
        mask = batch["mask"].unsqueeze(-1).float()
        pooled = (h * mask).sum(1) / mask.sum(1).clamp(min=1)
        image = torch.zeros_like(pooled)
        if self.region is not None and "image" in batch:
            img = batch["image"]
            r = self.region(img.float() if isinstance(self.region, nn.Linear) else img)  # B, m, d
            att = torch.softmax(self.q(h) @ self.k(r).transpose(1, 2) / h.shape[-1] ** 0.5, -1)
            c = att @ self.v(r)                                               # B, T, d
            has = batch["has_image"].float()[:, None, None]
            h = h + has * torch.sigmoid(self.gate(torch.cat([h, c], -1))) * c
            g = r.mean(1)
            image = has[:, :, 0] * torch.sigmoid(self.global_gate(torch.cat([pooled, g], -1))) * g
        return self.emit(h), self.attr(torch.cat([pooled, image], -1))
