"""The copy path (``model.copy``: :class:`deflate.model.mul_t5.PointerT5`): a generator that points at its
input copies a token it never saw in training; its planted twin without the copy path cannot."""
import numpy as np
import pytest
import torch
from conftest import gen_meta, tiny_model

from deflate.answering.scores import mean_logprobs
from deflate.model.batching import Batcher, Example
from deflate.model.mul_t5 import (
    PointerT5,
    build_generator,
    copy_ids,
    load_generator,
    save_model,
)

SIZES = tiny_model(d_model=32, d_ff=64)
MARKER, SEEN, UNSEEN, VOCAB = 4, (5, 40), (40, 64), 64


class Vocab:  # what build_generator reads of a tokenizer
    pad_token_id, eos_token_id = 0, 1

    def __len__(self):
        return VOCAB


def toy(g: torch.Generator, n: int, answers: tuple[int, int], length: int = 8) -> list[Example]:
    """Random ids from SEEN with a marker; the answer is the token after it, drawn from ``answers``."""
    x = torch.randint(*SEEN, (n, length), generator=g)
    pos = torch.randint(0, length - 1, (n,), generator=g)
    x[torch.arange(n), pos] = MARKER
    ans = torch.randint(*answers, (n,), generator=g)
    x[torch.arange(n), pos + 1] = ans
    return [Example(r.tolist(), -1, target=[int(a), 1]) for r, a in zip(x, ans)]


def trained(copy: bool, steps: int = 150):
    torch.manual_seed(0)
    gen = build_generator(dict(SIZES, copy=copy), Vocab(), 0, 0)
    b, g = Batcher(None, None, False, 3), torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(gen.parameters(), 3e-3)
    for _ in range(steps):
        loss = gen(b.collate(toy(g, 32, SEEN))).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return gen.eval(), b


def accuracy(gen, b, exs, num_beams=1) -> float:
    out = gen.generate(b.collate(exs), max_new_tokens=2, num_beams=num_beams, do_sample=False)
    return float((out[:, 1] == torch.tensor([e.target[0] for e in exs])).float().mean())


@pytest.fixture(scope="module")
def twins():
    return trained(True), trained(False)


def test_the_copy_path_copies_a_token_never_seen_in_training_and_its_twin_without_it_cannot(twins):
    (pointer, b), (plain, _) = twins
    unseen = toy(torch.Generator().manual_seed(1), 200, UNSEEN)
    assert isinstance(pointer.t5, PointerT5) and not isinstance(plain.t5, PointerT5)
    assert accuracy(pointer, b, unseen) >= 0.9
    assert accuracy(pointer, b, unseen, num_beams=3) >= 0.9  # the copy ids are expanded over beams
    assert accuracy(plain, b, unseen) <= 0.1


def test_pointer_log_probs_are_a_distribution_and_scorers_read_them_as_t5s(twins):
    (pointer, b), _ = twins
    exs = toy(torch.Generator().manual_seed(2), 16, UNSEEN)
    with torch.no_grad():
        logp = pointer(b.collate(exs)).logits
    assert torch.allclose(logp.exp().sum(-1), torch.ones(logp.shape[:2]), atol=1e-4)
    assert torch.allclose(torch.log_softmax(logp, -1), logp, atol=1e-5)  # what mean_logprobs applies
    lp = mean_logprobs(pointer, b, exs, batch_size=8, progress=False)
    assert np.median(lp) > np.log(0.9)  # confident copies of unseen tokens


def test_nothing_is_copied_from_pad_img_or_image_positions():
    batch = Batcher(np.arange(6).reshape(2, 3), np.array([True, False]), True, 3).collate(
        [Example([7, 8], 0, target=[7, 1]), Example([9], 1, target=[9, 1])])
    assert copy_ids(batch).tolist() == [[7, 8, -1, -1, -1, -1], [9, -1, -1, -1, -1, -1]]


def test_a_row_with_nothing_to_copy_still_generates(twins):
    (pointer, _), _ = twins
    h, enc = torch.randn(2, 3, 32), torch.randn(2, 5, 32)
    src = torch.tensor([[-1] * 5, [6, 7, -1, -1, -1]])
    attn, z = pointer.t5.copy_attention(h, enc, src)
    logp = pointer.t5.mixture(torch.randn(2, 3, VOCAB), attn, z, src)
    assert torch.isfinite(logp).all() and torch.allclose(logp.exp().sum(-1), torch.ones(2, 3), atol=1e-4)


def test_a_saved_pointer_generator_loads_as_one_and_answers_the_same(twins, tmp_path):
    (pointer, b), _ = twins
    from deflate.model.tokenizer import train_tokenizer
    tok = train_tokenizer(["a b c"], 64)
    save_model(pointer, tmp_path / "g", gen_meta(), tok, pointer.t5)  # it adds "copy"
    again, _, _ = load_generator(tmp_path / "g")
    exs = toy(torch.Generator().manual_seed(3), 20, UNSEEN)
    assert isinstance(again.t5, PointerT5)
    assert torch.equal(again.generate(b.collate(exs), max_new_tokens=2), pointer.generate(b.collate(exs), max_new_tokens=2))


def test_the_training_loss_is_the_mixtures_negative_log_likelihood(twins):
    (pointer, b), _ = twins
    batch = b.collate(toy(torch.Generator().manual_seed(4), 16, UNSEEN))
    batch["labels"][0, 1] = -100  # an unlabelled step is left out of both
    with torch.no_grad():
        out = pointer(batch)
        full = torch.nn.functional.nll_loss(out.logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=-100)
        pointer.train()
        trained_loss = pointer(batch)
        pointer.eval()
    assert torch.allclose(out.loss, full, atol=1e-5)
    assert torch.allclose(trained_loss.loss, full, atol=1e-5) and trained_loss.logits is None


def test_a_plain_t5_checkpoint_loads_into_the_pointer_generator_with_a_fresh_copy_head(tmp_path):
    from transformers import T5ForConditionalGeneration

    from deflate.model.mul_t5 import t5_config
    T5ForConditionalGeneration(t5_config(SIZES, VOCAB)).save_pretrained(tmp_path / "t5")
    gen = build_generator(dict(SIZES, copy=True, pretrained_path=str(tmp_path / "t5")), Vocab(), 0, 0).eval()
    head = {n: p for n, p in gen.named_parameters() if ".copy_" in n}
    assert len(head) == 4 and all(torch.isfinite(p).all() for p in head.values())
    b = Batcher(None, None, False, 3)
    logp = gen(b.collate(toy(torch.Generator().manual_seed(5), 4, SEEN))).logits
    assert torch.isfinite(logp).all()
