import pytest

from deflate.data.records import Record
from deflate.evaluation.metrics import (
    evaluate,
    fuzzy_match,
    longest_common_substring,
    majority_baseline,
    prf,
)


def test_prf_and_lcs():
    assert prf(1, 2, 4) == {"p": 50.0, "r": 25.0, "f1": 33.33}
    assert prf(0, 0, 3) == {"p": 0.0, "r": 0.0, "f1": 0.0}
    assert longest_common_substring("红烧牛肉", "牛肉面") == 2
    assert longest_common_substring("", "abc") == 0


def test_fuzzy_needs_more_than_half_the_label():
    assert fuzzy_match("牛肉", "牛肉片")          # 2 > 1.5
    assert not fuzzy_match("牛", "牛肉")          # 1 is not > 1
    assert fuzzy_match("Bags/Packets big", "Bags/Packets")
    assert not fuzzy_match("Box", "Bags/Packets")


def test_hand_computed_case():
    texts = {"p1": "红烧牛肉配葱", "p2": "清爽绿茶"}
    gold = {("p1", "主料"): [("牛肉", "explicit")], ("p1", "烹饪方法"): [("红烧", "explicit")],
            ("p1", "冷热"): [("热食", "image_only")], ("p2", "茶"): [("绿茶", "explicit")]}
    pred = {("p1", "主料"): ["牛肉"],            # right
            ("p1", "烹饪方法"): ["红烧肉"],       # attribute right, value fuzzy-right only
            ("p1", "辣度"): ["微辣"],             # attribute wrong
            ("p2", "茶"): ["红茶"],               # attribute right, value wrong (and not in text)
            ("p2", "冷热"): []}                   # empty: not a prediction
    m = evaluate(gold, pred, texts)
    assert m["ap"] == prf(3, 4, 4)                # p1/主料, p1/烹饪方法, p2/茶 of 4 pred pairs, 4 gold
    assert m["ave"] == prf(1, 4, 4)
    assert m["ave_fuzzy"] == prf(2, 4, 4)
    # EAV-only: gold values in text: 牛肉, 红烧, 绿茶 (热食 is not); predictions in text: 牛肉 only
    # (红烧肉, 微辣, 红茶 do not occur in the texts)
    assert m["eav_only"]["ave"] == prf(1, 1, 3)
    assert m["by_source"]["image_only"] == prf(0, 0, 1)
    assert m["by_source"]["explicit"] == prf(1, 3, 3)
    assert m["n"]["gold_by_source"] == {"explicit": 3, "image_only": 1}


def test_multi_valued_labels_match_once_each():
    gold = {("p", "辅料"): [("葱", "explicit"), ("姜", "explicit")]}
    m = evaluate(gold, {("p", "辅料"): ["葱", "葱", "姜"]}, {"p": "葱姜"})
    assert m["ave"] == prf(2, 3, 2)


def test_majority_baseline():
    train = [Record("a", "x", labels=[{"attribute": "茶", "value": "绿茶", "source": "explicit"}]),
             Record("b", "x", labels=[{"attribute": "茶", "value": "绿茶", "source": "explicit"}]),
             Record("c", "x", labels=[{"attribute": "茶", "value": "红茶", "source": "explicit"}])]
    test = [Record("d", "x", labels=[{"attribute": "茶", "value": "绿茶", "source": "explicit"}]),
            Record("e", "x", labels=[{"attribute": "茶", "value": "红茶", "source": "explicit"}])]
    assert majority_baseline(train, test)["ave"]["f1"] == pytest.approx(50.0)
