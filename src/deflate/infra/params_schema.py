"""The one schema of ``params.yaml``, for every stage of every pipeline: types, ranges and choices,
checked before a stage does any work (:func:`deflate.infra.config.stage_params`). A bad value is one line
naming the dotted key; an unknown key is refused (a typo must not silently keep a default).

A section or key that only some pipelines have is optional here; a stage that needs it and does not
find it says so by name (:class:`deflate.infra.config.Params`).
"""
from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from deflate.infra.bundle import DecodeSchema, ImageConfig, Sizes
from deflate.infra.errors import UserError

Opt = Optional


class ParamsError(UserError, ValueError):
    """A params.yaml value outside the schema; the message names the key."""


class Section(BaseModel):
    # strict: "3" is not 3 and 1 is not true; a YAML int is accepted where a float is asked
    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)


Pos = Field(ge=1, le=1 << 24)
Rate = Field(gt=0, le=10)
Frac = Field(ge=0, le=1)
Path_ = Field(max_length=4096)
Optimizer = Literal["adamax", "adamw", "Adamax", "AdamW"]


class Data(Section):
    format: Literal["desire", "mepave", "implicitave", "wdc_pave"]
    path: str = Field(min_length=1, max_length=4096)
    language: Literal["auto", "zh", "en"]
    max_reject_fraction: float = Frac
    val_fraction: float = Field(gt=0, lt=1)
    pic_token_len: int = Pos
    pic_token_vocab: int = Pos


class Synth(Section):
    n_products: int = Field(ge=10, le=10_000_000)
    mepave_rows: int = Field(ge=10, le=10_000_000)
    image_size: int = Field(ge=8, le=4096)
    label_noise: float = Frac
    long_desc_fraction: float = Frac


class Text(Section):
    vocab_size: int = Field(ge=64, le=1 << 20)
    max_len: int = Field(ge=8, le=8192)
    max_value_len: int = Field(ge=1, le=1024)
    target_form: Literal["standalone", "as_in_text"]
    answer_prefix: bool
    split_punctuation: bool


class Model(Sizes):
    use_image: bool
    use_discriminator: bool
    pretrained_path: str = Path_
    encoder_states: str = Field(default="", max_length=4096)  # a materialised BERT-family checkpoint (deflate.model.encoder_states)
    copy_: bool = Field(alias="copy")
    token_shapes: bool
    question: Literal["attribute", "offer"]
    tokenizer_path: str = Path_
    dropout: float = Field(ge=0, lt=1)
    num_threads: int = Field(ge=1, le=1024)
    device: str = Field(pattern=r"^(auto|cpu|cuda|cuda:\d{1,3}|mps)$")


class Training(Section):
    epochs: int = Field(ge=1, le=10_000)
    batch_size: int = Pos
    lr: float = Rate
    weight_decay: float = Field(ge=0, le=1)
    optimizer: Optimizer
    grad_clip: float = Field(gt=0, le=1e6)
    bucketing: bool = True


class Generator(Training):
    val_max: int = Pos
    none_per_product: int = Field(ge=0, le=1000)
    absent_as_none: bool  # DEFLATE's generator also learns "None" (d- always does)
    shared_from: str = Path_  # a shared_generator stage's folder, used where its key matches (train_generator)
    copy_warmup: int = Field(ge=0, le=10_000_000)
    copy_warmup_from: str = Path_
    ema: float = Field(ge=0, lt=1)  # 0 = off; else the EMA decay per step whose weights are validated and kept


class Negatives(Section):
    mode: Literal["absent", "candidates"]
    per_product: int = Field(ge=-1, le=10_000)  # -1: every absent attribute
    wrong_values: bool


class Discriminator(Training):
    eval_batch_size: int = Pos
    freeze_encoder: bool
    claim_value: bool
    mark_value: bool


class Lexical(Section):
    max_features: Opt[int] = Field(ge=1)
    C: float = Field(gt=0, le=1e6)


class Decode(DecodeSchema):  # what a bundle keeps of it, and the candidates' top-k
    top_k: int = Field(ge=0, le=1000)


class Eval(Section):
    threshold: Union[Literal["auto"], float] = Field(union_mode="left_to_right")
    threshold_metric: Literal["ave", "ap"]
    presence: Literal["kept", "discriminator"]
    keep_weights: list[float] = Field(min_length=1, max_length=100)
    keep_decision: Literal["score", "learned"]
    metrics_name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    n_boot: int = Field(ge=0, le=1_000_000)
    val_max: Opt[int] = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _ranges(self):
        if not isinstance(self.threshold, str) and not 0 <= self.threshold <= 1:
            raise ValueError("eval.threshold must be 'auto' or a number in [0, 1]")
        if any(not 0 <= w < 1 for w in self.keep_weights):
            raise ValueError("eval.keep_weights must be numbers in [0, 1)")
        if self.keep_decision == "learned" and self.threshold != "auto":
            raise ValueError("eval.keep_decision learned is fitted on validation: it needs eval.threshold auto")
        return self


