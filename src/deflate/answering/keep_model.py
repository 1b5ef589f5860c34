"""The learned keep decision (``eval.keep_decision: learned``; docs/wdc_pave.md, "A learned keep decision").

Under the WDC-PAVE authors' rule a kept answer pays when it is right and costs when it is not (a
dropped wrong value turns VW into VN), so keeping is a classification: keep when the answer is likely
right. The keep score P_gen^w * D^(1-w) is one hand-made feature of that; this model weighs several
features of the engine's own outputs and of where the answer stands in its offer, with a logistic
regression fitted on val's answered questions (target: the answer is one of the gold spellings). No
tagger, lexical or dictionary model enters. Its numbers travel in the bundle's decisions
(:class:`deflate.infra.bundle.KeepModel`), which names the features it reads: a bundle whose list is
not :data:`FEATURES` is refused on load.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Protocol

import numpy as np

from deflate.data.records import Record
from deflate.infra.bundle import KeepModel
from deflate.model.tokenizer import answered


class Answered(Protocol):
    """What the features read of the engine's answers (``engine.Answers``, which imports this module)."""
    questions: list
    values: list[str]
    probs: np.ndarray
    gen_logprobs: np.ndarray
    beams: Any  # engine.Beams or None


FEATURES = ("log D", "P_gen mean log-prob", "first candidate", "P_gen margin over next candidate", "candidates",
            "offset in offer", "in title", "occurrences (log)", "words", "characters (log)", "digit share",
            "another question gives it")
C = 1.0  # L2 strength of the fit (sklearn's C), not tuned: the probe's one setting
NO_RIVAL = 5.0  # the margin of an answer no other candidate competes with (greedy answering, a lone beam)


def features(ans: Answered, records: list[Record]) -> np.ndarray:
    """One row of :data:`FEATURES` per question (the same for an unanswered one, which is never kept):
    the claim's log D; the generator's mean token log-prob of the answer; whether it is its question's
    first candidate (the greedy answer, where that named a value) and its log-prob margin over the best
    other candidate, and how many candidates re-ranking had (:class:`Beams`; greedy answering: 1, no
    rival, 0); where the value first stands in ``name + " " + description`` (relative offset, 1 when
    absent), whether the title holds it and log(1 + its occurrences); its words, log(1 + characters) and
    share of digits; whether another question of the same product, answered in the same call, gives
    the same value."""
    b = ans.beams
    same = Counter((q.row, v) for q, v in zip(ans.questions, ans.values) if answered(v))
    rows = []
    for k, (q, v) in enumerate(zip(ans.questions, ans.values)):
        r = records[q.row]
        text = f"{r.name} {r.description}"
        a, z = (int(b.starts[k]), int(b.starts[k + 1])) if b is not None else (0, 0)
        rivals = [float(b.gen_logprobs[i]) for i in range(a, z) if b.values[i] != v] if b is not None else []
        glp = float(ans.gen_logprobs[k])
        at = text.find(v) if v else -1
        rows.append([np.log(max(float(ans.probs[k]), 1e-7)), glp,
                     float(b is None or (z > a and b.values[a] == v)),
                     glp - max(rivals) if rivals else NO_RIVAL, float(z - a),
                     at / max(len(text), 1) if at >= 0 else 1.0, float(bool(v) and v in r.name),
                     float(np.log1p(text.count(v))) if v else 0.0, float(len(v.split())), float(np.log1p(len(v))),
                     sum(c.isdigit() for c in v) / max(len(v), 1), float(same.get((q.row, v), 0) > 1)])
    x = np.asarray(rows, dtype=np.float64).reshape(len(rows), len(FEATURES))
    # a question the generator was never asked (pruned) has log-prob -inf: finite, and far from any kept one
    return np.nan_to_num(x, neginf=-1e3, posinf=1e3)


def fit(x: np.ndarray, right: np.ndarray, seed: int) -> KeepModel:
    """The logistic regression of ``right`` on standardised ``x`` (rows: answered questions)."""
    from sklearn.linear_model import LogisticRegression

    mean, scale = x.mean(0), x.std(0) + 1e-9
    lr = LogisticRegression(C=C, max_iter=2000, random_state=seed).fit((x - mean) / scale, right)
    return KeepModel(features=list(FEATURES), mean=mean.tolist(), scale=scale.tolist(), coef=lr.coef_[0].tolist(),
                     intercept=float(lr.intercept_[0]))


def scores(model: KeepModel, ans: Answered, records: list[Record]) -> np.ndarray:
    """Each answer's probability of being right under ``model`` (what the keep threshold is compared with)."""
    return model.probability(features(ans, records))
