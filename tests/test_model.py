import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import gen_meta, tiny_model

from deflate.answering.decoding import Trie, build_tries, generate_values
from deflate.infra.errors import UserError
from deflate.model.batching import Batcher, Example
from deflate.model.mul_t5 import (
    Discriminator,
    build_generator,
    load_generator,
    save_model,
)
from deflate.model.questions import Question
from deflate.model.tokenizer import (
    CLS,
    IMG,
    NONE_VALUE,
    QuestionBuilder,
    train_tokenizer,
)

TINY = tiny_model()


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(["红烧牛肉（清蒸）的主料是牛肉", "清蒸鲈鱼", "绿茶红茶", NONE_VALUE, "The Form of tea is Box"], 200)


def test_specials_have_fixed_ids(tok):
    assert tok.pad_token_id == 0 and tok.eos_token_id == 1
    assert tok.convert_tokens_to_ids(IMG) == 3 and tok.convert_tokens_to_ids(CLS) == 4


def test_question_keeps_attribute_when_cut(tok):
    qb = QuestionBuilder(tok, "zh", max_len=12, max_value_len=4)
    q = qb.question("红烧牛肉", "清蒸鲈鱼" * 10, "主料")
    assert len(q) <= 12 and qb.decode(q).endswith("的主料是") and qb.decode(q).startswith("红烧牛肉（")
    assert qb.decode(q).count("）") == 1
    assert qb.claim("红烧牛肉", "", "主料", "牛肉")[0] == qb.cls_id
    assert qb.value("牛肉") == qb.ids("牛肉") + [1]
    en = QuestionBuilder(tok, "en", 32, 4)
    assert en.decode(en.question("tea", "", "Form")) == "The Form of tea is"


def test_collate_places_img_and_image_tokens(tok):
    image = np.arange(12).reshape(3, 4)
    has = np.array([True, False, True])
    b = Batcher(image, has, use_image=True, img_id=3)
    exs = [Example([5, 6, 7], 0, target=[9, 1]), Example([5, 6], 1, target=[9, 1]), Example([8], 2, target=[9, 9, 1])]
    batch = b.collate(exs)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 3, 0, 0, 0, 0], [5, 6, 0, 0, 0, 0, 0, 0], [8, 3, 0, 0, 0, 0, 0, 0]]
    assert batch["attention_mask"].sum(1).tolist() == [8, 2, 6]
    assert batch["img_start"].tolist() == [4, -1, 2]
    assert batch["labels"].tolist() == [[9, 1, -100], [9, 1, -100], [9, 9, 1]]
    off = Batcher(image, has, use_image=False, img_id=3).collate(exs)
    assert "image" not in off and off["attention_mask"].sum(1).tolist() == [3, 2, 1]
    fixed = b.collate(exs, pad_to=20, pad_target_to=6)
    assert fixed["input_ids"].shape == (3, 20) and fixed["labels"].shape == (3, 6)


def test_bucketing_cuts_padding(tok):
    rng = np.random.default_rng(0)
    exs = [Example([5] * int(rng.integers(1, 60)), -1, target=[1]) for _ in range(400)]
    b = Batcher(None, None, False, 3)
    def padded(batches):
        return sum(len(ix) * max(len(exs[i].ids) for i in ix) for ix in batches)
    assert padded(b.batches(exs, 16, True, True, 0)) < 0.7 * padded(b.batches(exs, 16, True, False, 0))
    assert sorted(i for ix in b.batches(exs, 16, True, True, 0) for i in ix) == list(range(400))


def test_image_embeddings_replace_placeholders(tok):
    gen = build_generator(TINY, tok, image_vocab=10, feature_dim=0)
    b = Batcher(np.array([[1, 2], [3, 4]]), np.array([True, True]), True, 3)
    batch = b.collate([Example([5, 6], 0, target=[1]), Example([7], 1, target=[1])])
    e = gen.embed(batch["input_ids"], batch["img_start"], batch["image"])
    assert torch.equal(e[0, 3], gen.embed.image.weight[1]) and torch.equal(e[0, 4], gen.embed.image.weight[2])
    assert torch.equal(e[1, 2], gen.embed.image.weight[3]) and torch.equal(e[0, 2], gen.embed.text.weight[3])
    out = gen(batch)
    assert out.logits.shape[:2] == (2, 1) and torch.isfinite(out.loss)
    # a different image changes the encoder input, text-only rows are untouched by image ids
    b2 = Batcher(np.array([[9, 9], [3, 4]]), np.array([True, True]), True, 3)
    e2 = gen.embed(**{k: v for k, v in b2.collate([Example([5, 6], 0, target=[1]), Example([7], 1, target=[1])]).items()
                      if k in ("input_ids", "img_start", "image")})
    assert not torch.equal(e[0], e2[0]) and torch.equal(e[1], e2[1])