class Tracking(Section):
    enabled: bool
    uri: str = Path_
    experiment: str = Field(min_length=1, max_length=256)


class Distributed(Section):
    processes: int = Field(ge=1, le=1024)
    mixed_precision: Literal["auto", "no", "bf16"]
    grad_accum: int = Field(ge=1, le=1024)
    config_file: str = Path_
    port: int = Field(ge=1024, le=65535)


class Repro(Section):
    """How numbers are computed (:mod:`deflate.infra.kernels`): the same kernels and thread count
    give the same weights on any x86-64 machine where the setting matches."""
    kernels: Literal["native", "avx2", "compatible"]
    num_threads: int = Field(ge=1, le=1024)


class Experiments(Section):
    fig3_proportions: list[float] = Field(min_length=1, max_length=20)

    @model_validator(mode="after")
    def _fractions(self):
        if any(not 0 < x <= 1 for x in self.fig3_proportions):
            raise ValueError("experiments.fig3_proportions must be fractions in (0, 1]")
        return self


class Tables(Section):
    digits: int = Field(ge=0, le=10)
    plot_metric: str = Field(pattern=r"^(ap|ave|ave_fuzzy)_(p|r|f1)$")


TextUnits = Literal["chars", "pieces", "embeddings", "encoder"]  # deflate.baselines.text_units


class TaggerTexts(Section):  # the paper's A.1 gives its two taggers different text encoders
    bilstm_crf: TextUnits
    mjave: TextUnits


class Tagger(Training):
    emb: int = Field(ge=1, le=8192)
    hidden: int = Field(ge=1, le=8192)
    max_chars: int = Field(ge=8, le=100_000)
    text: Union[TextUnits, TaggerTexts]  # one for both taggers, or one each
    pretrained_path: str = Path_

    @model_validator(mode="after")
    def _checkpoint(self):
        modes = {self.text} if isinstance(self.text, str) else {self.text.bilstm_crf, self.text.mjave}
        if bool(modes - {"chars"}) != bool(self.pretrained_path):
            raise ValueError("baselines.tagger.pretrained_path names the checkpoint whose pieces a `text` of "
                             "pieces/embeddings/encoder reads, and is empty when every text is chars")
        return self


class JGAVE(Training):
    val_max: int = Pos
    max_target_len: int = Field(ge=1, le=4096)
    encoder_states: bool  # read model.encoder_states's frozen states too (#32: offered wherever DEFLATE has them; val decides)


class Baselines(Section):
    tagger: Tagger
    jgave: JGAVE


class ParamsSchema(Section):
    seed: int = Field(ge=0, le=2**32 - 1)
    checkpoint: Opt[str] = Field(None, pattern=r"^[a-z0-9][a-z0-9.-]{0,63}$")  # a named checkpoint (stages/checkpoint.py)
    repro: Opt[Repro] = None  # absent: the process keeps whatever kernels and threads it started with
    data: Data
    synth: Opt[Synth] = None
    image: Opt[ImageConfig] = None  # the same record a trained model keeps in image.json
    text: Text
    model: Model
    generator: Generator
    negatives: Negatives
    discriminator: Discriminator
    lexical: Opt[Lexical] = None
    decode: Decode
    eval: Eval
    tracking: Tracking
    distributed: Distributed
    experiments: Opt[Experiments] = None
    tables: Opt[Tables] = None
    baselines: Opt[Baselines] = None

    @model_validator(mode="after")
    def _offer_needs_prefix(self):
        if self.model.question == "offer" and not self.text.answer_prefix:
            raise ValueError("model.question: offer asks the decoder the attribute: set text.answer_prefix: true")
        return self


def check_params(raw, where: str = "params.yaml") -> None:
    """Raise :class:`ParamsError` naming the first key outside the schema."""
    if not isinstance(raw, dict):
        raise ParamsError(f"{where} must be a mapping of sections, not {type(raw).__name__}")
    try:
        ParamsSchema.model_validate(raw)
    except ValidationError as e:
        def key(err):  # a union's branches (literal['auto'], float) are not part of the key
            return ".".join(str(x) for x in err["loc"] if not str(x).startswith(("literal[", "float", "function")))

        errs = e.errors()
        err = errs[0]
        same = [x for x in errs if key(x) == key(err)]
        quiet = err["type"] == "missing" or isinstance(err.get("input"), dict)  # a section-wide rule
        got = "" if quiet else f" (got {str(err.get('input'))[:40]!r})"
        msg = " or ".join(dict.fromkeys(x["msg"].removeprefix("Value error, ") for x in same))
        raise ParamsError(f"{where}: {key(err)}: {msg}{got}") from None
