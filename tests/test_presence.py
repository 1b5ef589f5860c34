"""The presence decision (eval.presence: discriminator): whether a product has an attribute is
decided by the discriminator's own val-chosen threshold, apart from whether the value is kept."""
import json

import numpy as np
import pytest

from deflate.answering.engine import Answers, presence
from deflate.data.records import Record
from deflate.evaluation import prediction_files
from deflate.evaluation.intervals import bootstrap_f1
from deflate.evaluation.metrics import counts, evaluate, gold_from_records
from deflate.infra.bundle import Decisions
from deflate.infra.bundle import BundleError
from deflate.model.questions import Question
from deflate.model.tokenizer import NONE_VALUE
from deflate.stages.evaluate import best_presence_threshold, withheld_pairs


def rec(pid: str, labels: dict) -> Record:
    return Record(pid, f"name {pid}", "", "c", labels=[{"attribute": a, "value": v, "source": "explicit"}
                                                        for a, v in labels.items()])


def test_presence_is_kept_or_an_answer_whose_claim_d_reaches_the_threshold():
    values = ["red", "blue", NONE_VALUE, "", "green"]
    probs = np.array([0.9, 0.4, 0.99, 0.99, 0.1], np.float32)
    kept = [True, False, False, False, False]
    assert presence(values, probs, kept, None) == kept  # the paper's rule
    assert presence(values, None, kept, 0.3) == kept  # no discriminator, no presence decision
    # None and empty answers are never present, whatever D says; a kept value always is
    assert presence(values, probs, kept, 0.3) == [True, True, False, False, False]
    assert presence(values, probs, kept, 0.95) == [True, False, False, False, False]
    assert presence(values, probs, kept, 0.0) == [True, True, False, False, True]


def test_withheld_pairs_count_for_attribute_prediction_only():
    records = [rec("a", {"color": "red", "size": "L"}), rec("b", {"color": "blue"})]
    gold, texts = gold_from_records(records)
    pred = {("a", "color"): ["red"]}
    withheld = {("a", "size"), ("b", "material")}
    plain, held = counts(gold, pred, texts), counts(gold, pred, texts, withheld)
    assert plain["ap"] == (1, 1, 3) and held["ap"] == (2, 3, 3)
    for k in plain:  # every value score is untouched
        if k != "ap":
            assert plain[k] == held[k]
    m = evaluate(gold, pred, texts, withheld)
    assert m["ap"]["f1"] == pytest.approx(66.67) and m["n"]["withheld_pairs"] == 2
    assert "withheld_pairs" not in evaluate(gold, pred, texts)["n"]  # bytes of files without a decision
    ci = bootstrap_f1(records, pred, 50, 0, withheld=withheld)
    assert ci["ap"] != bootstrap_f1(records, pred, 50, 0)["ap"] and ci["ave"] == bootstrap_f1(records, pred, 50, 0)["ave"]


def test_the_presence_threshold_is_the_best_val_ap_and_ties_go_to_half():
    records = [rec(str(i), {"color": "x"} if i < 6 else {}) for i in range(10)]
    qs = [Question(i, "color") for i in range(10)]
    # products 0-5 have the attribute; the discriminator ranks them above 6-9 except product 5
    probs = np.array([0.9, 0.8, 0.7, 0.6, 0.55, 0.2, 0.3, 0.25, 0.1, 0.05], np.float32)
    values = ["y"] * 10  # every value wrong: nothing is kept, presence is all AP has
    ans = Answers(qs, values, probs, [False] * 10)
    t = best_presence_threshold(ans, records, {})
    # best AP: products 0-4 present (F1 10/11), the threshold in (0.3, 0.55]; 0.5 lies in that band
    assert t == 0.5
    assert withheld_pairs(ans, records, {}, t) == {(str(i), "color") for i in range(5)}
    # a kept value is present whatever the threshold, and is not withheld
    assert ("0", "color") not in withheld_pairs(ans, records, {("0", "color"): ["y"]}, t)


def test_prediction_files_carry_withheld_pairs_only_with_a_presence_decision(tmp_path):
    records = [rec("a", {"color": "red"}), rec("b", {})]
    pred = {("a", "color"): ["red"]}
    prediction_files.write(tmp_path / "plain.jsonl", records, pred)
    assert all("withheld" not in json.loads(x) for x in (tmp_path / "plain.jsonl").read_text().splitlines())
    assert prediction_files.read_withheld(tmp_path / "plain.jsonl") == set()
    prediction_files.write(tmp_path / "held.jsonl", records, pred, {("b", "size")})
    lines = [json.loads(x) for x in (tmp_path / "held.jsonl").read_text().splitlines()]
    assert [x["withheld"] for x in lines] == [[], [{"attribute": "size"}]]
    assert prediction_files.read(tmp_path / "held.jsonl") == pred
    assert prediction_files.read_withheld(tmp_path / "held.jsonl") == {("b", "size")}
    assert prediction_files.read_with_withheld(tmp_path / "held.jsonl") == (pred, {("b", "size")})  # one pass, both


def test_decisions_check_the_presence_threshold():
    base = dict(mode="free", threshold=0.5, keep_all=False, alpha=1.0, weights=(1.0, 0.0, 0.0))
    assert Decisions(**base).presence_threshold is None
    assert Decisions(**base, presence_threshold=np.float64(0.25)).presence_threshold == 0.25
    for bad in (1.5, -0.1, "0.3", True):
        with pytest.raises(BundleError):
            Decisions(**base, presence_threshold=bad)