def test_continuous_features_are_projected(tok):
    gen = build_generator(TINY, tok, image_vocab=0, feature_dim=6)
    feats = np.random.default_rng(0).normal(size=(1, 3, 6)).astype(np.float16)
    batch = Batcher(feats, np.array([True]), True, 3).collate([Example([5], 0, target=[1])])
    assert gen.embed(batch["input_ids"], batch["img_start"], batch["image"]).shape == (1, 5, 16)
    assert torch.isfinite(gen(batch).loss)


def test_discriminator_starts_from_generator_encoder(tok):
    gen = build_generator(TINY, tok, 10, 0)
    d = Discriminator.from_generator(gen)
    g_sd, d_sd = gen.t5.encoder.state_dict(), d.encoder.state_dict()
    assert all(torch.equal(g_sd[k], d_sd[k]) for k in g_sd)
    assert d.embed.text is d.encoder.embed_tokens
    frozen = Discriminator.from_generator(gen, freeze_encoder=True)
    trainable = {n for n, p in frozen.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("head.") for n in trainable)
    batch = Batcher(np.array([[1, 2]]), np.array([True]), True, 3).collate([Example([4, 5], 0, target=1.0)])
    assert d(batch).shape == (1,)


def test_a_marked_claim_value_is_told_apart_from_the_same_tokens_in_the_text(tok, tmp_path):
    """discriminator.mark_value: the claim's value tokens (and only they) carry a learned vector,
    zero at the start; the mark is saved with the model and read back."""
    from deflate.data.records import Record
    from deflate.model.mul_t5 import load_discriminator
    from deflate.model.questions import Claim, claim_examples
    qb = QuestionBuilder(tok, "zh", 24, 4)
    records = [Record("p1", "红烧牛肉", "清蒸")]
    claim = Claim(Question(0, "主料"), "牛肉")
    (marked,), (bare,) = (claim_examples(records, qb, [claim], with_value=w) for w in (True, False))
    assert marked.ids[marked.value_from:] == qb.ids("牛肉") and bare.value_from == -1
    b = Batcher(None, None, False, qb.img_id)
    batch = b.collate([marked, bare])
    n = len(qb.ids("牛肉"))
    assert bare.ids == marked.ids[:marked.value_from] and len(marked.ids) == marked.value_from + n
    assert batch["value_mask"][0].tolist() == [0.0] * marked.value_from + [1.0] * n
    assert batch["value_mask"][1].sum() == 0 and "value_mask" not in b.collate([bare])
    gen = build_generator(TINY, tok, 0, 0).eval()
    d, plain = Discriminator.from_generator(gen, mark_value=True).eval(), Discriminator.from_generator(gen).eval()
    plain.head.load_state_dict(d.head.state_dict())
    assert torch.equal(d(batch), plain(batch))  # an untrained mark changes nothing
    with torch.no_grad():
        d.value_mark.fill_(1.0)
    out = d(batch)
    assert out[0] != plain(batch)[0] and out[1] == plain(batch)[1]  # only the claim with a value moves
    save_model(gen, tmp_path / "g", gen_meta(), tok, gen.t5)
    save_model(d, tmp_path / "d", {"mark_value": True})
    g2, _, _ = load_generator(tmp_path / "g")
    d2, meta = load_discriminator(tmp_path / "d", g2)
    assert meta["mark_value"] and torch.allclose(d2(batch), out)


def test_save_and_load_round_trip(tok, tmp_path):
    gen = build_generator(TINY, tok, 10, 0).eval()
    save_model(gen, tmp_path / "g", gen_meta(image_vocab=10), tok, gen.t5)
    gen2, tok2, meta = load_generator(tmp_path / "g")
    batch = Batcher(np.array([[1, 2]]), np.array([True]), True, 3).collate([Example([5, 6], 0, target=[7, 1])])
    assert torch.allclose(gen(batch).logits, gen2(batch).logits) and len(tok2) == len(tok)


