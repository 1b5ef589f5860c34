import json

import pytest
from test_pipeline import build_world, tiny_params

from deflate.baselines.systems import jgave_target, parse_pairs
from deflate.baselines.taggers import decode_spans, encode_tags, spans_of, tag_names
from deflate.data.adapters import ingest
from deflate.data.records import Record
from deflate.stages.baseline import run_baseline


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("bworld"), 3)


def small(**over):
    p = tiny_params(**{"tracking.enabled": False, **over})
    p["baselines"]["tagger"].update(epochs=1, emb=16, hidden=16, batch_size=8)
    p["baselines"]["jgave"].update(epochs=1, batch_size=8, max_target_len=16, val_max=8)
    return p


def test_bio_round_trip_and_paper_tagging_rule():
    text = "香辣牛肉面，微辣"
    labels = [{"attribute": "主料", "value": "牛肉", "source": "explicit"},
              {"attribute": "辣度", "value": "微辣", "source": "explicit"},
              {"attribute": "是否甜", "value": "咸", "source": "text_implied"},  # 1 char, not explicit: untagged
              {"attribute": "冷热", "value": "热", "source": "image_only"}]
    spans = spans_of(text, labels)
    assert spans == [(2, 4, "主料"), (6, 8, "辣度")]
    names = tag_names(["主料", "辣度"])
    tags = encode_tags(len(text), spans, {t: i for i, t in enumerate(names)})
    assert decode_spans(text, tags, names) == [("主料", "牛肉"), ("辣度", "微辣")]
    assert decode_spans("ab", [names.index("I-主料"), 0], names) == [("主料", "a")]  # stray I- opens a span


def test_jgave_sequence_round_trip():
    r = Record("p", "x", labels=[{"attribute": "主料", "value": "牛肉", "source": "explicit"},
                                 {"attribute": "主料", "value": "面", "source": "explicit"},
                                 {"attribute": "辣度", "value": "微辣", "source": "explicit"}])
    t = jgave_target(r, 0, 5)
    assert parse_pairs(t, {"主料", "辣度"}) == {"主料": ["牛肉", "面"], "辣度": ["微辣"]}
    assert jgave_target(r, 0, 5) == t  # the random order is seeded
    assert parse_pairs("主料:牛肉;乱码;未知:x;辣度:", {"主料", "辣度"}) == {"主料": ["牛肉"]}


@pytest.mark.parametrize("system", ["bilstm_crf", "mjave", "jgave"])
def test_each_baseline_trains_and_is_scored_by_the_shared_metrics(world, tmp_path, system):
    m = run_baseline(system, small(), world / "processed", world / "tokens", tmp_path / system)
    for k in ("ap", "ave", "ave_fuzzy"):
        assert 0 <= m[k]["f1"] <= 100
    assert set(m["eav_only"]) == {"ave", "ave_fuzzy"} and m["n"]["gold_values"] > 0
    assert m["meta"]["system"] == system and m["meta"]["epochs"] == 1 and m["meta"]["params"] > 0
    assert (tmp_path / system / "model" / "model.safetensors").exists()


def test_extractive_models_cannot_produce_values_absent_from_the_text(world, tmp_path):
    """Whatever the tagger learned, every value it outputs is a substring of the product text."""
    import torch

    from deflate.baselines.systems import _Tagging, tagger_predict
    from deflate.baselines.taggers import BiLSTMCRF
    from deflate.baselines.text_units import Units
    from deflate.data.splits import load_data

    data = load_data(world / "processed", world / "tokens", "test")
    schema = json.loads((world / "processed" / "schema.json").read_text())
    vocab = {"<pad>": 0, "<unk>": 1, **{c: i + 2 for i, c in enumerate(sorted({c for r in data.records for c in r.text}))}}
    tg = _Tagging(data, Units("chars", vocab=vocab), schema["attributes"], 160)
    torch.manual_seed(0)
    model = BiLSTMCRF(len(vocab), len(tg.names), 8, 8)
    torch.nn.init.normal_(model.emit.weight, std=3.0)  # a random tagger that tags a lot
    pred = tagger_predict(model, tg, tg.batcher(False))
    texts = {r.id: r.text for r in data.records}
    assert pred and all(v in texts[pid] for (pid, _), vs in pred.items() for v in vs)


