"""``model.token_shapes``: a learned vector per token shape class on the encoder's input. The classes
follow the piece's text; an untrained table changes nothing; a saved generator (and a discriminator
built on it) answers the same after loading, the class table rebuilt from its tokenizer."""
import torch
from conftest import gen_meta, tiny_model

from deflate.model.batching import Batcher, Example
from deflate.model.mul_t5 import Discriminator, build_generator, load_generator, save_model
from deflate.model.tokenizer import N_SHAPES, piece_shape, token_shapes, train_tokenizer

SIZES = tiny_model(copy=True)


def test_piece_classes_follow_the_text():
    shapes = {p: piece_shape(p) for p in ("▁AB", "AB", "##AB", "▁ab", "▁12", "12", "1234", "▁A1", "-", "▁", "红")}
    assert len(set(shapes.values())) == len(shapes)  # every one of these differs in mark, classes or length
    assert piece_shape("▁CD") == shapes["▁AB"] and piece_shape("▁xy") == shapes["▁ab"]
    assert piece_shape("99") == shapes["12"] and piece_shape("5678") == shapes["1234"]
    assert piece_shape("Ġ12") == shapes["▁12"]  # byte-level BPE's word-start marker
    assert all(0 < s < N_SHAPES for s in shapes.values())


def test_specials_get_class_zero():
    tok = train_tokenizer(["The Part Number of X1-200 is X1-200", "Brand ACME"], 120)
    table = token_shapes(tok)
    assert len(table) == len(tok) and all(table[i] == 0 for i in tok.all_special_ids)
    assert all(0 < table[i] < N_SHAPES for p, i in tok.get_vocab().items() if i not in tok.all_special_ids)


def test_untrained_table_changes_nothing_and_survives_saving(tmp_path):
    tok = train_tokenizer(["The Part Number of X1-200 is X1-200", "The Brand of ACME kettle is ACME"], 120)
    torch.manual_seed(0)
    plain = build_generator(dict(SIZES, token_shapes=False), tok, 0, 0).eval()
    torch.manual_seed(0)
    shaped = build_generator(dict(SIZES, token_shapes=True), tok, 0, 0).eval()
    exs = [Example(tok.encode("The Part Number of X1-200 is"), -1, target=tok.encode("X1-200") + [1])]
    batch = Batcher(None, None, False, 3).collate(exs)
    with torch.no_grad():
        assert torch.equal(plain(batch).logits, shaped(batch).logits)
        shaped.embed.shape.weight.normal_()  # as if trained: now the shapes move the answer
        moved = shaped(batch).logits
    assert not torch.equal(moved, plain(batch).logits)
    save_model(shaped, tmp_path / "g", gen_meta(), tok, shaped.t5)
    loaded, _, meta = load_generator(tmp_path / "g")
    assert meta["token_shapes"] is True and loaded.embed.shape is not None
    with torch.no_grad():
        assert torch.equal(loaded(batch).logits, moved)
    disc = Discriminator.from_generator(loaded)  # the discriminator's encoder input has the same shapes
    assert torch.equal(disc.embed.shape.weight, loaded.embed.shape.weight)
    save_model(plain, tmp_path / "p", gen_meta(), tok, plain.t5)
    assert load_generator(tmp_path / "p")[2]["token_shapes"] is False
