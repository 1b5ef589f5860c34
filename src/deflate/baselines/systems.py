"""The comparison systems of paper §5.1, trained and scored on the same tables, image tokens and
metric code as DEFLATE: ``bilstm_crf`` and ``mjave`` (extractive, :mod:`deflate.baselines.taggers`) and
``jgave`` (Roy et al. 2022, word-sequence variant: a T5 of DEFLATE's size that writes every
``attribute: value`` pair of a product as one sequence, in random order, from the text alone),
and ``dictionary`` (the WDC-PAVE reference: :mod:`deflate.baselines.dictionary`, nothing trained).
Each returns its val and test answers (:class:`Trained`); :mod:`deflate.stages.baseline` writes and scores them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deflate.answering.decoding import generate_values
from deflate.baselines.dictionary import Dictionary
from deflate.baselines.taggers import (
    MJAVE,
    BiLSTMCRF,
    TagBatcher,
    decode_piece_spans,
    decode_spans,
    encode_tags,
    piece_tags,
    spans_of,
    tag_names,
)
from deflate.baselines.text_units import Units
from deflate.data.records import Record, load_split
from deflate.data.splits import (
    Split,
    grouped_labels,
    image_spec,
    load_data,
    load_schema,
)
from deflate.evaluation.metrics import evaluate as compute_metrics
from deflate.evaluation.metrics import gold_from_records
from deflate.infra import distributed as dist
from deflate.infra.errors import UserError
from deflate.model import encoder_states
from deflate.model.batching import Batcher, Example, infer
from deflate.model.mul_t5 import build_generator, save_model
from deflate.model.tokenizer import QuestionBuilder, corpus, train_tokenizer
from deflate.model.train import TrainingJob, config_hash, file_digest, train_and_save

SYSTEMS = ("bilstm_crf", "mjave", "jgave", "dictionary")


@dataclass(kw_only=True)
class Trained:
    """A trained baseline's answers on val and test (``{(product id, attribute): [values]}``)."""
    val: list[Record]
    val_pred: dict
    test: list[Record]
    test_pred: dict
    history: list[dict]
    params: int


def score(records, pred: dict) -> dict:
    """The paper's metrics of ``pred`` against the records' gold."""
    gold, texts = gold_from_records(records)
    return compute_metrics(gold, pred, texts)


# --- extractive taggers ---------------------------------------------------------------------------
class _Tagging:
    """Unit ids, BIO tags and attribute targets of one split (and, with a frozen encoder, its units'
    vectors); ``offsets`` maps pieces back to characters (None for characters)."""

    def __init__(self, data: Split, units: Units, attributes: list[str], max_chars: int):
        self.data, self.names = data, tag_names(attributes)
        tag_id = {t: i for i, t in enumerate(self.names)}
        a_id = {a: i for i, a in enumerate(attributes)}
        self.texts = [r.text[:max_chars] for r in data.records]
        self.attr = np.zeros((len(data.records), len(attributes)), dtype=np.float32)
        self.examples, self.offsets, self.untaggable = [], None if units.mode == "chars" else [], 0
        attributes = set(attributes)
        for i, (r, t) in enumerate(zip(data.records, self.texts)):
            for lab in r.labels:
                if lab["attribute"] in a_id:
                    self.attr[i, a_id[lab["attribute"]]] = 1.0
            ids, offsets = units.split(t)
            spans = spans_of(t, [lab for lab in r.labels if lab["attribute"] in attributes])
            if self.offsets is None:
                tags = encode_tags(len(ids), spans, tag_id)
            else:
                tags, lost = piece_tags(offsets, spans, tag_id)
                self.offsets.append(offsets)
                self.untaggable += lost  # values that start or end inside a piece
            self.examples.append(Example(ids, i, target=tags))
        self.features = units.features([e.ids for e in self.examples])

    def batcher(self, use_image: bool) -> TagBatcher:
        return TagBatcher(self.data.image, self.data.has_image, use_image, self.attr, self.features)

    def spans(self, i: int, tags: list[int]) -> list[tuple[str, str]]:
        """(attribute, value) of row ``i``'s tagged runs, cut out of its text."""
        if self.offsets is None:
            return decode_spans(self.texts[i], tags, self.names)
        return decode_piece_spans(self.texts[i], self.offsets[i], tags, self.names)