def test_pretrained_t5_loads_from_a_local_folder(tok, tmp_path):
    from transformers import T5Config, T5ForConditionalGeneration
    cfg = T5Config(vocab_size=len(tok) - 2, d_model=16, d_ff=32, d_kv=8, num_heads=2, num_layers=1,
                   num_decoder_layers=1, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    T5ForConditionalGeneration(cfg).save_pretrained(tmp_path / "t5")
    gen = build_generator(dict(TINY, pretrained_path=str(tmp_path / "t5")), tok, 10, 0)
    assert gen.t5.get_input_embeddings().num_embeddings >= len(tok)  # grown for <IMG>/<CLS>
    with pytest.raises(UserError, match="pretrained_path"):
        build_generator(dict(TINY, pretrained_path=str(tmp_path / "nope")), tok, 10, 0)


def test_trie_constrained_decoding_only_emits_candidates(tok):
    torch.manual_seed(0)
    gen = build_generator(TINY, tok, 0, 0)  # untrained: free decoding emits junk
    qb = QuestionBuilder(tok, "zh", 16, 6)
    cands = {"主料": ["牛肉", "鲈鱼"], "茶": ["绿茶", "红茶", NONE_VALUE]}
    exs = [Example(qb.question(f"商品{i}", "", a), -1, key=Question(i, a)) for i in range(6) for a in cands]
    b = Batcher(None, None, False, qb.img_id)
    for beams in (1, 3):
        out = generate_values(gen, qb, b, exs, {"num_beams": beams, "max_new_tokens": 8, "batch_size": 64}, tries=build_tries(cands, qb),
                              progress=False)
        assert all(v in cands[e.key.attribute] for e, v in zip(exs, out)), out
    t = Trie([[5, 6, 1], [5, 7, 1]])
    assert sorted(t.next_tokens([5])) == [6, 7] and t.next_tokens([9]) == []


def test_pretrained_path_takes_a_folder_or_a_model_id_and_says_in_one_line_when_neither_loads(tmp_path):
    from deflate.model.pretrained import load_pretrained

    assert load_pretrained(lambda src: src, str(tmp_path), "model.pretrained_path") == str(tmp_path)
    assert load_pretrained(lambda src: src, "google-t5/t5-base", "model.pretrained_path") == "google-t5/t5-base"

    def offline(src):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files.\nmore detail")

    with pytest.raises(UserError, match=r"^model.pretrained_path 'google-t5/t5-base' is no local folder .*connect") as e:
        load_pretrained(offline, "google-t5/t5-base", "model.pretrained_path")
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="not a folder"):
        load_pretrained(offline, str(tmp_path / "missing"), "model.pretrained_path")


class _Sum(torch.nn.Module):
    """A model whose answer is each row's sum of ids: what :func:`infer` hands back is checkable."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))

    def forward(self, batch):
        return (batch["input_ids"] * batch["attention_mask"]).sum(1).float() * self.w


def test_infer_answers_in_input_order_in_eval_mode():
    from deflate.model.batching import infer

    rng = np.random.default_rng(0)
    exs = [Example(rng.integers(1, 9, int(rng.integers(1, 40))).tolist(), -1) for _ in range(53)]
    model, modes = _Sum().train(), []

    def step(idx, batch):
        modes.append(model.training)
        assert not torch.is_grad_enabled()  # inference: no graph kept
        return model(batch).tolist()
    got = infer(model, Batcher(None, None, False, 3), exs, 8, step, progress=False)
    assert got == [float(sum(e.ids)) for e in exs]  # bucketed batches, answers back at their inputs
    assert modes and not any(modes)
    assert infer(model, Batcher(None, None, False, 3), [], 8, step, progress=False) == []


def test_train_and_save_fits_then_saves_once(tmp_path, monkeypatch):
    from deflate.infra.runtime import read_cost
    from deflate.model.train import TrainingJob, train_and_save

    monkeypatch.chdir(tmp_path)
    exs = [Example([5, 6, 7][: 1 + i % 3], -1, target=float(i % 2)) for i in range(24)]
    model, saved = _Sum(), []
    cfg = {"epochs": 2, "batch_size": 8, "bucketing": True, "optimizer": "adamax", "lr": 1e-2, "weight_decay": 0.0,
           "grad_clip": 1.0}
    job = TrainingJob(name="toy", model=model, examples=exs, batcher=Batcher(None, None, False, 3), cfg=cfg,
                      loss_fn=lambda m, b: torch.nn.functional.binary_cross_entropy_with_logits(m(b), b["labels"]),
                      validate=lambda m: {"score": -m.w.item()}, run_hash="h", ckpt_dir=tmp_path / "ckpt")
    history = train_and_save(job, Path("models/toy"), seed=0, tracker=None, train_kw={"device": "cpu"},
                             save=lambda h: saved.append(len(h)))
    assert [h["epoch"] for h in history] == [1, 2]
    assert saved == [2]  # once, after the fit
    # the measured cost is kept outside the model folder, whose bytes must not vary run to run
    cost = read_cost(Path("models/toy"))
    assert sorted(cost) == ["examples_per_s", "peak_memory_mb", "train_seconds"] and cost["train_seconds"] >= 0
    assert len(cost["examples_per_s"]) == 2 and all(r > 0 for r in cost["examples_per_s"])
    # nothing measured in the history: its bytes repeat run to run
    assert all(sorted(h) == ["epoch", "train_loss", "val_score"] for h in history)
    assert (tmp_path / "logs" / "costs" / "models__toy.json").is_file()
    # the settings that trained it stand beside the weights, and nothing measured among them
    from deflate.model.train import TRAINING_RECORD
    assert [f.name for f in (tmp_path / "models" / "toy").iterdir()] == [TRAINING_RECORD]
    record = json.loads((tmp_path / "models" / "toy" / TRAINING_RECORD).read_text())
    assert record == {"name": "toy", "seed": 0, "settings": cfg, "ema": 0.0, "epochs_run": 2,
                      "best_epoch": max(history, key=lambda h: h["val_score"])["epoch"]}
    assert not (tmp_path / "ckpt").exists()  # a finished run keeps no resume state
    with pytest.raises(TypeError):
        TrainingJob("toy", model)  # by name only: no positional magic
