"""``model.question: offer``: the encoder reads the product alone and the decoder's prefix names the
attribute, so one encoder pass serves every question asked of a product. The discriminator is still
asked of one attribute."""
import copy

import numpy as np
import pytest
import torch
from conftest import gen_meta, tiny_model

from deflate.infra.params_schema import ParamsError, check_params
from deflate.model.batching import Batcher, Example
from deflate.model.mul_t5 import build_generator, distinct_rows, load_generator, save_model
from deflate.model.tokenizer import QuestionBuilder, train_tokenizer

SIZES = tiny_model(copy=True)
TEXTS = ["The Brand of ACME kettle is ACME", "The Color of ACME kettle is red", "steel kettle (1.7 l)", "kettle: red None"]


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(TEXTS, 150)


def test_the_question_is_the_product_and_the_claim_names_the_attribute(tok):
    qb = QuestionBuilder(tok, "en", 32, 8, "standalone", answer_prefix=True, layout="offer")
    q = qb.question("ACME kettle", "steel", "Brand")
    assert q == qb.question("ACME kettle", "steel", "Color") and qb.decode(q) == "ACME kettle (steel)"
    assert qb.decode(qb.claim("ACME kettle", "steel", "Brand", "ACME")).startswith("The Brand of ACME kettle")
    assert qb.decode(qb.prefix("Brand")) == "Brand:"
    paper = QuestionBuilder(tok, "en", 32, 8, "standalone", answer_prefix=True)
    assert paper.decode(paper.question("ACME kettle", "steel", "Brand")) == "The Brand of ACME kettle (steel) is"
    with pytest.raises(ValueError, match="answer_prefix"):
        QuestionBuilder(tok, "en", 32, 8, layout="offer")


def test_distinct_rows_give_back_every_row():
    ids = torch.tensor([[5, 6, 0], [7, 8, 9], [5, 6, 0], [7, 8, 9], [4, 0, 0]])
    rows, inverse = distinct_rows({"input_ids": ids})
    assert rows.tolist() == [0, 1, 4] and torch.equal(ids[rows][inverse], ids)
    image = torch.tensor([[1, 1], [2, 2], [3, 3], [2, 2], [1, 1]])  # the same text with another picture differs
    rows, inverse = distinct_rows({"input_ids": ids, "image": image})
    assert rows.tolist() == [0, 1, 2, 4] and torch.equal(ids[rows][inverse], ids)


def model_pair(tok):
    torch.manual_seed(0)
    paper = build_generator(dict(SIZES, question="attribute"), tok, 0, 0).eval()
    offer = build_generator(dict(SIZES, question="offer"), tok, 0, 0).eval()
    offer.load_state_dict(paper.state_dict())
    return paper, offer


def test_one_encoder_pass_per_product_gives_the_same_numbers(tok):
    paper, offer = model_pair(tok)
    qb = QuestionBuilder(tok, "en", 32, 8, "standalone", answer_prefix=True, layout="offer")
    exs = [Example(qb.question("ACME kettle", "steel", a), 0, target=qb.prefix(a) + qb.value(v))
           for a, v in (("Brand", "ACME"), ("Color", "red"))]
    exs.append(Example(qb.question("steel kettle", "", "Brand"), 1, target=qb.prefix("Brand") + qb.value("None")))
    batch = Batcher(None, None, False, qb.img_id).collate(exs)
    calls = []
    hook = offer.t5.get_encoder().register_forward_hook(lambda m, a, kw, out: calls.append(len(kw["inputs_embeds"])),
                                                        with_kwargs=True)
    with torch.no_grad():
        a, b = paper(batch), offer(batch)
        assert calls == [2]  # two products, one encoder pass each
        torch.testing.assert_close(a.logits, b.logits, rtol=1e-5, atol=1e-5)
        ga = paper.generate(batch, max_new_tokens=4, do_sample=False)
        gb = offer.generate(batch, max_new_tokens=4, do_sample=False)
    hook.remove()
    assert torch.equal(ga, gb)
    loss = offer.train()(batch).loss  # gradients flow back through the shared states
    loss.backward()
    assert offer.t5.get_encoder().block[0].layer[0].SelfAttention.q.weight.grad.abs().sum() > 0


def test_saved_generator_keeps_its_layout(tok, tmp_path):
    _, offer = model_pair(tok)
    save_model(offer, tmp_path / "g", gen_meta(answer_prefix=True), tok, offer.t5)
    gen, _, meta = load_generator(tmp_path / "g")
    assert meta["question"] == "offer" and gen.layout == "offer"
    assert QuestionBuilder.from_meta(tok, meta).layout == "offer"


def test_shuffled_batches_keep_a_products_questions_together():
    rows = np.repeat(np.arange(40), 5)
    exs = [Example([7] * (3 + r % 4), int(r), target=[1]) for r in rows]
    b = Batcher(None, None, False, 3, together=True)
    order = [i for batch in b.batches(exs, 8, shuffle=True, bucket=True, seed=3) for i in batch]
    assert sorted(order) == list(range(len(exs)))
    seen = [exs[i].row for i in order]
    runs = [r for k, r in enumerate(seen) if k == 0 or seen[k - 1] != r]
    assert len(runs) <= 40 + 40 * 5 // 8  # each product in one run, but where a batch boundary cuts it


def test_params_refuse_offer_without_prefix():
    import yaml
    raw = yaml.safe_load(open("pipelines/wdc_pave/params.yaml"))
    ok = copy.deepcopy(raw)
    ok["model"]["question"] = "offer"
    check_params(ok)
    raw["model"]["question"], raw["text"]["answer_prefix"] = "offer", False
    with pytest.raises(ParamsError, match="answer_prefix"):
        check_params(raw)


def test_every_option_together_survives_saving(tok, tmp_path):
    """The pointer, token shapes and the offer layout in one generator: saved and loaded, it names all
    three and gives the same logits with one encoder pass per product."""
    torch.manual_seed(0)
    gen = build_generator(dict(SIZES, question="offer", token_shapes=True), tok, 0, 0).eval()
    with torch.no_grad():
        gen.embed.shape.weight.normal_()  # as if trained
    qb = QuestionBuilder(tok, "en", 32, 8, "standalone", answer_prefix=True, layout="offer")
    exs = [Example(qb.question("ACME kettle", "steel", a), 0, target=qb.prefix(a) + qb.value("red")) for a in ("Brand", "Color")]
    batch = Batcher(None, None, False, qb.img_id).collate(exs)
    save_model(gen, tmp_path / "g", gen_meta(answer_prefix=True), tok, gen.t5)
    loaded, _, meta = load_generator(tmp_path / "g")
    assert (meta["copy"], meta["token_shapes"], meta["question"]) == (True, True, "offer")
    with torch.no_grad():
        assert torch.equal(loaded(batch).logits, gen(batch).logits)
