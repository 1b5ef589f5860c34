"""Mul-T5 generator and the shared-encoder discriminator (paper §3.2–3.4, Fig. 2).

The encoder input of one example is ``text tokens, <IMG>, v_1 .. v_m``: text ids go through T5's
shared embedding, image token ids through a trainable ``Embedding(image_vocab + 1, d)`` (eq. 1;
the extra row is the pad of products without a picture), or continuous patch features through a
``Linear(feature_dim, d)``. The batcher leaves ``m`` placeholder positions after ``<IMG>``; here
they are overwritten with the image embeddings and the whole sequence goes in as ``inputs_embeds``.
"""
from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import torch
from torch import nn
from transformers import T5Config, T5ForConditionalGeneration
from transformers.modeling_outputs import Seq2SeqLMOutput
from transformers.utils import can_return_tuple

from deflate.infra.bundle import (
    BundleError,
    DiscriminatorMeta,
    GeneratorMeta,
    T5Fields,
    TokenizerConfig,
    read_record,
)
from deflate.infra.files import atomic_dir, write_text
from deflate.infra.weights import load_weights, save_weights
from deflate.model import encoder_states
from deflate.model.pretrained import load_pretrained
from deflate.model.tokenizer import N_SHAPES, load_tokenizer, token_shapes

WEIGHTS = "model.safetensors"
META = "deflate.json"


class MultimodalEmbedding(nn.Module):
    def __init__(self, text: nn.Embedding, image_vocab: int = 0, feature_dim: int = 0):
        super().__init__()
        d = text.embedding_dim
        self.text = text
        self.image = nn.Embedding(image_vocab + 1, d) if image_vocab else None
        self.proj = nn.Linear(feature_dim, d) if feature_dim else None
        self.shape = None  # model.token_shapes: see :meth:`add_shapes`
        self.states = None  # model.encoder_states: see :meth:`add_states`
        if self.image is not None:
            nn.init.normal_(self.image.weight, std=text.weight.std().item())

    def add_shapes(self, shape_of: list[int]) -> None:
        """``model.token_shapes``: a learned vector per token shape class
        (:func:`deflate.model.tokenizer.token_shapes`, one class per id) added to each text token's
        embedding. It starts at zero, so an untrained table changes nothing. The class table is the
        tokenizer's, rebuilt from it when a model is loaded (not saved with the weights)."""
        self.shape = nn.Embedding(N_SHAPES, self.text.embedding_dim)
        nn.init.zeros_(self.shape.weight)
        self.register_buffer("shape_of", torch.tensor(shape_of, dtype=torch.long), persistent=False)

    def add_states(self, dim: int) -> None:
        """``model.encoder_states``: a pretrained encoder's states under each token (``dim`` wide;
        :mod:`deflate.model.encoder_states`) through a projection that starts at zero, so an
        untrained projection changes nothing."""
        self.states = nn.Linear(dim, self.text.embedding_dim)
        nn.init.zeros_(self.states.weight)
        nn.init.zeros_(self.states.bias)

    def forward(self, input_ids, img_start=None, image=None, states=None):
        e = self._tokens(input_ids, img_start, image)
        if self.states is not None:
            if states is None:
                raise ValueError("this model reads a pretrained encoder's states (model.encoder_states): the batch has none")
            e = e + self.states(states).to(e.dtype)
        return e

    def _tokens(self, input_ids, img_start, image):
        e = self.text(input_ids)
        if self.shape is not None:  # ids past the table read the last id's class (image positions are overwritten below)
            e = e + self.shape(self.shape_of[input_ids.clamp(max=len(self.shape_of) - 1)])
        if image is None or img_start is None or self.image is None and self.proj is None:
            return e
        rows = (img_start >= 0).nonzero().squeeze(1)
        if rows.numel() == 0:
            return e
        v = self.image(image[rows]) if self.image is not None else self.proj(image[rows].to(e.dtype))
        pos = img_start[rows, None] + torch.arange(v.shape[1], device=e.device)
        e = e.clone()
        e[rows[:, None], pos] = v.to(e.dtype)
        return e

    def of(self, batch: dict):
        """The embeddings of a collated batch (its ids, picture and encoder states)."""
        return self(batch["input_ids"], batch.get("img_start"), batch.get("image"), batch.get("encoder_states"))


