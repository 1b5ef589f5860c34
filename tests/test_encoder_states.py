"""``model.encoder_states`` (#32): a frozen pretrained encoder's states under the generator's question
tokens, on a tiny BERT packaged on the fly (the 90 MB registry package is never needed)."""
import json

import numpy as np
import pytest
import torch
from conftest import gen_meta, tiny_model
from test_pretrained import package  # noqa: F401  (the fixture)

from deflate.answering.decoding import generate_values
from deflate.data.records import Record
from deflate.infra.bundle import BundleError
from deflate.infra.errors import UserError
from deflate.model import encoder_states
from deflate.model.batching import Batcher
from deflate.model.encoder_states import EncoderStates, TokenStates
from deflate.model.mul_t5 import Discriminator, build_generator, load_generator, save_model
from deflate.model.pretrained import materialize
from deflate.model.questions import Claim, Question, claim_examples, question_examples
from deflate.model.tokenizer import QuestionBuilder, train_tokenizer

NAME, DESC = "Red cotton shirts, size: XL", "Shirts of red cotton (two)"


@pytest.fixture
def states(package, tmp_path):  # noqa: F811
    materialize("tiny-bert", tmp_path / "pre")
    return EncoderStates(tmp_path / "pre")


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer([NAME, DESC, "The Color of", " is", "Color", "Size", "None"], 120, split_punctuation=True)


def builder(tok, states=None, max_len=64, layout="attribute"):
    return QuestionBuilder(tok, "en", max_len, 8, "as_in_text", layout == "offer", layout, states)


@pytest.mark.parametrize("max_len", [64, 24, 12])
def test_each_question_token_knows_its_characters_in_the_product_text(tok, max_len):
    qb = builder(tok, max_len=max_len)
    ids, spans = qb.question_spans(NAME, DESC, "Color")
    assert ids == qb.question(NAME, DESC, "Color")  # the same question, cut the same way
    text = qb.offer_text(NAME, DESC)
    pieces = tok.convert_ids_to_tokens(ids)
    inside = 0
    for piece, (a, b) in zip(pieces, spans):
        if b > a:
            inside += 1
            assert text[max(a, 0):b].strip() == piece.replace("\u2581", "").strip()
    template = len(qb.ids("The Color of")) + len(qb.ids(" is"))
    spaces = sum(p == "\u2581" for p in pieces)  # a bare word-start piece holds no character
    assert inside == len(ids) - template - spaces > 0  # every token of the product has characters, no template token does


def test_pooled_states_are_the_mean_of_the_pieces_under_each_token():
    s = np.arange(12, dtype=np.float16).reshape(4, 3)
    got = TokenStates(s, np.array([0, 1, 3, 2]), np.array([0, 3, 4, 2])).pooled()
    want = np.stack([np.zeros(3), s[1:3].astype(np.float32).mean(0), s[3].astype(np.float32), np.zeros(3)])
    assert np.allclose(got, want)


def test_questions_and_claims_carry_the_states_under_their_product_tokens(tok, states):
    qb = builder(tok, states)
    records = [Record(id="p", name=NAME, description=DESC, labels=[])]
    q = question_examples(records, qb, [Question(0, "Color")])[0]
    c = claim_examples(records, qb, [Claim(Question(0, "Color"), "Red")])[0]
    pq, pc = q.states.pooled(), c.states.pooled()
    assert pq.shape == (len(q.ids), states.dim) and pc.shape == (len(c.ids), states.dim)
    n = len(q.ids)
    assert np.array_equal(pc[1:1 + n], pq)  # a claim's question reads what the question reads
    assert not pc[0].any() and not pc[1 + n:].any()  # <CLS> and the claimed value read nothing
    assert pq.any(1).sum() >= 3 and not pq[0].any()  # product tokens read states; "The" does not


