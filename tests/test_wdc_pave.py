"""WDC-PAVE: the adapter (schema, alternative spellings, n/a, seeded val split), the authors'
scoring rule with its bootstrap interval, and the dictionary reference."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_model

from deflate.baselines.dictionary import Dictionary
from deflate.data.adapters import WdcPaveAdapter, ingest, wdc_val_cluster
from deflate.data.records import Record, Reject, load_split
from deflate.evaluation import wdc_pave_rule as pave_scoring

SCHEMA = ("Category;Attribute;Annotation_Guideline\nOffice Products;Brand;x\nOffice Products;Color(s);\"a;b\"\n"
          "Jewelry;Metal;y\n")


def offer(i, cat="Office Products", title="Avery red tags", desc="Red shipping tags", scores=None, cluster=None):
    return json.dumps({"id": i, "cluster_id": cluster if cluster is not None else float(i), "category": cat,
                       "input_title": title, "input_description": desc, "url": "x",
                       "target_scores": scores if scores is not None else
                       {"Brand": {"Avery": {"pid": [0], "score": 1}},
                        "Color(s)": {"Red": {"pid": [1], "score": 1}, "red": {"pid": [0], "score": 1}}}})


def write(root: Path, train: list[str], test: list[str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "descriptions.csv").write_text(SCHEMA, encoding="utf-8-sig")
    (root / "train.jsonl").write_text("\n".join(train) + "\n", encoding="utf-8")
    (root / "eval_visible.jsonl").write_text("\n".join(test) + "\n", encoding="utf-8")
    return root


def test_adapter_labels_targets_and_absent_attributes(tmp_path):
    root = write(tmp_path / "w", [offer(1, scores={"Brand": {"n/a": 1}, "Color(s)": {"Red": {}, "red": {}}})],
                 [offer(2), offer(3, cat="Jewelry", title="Ring", desc=None, scores={"Metal": {"n/a": 1}})])
    test = list(WdcPaveAdapter(root).read("test"))
    assert [type(x) for x in test] == [Record, Record]
    a, b = test
    assert (a.id, a.name, a.description, a.category) == ("2", "Avery red tags", "Red shipping tags", "Office Products")
    # earliest spelling in title + description is the training target; every spelling is gold
    assert a.labels == [{"attribute": "Brand", "value": "Avery", "source": "explicit", "gold": ["Avery"]},
                        {"attribute": "Color(s)", "value": "red", "source": "explicit", "gold": ["Red", "red"]}]
    assert b.labels == [] and b.description == ""  # n/a is "absent": no label
    assert WdcPaveAdapter(root).category_attributes() == {"Office Products": ["Brand", "Color(s)"],
                                                          "Jewelry": ["Metal"]}


def test_adapter_rejects_bad_rows_with_line_numbers(tmp_path):
    bad = ["{", "[1]", offer(5, cat="Toys"), offer(6, scores={"Weight": {"1 kg": {}}}), offer(7, title=""),
           offer(8, scores={"Brand": {"Avery": {}, "n/a": 1}, "Color(s)": "red"}), "[" * 100_000]
    root = write(tmp_path / "w", [offer(1)], [offer(2), *bad])
    out = list(WdcPaveAdapter(root).read("test"))
    rejects = [x for x in out if isinstance(x, Reject)]
    assert [r.row for r in rejects] == [2, 3, 4, 5, 6, 7, 8]
    assert "not in descriptions.csv" in rejects[2].reason and "not in the schema" in rejects[3].reason
    assert "bad JSON" in rejects[6].reason
    assert [x.id for x in out if isinstance(x, Record)] == ["2"]


def test_val_split_is_seeded_whole_clusters_and_disjoint(tmp_path):
    train = [offer(i, cluster=i // 3) for i in range(300)]
    root = write(tmp_path / "w", train, [offer(1000)])
    ingest("wdc_pave", root, tmp_path / "p", tmp_path / "r", 0.0, seed=7)
    tr, va = load_split(tmp_path / "p", "train"), load_split(tmp_path / "p", "val")
    assert len(tr) + len(va) == 300 and not {r.id for r in tr} & {r.id for r in va}
    val_clusters = {int(r.id) // 3 for r in va}
    assert all(int(r.id) // 3 not in val_clusters for r in tr)  # a cluster never straddles the split
    assert 0.08 < len(va) / 300 < 0.25
    assert [wdc_val_cluster(c, 7, 0.15) for c in range(20)] == [wdc_val_cluster(c, 7, 0.15) for c in range(20)]
    assert [wdc_val_cluster(c, 7, 0.15) for c in range(50)] != [wdc_val_cluster(c, 8, 0.15) for c in range(50)]
    schema = json.loads((tmp_path / "p" / "schema.json").read_text())
    assert schema["category_attributes"]["Jewelry"] == ["Metal"] and "Metal" in schema["attributes"]


def test_authors_rule_outcomes_and_f1():
    assert pave_scoring.outcome(None, []) == "NN" and pave_scoring.outcome("x", []) == "NV"
    assert pave_scoring.outcome("", ["a"]) == "VN" and pave_scoring.outcome(" Red ", ["Red", "red"]) == "VC"
    assert pave_scoring.outcome("RED", ["Red"]) == "VW" and pave_scoring.outcome("RED", ["Red"], True) == "VC"
    recs = [Record("1", "t", "", "C", labels=[{"attribute": "A", "value": "x", "gold": ["x", "X"]}]),
            Record("2", "t", "", "C", labels=[{"attribute": "B", "value": "y"}])]
    cats = {"C": ["A", "B"]}
    pred = {("1", "A"): ["X", "z"], ("1", "B"): ["q"], ("2", "B"): ["w"]}
    s = pave_scoring.score(recs, pred, cats, n_boot=200)
    assert s["counts"] == {"NN": 1, "NV": 1, "VN": 0, "VC": 1, "VW": 1}  # offer 2, A: NN; 1B: NV; 1A: VC; 2B: VW
    assert (s["p"], s["r"]) == (33.33, 50.0) and s["f1"] == 40.0
    assert s["per_category"]["C"]["f1"] == 40.0 and s["offers"] == 2
    lo, hi = s["f1_ci95"]
    assert 0 <= lo <= s["f1"] <= hi <= 100


def test_bootstrap_interval_is_seeded_and_narrows_with_more_offers():
    rng = np.random.default_rng(0)
    small = rng.integers(0, 5, size=(30, 5))
    big = np.tile(small, (30, 1))
    a, b = pave_scoring.bootstrap_interval(small, seed=1), pave_scoring.bootstrap_interval(small, seed=1)
    assert a == b and a[0] < a[1]
    wide, narrow = a[1] - a[0], np.subtract(*pave_scoring.bootstrap_interval(big, seed=1)[::-1])
    assert narrow < wide / 3


def test_dictionary_takes_the_longest_known_value_found():
    train = [Record("1", "a", "", "C", labels=[{"attribute": "T", "value": "tags", "gold": ["tags", "shipping tags"]}])]
    d = Dictionary.fit(train)
    test = [Record("2", "Avery shipping tags", "", "C"), Record("3", "Avery labels", "", "C"),
            Record("4", "tags", "", "D")]
    schema = {"attributes": ["T"], "category_attributes": {"C": ["T"], "D": ["T"]}}
    assert d.predict(test, schema) == {("2", "T"): ["shipping tags"]}


def test_real_wdc_pave_ingests_cleanly(shared_data, tmp_path):
    report = ingest("wdc_pave", shared_data / "wdc_pave", tmp_path / "p", tmp_path / "r", 0.0, seed=42)
    kept = {s: v["kept"] for s, v in report["splits"].items()}
    assert kept["train"] + kept["val"] == 1066 and kept["test"] == 113
    assert all(v["rejected"] == 0 for v in report["splits"].values())
    schema = json.loads((tmp_path / "p" / "schema.json").read_text())
    assert len(schema["category_attributes"]) == 5


def test_products_are_asked_their_categorys_attributes():
    from deflate.answering.predict_rows import validate
    from deflate.model.questions import Question, all_questions, answer_questions

    schema = {"attributes": ["A", "B", "M"], "category_attributes": {"C": ["A", "B"], "J": ["M"]}}
    recs = [Record("1", "t", "", "C", labels=[{"attribute": "A", "value": "x"}]), Record("2", "t", "", "J"),
            Record("3", "t", "", "other")]
    assert all_questions(recs, schema) == [Question(0, "A"), Question(0, "B"), Question(1, "M"), Question(2, "A"),
                                           Question(2, "B"), Question(2, "M")]
    qs, ans = answer_questions(recs[:2], schema, "|", none_per_product=-1)
    assert [(q.row, q.attribute, a) for q, a in zip(qs, ans)] == [(0, "A", "x"), (0, "B", "None"), (1, "M", "None")]
    assert all_questions(recs, {"attributes": ["A"]}) == [Question(i, "A") for i in range(3)]  # no categories
    cats = schema["category_attributes"]
    assert validate({"id": 1, "name": "n", "category": "J"}, {"A", "B", "M"}, cats)[0]["attributes"] == ["M"]
    assert validate({"id": 1, "name": "n", "category": "?"}, {"A", "B", "M"}, cats)[0]["attributes"] == ["A", "B", "M"]
    assert validate({"id": 1, "name": "n", "category": 5}, {"A"}, cats)[1] == ["category must be a string"]


def fixture_offers(n: int, start: int = 0) -> list[str]:
    brands, colors = ["Avery", "Xerox", "Bic", "Sharpie"], ["Red", "Blue", "Black"]
    out = []
    for i in range(start, start + n):
        b, c = brands[i % 4], colors[i % 3]
        scores = {"Brand": {b: {"pid": [0], "score": 1}},
                  "Color(s)": {c: {"pid": [1], "score": 1}} if i % 2 else {"n/a": 1}}
        out.append(offer(i, title=f"{b} shipping tags {i}", desc=f"{c} tags, pack of {i}" if i % 2 else "plain tags",
                         scores=scores))
    return out


@pytest.fixture(scope="module")
def wdc_run(tmp_path_factory):
    """Every WDC-PAVE system, tiny, on 60 fixture offers; then the table."""
    import sys

    from deflate.infra.config import load_params
    from deflate.reports.wdc_table import SYSTEMS, build
    from deflate.stages.system import run_system

    root = tmp_path_factory.mktemp("wdc")
    write(root / "raw", fixture_offers(60), fixture_offers(12, 100))
    ingest("wdc_pave", root / "raw", root / "processed", root / "rejects", 0.0, seed=1, val_fraction=0.2)
    p = load_params(Path(__file__).resolve().parents[1] / "pipelines" / "wdc_pave" / "params.yaml")
    p["model"].update(d_model=16, d_ff=32, d_kv=8, num_heads=2, num_layers=1, num_decoder_layers=1, device="cpu")
    p["generator"].update(epochs=1, batch_size=16, val_max=40, copy_warmup=30)  # the pipeline's prefix and warm-up
    p["discriminator"].update(epochs=1, batch_size=16)
    p["decode"].update(max_new_tokens=4, batch_size=64)
    # the pipeline's named checkpoint (the taggers' pieces and word embeddings, the generator's frozen
    # states) as a tiny BERT packaged and materialised here: every file verified, as `checkpoint` does
    from test_pretrained import install_tiny_package

    from deflate.model.pretrained import materialize
    words = ["avery", "xerox", "bic", "sharpie", "blue", "black", "shipping", "tags", "pack", "of", "plain",
             *map(str, range(10))]
    mp = pytest.MonkeyPatch()
    install_tiny_package(root / "site", mp, words)
    materialize("tiny-bert", root / "pretrained")
    assert p["model"]["encoder_states"] == "models/pretrained"  # the pipeline's generator reads it
    p["model"]["encoder_states"] = str(root / "pretrained")
    p["baselines"]["tagger"].update(epochs=1, emb=16, hidden=16, pretrained_path=str(root / "pretrained"))
    # JG-AVE reads the states where asked (the pipeline's val chose not to): the path is exercised here
    p["baselines"]["jgave"].update(epochs=1, max_target_len=16, val_max=10, encoder_states=True)
    p["text"].update(vocab_size=300, max_len=40)
    p["tracking"]["enabled"] = False
    p["eval"]["n_boot"] = 50
    (root / "metrics" / "systems").mkdir(parents=True)
    from deflate.stages import copy_warmup
    copy_warmup.run(p, root / "processed", root / "models" / "copy_warmup")
    p["generator"]["copy_warmup_from"] = str(root / "models" / "copy_warmup")
    for s in SYSTEMS:
        m = run_system(s, p, root / "processed", root / "no_tokens", root / "models" / f"{s}-wdc_pave", "wdc_pave")
        (root / "metrics" / "systems" / f"{s}-wdc_pave.json").write_text(json.dumps(m))
    table = build(p, root / "processed", root / "models", root / "metrics", root / "metrics" / "wdc_pave.json")
    assert "deflate" in sys.modules["deflate.reports.wdc_table"].NAMES
    yield root, table
    mp.undo()


def test_every_system_writes_predictions_and_the_table_scores_them(wdc_run):
    from deflate.reports.wdc_table import SYSTEMS, markdown

    root, t = wdc_run
    assert list(t["rows"]) == list(SYSTEMS)
    for s, r in t["rows"].items():
        assert (root / "models" / f"{s}-wdc_pave" / "predictions" / "val.jsonl").exists()
        assert 0 <= r["f1_ci95"][0] <= r["f1"] <= r["f1_ci95"][1] <= 100 or r["f1"] == 0
        assert sum(r["counts"].values()) == 12 * 2  # 12 offers x 2 attributes of their category
        assert 0 <= r["gold_in_window"] <= 100
    assert t["rows"]["dictionary"]["f1"] > 50  # brands and colours recur: the floor is high here
    # constrain_to_spans: DEFLATE's answers are copies of its question's text (d-: or "None", dropped)
    recs = {r.id: r for r in load_split(root / "processed", "test")}
    for line in (root / "models" / "deflate-wdc_pave" / "predictions" / "test.jsonl").read_text().splitlines():
        row = json.loads(line)
        r = recs[row["id"]]
        for p in row["candidates"]:
            assert p["value"] in f"The {p['attribute']} of {r.name} ({r.description}) is", p
    assert set(t["checks"]) >= {"deflate_f1_at_least_70", "deflate_above_d_minus_ap_f1"}
    assert "| DEFLATE |" in markdown(t)


def test_a_prefixed_generator_records_it_and_answers_only_in_free_span_mode(wdc_run):
    from deflate.answering.engine import BundleError, Deflate, read_bundle

    root, _ = wdc_run
    bundle = root / "models" / "deflate-wdc_pave" / "deflate"
    meta = json.loads((bundle / "generator" / "deflate.json").read_text())
    assert meta["answer_prefix"] is True  # what predict and the MLflow model read; nothing reads params
    # the frozen encoder it reads with travels in the bundle, verified and named (no package needed)
    assert meta["encoder_states"]["name"] == "tiny-bert"
    assert (bundle / "generator" / "encoder_states" / "model.safetensors").is_file()
    # and JG-AVE, a generator of its own, reads it too (#32: the baselines get the checkpoint)
    jg = json.loads(next((root / "models" / "jgave-wdc_pave").rglob("deflate.json")).read_text())
    assert jg["encoder_states"]["name"] == "tiny-bert"
    for system in ("deflate", "d_minus"):  # both loaded the copy_warmup stage's warm-up instead of running it
        gm = json.loads((root / "models" / f"{system}-wdc_pave" / "generator" / "deflate.json").read_text())
        assert gm["copy_warmup"] == {"steps": 30, "run": "loaded"} and gm["target_form"] == "as_in_text"
    engine = Deflate.load(bundle)
    assert engine.qb.answer_prefix and engine.qb.prefix("Brand") == engine.qb.ids("Brand:")
    spec = read_bundle(bundle)
    with pytest.raises(BundleError, match="answer prefix"):
        Deflate(bundle / "generator", discriminator=None, lexical=None, decisions=spec["decisions"],
                decode=dict(spec["decode"], constrain_to_vocab=True), claim_batch_size=8)


def test_predict_format_wdc_pave_scores_a_trained_model(wdc_run, tmp_path):
    from typer.testing import CliRunner

    from deflate.cli import app

    root, _ = wdc_run
    bundle = root / "models" / "deflate-wdc_pave" / "deflate"
    out = tmp_path / "pred.jsonl"
    inp = root / "raw" / "eval_visible.jsonl"
    inp.write_text(inp.read_text() + "{broken\n", encoding="utf-8")
    r = CliRunner().invoke(app, ["predict", "--model", str(bundle), "--input", str(inp), "--output", str(out),
                                 "--format", "wdc_pave"])
    assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == 13 and lines[-1]["errors"] and all(not x["errors"] for x in lines[:-1])
    assert {p["attribute"] for x in lines for p in x["predictions"]} <= {"Brand", "Color(s)"}
    scores = json.loads(out.with_suffix(".scores.json").read_text())
    assert scores["offers"] == 12 and sum(scores["authors_rule"]["counts"].values()) == 24
    # the same predictions scored by the pipeline's table give the same authors' F1
    table = json.loads((root / "metrics" / "wdc_pave.json").read_text())
    assert scores["authors_rule"]["f1"] == table["rows"]["deflate"]["f1"]
    r = CliRunner().invoke(app, ["report", "--metrics", str(tmp_path), "--wdc-pave", str(root / "metrics" / "wdc_pave.json")])
    assert r.exit_code == 0 and "WDC-PAVE" in r.output
    r = CliRunner().invoke(app, ["report", "--metrics", str(tmp_path), "--wdc-pave", str(tmp_path / "none.json")])
    assert r.exit_code == 1 and "pipelines/wdc_pave" in r.output


def test_targets_as_in_text_copy_question_tokens_and_decode_the_same():
    from deflate.model.tokenizer import QuestionBuilder, train_tokenizer

    tok = train_tokenizer(["Avery Dennison shipping tags", "The Brand of tags is", "Xerox toner"] * 20, 300)
    qb = QuestionBuilder(tok, "en", 64, 16, "as_in_text")
    q = qb.question("Avery Dennison shipping tags", "", "Brand")
    spaced, alone = qb.value("Avery Dennison", q), QuestionBuilder(tok, "en", 64, 16).value("Avery Dennison", q)
    n = len(spaced) - 1
    assert any(q[i:i + n] == spaced[:-1] for i in range(len(q)))  # a copy of question tokens
    assert spaced != alone and qb.decode(spaced) == qb.decode(alone) == "Avery Dennison"
    assert qb.value("Xerox", q) == qb.value("Xerox")  # not in the question: the standalone form
    with pytest.raises(ValueError, match="target_form"):
        QuestionBuilder(tok, "en", 64, 16, "copy")


def test_split_punctuation_makes_a_value_beside_punctuation_a_whole_word_span():
    from deflate.model.tokenizer import QuestionBuilder, train_tokenizer

    def reachable(tok, name: str, value: str) -> bool:
        qb = QuestionBuilder(tok, "en", 64, 16, "as_in_text")
        q, v = qb.question(name, "", "Color"), qb.value(value, qb.question(name, "", "Color"))[:-1]
        starts = qb.word_starts(q) + [True]
        return any(q[i:i + len(v)] == v and starts[i] and starts[i + len(v)] for i in range(len(q)))

    texts = ["Hanes tee (Black), size:XL", "Gildan polo (Navy) size:M", "The Color of tee is",
             "a-b, c/d (e) 5.5kg", "“quoted” — ¿qué? 50%"] * 30
    plain, split = train_tokenizer(texts, 300), train_tokenizer(texts, 300, split_punctuation=True)
    name = "Hanes tee (Black)"
    assert plain.tokenize(name)[2].startswith("▁(B")  # without it a piece runs across the bracket
    assert not reachable(plain, name, "Black") and not reachable(plain, "tee size:XL", "XL")
    assert split.tokenize(name) == ["Hanes", "▁tee", "▁(", "Black", ")"]
    assert reachable(split, name, "Black") and reachable(split, "tee size:XL", "XL")
    for text in texts[:5]:
        assert split.decode(split.encode(text, add_special_tokens=False)) == text  # the surface comes back


def test_span_trie_allows_only_spans_of_the_question_and_none():
    from deflate.answering.decoding import _span_allowed, span_trie

    trie = span_trie([5, 6, 7, 6, 8], 2, [[9, 10]])
    allowed = _span_allowed([trie], end=1)
    start = torch.tensor([0])
    assert sorted(allowed(0, start)) == [5, 6, 7, 8, 9]  # any token of the question, or None's first
    assert sorted(allowed(0, torch.tensor([0, 6]))) == [1, 7, 8]  # what followed a 6, or stop
    assert allowed(0, torch.tensor([0, 6, 7])) == [1]  # max 2 tokens: only stop
    assert allowed(0, torch.tensor([0, 9])) == [10, 1]


def test_word_starts_by_marker_punctuation_cjk_and_wordpiece():
    from deflate.model.tokenizer import word_starts

    cuts = {"<pad>", "</s>", "<IMG>", "<CLS>"}
    # "Avery Denn|ison 5.5kg (black)</s>" in Metaspace pieces
    pieces = ["Avery", "▁Denn", "ison", "▁5", ".", "5", "kg", "▁(", "black", ")", "</s>"]
    assert word_starts(pieces, False, cuts) == [True, True, False, True, True, True, False, True, True, True, True]
    assert word_starts(["红", "色", "▁x"], False, cuts) == [True, True, True]  # each CJK character a word
    assert word_starts(["avery", "##son", "tags"], True, cuts) == [True, False, True]
    assert word_starts(["▁C", "<unk>", "lour"], False, cuts) == [True, False, False]  # an unknown character stays
    assert word_starts(["ab", "<IMG>", "cd"], False, cuts) == [True, True, True]  # a special cuts


def test_word_span_trie_starts_and_ends_on_word_boundaries_only():
    from deflate.answering.decoding import _span_allowed, span_trie

    # question tokens 5 6 | 7 | 8 9 (three words: 5-6, 7, 8-9), "None" = 20 21
    trie = span_trie([5, 6, 7, 8, 9], 4, [[20, 21]], starts=[True, False, True, True, False])
    allowed = _span_allowed([trie], end=1)
    assert sorted(allowed(0, torch.tensor([0]))) == [5, 7, 8, 20]  # no span starts inside a word
    assert allowed(0, torch.tensor([0, 5])) == [6]  # nor ends inside one
    assert sorted(allowed(0, torch.tensor([0, 5, 6]))) == [1, 7]
    assert allowed(0, torch.tensor([0, 5, 6, 7])) == [1]  # 4 tokens at most: 5 6 7 8 would cut the word 8 9
    assert allowed(0, torch.tensor([0, 8, 9])) == [1]  # the question's end ends a word
    assert allowed(0, torch.tensor([0, 20])) == [21] and allowed(0, torch.tensor([0, 20, 21])) == [1]
    plain = _span_allowed([span_trie([5, 6, 7, 8, 9], 4, [[20, 21]])], end=1)
    assert sorted(plain(0, torch.tensor([0, 5]))) == [1, 6]  # without word starts, any span as before


def test_span_words_decoding_answers_whole_words_through_the_generator():
    """decode.span_words reaches generate: every answer of an untrained generator is whole words of its
    question (or "None"), where plain spans may cut a word."""
    from deflate.answering.decoding import generate_values
    from deflate.model.batching import Batcher
    from deflate.model.mul_t5 import build_generator
    from deflate.model.questions import Question, question_examples
    from deflate.model.tokenizer import NONE_VALUE, QuestionBuilder, train_tokenizer

    texts = ["Averydennison shipping tags 5kg", "Brandnewness of tags", "None", "The Brand Weight Colour of it is"]
    tok = train_tokenizer(texts * 20, 120)
    qb = QuestionBuilder(tok, "en", 64, 8, "as_in_text")
    recs = [Record(str(i), t) for i, t in enumerate(["Averydennison shipping tags 5kg", "tags Brandnewness"])]
    qs = [Question(i, a) for i in range(2) for a in ("Brand", "Weight", "Colour")]
    ex = question_examples(recs, qb, qs)
    torch.manual_seed(0)
    gen = build_generator(tiny_model(d_model=32, d_ff=64), tok, 0, 0)
    decode = {"batch_size": 4, "max_new_tokens": 8, "num_beams": 1, "span_words": True}
    got = generate_values(gen, qb, Batcher(None, None, False, qb.img_id), ex, decode, progress=False, spans=True)
    for q, v in zip(qs, got):
        words = recs[q.row].name.split() + ["The", "of", "is", q.attribute]
        assert v == NONE_VALUE or set(v.split()) <= set(words), v


def test_span_constraint_without_none_names_a_span():
    """generator.absent_as_none: harvesting refuses the span trie's "None", so a generator that learned
    it still names the value it would claim; answering keeps "None" as an answer."""
    from deflate.answering.decoding import span_constraint
    from deflate.model.questions import Question, question_examples
    from deflate.model.tokenizer import NONE_VALUE, QuestionBuilder, train_tokenizer

    tok = train_tokenizer(["Avery Dennison shipping tags", "The Brand of tags is", "None"] * 20, 300)
    qb = QuestionBuilder(tok, "en", 64, 16, "as_in_text")
    ex = question_examples([Record("1", "Avery Dennison shipping tags")], qb, [Question(0, "Brand")])
    none_first = qb.value(NONE_VALUE)[0]
    assert none_first not in ex[0].ids  # "None" is no span of this question
    with_none, _ = span_constraint(qb, ex)
    without, _ = span_constraint(qb, ex, none=False)
    start = torch.tensor([0])
    assert none_first in with_none(0, start)
    assert none_first not in without(0, start)
    assert set(without(0, start)) == set(with_none(0, start)) - {none_first}  # every span still allowed


def test_answer_prefix_is_learned_forced_when_answering_and_stripped():
    from deflate.answering.decoding import build_tries, generate_values, span_beams
    from deflate.model.batching import Batcher
    from deflate.model.mul_t5 import build_generator
    from deflate.model.questions import Question, question_examples
    from deflate.model.tokenizer import QuestionBuilder, train_tokenizer

    tok = train_tokenizer(["Avery Dennison shipping tags", "The Brand of tags is", "Brand: Xerox toner"] * 20, 300)
    qb = QuestionBuilder(tok, "en", 64, 16, "as_in_text", answer_prefix=True)
    recs = [Record("1", "Avery Dennison shipping tags"), Record("2", "Xerox toner")]
    qs = [Question(0, "Brand"), Question(1, "Brand")]
    ex = question_examples(recs, qb, qs, ["Avery Dennison", "Xerox"])
    head = qb.ids("Brand:")
    assert ex[0].target[:len(head)] == head and qb.decode(ex[0].target[len(head):]) == "Avery Dennison"
    assert QuestionBuilder(tok, "en", 64, 16).prefix("Brand") == []  # off: the target is the value alone
    torch.manual_seed(0)
    gen = build_generator(tiny_model(d_model=32, d_ff=64), tok, 0, 0)
    asked = question_examples(recs, qb, qs)
    decode = {"batch_size": 8, "max_new_tokens": 4, "num_beams": 1, "span_words": False}
    for answer, e in zip(generate_values(gen, qb, Batcher(None, None, False, qb.img_id), asked, decode,
                                         progress=False, spans=True), asked):
        assert not answer.startswith("Brand:") and (answer in qb.decode(e.ids) or answer == "None")  # a span
    # span_beams (diagnostics): up to k distinct answers, each a span, best first, prefix stripped
    beams = span_beams(gen, qb, Batcher(None, None, False, qb.img_id), asked, 3, decode, progress=False)
    for bs, e in zip(beams, asked):
        texts, scores = [t for t, _ in bs], [s for _, s in bs]
        assert 1 <= len(bs) <= 3 and len(set(texts)) == len(texts) and scores == sorted(scores, reverse=True)
        assert all(t and not t.startswith("Brand:") and (t in qb.decode(e.ids) or t == "None") for t in texts)
    with pytest.raises(ValueError, match="answer_prefix"):
        generate_values(gen, qb, Batcher(None, None, False, qb.img_id), asked, decode, progress=False,
                        tries=build_tries({"Brand": ["Avery"]}, qb))


def test_copy_warm_up_is_seeded_and_its_answers_follow_the_marker():
    from transformers import T5Config, T5ForConditionalGeneration

    from deflate.model import copy_warmup as copying

    x, y = copying.copy_batch(torch.Generator().manual_seed(1), 4, 20, 50)
    for row, ans in zip(x.tolist(), y.tolist()):
        at = row.index(copying.MARKER)
        assert ans == row[at + 1:at + 1 + copying.ANSWER] + [1] and min(row) >= copying.MARKER

    def warmed():
        torch.manual_seed(0)
        t5 = T5ForConditionalGeneration(T5Config(vocab_size=50, d_model=16, d_ff=32, d_kv=8, num_heads=2,
                                                 num_layers=1, decoder_start_token_id=0))
        before = t5.shared.weight.clone()
        seen = []
        cfg = {"optimizer": "adamax", "lr": 2e-3, "weight_decay": 1e-4, "batch_size": 4, "grad_clip": 1.0}
        loss = copying.warm_up(t5, copying.schedule(6), cfg, seed=3, on_step=lambda *s: seen.append(s[:2]))
        assert np.isfinite(loss) and not torch.equal(before, t5.shared.weight)  # it trained
        assert seen == [(1, 20), (2, 20), (3, 20), (4, 20), (5, 100), (6, 100)]  # short inputs first
        return t5.state_dict()
    a, b = warmed(), warmed()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_shared_warm_up_loads_only_where_it_is_exactly_the_one_a_system_would_run(tmp_path, capsys):
    """generator.copy_warmup_from: the copy_warmup stage's folder gives the very weights an in-process
    warm-up gives; other settings or other starting weights are refused and warmed up here."""
    from transformers import T5Config, T5ForConditionalGeneration

    from deflate.model import copy_warmup as copying

    cfg = {"optimizer": "adamax", "lr": 2e-3, "weight_decay": 1e-4, "batch_size": 4, "grad_clip": 1.0}
    plan = copying.schedule(6)

    def fresh(seed=0):
        torch.manual_seed(seed)
        return T5ForConditionalGeneration(T5Config(vocab_size=50, d_model=16, d_ff=32, d_kv=8, num_heads=2,
                                                   num_layers=1, decoder_start_token_id=0))
    shared = fresh()
    key = copying.warm_key(shared, plan, cfg, seed=3)
    copying.save_warm(shared, tmp_path / "w", key, copying.warm_up(shared, plan, cfg, seed=3))
    here = fresh()
    copying.warm_up(here, plan, cfg, seed=3)
    loaded = fresh()
    assert copying.load_warm(loaded, tmp_path / "w", copying.warm_key(loaded, plan, cfg, seed=3))
    a, b = here.state_dict(), loaded.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    for other, why in ((fresh(seed=1), "starting weights"), (fresh(), "settings")):
        before = {k: v.clone() for k, v in other.state_dict().items()}
        k = copying.warm_key(other, plan, {**cfg, "lr": 1e-3} if why == "settings" else cfg, seed=3)
        assert not copying.load_warm(other, tmp_path / "w", k)
        assert all(torch.equal(before[n], t) for n, t in other.state_dict().items())  # untouched
    assert "other settings or starting weights" in capsys.readouterr().out
    assert not copying.load_warm(fresh(), "", key) and not copying.load_warm(fresh(), tmp_path / "nope", key)


def test_wrong_values_become_negatives_and_every_right_spelling_is_spared(monkeypatch):
    """negatives.wrong_values: the generator's answer to an attribute the product has is a negative
    only when it is a value and none of the right answers (any gold spelling, the joined values)."""
    from deflate.data.splits import Split, right_answers
    from deflate.stages import harvest_negatives

    recs = [Record("a", "Avery red tags", labels=[{"attribute": "Brand", "value": "Avery", "source": "explicit"},
                                                  {"attribute": "Color(s)", "value": "red", "source": "explicit",
                                                   "gold": ["Red", "red"]}]),
            Record("b", "Bic pens", labels=[{"attribute": "Brand", "value": "Bic", "source": "explicit"},
                                            {"attribute": "Pack", "value": "2", "source": "explicit"},
                                            {"attribute": "Pack", "value": "10", "source": "explicit"}])]
    assert right_answers(recs[0], "Color(s)", ", ") == {"Red", "red"}
    assert right_answers(recs[1], "Pack", ", ") == {"2", "10", "2, 10"}
    answered = {("a", "Brand"): "tags", ("a", "Color(s)"): "Red", ("b", "Brand"): "None", ("b", "Pack"): "2, 10"}
    monkeypatch.setattr(harvest_negatives, "answers", lambda engine, data, qs, split, none=True: [
        answered[(data.records[q.row].id, q.attribute)] for q in qs])
    rows = harvest_negatives.wrong_answers(None, Split(recs, None, None, {}), ", ", "train")
    assert list(rows) == [[{"row": 0, "id": "a", "attribute": "Brand", "value": "tags"}]]  # one chunk of questions
    monkeypatch.setattr(harvest_negatives, "ANSWER_CHUNK", 1)  # one question a time: the same negatives
    rows = harvest_negatives.wrong_answers(None, Split(recs, None, None, {}), ", ", "train")
    assert [r for chunk in rows for r in chunk] == [{"row": 0, "id": "a", "attribute": "Brand", "value": "tags"}]