class PointerT5(T5ForConditionalGeneration):
    """T5 whose next token is either generated from the vocabulary or copied from its input: a
    pointer-generator (See et al., 2017; ``model.copy``). With decoder state ``h``, a copy head's
    attention ``a`` over the encoder states ``H`` and a learned switch ``s = sigmoid(w [h; aH])``:

        p(y) = s * softmax(lm_head(h))[y] + (1 - s) * sum_{i: x_i = y} a_i

    An extracted value is a copy of question tokens: a from-scratch T5 has to learn that through its
    output embeddings, this one points (docs/wdc_pave.md). Implicit values are still generated.
    ``logits`` are ``log p(y)``, so the loss, greedy, beam and trie-constrained decoding and every
    scorer read them as they read T5's (``log_softmax`` of a log-distribution is itself).

    ``decoder_copy_ids`` are the encoder positions' token ids, -1 where nothing may be copied (pad,
    ``<IMG>``, image tokens); without them the ``input_ids`` are copied. The ``decoder_`` prefix keeps
    ``generate`` from handing them to the encoder; it expands them over beams like any input."""

    def __init__(self, config: T5Config):
        super().__init__(config)
        d = config.d_model
        self.copy_query = nn.Linear(d, d, bias=False)
        self.copy_key = nn.Linear(d, d, bias=False)
        self.copy_switch = nn.Linear(2 * d, 1)

    @can_return_tuple
    def forward(self, input_ids=None, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None,
                encoder_outputs=None, cache=None, inputs_embeds=None, decoder_inputs_embeds=None, labels=None,
                use_cache=None, decoder_copy_ids=None, **kwargs) -> Seq2SeqLMOutput:
        if encoder_outputs is None:
            encoder_outputs = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                                           inputs_embeds=inputs_embeds, **kwargs)
        src = decoder_copy_ids if decoder_copy_ids is not None else input_ids
        if src is None:
            raise ValueError("PointerT5 needs the input's token ids to copy from (decoder_copy_ids)")
        if decoder_copy_ids is None and attention_mask is not None:
            src = src.masked_fill(attention_mask == 0, -1)
        enc = encoder_outputs[0]
        if labels is not None and decoder_input_ids is None and decoder_inputs_embeds is None:
            decoder_input_ids = self._shift_right(labels)
        dec = self.decoder(input_ids=decoder_input_ids, attention_mask=decoder_attention_mask,
                           inputs_embeds=decoder_inputs_embeds, cache=cache, encoder_hidden_states=enc,
                           encoder_attention_mask=attention_mask, use_cache=use_cache, **kwargs)
        h = dec[0]
        scale = self.model_dim ** -0.5 if self.config.scale_decoder_outputs else 1.0
        vocab_logits = self.lm_head(h * scale)
        attn, z = self.copy_attention(h, enc, src)
        loss = None
        if labels is not None:
            loss = self.copy_loss(vocab_logits, attn, z, src, labels.to(vocab_logits.device))
        # training needs the loss alone: the (batch, steps, vocab) mixture is built only to answer or score
        logp = None if self.training and labels is not None else self.mixture(vocab_logits, attn, z, src)
        return Seq2SeqLMOutput(loss=loss, logits=logp, cache=dec.cache, decoder_hidden_states=dec.hidden_states,
                               decoder_attentions=dec.attentions, cross_attentions=dec.cross_attentions,
                               encoder_last_hidden_state=enc, encoder_hidden_states=encoder_outputs.hidden_states,
                               encoder_attentions=encoder_outputs.attentions)

    def copy_attention(self, h: torch.Tensor, enc: torch.Tensor, src: torch.Tensor):
        """The copy head's attention over the copyable positions (B, U, T; a row with none is all 0)
        and the switch's logit z (B, U, 1; s = sigmoid(z) is the share generated)."""
        ok = src >= 0
        scores = (self.copy_query(h) @ self.copy_key(enc).transpose(1, 2)).float() / math.sqrt(h.shape[-1])
        attn = torch.softmax(scores.masked_fill(~ok[:, None, :], float("-inf")), -1).nan_to_num(0.0)
        z = self.copy_switch(torch.cat([h, attn.to(enc.dtype) @ enc], -1)).float()
        return attn, torch.where(ok.any(1)[:, None, None], z, torch.full_like(z, 30.0))  # nothing to copy: generate

    @staticmethod
    def copy_loss(vocab_logits, attn, z, src, labels) -> torch.Tensor:
        """Mean -log p(label) over the labelled steps, from the label's own terms only: its vocabulary
        log-prob and the attention on the positions holding it (no vocabulary-wide mixture), in log
        space so no 0 * inf appears in the gradient."""
        keep = labels != -100
        y = labels.clamp(min=0)
        logits = vocab_logits.float()
        gen = logits.gather(-1, y[..., None]).squeeze(-1) - torch.logsumexp(logits, -1)
        mass = (attn * (src[:, None, :] == y[..., None])).sum(-1)
        lp = torch.logaddexp(nn.functional.logsigmoid(z[..., 0]) + gen,
                             nn.functional.logsigmoid(-z[..., 0]) + torch.log(mass.clamp_min(1e-30)))
        return -(lp * keep).sum() / keep.sum().clamp(min=1)

    @staticmethod
    def mixture(vocab_logits, attn, z, src) -> torch.Tensor:
        """log p(y) over the whole vocabulary, (B, U, V); a token with no mass gets log 1e-30."""
        s = torch.sigmoid(z)
        p = s * torch.softmax(vocab_logits.float(), -1)
        B, U, T = attn.shape
        p.scatter_add_(2, src.clamp(min=0)[:, None, :].expand(B, U, T), (1 - s) * attn)
        return torch.log(p.clamp_min(1e-30))