@pytest.mark.slow
def test_variant_and_learning_curve_runners(world, tmp_path, monkeypatch):
    from deflate.data.synth import write_mepave
    from deflate.stages.system import learning_curve, run_system

    monkeypatch.chdir(tmp_path)
    m = run_system("dv_minus", small(), world / "processed", world / "tokens", tmp_path / "dv", "desire")
    assert m["meta"]["use_image"] is False and m["meta"]["use_discriminator"] is False
    assert m["meta"]["system"] == "dv_minus" and m["meta"]["dataset"] == "desire" and m["meta"]["train_products"] > 0
    # measured cost beside the outputs, never in them: metrics and model folders keep their bytes
    from deflate.infra.runtime import read_cost
    assert "efficiency" not in m and m["meta"]["kernels"]["torch"]
    assert read_cost(tmp_path / "dv")["seconds"] > 0 and read_cost(tmp_path / "dv")["peak_memory_mb"] > 0
    gen_meta = json.loads((tmp_path / "dv" / "generator" / "deflate.json").read_text())
    assert "cost" not in gen_meta and read_cost(tmp_path / "dv" / "generator")["train_seconds"] > 0
    assert gen_meta["kernels"]["threads"] >= 1
    write_mepave(tmp_path / "mraw", 60, 1)
    ingest("mepave", tmp_path / "mraw", tmp_path / "mp", tmp_path / "mrej", 0.0)
    pts = learning_curve("bilstm_crf", small(), tmp_path / "mp", tmp_path / "no_tokens", tmp_path / "lc", [0.5, 0.25])
    assert [p["proportion"] for p in pts] == [0.25, 0.5]
    assert pts[0]["train_products"] < pts[1]["train_products"] and all(0 <= p["ave_f1"] <= 100 for p in pts)
    with pytest.raises(ValueError, match="unknown system"):
        run_system("nope", small(), world / "processed", world / "tokens", tmp_path / "x")


def test_word_piece_tags_cut_values_out_of_the_original_text():
    from deflate.baselines.taggers import decode_piece_spans, piece_tags

    text = "Red Cotton-Shirt, 16GB"
    offsets = [(0, 3), (4, 10), (10, 11), (11, 16), (16, 17), (18, 20), (20, 22)]  # red cotton - shirt , 16 ##gb
    names = tag_names(["colour", "material", "memory"])
    tag_id = {t: i for i, t in enumerate(names)}
    spans = [(0, 3, "colour"), (4, 16, "material"), (18, 21, "memory")]  # "16G" ends inside a piece
    tags, lost = piece_tags(offsets, spans, tag_id)
    assert lost == 1 and tags[5:] == [0, 0]
    assert decode_piece_spans(text, offsets, tags, names) == [("colour", "Red"), ("material", "Cotton-Shirt")]


@pytest.fixture(scope="module")
def tiny_checkpoint(world, tmp_path_factory):
    """A tiny BERT whose vocabulary holds the world's characters, materialised as a named checkpoint
    would be (provenance.json, every file pinned), without the registry package."""
    import hashlib

    from test_pretrained import tiny_bert_files

    from deflate.data.records import load_split
    from deflate.infra.files import write_json
    from deflate.model import pretrained

    chars = sorted({c for r in load_split(world / "processed", "train") for c in r.text})
    folder = tmp_path_factory.mktemp("ckpt") / "pre"
    tiny_bert_files(folder, chars[:200])
    files = {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in folder.iterdir()}
    c = pretrained.Checkpoint(name="tiny-bert-test", package="tiny-ckpt", version="0.2.0", module="tiny_ckpt_pkg",
                              folder="model", family="bert", files=files, licence="test")
    write_json(folder / pretrained.PROVENANCE, {"name": c.name, "package": c.package, "version": c.version,
                                                "sha256": files, "licence": c.licence})
    return folder, c