def tagger_predict(model: BiLSTMCRF, tagging: _Tagging, batcher: TagBatcher, batch_size: int = 128,
                   device: str = "cpu", attr_threshold: float = 0.5) -> dict:
    """{(pid, attribute): [values]} from the tagged spans (M-JAVE: of predicted attributes only)."""
    attributes = [n[2:] for n in tagging.names[1::2]]

    def step(idx, batch):
        paths, probs = model.predict(batch)
        return [[(attr, value) for attr, value in tagging.spans(i, path)
                 if probs is None or not probs[j, attributes.index(attr)] < attr_threshold]
                for j, (i, path) in enumerate(zip(idx, paths))]
    spans = infer(model, batcher, tagging.examples, batch_size, step, device, "tag", progress=False)
    pred: dict = {}
    for r, found in zip(tagging.data.records, spans):
        for attr, value in found:
            vals = pred.setdefault((r.id, attr), [])
            if value and value not in vals:
                vals.append(value)
    return pred


def train_tagger(system: str, p: dict, processed: Path, tokens_dir: Path, out: Path, tracker, train_kw: dict):
    device = train_kw["device"]
    cfg = p["baselines"]["tagger"]
    attributes = load_schema(processed)["attributes"]
    train, val = load_data(processed, tokens_dir, "train"), load_data(processed, tokens_dir, "val")
    use_image = system == "mjave" and train.image is not None
    units = Units.build(cfg, (r.text[:cfg["max_chars"]] for r in train.records), system)
    tr, va = (_Tagging(d, units, attributes, cfg["max_chars"]) for d in (train, val))
    text = {"embeddings": units.embeddings, "features": units.feature_dim}
    if system == "mjave":
        image_vocab, feature_dim = image_spec(train.meta) if use_image else (0, 0)
        model = MJAVE(units.size, len(tr.names), len(attributes), image_vocab, feature_dim, cfg["emb"], cfg["hidden"],
                      **text)
    else:
        model = BiLSTMCRF(units.size, len(tr.names), cfg["emb"], cfg["hidden"], **text)
    va_b = va.batcher(use_image)
    # what the model folder records of its text units; a chars model's record is the one it always had
    units_meta = ({"vocab": units.vocab} if units.vocab is not None else
                  {"text": units.mode, "checkpoint": units.provenance, "loading": units.loading,
                   "untaggable_train_values": tr.untaggable})

    def validate(m):
        return {"score": score(val.records, tagger_predict(m, va, va_b, device=device))["ave"]["f1"] / 100}

    run_hash = config_hash(system, cfg, p["seed"], file_digest(processed / "train.parquet", processed / "val.parquet"))
    job = TrainingJob(name=system, model=model, examples=tr.examples, batcher=tr.batcher(use_image), cfg=cfg,
                      loss_fn=lambda m, b: m(b), validate=validate, run_hash=run_hash, ckpt_dir=out / "ckpt")
    history = train_and_save(job, out / "model", seed=p["seed"], tracker=tracker, train_kw=train_kw, save=lambda h: save_model(
        model.cpu(), out / "model", {"system": system, **units_meta, "tags": tr.names, "use_image": use_image,
                                     "params": sum(x.numel() for x in model.parameters())}, tokenizer=units.tokenizer))
    test = load_data(processed, tokens_dir, "test")
    te = _Tagging(test, units, attributes, cfg["max_chars"])
    return Trained(val=val.records, val_pred=tagger_predict(model, va, va_b, device=device), test=test.records,
                   test_pred=tagger_predict(model, te, te.batcher(use_image), device=device), history=history,
                   params=sum(x.numel() for x in model.parameters()))


# --- JG-AVE ---------------------------------------------------------------------------------------
PAIR, SEP = ":", ";"


def jgave_target(r, seed: int, i: int, value_sep: str = "|") -> str:
    """All pairs of a product in a random (seeded, fixed) order: ``a1:v1;a2:v2``."""
    pairs = [f"{a}{PAIR}{value_sep.join(vs)}" for a, vs in grouped_labels(r).items()]
    order = np.random.default_rng([seed, i]).permutation(len(pairs))
    return SEP.join(pairs[j] for j in order)


def parse_pairs(text: str, attributes: set[str], value_sep: str = "|") -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for chunk in text.split(SEP):
        a, _, v = (x.strip() for x in chunk.partition(PAIR))
        if a in attributes and v:
            for x in v.split(value_sep):
                if x.strip() and x.strip() not in out.setdefault(a, []):
                    out[a].append(x.strip())
    return out