def copy_ids(batch: dict) -> torch.Tensor:
    """The encoder positions a :class:`PointerT5` may copy: text tokens (not pad, ``<IMG>`` or the
    image positions after it), their ids; -1 elsewhere."""
    ids, mask = batch["input_ids"], batch["attention_mask"]
    out = ids.masked_fill(mask == 0, -1)
    start = batch.get("img_start")
    if start is not None:
        pos = torch.arange(ids.shape[1], device=ids.device)
        image = (start >= 0)[:, None] & (pos[None, :] >= (start - 1)[:, None])  # <IMG> sits before img_start
        out = out.masked_fill(image, -1)
    return out


def distinct_rows(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The first row of each distinct (question ids, picture) of ``batch`` and, per row, which of
    them it repeats: ``batch[...][rows][inverse]`` gives back every row."""
    key = batch["input_ids"]
    if batch.get("image") is not None:
        key = torch.cat([key, batch["image"].reshape(len(key), -1).to(key.dtype)], 1)
    _, inverse = torch.unique(key, dim=0, return_inverse=True)
    n = len(key)
    first = torch.full((int(inverse.max()) + 1 if n else 0,), n, dtype=torch.long, device=key.device)
    first.scatter_reduce_(0, inverse, torch.arange(n, device=key.device), "amin")
    order = torch.argsort(first)  # distinct questions in the batch's order
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order), device=key.device)
    return first[order], rank[inverse]


class MulT5(nn.Module):
    """T5 encoder-decoder over text + image tokens; ``generate`` answers one question per row."""

    def __init__(self, t5: T5ForConditionalGeneration, image_vocab: int = 0, feature_dim: int = 0,
                 layout: str = "attribute"):
        super().__init__()
        self.t5 = t5
        self.embed = MultimodalEmbedding(t5.get_input_embeddings(), image_vocab, feature_dim)
        self.image_vocab, self.feature_dim = image_vocab, feature_dim
        self.layout = layout  # model.question: with "offer", identical questions in a batch share one encoder pass
        self.encoder_states = None  # model.encoder_states: the frozen encoder whose states the questions carry

    def forward(self, batch, encoder_outputs=None):
        """The teacher-forced pass over ``batch["labels"]``; ``encoder_outputs`` (:meth:`encode` of the
        same batch) skips the encoder, with the same numbers."""
        if encoder_outputs is None and self.layout == "offer":
            encoder_outputs = self.encode(batch)
        emb = None if encoder_outputs is not None else self.embed.of(batch)
        return self.t5(inputs_embeds=emb, attention_mask=batch["attention_mask"], labels=batch["labels"],
                       encoder_outputs=encoder_outputs, **self._copy_kw(batch))

    def encode(self, batch):
        """The encoder's states for ``batch``, to share between :meth:`generate` and :meth:`forward`.
        With ``model.question: offer`` the encoder runs once per distinct question (text and picture)
        of the batch, and each row gets its question's states."""
        rows = inverse = None
        if self.layout == "offer":
            rows, inverse = distinct_rows(batch)
            batch = {k: batch[k][rows] for k in ("input_ids", "attention_mask", "img_start", "image", "encoder_states")
                     if k in batch}
        emb = self.embed.of(batch)
        out = self.t5.get_encoder()(inputs_embeds=emb, attention_mask=batch["attention_mask"], return_dict=True)
        if inverse is not None:
            out.last_hidden_state = out.last_hidden_state[inverse]
        return out

    @torch.no_grad()
    def generate(self, batch, encoder_outputs=None, **kw):
        if encoder_outputs is None and self.layout == "offer":
            encoder_outputs = self.encode(batch)
        if encoder_outputs is not None:  # the encoder already ran (:meth:`encode`): no embeddings needed
            kw["encoder_outputs"] = encoder_outputs
        else:
            kw["inputs_embeds"] = self.embed.of(batch)
        return self.t5.generate(attention_mask=batch["attention_mask"], **self._copy_kw(batch), **kw)

    @property
    def copies(self) -> bool:
        return isinstance(self.t5, PointerT5)

    def _copy_kw(self, batch) -> dict:
        return {"decoder_copy_ids": copy_ids(batch)} if self.copies else {}


class Discriminator(nn.Module):
    """D(s) = sigmoid(MLP(h_CLS)) over ``<CLS> question value <IMG> V`` (eq. 3).

    Starts from a copy of the generator's encoder and embeddings; ``freeze_encoder`` trains the
    head alone (the encoder then stays exactly the generator's). With ``mark_value`` a learned
    vector is added to the claimed value's token embeddings (BERT's segment embedding): an
    extracted value repeats tokens of the text, and past T5's relative-position range (128) the
    encoder cannot tell the claimed copy from the text's own (docs/wdc_pave.md).
    """

    def __init__(self, encoder: nn.Module, embed: MultimodalEmbedding, freeze_encoder: bool = False,
                 mark_value: bool = False):
        super().__init__()
        self.encoder, self.embed = encoder, embed
        d = embed.text.embedding_dim
        self.head = nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Dropout(0.1), nn.Linear(d, 1))
        # zero at the start: the untrained mark leaves the generator's encoder as it was
        self.value_mark = nn.Parameter(torch.zeros(d)) if mark_value else None
        if freeze_encoder:
            for p in list(self.encoder.parameters()) + list(self.embed.parameters()):
                p.requires_grad_(False)

    @classmethod
    def from_generator(cls, gen: MulT5, freeze_encoder: bool = False, mark_value: bool = False) -> Discriminator:
        enc = copy.deepcopy(gen.t5.get_encoder())
        emb = copy.deepcopy(gen.embed)
        emb.text = enc.embed_tokens  # one embedding table, as in T5
        return cls(enc, emb, freeze_encoder, mark_value)

    def forward(self, batch) -> torch.Tensor:
        emb = self.embed.of(batch)
        if self.value_mark is not None and "value_mask" in batch:
            emb = emb + batch["value_mask"].to(emb.dtype)[..., None] * self.value_mark.to(emb.dtype)
        h = self.encoder(inputs_embeds=emb, attention_mask=batch["attention_mask"]).last_hidden_state
        return self.head(h[:, 0]).squeeze(-1)  # logits; <CLS> is position 0