@pytest.mark.parametrize("system,text", [("bilstm_crf", "embeddings"), ("mjave", "encoder"), ("bilstm_crf", "pieces")])
def test_taggers_read_a_checkpoints_word_pieces(world, tmp_path, tiny_checkpoint, monkeypatch, system, text):
    """#32 item 2: a tagger over a BERT checkpoint's pieces (its word embeddings, or its frozen
    encoder) trains, answers substrings of the text and records the checkpoint it read."""
    from safetensors.torch import load_file

    from deflate.model import pretrained

    folder, c = tiny_checkpoint
    monkeypatch.setitem(pretrained.REGISTRY, c.name, c)
    p = small()
    p["baselines"]["tagger"].update(text=text, pretrained_path=str(folder))
    m = run_baseline(system, p, world / "processed", world / "tokens", tmp_path / system)
    assert 0 <= m["ave"]["f1"] <= 100 and m["meta"]["epochs"] == 1
    meta = json.loads((tmp_path / system / "model" / "deflate.json").read_text())
    assert meta["text"] == text and meta["checkpoint"]["sha256"] == c.files and "vocab" not in meta
    assert (tmp_path / system / "model" / "tokenizer" / "tokenizer.json").is_file()  # the model folder reads alone
    if text != "pieces":
        assert meta["loading"] == {"missing_keys": [], "unexpected_keys": []}  # every encoder weight from the file
    weights = load_file(str(tmp_path / system / "model" / "model.safetensors"))
    assert ("emb.weight" in weights) == (text != "encoder")  # a frozen encoder's vectors replace the table
    texts = {r["id"]: r for r in map(json.loads, (tmp_path / system / "predictions" / "test.jsonl").open())}
    assert texts


def test_pretrained_word_embeddings_start_from_the_checkpoint_and_a_tampered_one_is_refused(world, tiny_checkpoint,
                                                                                          tmp_path, monkeypatch):
    import shutil

    import torch
    from transformers import BertModel

    from deflate.baselines.text_units import Units
    from deflate.infra.errors import UserError
    from deflate.model import pretrained

    folder, c = tiny_checkpoint
    monkeypatch.setitem(pretrained.REGISTRY, c.name, c)
    cfg = {"text": "embeddings", "pretrained_path": str(folder)}
    units = Units.build(cfg, [])
    assert torch.equal(units.embeddings, BertModel.from_pretrained(str(folder)).get_input_embeddings().weight)
    ids, offsets = units.split("老字号 red Shirts")
    assert units.tokenizer.convert_ids_to_tokens(ids)[-3:] == ["red", "shirt", "##s"] and offsets[-1] == (13, 14)
    bad = tmp_path / "bad"
    shutil.copytree(folder, bad)
    (bad / "vocab.txt").write_text("[PAD]\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"vocab\.txt has SHA-256"):
        Units.build({**cfg, "pretrained_path": str(bad)}, [])


def test_the_tagger_text_param_needs_a_checkpoint_exactly_when_it_reads_pieces():
    from deflate.infra.params_schema import ParamsError, check_params

    each = {"bilstm_crf": "embeddings", "mjave": "encoder"}
    for text, path, ok in (("chars", "", True), ("embeddings", "models/pretrained", True),
                           ("encoder", "", False), ("chars", "models/pretrained", False),
                           (each, "models/pretrained", True), (each, "", False),
                           ({"bilstm_crf": "chars", "mjave": "chars"}, "", True), ({"bilstm_crf": "chars"}, "", False),
                           ("bert", "models/pretrained", False)):
        p = tiny_params()
        p["baselines"]["tagger"].update(text=text, pretrained_path=path)
        if ok:
            check_params(p)
        else:
            with pytest.raises(ParamsError, match="baselines.tagger"):
                check_params(p)
