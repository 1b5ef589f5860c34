import numpy as np
import pytest
import torch
from conftest import tiny_model

from deflate.answering.scores import (
    candidate_claim_logprobs,
    candidate_logprobs,
    combine,
    fuse,
    pick_alpha,
    pick_weights,
)
from deflate.data.records import Record
from deflate.evaluation.metrics import accuracy_report
from deflate.model.batching import Batcher, Example
from deflate.model.mul_t5 import build_generator
from deflate.model.questions import Question, candidate_claims, claim_examples
from deflate.model.tokenizer import QuestionBuilder, train_tokenizer

TINY = tiny_model()
DECODE = {"max_new_tokens": 8, "batch_size": 64, "num_beams": 1}


@pytest.fixture(scope="module")
def setup():
    tok = train_tokenizer(["The Form of Lipton tea (x) is Bags/Packets Teabags Powder Box Tin"] * 3, 120)
    qb = QuestionBuilder(tok, "en", 32, 8)
    torch.manual_seed(0)
    return tok, qb, build_generator(TINY, tok, 0, 0).eval()


def test_candidate_logprobs_are_the_models_own_likelihood(setup):
    tok, qb, gen = setup
    cands = {"Form": ["Bags/Packets", "Teabags", "Powder"]}
    ex = [Example(qb.question("Lipton tea", "", "Form"), -1, key=Question(0, "Form"))]
    b = Batcher(None, None, False, qb.img_id)
    lp = candidate_logprobs(gen, qb, b, ex, cands, 64, progress=False)[0]
    for j, c in enumerate(cands["Form"]):
        batch = b.collate([Example(ex[0].ids, -1, target=qb.value(c))])
        assert lp[j] == pytest.approx(-gen(batch).loss.item(), abs=1e-5)
    assert candidate_logprobs(gen, qb, b, [Example(ex[0].ids, -1, key=Question(0, "Other"))], cands,
                              64, progress=False)[0].size == 0


class RiggedDisc(torch.nn.Module):
    """Says yes exactly to claims that contain a given token."""

    def __init__(self, token_id):
        super().__init__()
        self.t = token_id

    def forward(self, batch):
        return ((batch["input_ids"] == self.t).any(1).float() * 20 - 10)


def test_reranking_picks_the_discriminators_best(setup):
    tok, qb, gen = setup
    cands = {"Form": ["Bags/Packets", "Teabags", "Box", "Tin"]}
    target = "Tin"
    disc = RiggedDisc(qb.ids(" Tin")[-1])
    recs = [Record("p", "Lipton tea")]
    ex = [Example(qb.question("Lipton tea", "", "Form"), 0, key=Question(0, "Form"))]
    b = Batcher(None, None, False, qb.img_id)
    g = candidate_logprobs(gen, qb, b, ex, cands, 64, progress=False)
    claims, where = candidate_claims([e.key for e in ex], cands)
    d = candidate_claim_logprobs(disc, b, ex, claim_examples(recs, qb, claims), where, cands, 64, progress=False)
    assert cands["Form"][combine(g, d, 0.0)[0]] == target
    assert combine(g, None, 1.0)[0] == int(np.argmax(g[0]))
    # the weight is chosen where validation accuracy is best
    gold = [cands["Form"].index(target)]
    assert pick_alpha(g, d, gold) < 1.0 or cands["Form"][int(np.argmax(g[0]))] == target


def test_combine_and_pick_alpha_on_fixed_scores():
    g = [np.array([-0.1, -2.0]), np.array([-0.5, -0.4]), np.array([])]
    d = [np.log(np.array([0.1, 0.9])), np.log(np.array([0.5, 0.5])), np.array([])]
    assert combine(g, None, 1.0) == [0, 1, -1]
    assert combine(g, d, 0.0) == [1, 0, -1]
    # ex 0 is right for alpha < 0.536, ex 1 for alpha > 0 (a tie at 0 picks index 0): 0.5 is the largest
    assert pick_alpha(g, d, [1, 1, -1]) == 0.5


def test_fuse_and_pick_weights_over_three_sources():
    g = [np.array([0.0, -1.0]), np.array([0.0, -1.0]), np.array([])]
    d = [np.array([-1.0, 0.0]), np.array([0.0, -1.0]), np.array([])]
    lex = [np.array([-3.0, 0.0]), np.array([-3.0, 0.0]), np.array([])]
    assert fuse([g, d, lex], (1, 0, 0)) == [0, 0, -1] and fuse([g, d, lex], (0, 0, 1)) == [1, 1, -1]
    # gold [1, 0]: the generator alone gets ex 1 only, the lexical scorer alone ex 0 only; a mix gets
    # both, and among the mixes that do, the one with the most weight on the generator wins
    w = pick_weights([g, d, lex], [1, 0, -1])
    assert abs(sum(w) - 1) < 1e-9 and fuse([g, d, lex], w) == [1, 0, -1] and w == (0.6, 0.2, 0.2)
    assert pick_alpha(g, d, [1, 0, -1]) == 0.4  # ex 0 needs the discriminator's weight above one half


def test_accuracy_report_exact_and_lenient():
    rows = [{"domain": "Food", "attribute": "Form", "gold": "Powder", "pred": "powder"},
            {"domain": "Food", "attribute": "Form", "gold": "Box", "pred": "Gift Box"},
            {"domain": "Home", "attribute": "Shape", "gold": "Round", "pred": "Square"}]
    overall, per_attr = accuracy_report(rows)
    assert overall["overall"] == {"exact": 33.33, "lenient": 66.67, "n": 3}
    assert overall["by_domain"]["Food"] == {"exact": 50.0, "lenient": 100.0, "n": 2}
    assert per_attr["Shape"]["exact"] == 0.0


def test_trie_topk_returns_only_candidates_best_first_with_their_logprob(setup):
    from deflate.answering.decoding import build_tries, topk_values

    tok, qb, gen = setup
    cands = {"Form": ["Bags/Packets", "Teabags", "Powder", "Box", "Tin"], "Size": ["Box"]}
    tries = build_tries(cands, qb)
    b = Batcher(None, None, False, qb.img_id)
    ex = [Example(qb.question("Lipton tea", "", a), -1, key=Question(0, a)) for a in ("Form", "Size", "Form")]
    top = topk_values(gen, qb, b, ex, tries, k=3, decode=DECODE, progress=False)
    assert [len(t) for t in top] == [3, 1, 3]  # "Size" has a single candidate
    for e, t in zip(ex, top):
        assert all(v in cands[e.key.attribute] for v, _ in t)
        assert [s for _, s in t] == sorted((s for _, s in t), reverse=True)
        for v, s in t:  # the score is the candidate's summed token log-probability under the generator
            batch = b.collate([Example(e.ids, -1, target=qb.value(v))])
            n = len(qb.value(v))
            assert s == pytest.approx(-gen(batch).loss.item() * n, abs=1e-3)
    # with as many beams as candidates the search is exhaustive: the same ranking as exact scoring
    full = topk_values(gen, qb, b, ex[:1], tries, k=5, decode=DECODE, progress=False)[0]
    exact = candidate_logprobs(gen, qb, b, ex[:1], cands, 64, progress=False)[0]
    exact = exact * np.array([len(qb.value(c)) for c in cands["Form"]])
    assert [v for v, _ in full] == [cands["Form"][j] for j in np.argsort(-exact)]