def t5_config(cfg: dict, vocab_size: int) -> T5Config:
    return T5Config(vocab_size=vocab_size, d_model=cfg["d_model"], d_ff=cfg["d_ff"], d_kv=cfg["d_kv"],
                    num_layers=cfg["num_layers"], num_decoder_layers=cfg["num_decoder_layers"],
                    num_heads=cfg["num_heads"], dropout_rate=cfg["dropout"], feed_forward_proj="relu",
                    pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, tie_word_embeddings=True)


def build_generator(cfg: dict, tokenizer, image_vocab: int, feature_dim: int, states=None) -> MulT5:
    """From scratch (sizes from params) or from ``model.pretrained_path`` (e.g. a local T5-pegasus);
    with ``model.copy`` a :class:`PointerT5` (a pretrained checkpoint's copy head starts fresh); with
    ``states`` (``model.encoder_states``) reading that frozen encoder's states."""
    cls = PointerT5 if cfg["copy"] else T5ForConditionalGeneration
    if cfg["pretrained_path"]:  # a local folder, or a model id when online
        t5 = load_pretrained(cls.from_pretrained, cfg["pretrained_path"], "model.pretrained_path")
        if t5.config.decoder_start_token_id is None:
            t5.config.decoder_start_token_id = t5.config.pad_token_id
    else:
        t5 = cls(t5_config(cfg, len(tokenizer)))
    if t5.get_input_embeddings().num_embeddings < len(tokenizer):  # <IMG>/<CLS> added to a pretrained vocab
        t5.resize_token_embeddings(len(tokenizer))
    t5.generation_config.decoder_start_token_id = t5.config.decoder_start_token_id
    t5.generation_config.pad_token_id = tokenizer.pad_token_id
    t5.generation_config.eos_token_id = tokenizer.eos_token_id
    gen = MulT5(t5, image_vocab, feature_dim, cfg["question"])
    if cfg["token_shapes"]:
        gen.embed.add_shapes(token_shapes(tokenizer))
    if states is not None:  # last: its initialisation draws nothing that the T5's weights depend on
        gen.embed.add_states(states.dim)
        gen.encoder_states = states
    return gen