def jg_example(qb: QuestionBuilder, r, target: list[int] | None = None) -> Example:
    """JG-AVE's input: the product's name and description tokens, no template, cut to ``max_len``;
    with ``model.encoder_states`` (``qb.states``) the frozen encoder's states under them, as DEFLATE's
    generator reads them (#32: the baselines get the checkpoint wherever DEFLATE does)."""
    ids = (qb.ids(r.name) + qb.ids(r.description))[:qb.max_len] if r.description else qb.ids(r.name)[:qb.max_len]
    states = None
    if qb.states is not None:
        ids_, spans = qb.product_spans(r.name, r.description)
        if ids_ != ids:  # the offsets' tokenisation is the input's
            raise ValueError(f"jg_example: the tokenizer's offsets do not rebuild the input of {r.name[:60]!r}")
        states = qb.states.under(qb.offer_text(r.name, r.description), spans, len(ids))
    return Example(ids, -1, target=target, states=states)


def jgave_predict(gen, qb, records, attributes, decode: dict, device: str, progress: bool = False) -> dict:
    exs = [jg_example(qb, r) for r in records]
    texts = generate_values(gen, qb, Batcher(None, None, False, qb.img_id), exs, decode, device,
                            desc="jg-ave", progress=progress)
    pred = {}
    for r, t in zip(records, texts):
        for a, vs in parse_pairs(t, set(attributes)).items():
            pred[(r.id, a)] = vs
    return pred


def train_jgave(p: dict, processed: Path, tokens_dir: Path, out: Path, tracker, train_kw: dict):
    device = train_kw["device"]
    cfg = p["baselines"]["jgave"]
    if cfg["encoder_states"] and not p["model"]["encoder_states"]:
        raise UserError("baselines.jgave.encoder_states reads the checkpoint that model.encoder_states names: name one there")
    schema = load_schema(processed)
    attributes = schema["attributes"]
    train, val = load_data(processed, tokens_dir, "train"), load_data(processed, tokens_dir, "val")
    tok = dist.from_main(lambda: train_tokenizer(list(corpus(train.records, schema)) + [PAIR, SEP, "|"],
                                                 p["text"]["vocab_size"]))
    # DEFLATE's frozen encoder, where it has one and val chose it for JG-AVE too
    states = encoder_states.load(p["model"]["encoder_states"]) if cfg["encoder_states"] else None
    qb = QuestionBuilder(tok, schema["language"], p["text"]["max_len"], cfg["max_target_len"], states=states)
    # text only, DEFLATE's backbone size; its input is its own (one question per product), so no layout
    gen = build_generator({**p["model"], "question": "attribute"}, tok, 0, 0, states)
    examples = [jg_example(qb, r, qb.value(jgave_target(r, p["seed"], i))) for i, r in enumerate(train.records)]
    decode = {"max_new_tokens": cfg["max_target_len"], "batch_size": 128, "num_beams": 1}
    val_records = val.records[: cfg["val_max"]]

    def validate(m):
        return {"score": score(val_records, jgave_predict(m, qb, val_records, attributes, decode, device))["ave"]["f1"] / 100}

    run_hash = config_hash("jgave", cfg, p["model"], p["text"], p["seed"],
                           file_digest(processed / "train.parquet", processed / "val.parquet"))
    job = TrainingJob(name="jgave", model=gen, examples=examples, batcher=Batcher(None, None, False, qb.img_id),
                      cfg=cfg, loss_fn=lambda m, b: m(b).loss, validate=validate, run_hash=run_hash,
                      ckpt_dir=out / "ckpt")
    history = train_and_save(job, out / "model", seed=p["seed"], tracker=tracker, train_kw=train_kw, save=lambda h: save_model(
        gen.cpu(), out / "model", {"system": "jgave", "params": sum(x.numel() for x in gen.parameters())}, tok, gen.t5))
    test = load_data(processed, tokens_dir, "test")
    return Trained(val=val.records, val_pred=jgave_predict(gen, qb, val.records, attributes, decode, device, True),
                   test=test.records, test_pred=jgave_predict(gen, qb, test.records, attributes, decode, device, True),
                   history=history, params=sum(x.numel() for x in gen.parameters()))


def run_dictionary(processed: Path) -> Trained:
    """The dictionary reference: nothing trained, nothing selected."""
    schema = load_schema(processed)
    train, val, test = (load_split(processed, s) for s in ("train", "val", "test"))
    d = Dictionary.fit(train)
    return Trained(val=val, val_pred=d.predict(val, schema), test=test, test_pred=d.predict(test, schema), history=[],
                   params=sum(len(v) for v in d.values.values()))
