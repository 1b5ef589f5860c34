"""The lexical candidate scorer: learns n-gram evidence, scores unseen options at the floor, and
comes back from disk (JSON + safetensors, no pickle) with the same scores."""
import numpy as np

from deflate.answering.lexical import FILES, LexicalScorer, lexical_text

EXAMPLES = {
    "Sleeve Style": [(lexical_text("Acme long sleeve shirt", "Shirts"), "Long Sleeve"),
                     (lexical_text("Acme tee, short", "Shirts"), "Short Sleeve"),
                     (lexical_text("Bolt long-sleeved top", "Tops"), "Long Sleeve"),
                     (lexical_text("Bolt crew tee short", "Tops"), "Short Sleeve"),
                     (lexical_text("Cove 3/4 sleeve blouse", "Tops"), "3/4 Sleeve")] * 4,
    "Container": [(lexical_text("Lipton tea", "Tea"), "Box")] * 3,
}


def test_learns_evidence_and_scores_only_the_options_asked():
    lex = LexicalScorer.fit(EXAMPLES, progress=False)
    options = ["Short Sleeve", "Long Sleeve", "3/4 Sleeve", "Sleeveless"]
    lp = lex.logprobs(["Dune long sleeve henley", "Dune tee short", "Eve 3/4 top"], "Sleeve Style", options)
    assert lp.shape == (3, 4) and list(lp.argmax(1)) == [1, 0, 2]
    assert np.allclose(lp[:, 3], np.log(1e-6), atol=1e-3)  # never a label in training
    assert np.allclose(np.exp(lp[:, :3]).sum(1), 1.0, atol=1e-4)
    # one value seen: certain; an attribute never seen: no preference
    assert lex.logprobs(["x"], "Container", ["Box", "Tin"]).argmax() == 0
    assert np.all(lex.logprobs(["x", "y"], "Material", ["Wood", "Steel"]) == 0)


def test_round_trip_without_pickle(tmp_path):
    lex = LexicalScorer.fit(EXAMPLES, max_features=50, progress=False)
    lex.save(tmp_path / "lex")
    assert sorted(p.name for p in (tmp_path / "lex").iterdir()) == sorted(FILES)
    back = LexicalScorer.load(tmp_path / "lex")
    texts, options = ["Acme long sleeve", "tee short 3/4"], ["Long Sleeve", "Short Sleeve", "3/4 Sleeve"]
    a, b = back.logprobs(texts, "Sleeve Style", options), lex.logprobs(texts, "Sleeve Style", options)
    assert np.allclose(a, b, atol=1e-5) and np.array_equal(a.argmax(1), b.argmax(1))  # weights saved as float32
    assert back.config == {"max_features": 50, "C": 10.0}