def test_states_start_at_zero_train_and_travel_with_the_saved_generator(tok, states, tmp_path):
    qb = builder(tok, states)
    records = [Record(id="p", name=NAME, description=DESC, labels=[])]
    exs = question_examples(records, qb, [Question(0, "Color")], ["Red"])
    batch = Batcher(None, None, False, qb.img_id).collate(exs)
    assert batch["encoder_states"].shape[-1] == states.dim
    torch.manual_seed(0)
    plain = build_generator(tiny_model(copy=True), tok, 0, 0).eval()
    torch.manual_seed(0)
    gen = build_generator(tiny_model(copy=True), tok, 0, 0, states).eval()
    # the projection starts at zero: the model is the plain one until it learns from the states
    assert torch.equal(gen(batch).logits, plain(batch).logits)
    opt = torch.optim.Adam(gen.parameters(), lr=0.01)
    gen.train()
    gen(batch).loss.backward()
    assert gen.embed.states.weight.grad.abs().sum() > 0
    opt.step()
    gen.eval()
    assert not torch.equal(gen(batch).logits, plain(batch).logits)
    disc = Discriminator.from_generator(gen)
    assert disc.embed.states is not None and disc.embed.states is not gen.embed.states  # its own copy, same start
    save_model(gen, tmp_path / "g", gen_meta(attributes=["Color"], max_len=64, max_value_len=8, target_form="as_in_text"),
               tok, gen.t5)
    meta = json.loads((tmp_path / "g" / "deflate.json").read_text())
    assert meta["encoder_states"]["name"] == "tiny-bert" and meta["encoder_states"]["dim"] == states.dim
    assert (tmp_path / "g" / encoder_states.FOLDER / "model.safetensors").is_file()
    gen2, tok2, meta2 = load_generator(tmp_path / "g")
    assert gen2.encoder_states is not None and gen2.encoder_states.folder == tmp_path / "g" / encoder_states.FOLDER
    qb2 = QuestionBuilder.from_meta(tok2, meta2, gen2.encoder_states)
    batch2 = Batcher(None, None, False, qb2.img_id).collate(question_examples(records, qb2, [Question(0, "Color")], ["Red"]))
    assert torch.allclose(gen(batch).logits, gen2(batch2).logits)
    got = generate_values(gen2, qb2, Batcher(None, None, False, qb2.img_id), exs, {"num_beams": 1, "max_new_tokens": 4,
                          "batch_size": 4}, "cpu", progress=False)
    assert len(got) == 1


def test_a_saved_generator_answers_with_its_own_copy_when_the_package_and_the_checkpoint_are_gone(tok, states, package,
                                                                                                    tmp_path):
    import shutil

    src, _ = package
    gen = build_generator(tiny_model(copy=True), tok, 0, 0, states).eval()
    save_model(gen, tmp_path / "g", gen_meta(attributes=["Color"], max_len=64, max_value_len=8, target_form="as_in_text"),
               tok, gen.t5)
    shutil.rmtree(src.parent)  # the installed package
    shutil.rmtree(states.folder)  # the checkpoint folder it was trained with
    gen2, _, _ = load_generator(tmp_path / "g")
    assert gen2.encoder_states.folder == tmp_path / "g" / encoder_states.FOLDER
    gen2.encoder_states._texts.clear()  # read by the loaded encoder itself, not from the cache
    got = gen2.encoder_states.text_states("Shirts of blue linen")[0]
    assert len(got) > 0 and np.array_equal(got, states.text_states("Shirts of blue linen")[0])