# --- saving and loading (safetensors + JSON; never pickle) -------------------------------------------
def save_model(model: nn.Module, out: Path, meta: dict, tokenizer=None, t5: T5ForConditionalGeneration | None = None):
    """Weights, config, tokenizer and ``deflate.json`` in one folder, built beside ``out`` and swapped in.
    A generator's file names each option it was built with (``"copy"``, ``"token_shapes"``,
    ``"question"``: what :func:`load_generator` builds from); one built with none stays as it was
    before those options, so the committed models keep their bytes."""
    if isinstance(model, MulT5):
        options = {"copy": model.copies, "token_shapes": model.embed.shape is not None,
                   "question": model.layout if model.layout != "attribute" else None,
                   "encoder_states": model.encoder_states.record() if model.encoder_states is not None else None}
        meta = {**meta, **{k: v for k, v in options.items() if v}}
    with atomic_dir(out) as tmp:
        if isinstance(model, MulT5) and model.encoder_states is not None:  # the folder answers on its own
            model.encoder_states.save(tmp / encoder_states.FOLDER)
        save_weights(model, tmp / WEIGHTS)
        if t5 is not None:
            t5.config.to_json_file(str(tmp / "config.json"))
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp / "tokenizer"))
        write_meta(tmp, meta)


def write_meta(folder: Path, meta: dict) -> None:
    """A model folder's ``deflate.json``, always in the same bytes for the same record."""
    write_text(Path(folder) / META, json.dumps(meta, ensure_ascii=False, indent=1, sort_keys=True))


def load_generator(path: Path) -> tuple[MulT5, object, dict]:
    """A saved generator; every JSON file is checked against its schema first (``deflate.infra.bundle``)."""
    meta = read_record(path / META, GeneratorMeta).model_dump(exclude_none=True, by_alias=True)
    read_record(path / "tokenizer" / "tokenizer_config.json", TokenizerConfig)
    try:
        tok = load_tokenizer(path / "tokenizer")
    except Exception as e:  # the Rust reader's message, bounded; the file is named
        raise BundleError(f"{path / 'tokenizer'}: cannot load the tokenizer ({str(e)[:120]})") from None
    config = T5Config.from_dict(read_record(path / "config.json", T5Fields).model_dump(exclude_unset=True))
    if config.vocab_size < len(tok):
        raise BundleError(f"{path / 'config.json'}: vocab_size {config.vocab_size} is smaller than the tokenizer's "
                          f"{len(tok)} tokens")
    cls = PointerT5 if meta["copy"] else T5ForConditionalGeneration  # models before model.copy: plain
    t5 = cls(config)
    gen = MulT5(t5, meta["image_vocab"], meta["feature_dim"], meta["question"])
    if meta["token_shapes"]:
        gen.embed.add_shapes(token_shapes(tok))
    if meta.get("encoder_states"):
        gen.encoder_states = encoder_states.EncoderStates(path / encoder_states.FOLDER)  # its files checked
        if gen.encoder_states.record() != meta["encoder_states"]:
            raise BundleError(f"{path / encoder_states.FOLDER} is not the encoder {path / META} names")
        gen.embed.add_states(gen.encoder_states.dim)
    load_weights(gen, path / WEIGHTS)
    t5.generation_config.decoder_start_token_id = t5.config.decoder_start_token_id
    t5.generation_config.pad_token_id = tok.pad_token_id
    t5.generation_config.eos_token_id = tok.eos_token_id
    return gen.eval(), tok, meta


def load_discriminator(path: Path, gen: MulT5) -> tuple[Discriminator, dict]:
    """The discriminator saved in ``path``, built on (a copy of) the already loaded ``gen``."""
    meta = read_record(path / META, DiscriminatorMeta).model_dump(exclude_none=True)
    disc = Discriminator.from_generator(gen, mark_value=meta.get("mark_value", False))  # older models: no mark
    load_weights(disc, path / WEIGHTS)
    return disc.eval(), meta