def test_a_generator_that_reads_states_refuses_a_batch_without_them_and_an_altered_encoder_copy(tok, states, tmp_path):
    gen = build_generator(tiny_model(), tok, 0, 0, states).eval()
    qb = builder(tok)
    records = [Record(id="p", name=NAME, description=DESC, labels=[])]
    bare = Batcher(None, None, False, qb.img_id).collate(question_examples(records, qb, [Question(0, "Color")], ["Red"]))
    with pytest.raises(ValueError, match="encoder_states"):
        gen(bare)
    save_model(gen, tmp_path / "g", gen_meta(attributes=["Color"], max_len=64, max_value_len=8), tok, gen.t5)
    meta = json.loads((tmp_path / "g" / "deflate.json").read_text())
    (tmp_path / "g" / "deflate.json").write_text(json.dumps({**meta, "encoder_states": {**meta["encoder_states"],
                                                                                           "max_pieces": 7}}))
    with pytest.raises(BundleError, match="not the encoder"):  # a copy that is not the one deflate.json names
        load_generator(tmp_path / "g")
    (tmp_path / "g" / "deflate.json").write_text(json.dumps(meta))
    w = tmp_path / "g" / encoder_states.FOLDER / "model.safetensors"
    w.write_bytes(w.read_bytes()[:-1] + b"\x00")
    with pytest.raises(UserError, match="model.safetensors"):
        load_generator(tmp_path / "g")


def test_a_folder_that_is_no_verified_bert_checkpoint_is_refused(tmp_path):
    with pytest.raises(UserError, match="not a folder"):
        encoder_states.load(tmp_path / "nowhere")
    (tmp_path / "bare").mkdir()
    with pytest.raises(UserError, match="provenance"):
        encoder_states.load(tmp_path / "bare")
    assert encoder_states.load("") is None


def test_jgave_reads_the_states_under_the_products_own_tokens(tok, states):
    from deflate.baselines.systems import jg_example

    r = Record(id="p", name=NAME, description=DESC, labels=[])
    plain, read = jg_example(builder(tok), r), jg_example(builder(tok, states), r)
    assert read.ids == plain.ids and plain.states is None  # the same input; only the states are added
    text = builder(tok).offer_text(NAME, DESC)
    _, spans = builder(tok, states).product_spans(NAME, DESC)
    pieces = tok.convert_ids_to_tokens(read.ids)
    for piece, (a, b) in zip(pieces, spans):
        if b > a:
            assert text[a:b].strip() == piece.replace("\u2581", "").strip()
    pooled = read.states.pooled()
    assert pooled.shape == (len(read.ids), states.dim)
    words = [k for k, p in enumerate(pieces) if p.replace("\u2581", "")]
    assert all(pooled[k].any() for k in words)  # no template: every token with characters reads states
    cut = jg_example(builder(tok, states, max_len=5), r)
    assert len(cut.ids) == 5 and cut.states.pooled().shape[0] == 5


def test_a_text_longer_than_the_checkpoints_positions_is_read_up_to_them(tok, states):
    assert states.max_pieces == 32 and states.record()["max_pieces"] == 32  # the tiny BERT's positions
    long = " ".join(["red cotton shirts"] * 30)
    got, starts, _ = states.text_states(long)
    assert len(got) == len(starts) == 30  # 32 positions less [CLS] and [SEP]
    ts = states.under(long, [(0, 3), (len(long) - 6, len(long))], 2)
    assert ts.end[0] > ts.start[0] and ts.end[1] == ts.start[1]  # past the encoder's reach: nothing


def test_jgave_asked_to_read_states_without_a_checkpoint_is_refused(tmp_path):
    from deflate.baselines.systems import train_jgave

    p = {"baselines": {"jgave": {"encoder_states": True}}, "model": {"encoder_states": ""}}
    with pytest.raises(UserError, match="model.encoder_states"):
        train_jgave(p, tmp_path, tmp_path, tmp_path, None, {"device": "cpu"})


def test_one_cache_per_checkpoint_bounded_by_bytes(states, package, tmp_path, monkeypatch):  # noqa: F811
    from deflate.model.pretrained import materialize

    materialize("tiny-bert", tmp_path / "again")
    again = EncoderStates(tmp_path / "again")  # the same verified files, another folder: one cache
    first = states.text_states("red cotton shirts")
    assert again.text_states("red cotton shirts") is first
    monkeypatch.setattr(encoder_states, "CACHE_BYTES", first[0].nbytes)
    states.text_states("red shirts")  # past the bound: the cache starts again, and the states are the same
    assert states._texts.nbytes <= 2 * first[0].nbytes
    assert np.array_equal(states.text_states("red cotton shirts")[0], first[0])
