"""A tiny end-to-end run through synth -> ingest -> image_tokens -> the four DEFLATE stages."""
import json
import warnings
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from deflate.data.adapters import ingest
from deflate.data.image_tokens import run_stage
from deflate.data.records import SPLITS, load_split
from deflate.data.synth import write_desire
from deflate.infra.config import load_params
from deflate.infra.tracking import Tracker
from deflate.stages import (
    evaluate,
    harvest_negatives,
    train_discriminator,
    train_generator,
)

ROOT = Path(__file__).resolve().parents[1]


def tiny_params(**over) -> dict:
    p = load_params(ROOT / "params.yaml")
    p["image"].update(grid=4, vocab_size=16, resize=16, batch_size=16, num_threads=1)
    p["model"].update(d_model=16, d_ff=32, d_kv=8, num_heads=2, num_layers=1, num_decoder_layers=1, num_threads=1)
    p["generator"].update(epochs=1, batch_size=16, val_max=40)
    p["discriminator"].update(epochs=1, batch_size=16)
    p["negatives"]["per_product"] = 2
    p["decode"].update(max_new_tokens=4, batch_size=64)
    p["tracking"]["uri"] = ""
    # the switches a `dvc exp run -S ...` may have left in the workspace's params.yaml
    p["model"].update(use_image=True, use_discriminator=True, pretrained_path="", tokenizer_path="", device="cpu")
    p["image"]["tokenizer"] = "visual_words"
    p["decode"]["constrain_to_vocab"] = False
    p["tracking"]["enabled"] = True
    for k, v in over.items():
        sec, key = k.split(".")
        p[sec][key] = v
    return p


def build_world(root: Path, seed: int) -> Path:
    """48 synthetic products: raw files, tables and image tokens under ``root``."""
    write_desire(root / "raw", 48, seed=seed, image_size=32, progress=False)
    ingest("desire", root / "raw", root / "processed", root / "rejects", 0.0)
    recs = {s: load_split(root / "processed", s) for s in SPLITS}
    run_stage(recs, tiny_params()["image"], root / "tokens", seed=0, progress=False)
    return root


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("world"), 1)


def run_all(p, world: Path, out: Path):
    proc, tok = world / "processed", world / "tokens"
    train_generator.run(p, proc, tok, out / "gen", out / "ckpt_gen")
    harvest_negatives.run(p, proc, tok, out / "gen", out / "neg")
    train_discriminator.run(p, proc, tok, out / "gen", out / "neg", out / "disc", out / "ckpt_disc")
    return evaluate.run(p, proc, tok, out / "gen", out / "disc", out / "metrics.json", out / "pred.jsonl",
                        out / "bundle")


@pytest.fixture(scope="module")
def trained(world, tmp_path_factory):
    """The four stages once on the tiny world; the MLflow store lands in the run folder."""
    import os
    out = tmp_path_factory.mktemp("run")
    cwd = os.getcwd()
    os.chdir(out)
    try:
        m = run_all(tiny_params(), world, out)
    finally:
        os.chdir(cwd)
    return out, m


@pytest.mark.slow
def test_four_stages_end_to_end(world, trained):
    tmp_path, m = trained
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(m))
    for key in ("ap", "ave", "ave_fuzzy"):
        assert set(saved[key]) == {"p", "r", "f1"} and 0 <= saved[key]["f1"] <= 100
    assert set(saved["eav_only"]) == {"ave", "ave_fuzzy"}
    assert set(saved["by_source"]) <= {"explicit", "text_implied", "image_only"} and saved["by_source"]
    assert 0 < saved["threshold"] < 1 and saved["meta"]["use_discriminator"]
    bundle = json.loads((tmp_path / "bundle" / "bundle.json").read_text())
    assert bundle["decisions"]["threshold"] == saved["threshold"] and bundle["decisions"]["mode"] == "free"
    # the keep rule's generator weight is chosen on val beside the threshold, from params' grid
    assert bundle["decisions"]["keep_weight"] == saved["keep_weight"] in tiny_params()["eval"]["keep_weights"]
    assert set(saved["keep_rule_val_f1"]) == {str(w) for w in tiny_params()["eval"]["keep_weights"]}
    assert saved["keep_rule_val_f1"][str(saved["keep_weight"])] == max(saved["keep_rule_val_f1"].values())
    assert sorted(bundle["parts"]) == ["discriminator", "generator"]
    lines = [json.loads(x) for x in (tmp_path / "pred.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(lines) == saved["meta"]["test_products"]
    assert all({"id", "predictions", "errors"} <= set(x) for x in lines)
    n_neg = sum(1 for _ in open(tmp_path / "neg" / "train.jsonl", encoding="utf-8"))
    assert n_neg == 2 * len(load_split(world / "processed", "train"))
    # the presence decision (params: eval.presence discriminator): its own threshold, chosen on val,
    # in the bundle; each line names the attributes present whose value was withheld, and AP counts them
    assert tiny_params()["eval"]["presence"] == "discriminator"
    assert bundle["decisions"]["presence_threshold"] == saved["presence_threshold"]
    kept = {(x["id"], p["attribute"]) for x in lines for p in x["predictions"]}
    held = {(x["id"], w["attribute"]) for x in lines for w in x["withheld"]}
    assert not kept & held and all(w["presence"] >= saved["presence_threshold"] for x in lines for w in x["withheld"])
    gold = {(x["id"], g["attribute"]) for x in lines for g in x["gold"]}
    from deflate.evaluation.metrics import prf
    assert prf(len(gold & (kept | held)), len(kept | held), len(gold)) == saved["ap"]
    assert saved["n"].get("withheld_pairs", 0) == len(held)
    assert (tmp_path / "mlflow.db").exists()
    import mlflow
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["deflate"])
    assert set(runs["tags.mlflow.runName"]) == {"train_generator", "train_discriminator", "evaluate"}
    assert "metrics.train_loss" in runs and runs["tags.device"].eq("cpu").all()
    assert "params.model.use_image" in runs


@pytest.mark.slow
def test_logged_pyfunc_model_answers_like_predict(world, trained, tmp_path, monkeypatch):
    """The evaluate stage logs its bundle as an MLflow pyfunc; loaded back, it answers the same
    (product, attribute) questions as the engine on the bundle folder, and `deflate predict --model
    <uri>` uses it."""
    import mlflow
    import pandas as pd
    from typer.testing import CliRunner

    from deflate.answering.engine import Deflate
    from deflate.cli import app

    run_dir, m = trained
    from deflate.infra.runtime import model_uri_file

    uri = (run_dir / model_uri_file(run_dir / "bundle")).read_text().strip()
    monkeypatch.chdir(run_dir)
    mlflow.set_tracking_uri(f"sqlite:///{run_dir / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model(uri)
    test = load_split(world / "processed", "test")[:3]
    frame = pd.DataFrame([{"id": r.id, "name": r.name, "description": r.description} for r in test]
                         + [{"id": "bad", "name": "", "description": ""}])
    out = model.predict(frame)
    assert list(out.columns) == ["id", "attribute", "value", "score", "error"]
    assert out[out.id == "bad"].error.str.contains("missing name").any()
    direct = Deflate.load(run_dir / "bundle").answer_rows(
        [{"id": r.id, "name": r.name, "description": r.description} for r in test], progress=False)
    want = sorted((r["id"], x["attribute"], x["value"]) for r in direct for x in r["predictions"])
    got = sorted(zip(out[out.error == ""].id, out[out.error == ""].attribute, out[out.error == ""].value))
    assert got == want
    (tmp_path / "in.jsonl").write_text("\n".join(json.dumps({"id": r.id, "name": r.name}, ensure_ascii=False)
                                                  for r in test), encoding="utf-8")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{run_dir / 'mlflow.db'}")
    r = CliRunner().invoke(app, ["predict", "--model", uri, "--input", str(tmp_path / "in.jsonl"),
                                 "--output", str(tmp_path / "o.jsonl")])
    assert r.exit_code == 0, r.output
    assert len((tmp_path / "o.jsonl").read_text().splitlines()) == 3


def test_spark_udf_answers_as_deflate_predict(world, trained, tmp_path, monkeypatch):
    """Past one machine (docs/scale_out.md): the MLflow model the pipeline logs, as
    ``mlflow.pyfunc.spark_udf`` over a Spark DataFrame of products (pictures inline as
    ``image_b64``) on a local two-core Spark session, answers every row as ``deflate predict``
    answers the same rows, bad rows included."""
    import base64
    import shutil
    import sys

    pytest.importorskip("pyspark", reason="pyspark is in the test extras (pip install -e '.[test]')")
    if shutil.which("java") is None:
        pytest.skip("Spark needs Java 17 on PATH")
    import mlflow
    import pandas as pd
    from pyspark.sql import SparkSession
    from pyspark.sql.functions import struct
    from pyspark.sql.types import StringType, StructField, StructType
    from typer.testing import CliRunner

    from deflate.cli import app
    from deflate.infra.runtime import model_uri_file

    run_dir, _ = trained
    uri = (run_dir / model_uri_file(run_dir / "bundle")).read_text().strip()
    monkeypatch.chdir(run_dir)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{run_dir / 'mlflow.db'}")
    mlflow.set_tracking_uri(f"sqlite:///{run_dir / 'mlflow.db'}")
    pics = {p.stem: base64.b64encode(p.read_bytes()).decode() for p in sorted((world / "raw" / "images").glob("*.jpg"))}
    test = load_split(world / "processed", "test")[:12]
    rows = [{"id": r.id, "name": r.name, "description": r.description, "image_b64": pics.get(r.id, "")} for r in test]
    rows += [{"id": "bad", "name": "", "description": "x", "image_b64": ""},
             {"id": "bad_pic", "name": "x", "description": "", "image_b64": "not base64!"}]
    assert sum(bool(r["image_b64"]) for r in rows) >= 6  # pictures included
    (tmp_path / "in.jsonl").write_text("\n".join(json.dumps({k: v for k, v in r.items() if v != ""}, ensure_ascii=False)
                                                  for r in rows), encoding="utf-8")
    r = CliRunner().invoke(app, ["predict", "--model", uri, "--input", str(tmp_path / "in.jsonl"),
                                 "--output", str(tmp_path / "o.jsonl")])
    assert r.exit_code == 0, r.output
    want = [json.loads(x) for x in (tmp_path / "o.jsonl").read_text(encoding="utf-8").splitlines()]

    monkeypatch.setenv("PYSPARK_PYTHON", sys.executable)  # the workers run this interpreter (the project's venv)
    spark = (SparkSession.builder.master("local[2]").appName("deflate-test").config("spark.ui.enabled", "false")
             .config("spark.sql.shuffle.partitions", "2").config("spark.executorEnv.OMP_NUM_THREADS", "1")
             .config("spark.sql.execution.arrow.maxRecordsPerBatch", "5").getOrCreate())
    try:
        out_type = StructType([StructField(c, StringType()) for c in ("id", "predictions", "errors")])
        udf = mlflow.pyfunc.spark_udf(spark, uri, result_type=out_type, env_manager="local",
                                      params={"layout": "products"})
        df = spark.createDataFrame(pd.DataFrame(rows)).repartition(2)
        got = df.withColumn("out", udf(struct(*df.columns))).select("out.*").toPandas()
    finally:
        spark.stop()
    got = {g.id: (json.loads(g.predictions), json.loads(g.errors)) for g in got.itertuples()}
    assert set(got) == {w["id"] for w in want}
    for w in want:
        preds, errors = got[w["id"]]
        assert bool(errors) == bool(w["errors"]), (w["id"], errors, w["errors"])
        assert [(p["attribute"], p["value"]) for p in preds] == [(p["attribute"], p["value"]) for p in w["predictions"]]
        # other batches (Arrow batches of 5 rows on two executors) may move a score's last printed digit
        assert all(abs(a["score"] - b["score"]) <= 2e-4 for a, b in zip(preds, w["predictions"]))
    assert got["bad"][1] and got["bad_pic"][1] and any(got[r.id][0] for r in test)


@pytest.mark.slow
def test_stages_run_from_a_pretrained_t5_folder(world, trained, tmp_path, monkeypatch):
    """The paper's setting: ``model.pretrained_path`` names a T5 checkpoint folder with its
    tokenizer (here a tiny one saved on the spot). The four stages fine-tune it, not a fresh T5 of
    params' sizes, and the bundle they leave answers."""
    from transformers import T5Config, T5ForConditionalGeneration

    from deflate.answering.engine import Deflate
    from deflate.model.tokenizer import load_tokenizer
    run_dir, _ = trained
    tok = load_tokenizer(run_dir / "gen" / "tokenizer")
    pre = tmp_path / "t5-pretrained"
    cfg = T5Config(vocab_size=len(tok), d_model=24, d_ff=48, d_kv=8, num_heads=2, num_layers=1,
                   num_decoder_layers=1, decoder_start_token_id=0, pad_token_id=tok.pad_token_id,
                   eos_token_id=tok.eos_token_id)
    T5ForConditionalGeneration(cfg).save_pretrained(pre)
    tok.save_pretrained(pre)
    monkeypatch.chdir(tmp_path)
    p = tiny_params(**{"model.pretrained_path": str(pre), "tracking.enabled": False})
    assert p["model"]["d_model"] == 16  # params' from-scratch size: the checkpoint's (24) must win
    m = run_all(p, world, tmp_path)
    assert json.loads((tmp_path / "gen" / "config.json").read_text())["d_model"] == 24
    assert m["meta"]["use_discriminator"] and 0 < m["threshold"] < 1
    rows = [{"id": "a", "name": "麻辣牛肉干 五香味 200g", "description": "四川特产"}]
    answered = Deflate.load(tmp_path / "bundle").answer_rows(rows)
    assert [r["id"] for r in answered] == ["a"] and "predictions" in answered[0]


@pytest.mark.slow
def test_ablations_d_minus_and_v_minus(world, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = tiny_params(**{"model.use_discriminator": False, "model.use_image": False, "tracking.enabled": False})
    m = run_all(p, world, tmp_path)
    assert m["threshold"] == 0.5 and not m["meta"]["use_discriminator"] and not m["meta"]["use_image"]
    assert json.loads((tmp_path / "neg" / "summary.json").read_text())["enabled"] is False
    assert json.loads((tmp_path / "gen" / "deflate.json").read_text())["image_vocab"] == 0


@pytest.mark.slow
def test_the_offer_layout_runs_every_stage_with_pictures(world, tmp_path, monkeypatch):
    """``model.question: offer`` through generator, harvest, discriminator, evaluate and the bundle:
    the encoder reads each product once per batch, pictures included."""
    monkeypatch.chdir(tmp_path)
    p = tiny_params(**{"model.question": "offer", "text.answer_prefix": True, "tracking.enabled": False})
    m = run_all(p, world, tmp_path)
    meta = json.loads((tmp_path / "gen" / "deflate.json").read_text())
    assert meta["question"] == "offer" and meta["answer_prefix"] and m["meta"]["use_image"]
    assert 0 <= m["ave"]["f1"] <= 100 and 0 < m["threshold"] < 1
    from deflate.answering.engine import Deflate
    eng = Deflate.load(tmp_path / "bundle")
    assert eng.gen.layout == "offer" and eng.qb.layout == "offer"


def test_tracking_outage_does_not_stop_training(world, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # a tracking server that is down: a closed port on this machine, no retries
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    p = tiny_params(**{"tracking.uri": "http://127.0.0.1:9"})
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        train_generator.run(p, world / "processed", world / "tokens", tmp_path / "gen", tmp_path / "ckpt")
    assert any("tracking disabled" in str(x.message) for x in w)
    assert (tmp_path / "gen" / "model.safetensors").exists()

    t = Tracker({"enabled": True, "uri": "", "experiment": "deflate"}, "stage", {"a": 1}, "cpu")
    assert t.on
    monkeypatch.setattr(t.mlflow, "log_metrics", lambda *a, **k: (_ for _ in ()).throw(ConnectionError("down")))
    with pytest.warns(UserWarning, match="down"):
        t.metrics({"loss": 1.0}, step=1)
    assert not t.on
    t.metrics({"loss": 1.0}, step=2)  # silent once off
    t.close()


def qa_setup(world: Path):
    """A tokenizer, QA examples and a batcher for the world's training products (the loop's inputs)."""
    from deflate.data.splits import load_data
    from deflate.model.batching import Batcher
    from deflate.model.questions import qa_examples
    from deflate.model.tokenizer import QuestionBuilder, corpus, train_tokenizer

    schema = json.loads((world / "processed" / "schema.json").read_text())
    data = load_data(world / "processed", world / "tokens", "train")
    tok = train_tokenizer(corpus(data.records, schema), 500)
    qb = QuestionBuilder(tok, "zh", 32, 8)
    return tok, qa_examples(data.records, qb, schema, "、"), Batcher(data.image, data.has_image, True, qb.img_id)


def test_killed_training_resumes_to_the_same_weights(world, tmp_path):
    from deflate.model.mul_t5 import build_generator
    from deflate.model.train import fit

    p = tiny_params()
    tok, ex, b = qa_setup(world)
    cfg = dict(p["generator"], epochs=3)
    val = lambda m: {"score": 0.0}  # noqa: E731  (keep the first epoch as "best" is irrelevant here)

    def model():
        torch.manual_seed(0)
        return build_generator(p["model"], tok, 16, 0)

    loss = lambda m, batch: m(batch).loss  # noqa: E731
    ref = model()
    fit(ref, ex, b, cfg, loss_fn=loss, validate=val, ckpt_dir=tmp_path / "a", run_hash="h", seed=0)
    ref_last = {k: v.clone() for k, v in ref.state_dict().items()}
    killed = model()
    with pytest.raises(KeyboardInterrupt):
        fit(killed, ex, b, cfg, loss_fn=loss, validate=val, ckpt_dir=tmp_path / "b", run_hash="h", seed=0,
            stop_after_epochs=1)
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["epoch"] == 1
    resumed = model()
    hist = fit(resumed, ex, b, cfg, loss_fn=loss, validate=val, ckpt_dir=tmp_path / "b", run_hash="h", seed=0)
    assert [h["epoch"] for h in hist] == [1, 2, 3]
    # best = epoch 1 in both runs (constant score): compare the last-epoch checkpoints instead
    from safetensors.torch import load_file
    a, c = (load_file(str(tmp_path / run / "epoch-003" / "model.safetensors")) for run in "ab")
    assert a.keys() == c.keys() and all(torch.equal(a[k], c[k]) for k in a)
    changed = model()  # a different config hash starts afresh
    h2 = fit(changed, ex, b, dict(cfg, epochs=1), loss_fn=loss, validate=val, ckpt_dir=tmp_path / "b",
             run_hash="other", seed=0)
    assert [h["epoch"] for h in h2] == [1]
    assert ref_last


def test_predict_on_good_and_bad_rows(world, trained, tmp_path):
    import base64
    import shutil

    from deflate.answering.engine import Deflate
    from deflate.answering.predict_rows import read_rows
    run, _ = trained
    img = next((world / "raw" / "images").glob("*.jpg"))
    pics = tmp_path / "pics"
    pics.mkdir()
    shutil.copy(img, pics / "good.jpg")
    (pics / "broken.jpg").write_bytes(b"\xff\xd8 not an image")
    (tmp_path / "secret.jpg").write_bytes(img.read_bytes())  # a real picture outside the allowed folder
    (pics / "link.jpg").symlink_to(tmp_path / "secret.jpg")
    lines = [json.dumps({"id": "a", "name": "外婆家香辣牛肉零食", "image": "good.jpg"}, ensure_ascii=False),
             json.dumps({"id": "b", "name": "白毫银针茶饮", "description": "冰镇", "attributes": ["茶", "冷热"]},
                        ensure_ascii=False),
             json.dumps({"id": "c", "name": "红烧牛肉", "image": "broken.jpg"}, ensure_ascii=False),
             json.dumps({"id": "d", "description": "no name"}),
             json.dumps({"id": "e", "name": "x", "attributes": ["颜色"]}, ensure_ascii=False),
             "{not json",
             "[1, 2]",
             json.dumps({"id": "f", "name": "x", "image": 123}),
             "[" * 100_000 + "]" * 100_000,
             json.dumps({"id": "g", "name": "x", "image": "../secret.jpg"}),
             json.dumps({"id": "h", "name": "x", "image": str(tmp_path / "secret.jpg")}),
             json.dumps({"id": "i", "name": "x", "image": "link.jpg"}),
             json.dumps({"id": "j", "name": "x", "image": "../nothing_there.jpg"}),
             json.dumps({"id": "k", "name": "外婆家香辣牛肉零食", "image_b64": base64.b64encode(img.read_bytes()).decode()},
                        ensure_ascii=False),
             json.dumps({"id": "a", "name": "again"}),
             json.dumps({"id": "l", "name": "x", "image_b64": "not base64!"})]
    path = tmp_path / "in.jsonl"
    path.write_bytes(("\n".join(lines) + "\n").encode() + b"\xff\xfe\n")
    engine = Deflate.load(run / "bundle").with_decisions(threshold=0.0)
    out = engine.answer_rows(read_rows(path), pics, progress=False)
    assert [r["id"] for r in out][:5] == ["a", "b", "c", "d", "e"] and len(out) == len(lines) + 1
    assert not out[0]["errors"] and {p["attribute"] for p in out[0]["predictions"]} <= set(engine.attributes)
    assert out[0]["predictions"] and all(0 <= p["score"] <= 1 for p in out[0]["predictions"])
    assert {p["attribute"] for p in out[1]["predictions"]} <= {"茶", "冷热"} and not out[1]["errors"]
    assert "image ignored" in out[2]["errors"][0] and out[2]["predictions"]  # answered from text
    assert out[3]["errors"] == ["missing name"] and not out[3]["predictions"]
    assert "unknown attribute" in out[4]["errors"][0]
    assert "bad JSON" in out[5]["errors"][0] and "not a JSON object" in out[6]["errors"][0]
    assert "image must be a path" in out[7]["errors"][0] and "nested too deeply" in out[8]["errors"][0]
    # escaping paths (.., absolute, a symlink out) are refused with one message, whether or not the file exists
    refused = [out[k]["errors"] for k in (9, 10, 11, 12)]
    assert refused == [["image ignored: outside the allowed image folder"]] * 4
    assert all(out[k]["predictions"] for k in (9, 10, 11, 12))  # still answered from the text
    # inline bytes: the same picture gives the same answers as the path
    assert not out[13]["errors"] and out[13]["predictions"] == out[0]["predictions"]
    assert "duplicate of line 1 (same id 'a'" in out[14]["errors"][0] and not out[14]["predictions"]
    assert "not valid base64" in out[15]["errors"][0]
    assert out[16]["errors"] == ["not valid UTF-8"]
    # without an allowed folder (the pyfunc unless DEFLATE_IMAGE_ROOT is set), no path is followed
    alone = engine.answer_rows(read_rows(path)[:1], None, progress=False)
    assert "send the picture as image_b64" in alone[0]["errors"][0]
    tsv = tmp_path / "in.tsv"
    tsv.write_text("id\tname\tdescription\tattributes\nt1\t红烧牛肉\t\t主料|辣度\nt2\tonly two\n", encoding="utf-8")
    out = engine.answer_rows(read_rows(tsv), progress=False)
    assert {p["attribute"] for p in out[0]["predictions"]} <= {"主料", "辣度"}
    assert "columns" in out[1]["errors"][0]


@pytest.mark.slow
def test_text_only_pipeline_with_candidates_and_reranking(world, tmp_path, monkeypatch):
    """The real-data path: no image stage, negatives = wrong candidates, closed-vocabulary accuracy."""
    import mlflow
    import pandas as pd

    from deflate.data.splits import grouped_labels
    from deflate.evaluation.metrics import accuracy_report
    from deflate.stages import evaluate_candidates, train_lexical
    monkeypatch.chdir(tmp_path)
    p = tiny_params(**{"negatives.mode": "candidates", "decode.top_k": 3, "discriminator.claim_value": True})
    p["lexical"] = {"max_features": 200, "C": 10.0}
    proc, no_tokens = world / "processed", tmp_path / "no_tokens"
    train_generator.run(p, proc, no_tokens, tmp_path / "gen", tmp_path / "ckg")
    assert json.loads((tmp_path / "gen" / "deflate.json").read_text())["use_image"] is False
    summary = harvest_negatives.run(p, proc, no_tokens, tmp_path / "gen", tmp_path / "neg")
    assert summary["mode"] == "candidates"
    schema = json.loads((proc / "schema.json").read_text())
    train = load_split(proc, "train")
    negs = [json.loads(x) for x in (tmp_path / "neg" / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    for n in negs:  # a wrong value of an attribute the product has
        gold = {lab["value"] for lab in train[n["row"]].labels if lab["attribute"] == n["attribute"]}
        assert gold and n["value"] and n["value"] not in gold
    train_discriminator.run(p, proc, no_tokens, tmp_path / "gen", tmp_path / "neg", tmp_path / "disc", tmp_path / "ckd")
    lex_report = train_lexical.run(p, proc, tmp_path / "lex")
    assert 0 < lex_report["val_accuracy"] <= 1 and lex_report["attributes"] == len(schema["attributes"])
    m = evaluate_candidates.run(p, proc, no_tokens, tmp_path / "gen", tmp_path / "disc", tmp_path / "m.json",
                                tmp_path / "per_attr.json", tmp_path / "bundle", tmp_path / "lex")
    assert set(m) >= {"free", "constrained", "constrained_rerank", "topk", "topk_rerank", "alpha", "lexical", "fused"}
    assert 0 <= m["alpha"] <= 1 and 0 <= m["alpha_topk"] <= 1 and m["top_k"] == 3
    assert set(m["fused_weights"]) == {"generator", "discriminator", "lexical"}
    assert abs(sum(m["fused_weights"].values()) - 1) < 1e-9
    for v in ("free", "constrained", "constrained_rerank", "topk", "topk_rerank", "lexical", "fused"):
        assert 0 <= m[v]["overall"]["exact"] <= m[v]["overall"]["lenient"] <= 100
    per_attr = json.loads((tmp_path / "per_attr.json").read_text())
    assert set(per_attr["constrained"]) <= set(schema["attributes"])
    preds = json.loads((tmp_path / "m.json").read_text())
    test = load_split(proc, "test")
    assert preds["n_test"] == sum(len({lab["attribute"] for lab in r.labels}) for r in test)
    assert "mlflow_model" not in preds  # a per-run URI would make two reproductions differ
    # the bundle (and the pyfunc logged from it) carries all three scorers and the val-picked
    # weights: asked each test question, it answers every one and scores exactly the `fused` variant
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model(m["mlflow_model"])
    d = model.unwrap_python_model().engine.decisions
    assert d.mode == "fused" and d.keep_all and model.unwrap_python_model().engine.lexical is not None
    assert d.weights == tuple(m["fused_weights"][s] for s in ("generator", "discriminator", "lexical"))
    assert d.alpha == m["alpha"]
    qs = [(r, a) for r in test for a in sorted({lab["attribute"] for lab in r.labels})]
    out = model.predict(pd.DataFrame([{"id": f"{r.id}#{a}", "name": r.name, "description": r.description,
                                       "attributes": [a]} for r, a in qs]))
    assert len(out) == len(qs) and (out.error == "").all()
    sep = json.loads((tmp_path / "gen" / "deflate.json").read_text())["value_sep"]
    gold = {f"{r.id}#{a}": sep.join(grouped_labels(r)[a]) for r, a in qs}
    rows = [{"domain": "", "attribute": "", "gold": gold[i], "pred": v} for i, v in zip(out.id, out.value)]
    assert accuracy_report(rows)[0]["overall"]["exact"] == m["fused"]["overall"]["exact"]
    # and `deflate predict --model <uri> --format implicitave` takes mode, weights and scorer from it
    from typer.testing import CliRunner

    from deflate.cli import app
    tsv = ["id\timages\tcategory\ttexts\tattribute_names\tattribute_values"]
    tsv += [f"{r.id}\t\t{r.description}\t[Title] {r.name}\t{a}\t{gold[f'{r.id}#{a}']}" for r, a in qs]
    (tmp_path / "iave.tsv").write_text("\n".join(tsv) + "\n", encoding="utf-8")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    r = CliRunner().invoke(app, ["predict", "--model", m["mlflow_model"], "--format", "implicitave", "--input",
                                 str(tmp_path / "iave.tsv"), "--output", str(tmp_path / "iave.jsonl")])
    assert r.exit_code == 0, r.output
    assert "(the bundle)" in r.output and "mode fused" in r.output
    acc = json.loads((tmp_path / "iave.accuracy.json").read_text())
    assert acc["overall"]["exact"] == m["fused"]["overall"]["exact"] and acc["overall"]["n"] == len(qs)
    # every mode: the MLflow model of a bundle answers exactly as `deflate predict` on that bundle folder
    from deflate.answering.engine import Deflate
    from deflate.infra.bundle import write_bundle
    from deflate.infra.tracking import Tracker
    frame = pd.DataFrame([{"id": f"{r.id}#{a}", "name": r.name, "description": r.description, "attributes": [a]}
                          for r, a in qs[:12]] + [{"id": "x", "name": "y", "attributes": ["nope"]}])
    (tmp_path / "rows.jsonl").write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in
                                                   frame.to_dict(orient="records")) + "\n", encoding="utf-8")
    base = Deflate.load(tmp_path / "bundle").decisions
    for mode, keep_all in (("free", False), ("constrained", True), ("rerank", False), ("fused", True)):
        b = write_bundle(tmp_path / f"bundle_{mode}", replace(base, mode=mode, keep_all=keep_all, threshold=0.0), p["decode"], 256,
                         tmp_path / "gen", tmp_path / "disc", tmp_path / "lex")
        t = Tracker(p["tracking"], f"bundle_{mode}", {}, "cpu")
        served = mlflow.pyfunc.load_model(t.log_pyfunc(b)).predict(frame)
        t.close()
        r = CliRunner().invoke(app, ["predict", "--model", str(b), "--input", str(tmp_path / "rows.jsonl"),
                                     "--output", str(tmp_path / f"{mode}.jsonl")])
        assert r.exit_code == 0 and f"mode {mode}" in r.output, r.output
        cli = [json.loads(x) for x in (tmp_path / f"{mode}.jsonl").read_text(encoding="utf-8").splitlines()]
        want = sorted((o["id"], x["attribute"], x["value"], x["score"]) for o in cli for x in o["predictions"])
        ok = served[served.error == ""]
        got = sorted(zip(ok.id, ok.attribute, ok.value, ok.score))
        assert got == want and want, mode
        assert served[served.id == "x"].error.str.contains("unknown attribute").all() and cli[-1]["errors"]


def test_resume_key_changes_with_code(monkeypatch):
    import deflate.model.train as tr
    a = tr.config_hash({"x": 1})
    assert a == tr.config_hash({"x": 1}) and a != tr.config_hash({"x": 2})
    monkeypatch.setattr(tr, "code_fingerprint", lambda: "other code")
    assert tr.config_hash({"x": 1}) != a


def test_resume_key_hashes_what_training_stages_depend_on():
    """The fingerprint covers only package code that every training stage lists as deps (so a change
    to cli.py, no stage's dep, neither stales a stage nor moves a committed key), and is stable."""
    import yaml

    import deflate.model.train as tr
    repo = Path(__file__).parents[1]
    training = {"train_generator", "train_discriminator", "copy_warmup", "shared_generator"}
    seen = 0
    for f in [repo / "dvc.yaml", *sorted((repo / "pipelines").glob("*/dvc.yaml"))]:
        for name, stage in yaml.safe_load(f.read_text())["stages"].items():
            if name not in training:
                continue
            deps = {d.split("src/deflate/")[1] for d in stage["deps"] if "src/deflate/" in d}
            assert set(tr.TRAINING_CODE) <= deps, (f, name, set(tr.TRAINING_CODE) - deps)
            seen += 1
    assert seen >= 3
    before = tr.code_fingerprint()
    assert len(before) == 16 and "cli.py" not in tr.TRAINING_CODE and before == tr.code_fingerprint()


def test_predict_command_line_answers_the_same_from_any_directory(world, trained, tmp_path, monkeypatch):
    """The threshold comes from the bundle (chosen on val), never from a metrics file in the working
    directory: a decoy metrics/deflate.json beside one run changes nothing."""
    from typer.testing import CliRunner

    from deflate.cli import app
    run, m = trained
    # the same inputs as the stage saw: text and picture (images allowed from the world's folder only)
    recs = load_split(world / "processed", "test")
    images = Path(recs[0].image).resolve().parent
    rows = [{"id": r.id, "name": r.name, "description": r.description, "image": Path(r.image).name} for r in recs]
    (tmp_path / "in.jsonl").write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in rows + [{"id": "b"}]) + "\n",
                                       encoding="utf-8")
    outputs = []
    for where in ("a", "b"):
        (tmp_path / where).mkdir()
        monkeypatch.chdir(tmp_path / where)
        if where == "b":
            (tmp_path / "b" / "metrics").mkdir()
            (tmp_path / "b" / "metrics" / "deflate.json").write_text(json.dumps({"threshold": 0.999}))
        r = CliRunner().invoke(app, ["predict", "--model", str(run / "bundle"), "--input", str(tmp_path / "in.jsonl"),
                                     "--output", "out/pred.jsonl", "--images", str(images)])
        assert r.exit_code == 0, r.output
        assert f"{len(rows) + 1} rows, 1 with errors only" in r.output and f"threshold {m['threshold']:.3f}" in r.output
        outputs.append((tmp_path / where / "out" / "pred.jsonl").read_text(encoding="utf-8"))
        done = json.loads((tmp_path / where / "out" / "pred.jsonl.done.json").read_text())  # written last
        assert done["rows"] == len(rows) + 1 and done["with_errors"] == 1, outputs[-1][:600]
    assert outputs[0] == outputs[1]
    # answered 3 rows at a time (the input streamed): the same file, and a repeat is still caught across chunks
    with open(tmp_path / "in.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(rows[0], ensure_ascii=False) + "\n")
    r = CliRunner().invoke(app, ["predict", "--model", str(run / "bundle"), "--input", str(tmp_path / "in.jsonl"),
                                 "--output", "chunked.jsonl", "--chunk-rows", "3", "--images", str(images)])
    assert r.exit_code == 0, r.output
    chunked = (tmp_path / "b" / "chunked.jsonl").read_text(encoding="utf-8").splitlines()
    assert chunked[:-1] == outputs[0].splitlines() and "duplicate of line 1" in json.loads(chunked[-1])["errors"][0]
    out = [json.loads(x) for x in outputs[0].splitlines()]
    assert [o["id"] for o in out][-1] == "b" and out[-1]["errors"] == ["missing name"]
    # the same kept answers as the evaluate stage wrote for the test split
    stage = {(x["id"], p["attribute"], p["value"]) for x in map(json.loads, (run / "pred.jsonl").read_text(
        encoding="utf-8").splitlines()) for p in x["predictions"]}
    assert {(o["id"], p["attribute"], p["value"]) for o in out for p in o["predictions"]} == stage


def test_a_bundle_missing_a_part_or_a_decision_is_one_line_error(trained, tmp_path):
    import shutil

    from typer.testing import CliRunner

    from deflate.cli import app
    run, _ = trained
    (tmp_path / "in.jsonl").write_text(json.dumps({"id": "a", "name": "红烧牛肉"}, ensure_ascii=False) + "\n")

    def predict(model):
        return CliRunner().invoke(app, ["predict", "--model", str(model), "--input", str(tmp_path / "in.jsonl"),
                                        "--output", str(tmp_path / "o.jsonl")])

    shutil.copytree(run / "bundle", tmp_path / "b")
    (tmp_path / "b" / "discriminator" / "model.safetensors").unlink()  # e.g. a mistyped or half-copied part
    r = predict(tmp_path / "b")
    assert r.exit_code == 1 and "lacks discriminator/model.safetensors" in r.output
    assert len(r.output.strip().splitlines()) == 1
    shutil.rmtree(tmp_path / "b")
    shutil.copytree(run / "bundle", tmp_path / "b")
    spec = json.loads((tmp_path / "b" / "bundle.json").read_text())
    del spec["decisions"]["threshold"]
    (tmp_path / "b" / "bundle.json").write_text(json.dumps(spec))
    r = predict(tmp_path / "b")
    assert r.exit_code == 1 and "threshold" in r.output and len(r.output.strip().splitlines()) == 1
    r = predict(run / "gen")  # a bare generator folder is not a bundle
    assert r.exit_code == 1 and "not a DEFLATE bundle" in r.output
    r = CliRunner().invoke(app, ["predict", "--model", str(run / "bundle"), "--input", str(tmp_path / "in.jsonl"),
                                 "--output", str(tmp_path / "o.jsonl"), "--mode", "fused", "--weights", "0,0,1"])
    assert r.exit_code == 1 and "no lexical" in r.output


def test_a_claim_without_its_value_is_what_the_discriminator_trained_on(world, trained, tmp_path):
    """discriminator.claim_value false (params.yaml): the folder records it, the engine then builds
    "<CLS> question" claims whatever the answer, and refuses to rank candidates with such a claim."""
    from deflate.answering.engine import BundleError, Deflate
    from deflate.model.questions import Question
    run, _ = trained
    assert tiny_params()["discriminator"]["claim_value"] is False
    assert json.loads((run / "disc" / "deflate.json").read_text())["claim_value"] is False
    engine = Deflate.load(run / "bundle")
    records = load_split(world / "processed", "test")[:2]
    qs = [Question(0, a) for a in engine.attributes[:3]]
    assert engine.claim_value is False
    assert [e.ids for e in engine.claims(records, qs, ["红烧"] * 3)] == [e.ids for e in engine.claims(records, qs, [""] * 3)]
    engine.claim_value = True  # what a value-reading discriminator is given: the value's tokens at the end
    with_value = engine.claims(records, qs, ["红烧"] * 3)
    assert all(len(a.ids) > len(b.ids) for a, b in zip(with_value, engine.claims(records, qs, [""] * 3)))
    engine.claim_value, engine.candidates = False, {a: ["x"] for a in engine.attributes}
    with pytest.raises(BundleError, match="reads the value"):
        engine.with_decisions(mode="rerank")
    for over in ({"negatives.mode": "candidates"}, {"negatives.wrong_values": True}):  # a wrong value, unseen
        with pytest.raises(ValueError, match="claim_value false cannot learn"):
            train_discriminator.run(tiny_params(**over), world / "processed", world / "tokens", run / "gen",
                                    run / "neg", tmp_path / "d", tmp_path / "c")
    with pytest.raises(ValueError, match="mark_value marks the claimed value"):  # nothing to mark
        train_discriminator.run(tiny_params(**{"discriminator.mark_value": True}), world / "processed",
                                world / "tokens", run / "gen", run / "neg", tmp_path / "d", tmp_path / "c")


def test_params_name_a_missing_key(tmp_path):
    import yaml

    from deflate.infra.config import MissingParam, Params
    p = Params(yaml.safe_load("decode:\n  batch_size: 8\n"))  # load_params would refuse it whole (the schema)
    assert p["decode"]["batch_size"] == 8
    with pytest.raises(MissingParam, match="'decode.top_k'"):
        p["decode"]["top_k"]
    p["lexical"] = {"C": 1.0}
    with pytest.raises(MissingParam, match="'lexical.max_features'"):
        p["lexical"]["max_features"]


def test_resume_key_follows_the_training_data(tmp_path):
    from deflate.model.train import file_digest
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"tokens v1")
    b.write_bytes(b"negatives")
    d1 = file_digest(a, b)
    assert d1 == file_digest(a, b) and d1 != file_digest(b, a)
    a.write_bytes(b"tokens v2")  # e.g. another DALL-E encoder: same params section, new tokens
    assert file_digest(a, b) != d1
    assert file_digest(a, tmp_path / "missing") != file_digest(a)


def test_engine_loads_the_image_tokenizer_only_to_encode_pictures(trained, tmp_path):
    """The stages answer from precomputed tokens: a generator folder whose image tokenizer cannot be
    rebuilt (the patches variant's has no codebook) still harvests and evaluates."""
    import shutil

    from deflate.answering.engine import Deflate
    from deflate.answering.predict_rows import row_pictures
    from deflate.infra.bundle import BundleError
    run, _ = trained
    shutil.copytree(run / "gen", tmp_path / "gen")
    (tmp_path / "gen" / "codebook.safetensors").unlink()
    # the generator alone: no discriminator, so no presence decision either
    decisions = replace(Deflate.load(run / "bundle").decisions, presence_threshold=None)
    engine = Deflate(tmp_path / "gen", discriminator=None, lexical=None, decisions=decisions,
                     decode=tiny_params()["decode"], claim_batch_size=64)
    assert engine.meta["use_image"]
    with pytest.raises(BundleError, match="codebook"):
        row_pictures(engine.image_tok, [{"image": ""}], None, [[]])


def test_predict_tokenizes_pictures_exactly_as_the_image_stage(world, trained):
    from deflate.answering.engine import Deflate
    from deflate.answering.predict_rows import row_pictures
    from deflate.data.image_tokens import load_tokens
    run, _ = trained
    recs = load_split(world / "processed", "test")
    tokens, has, _ = load_tokens(world / "tokens", "test")
    errors = [[] for _ in recs]
    # the records' paths are relative to the stage's working directory: absolute here, / allowed
    products = [{"image": str(Path(r.image).resolve()) if r.image else ""} for r in recs]
    got, got_has = row_pictures(Deflate.load(run / "bundle").image_tok, products, Path("/"), errors)
    assert (got_has == has).all() and (got[has] == tokens[has]).all()


@pytest.mark.slow
def test_predict_scores_an_implicitave_folder(world, trained, tmp_path, monkeypatch):
    """`--format implicitave`: one question per row, answers from the model's candidates, bad rows
    reported, an accuracy JSON over the rows with gold values."""
    from typer.testing import CliRunner

    from deflate.cli import app

    run_dir, _ = trained
    test = load_split(world / "processed", "test")
    texts = tmp_path / "eval" / "texts"
    texts.mkdir(parents=True)
    head = "id\timages\tcategory\ttexts\tattribute_names\tattribute_values\n"
    good = [f"{r.id}\t\t{r.category}\t[Title] {r.name}\t{lab['attribute']}\t{lab['value']}"
            for r in test[:4] for lab in r.labels[:1]]
    (texts / "Food.tsv").write_bytes((head + "\n".join(good) + "\nonly\tthree\tcols\n"
                                      + "x1\t\tc\t[Title] 面\t不存在\tv\n").encode() + b"x2\t\tc\t\xff\xfe\ta\tb\n")
    r = CliRunner().invoke(app, ["predict", "--model", str(run_dir / "bundle"), "--format", "implicitave", "--input", str(tmp_path / "eval"),
                                 "--output", str(tmp_path / "o.jsonl"), "--threshold", "0.5"])
    assert r.exit_code == 0, r.output
    out = [json.loads(x) for x in (tmp_path / "o.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(out) == len(good) + 3
    cands = json.loads((run_dir / "gen" / "deflate.json").read_text())["candidates"]
    for o, line in zip(out, good):
        assert not o["errors"] and len(o["predictions"]) == 1  # every asked attribute is answered
        att = line.split("\t")[4]
        assert o["predictions"][0]["attribute"] == att and o["predictions"][0]["value"] in cands[att]
    assert "columns" in out[-3]["errors"][0] and "unknown attribute" in out[-2]["errors"][0]
    assert out[-1]["errors"] == ["not valid UTF-8"]
    acc = json.loads((tmp_path / "o.accuracy.json").read_text())
    assert acc["overall"]["n"] == len(good) + 1 and acc["unanswered"] == 1 and acc["mode"] == "constrained"
    right = sum(o["predictions"][0]["value"] == o["gold"] for o in out[:len(good)])
    assert acc["overall"]["exact"] == round(100 * right / (len(good) + 1), 2)
    # fused mode: a lexical scorer that has memorised these rows, with all the weight, gets every row
    # whose gold value is one of the model's candidates
    from deflate.answering.lexical import LexicalScorer, lexical_text
    memo = {}
    for r in test[:4]:
        memo.setdefault(r.labels[0]["attribute"], []).extend([(lexical_text(r.name, r.category), r.labels[0]["value"])] * 3)
    LexicalScorer.fit(memo, progress=False).save(tmp_path / "lex")
    from deflate.answering.engine import Deflate
    from deflate.infra.bundle import write_bundle
    b = Deflate.load(run_dir / "bundle")
    write_bundle(tmp_path / "with_lex", b.decisions, b.decode, b.claim_batch_size, run_dir / "bundle" / "generator",
                 run_dir / "bundle" / "discriminator", tmp_path / "lex")
    args = ["predict", "--model", str(tmp_path / "with_lex"), "--format", "implicitave", "--input",
            str(tmp_path / "eval"), "--output", str(tmp_path / "f.jsonl"), "--mode", "fused"]
    r = CliRunner().invoke(app, args + ["--weights", "0,0,1"])
    assert r.exit_code == 0, r.output
    fused = json.loads((tmp_path / "f.accuracy.json").read_text())
    reachable = sum(line.split("\t")[5] in cands[line.split("\t")[4]] for line in good)  # gold among the candidates
    assert fused["mode"] == "fused" and fused["overall"]["exact"] == round(100 * reachable / (len(good) + 1), 2)
    assert CliRunner().invoke(app, args + ["--weights", "1,x"]).exit_code == 1


def test_the_keep_score_mixes_in_the_generators_confidence_only_when_weighted(world, trained):
    """keep_weight 0 is the paper's rule (D itself, bit for bit); w > 0 keeps by P_gen^w * D^(1-w),
    with P_gen the generator's mean token probability of the answer it wrote."""
    import numpy as np

    from deflate.answering.engine import BundleError, Deflate, keep_scores
    from deflate.model.questions import Question
    run, _ = trained
    probs = np.array([0.9, 0.2, 0.0], np.float32)
    glp = np.array([-0.1, -3.0, -0.5], np.float32)
    assert keep_scores(probs, None, 0.0) is probs and keep_scores(None, glp, 0.5) is None
    mixed = keep_scores(probs, glp, 0.4)
    assert np.allclose(mixed, np.exp(0.4 * glp) * np.maximum(probs, 1e-7) ** 0.6)
    assert mixed[0] > probs[0] * 0.9 and mixed[1] < probs[1]  # a confident answer rises, an unsure one falls
    with pytest.raises(ValueError, match="log-probs"):
        keep_scores(probs, None, 0.4)
    engine = Deflate.load(run / "bundle")
    for bad in (1.0, -0.1):
        with pytest.raises(BundleError, match="keep_weight"):
            engine.with_decisions(keep_weight=bad)
    records = load_split(world / "processed", "test")[:3]
    qs = [Question(i, a) for i in range(3) for a in engine.attributes[:2]]
    b = split_batcher(engine, world)
    plain = engine.with_decisions(keep_weight=0.0, threshold=0.0).answer(records, qs, b, progress=False)
    assert plain.gen_logprobs is None and plain.scores is plain.probs  # nothing extra computed
    mixed = engine.with_decisions(keep_weight=0.5).answer(records, qs, b, progress=False)
    assert mixed.values == plain.values and np.array_equal(mixed.probs, plain.probs)
    assert mixed.gen_logprobs is not None and (mixed.gen_logprobs <= 0).all()
    assert np.allclose(mixed.scores, keep_scores(plain.probs, mixed.gen_logprobs, 0.5))
    # the answer's score is the candidate scorer's for the same value (this generator: standalone, no prefix)
    assert not engine.qb.prefix(qs[0].attribute)
    values = ["红烧牛肉"] * len(qs)
    cands = engine.candidate_scores(b, records, engine.questions(records, qs), ("generator",), progress=False)
    engine.candidates = {a: ["红烧牛肉"] for a in engine.attributes}
    one = engine.candidate_scores(b, records, engine.questions(records, qs), ("generator",), progress=False)
    assert cands is not None and np.allclose(engine.answer_logprobs(b, records, qs, values, progress=False),
                                             [c[0] for c in one["generator"]], atol=1e-5)


def test_rerank_beams_answers_the_candidate_with_the_best_keep_score(world, trained, tmp_path, monkeypatch):
    """decode.rerank_beams k: each free answer is chosen among the question's greedy answer and its k
    span beams that name a value, by the highest keep score at the decisions' weight (the greedy
    answer where every candidate is "None"); Answers.at_weight re-picks under another weight (what
    evaluate's weight search uses) and chunks join; a model without discriminator answers greedily;
    the bundle carries k, refuses it without span decoding, and one written before reads 0."""
    import shutil

    import numpy as np

    from deflate.answering.engine import BundleError, Deflate, answered, keep_scores
    from deflate.infra.bundle import read_bundle
    from deflate.model.questions import Question
    run, _ = trained
    engine = Deflate.load(run / "bundle").with_decisions(keep_weight=0.5, threshold=0.0)
    engine.decode.update(constrain_to_spans=True)
    records = load_split(world / "processed", "test")[:4]
    qs = [Question(i, a) for i in range(4) for a in engine.attributes]
    b = split_batcher(engine, world)
    greedy = engine.answer(records, qs, b, progress=False)
    assert greedy.beams is None
    engine.decode.update(rerank_beams=2)
    ans = engine.answer(records, qs, b, progress=False)
    beams = ans.beams
    assert beams is not None and len(beams.starts) == len(qs) + 1 and beams.starts[-1] == len(beams.values)
    for w in (0.5, 0.0):
        picked = ans.at_weight(w)
        s = keep_scores(beams.probs, beams.gen_logprobs, w)
        for k, (lo, hi) in enumerate(zip(beams.starts[:-1].tolist(), beams.starts[1:].tolist())):
            cands = beams.values[lo:hi]
            assert len(cands) <= 3 and len(set(cands)) == len(cands) and all(map(answered, cands))
            if answered(greedy.values[k]):
                assert cands[0] == greedy.values[k]  # the greedy answer is always a candidate
            if cands:
                assert picked.values[k] == cands[int(np.argmax(s[lo:hi]))]
            else:
                assert picked.values[k] == greedy.values[k] and not answered(greedy.values[k])
    assert ans.at_weight(0.5).values == ans.values
    assert np.array_equal(ans.scores, keep_scores(ans.probs, ans.gen_logprobs, 0.5))
    assert ans.kept == [answered(v) for v in ans.values]  # threshold 0
    monkeypatch.setattr("deflate.answering.engine.ANSWER_CHUNK", 5)
    chunked = engine.answer(records, qs, b, progress=False)
    assert chunked.beams.values == beams.values and np.array_equal(chunked.beams.starts, beams.starts)
    assert chunked.values == ans.values
    d_minus = Deflate(run / "bundle" / "generator", discriminator=None, lexical=None,
                      decisions=replace(engine.decisions, presence_threshold=None), decode=engine.decode,
                      claim_batch_size=64)
    assert not d_minus.reranks_beams and d_minus.answer(records, qs, b, progress=False).beams is None
    shutil.copytree(run / "bundle", tmp_path / "b")
    path = tmp_path / "b" / "bundle.json"
    spec = json.loads(path.read_text())
    assert spec["decode"]["rerank_beams"] == 0  # written from params.yaml
    spec["decode"]["rerank_beams"] = 2
    path.write_text(json.dumps(spec))
    with pytest.raises(BundleError, match="constrain_to_spans"):
        Deflate.load(tmp_path / "b")
    spec["decode"]["constrain_to_spans"] = True
    path.write_text(json.dumps(spec))
    assert read_bundle(tmp_path / "b")["decode"]["rerank_beams"] == 2
    assert not engine.claim_value  # this tiny run's discriminator reads no value: it cannot judge beams
    with pytest.raises(BundleError, match="reads the value"):
        Deflate.load(tmp_path / "b")
    del spec["decode"]["rerank_beams"]
    path.write_text(json.dumps(spec))
    assert read_bundle(tmp_path / "b")["decode"]["rerank_beams"] == 0


def test_the_keep_scores_shared_encoder_pass_gives_the_separate_passs_numbers(world, trained):
    """With a keep weight the engine encodes each batch once for the greedy answers and their score
    (decoding.generate_scored): values and log-probs equal, byte for byte, those of generating and
    then scoring the answers in a second pass (scores.answer_logprobs), over several batches of
    different lengths."""
    from deflate.answering.decoding import generate_values
    from deflate.answering.engine import Deflate
    from deflate.model.questions import Question
    run, _ = trained
    engine = Deflate.load(run / "bundle")
    engine.decode["batch_size"] = 3
    records = load_split(world / "processed", "test")[:5]
    qs = [Question(i, a) for i in range(5) for a in engine.attributes]
    b = split_batcher(engine, world)
    separate_pass = engine.answer_logprobs
    engine.answer_logprobs = None  # the answering must not call the second pass
    ans = engine.with_decisions(keep_weight=0.5).answer(records, qs, b, progress=False)
    engine.answer_logprobs = separate_pass
    values = generate_values(engine.gen, engine.qb, b, engine.questions(records, qs), engine.decode, progress=False)
    assert ans.values == values
    separate = engine.answer_logprobs(b, records, qs, values, progress=False)
    assert ans.gen_logprobs.dtype == separate.dtype and ans.gen_logprobs.tobytes() == separate.tobytes()


def test_predict_reports_present_attributes_whose_value_it_withholds(world, trained):
    """answer_rows under a presence threshold: a kept value is a prediction; an attribute the
    discriminator says the product has (answer not None, D >= threshold) whose value is not kept is
    under "withheld" with its D; with no presence decision there is no such key, and a bundle
    without a discriminator refuses one."""
    from deflate.answering.engine import BundleError, Deflate
    from deflate.model.tokenizer import NONE_VALUE
    run, _ = trained
    engine = Deflate.load(run / "bundle")
    t = engine.decisions.presence_threshold
    assert t is not None
    rows = [{"id": r.id, "name": r.name, "description": r.description} for r in load_split(world / "processed", "test")[:6]]
    res = engine.answer_rows([dict(r) for r in rows], progress=False)
    for r in res:
        assert not {p["attribute"] for p in r["predictions"]} & {w["attribute"] for w in r["withheld"]}
        assert all(w["presence"] >= round(t, 4) and w["value"] not in ("", NONE_VALUE) for w in r["withheld"])
    # at 0 every answered attribute is present: kept or withheld
    everything = engine.with_decisions(presence_threshold=0.0, threshold=1.0).answer_rows([dict(r) for r in rows],
                                                                                          progress=False)
    assert all(not r["predictions"] for r in everything) and any(r["withheld"] for r in everything)
    assert sum(len(r["withheld"]) for r in everything) >= sum(len(r["withheld"]) + len(r["predictions"]) for r in res)
    plain = engine.with_decisions(presence_threshold=None, threshold=t).answer_rows([dict(r) for r in rows],
                                                                                    progress=False)
    assert all("withheld" not in r for r in plain)
    no_disc = Deflate(run / "bundle" / "generator", discriminator=None, lexical=None, decisions=engine.decisions,
                      decode=engine.decode, claim_batch_size=8)
    with pytest.raises(BundleError, match="presence threshold needs the discriminator"):
        no_disc.with_decisions(presence_threshold=0.5, threshold=0.5)


def split_batcher(engine, world: Path):
    """The engine's batcher over the tiny world's test split (its image tokens)."""
    from deflate.data.splits import load_data
    data = load_data(world / "processed", world / "tokens", "test")
    return engine.batcher(data.image, data.has_image)


def test_answer_scores_leave_a_forced_prefix_out_of_the_mean(world, trained):
    """With ``skip`` k, the mean runs over the target's tokens after the first k: n * mean(all) =
    log p(first token) + (n - 1) * mean(skip 1), the first token's log-prob being a one-token target's."""
    import numpy as np

    from deflate.answering.engine import Deflate
    from deflate.answering.scores import mean_logprobs
    from deflate.model.batching import Example
    run, _ = trained
    engine = Deflate.load(run / "bundle")
    b = split_batcher(engine, world)
    ids = engine.qb.question("红烧牛肉", "好吃", engine.attributes[0])
    target = engine.qb.value("红烧牛肉")
    n = len(b.collate([Example(ids, 0, target=target)])["labels"][0])
    assert n >= 2
    exs = [Example(ids, 0, target=target)]
    whole = mean_logprobs(engine.gen, b, exs, 8, progress=False)[0]
    rest = mean_logprobs(engine.gen, b, exs, 8, progress=False, skip=[1])[0]
    first = mean_logprobs(engine.gen, b, [Example(ids, 0, target=target[:1])], 8, progress=False)[0]
    assert np.isclose(n * whole, first + (n - 1) * rest, atol=1e-4)


def test_a_bundle_written_before_keep_weight_keeps_the_papers_rule(trained, tmp_path):
    import shutil

    from deflate.answering.engine import read_bundle
    run, _ = trained
    shutil.copytree(run / "bundle", tmp_path / "b")
    spec = json.loads((tmp_path / "b" / "bundle.json").read_text())
    del spec["decisions"]["keep_weight"]
    (tmp_path / "b" / "bundle.json").write_text(json.dumps(spec))
    assert read_bundle(tmp_path / "b")["decisions"].keep_weight == 0.0


def test_a_bundle_carries_span_words_and_one_written_before_reads_false(trained, tmp_path):
    """decode.span_words travels in bundle.json, so deflate predict decodes as the pipeline did; a
    bundle written before the switch answers with any span, as it did then."""
    import shutil

    from deflate.answering.engine import Deflate
    from deflate.infra.bundle import read_bundle
    run, _ = trained
    shutil.copytree(run / "bundle", tmp_path / "b")
    path = tmp_path / "b" / "bundle.json"
    spec = json.loads(path.read_text())
    assert spec["decode"]["span_words"] is False  # written from params.yaml
    spec["decode"]["span_words"] = True
    path.write_text(json.dumps(spec))
    assert Deflate.load(tmp_path / "b").decode["span_words"] is True
    del spec["decode"]["span_words"]
    path.write_text(json.dumps(spec))
    assert read_bundle(tmp_path / "b")["decode"]["span_words"] is False


def test_predict_takes_the_bundles_keep_weight_or_an_override(trained, tmp_path):
    from typer.testing import CliRunner

    from deflate.cli import app
    run, _ = trained
    (tmp_path / "in.jsonl").write_text(json.dumps({"id": "a", "name": "红烧牛肉"}, ensure_ascii=False) + "\n")

    def predict(*extra):
        return CliRunner().invoke(app, ["predict", "--model", str(run / "bundle"), "--input", str(tmp_path / "in.jsonl"),
                                        "--output", str(tmp_path / "o.jsonl"), *extra])
    r = predict("--keep-weight", "0.5", "--threshold", "0.0")
    assert r.exit_code == 0 and "generator weight 0.5" in r.output
    scores = [p["score"] for p in json.loads((tmp_path / "o.jsonl").read_text())["predictions"]]
    assert scores and all(0 <= s <= 1 for s in scores)
    r = predict("--keep-weight", "1.0")  # the discriminator must keep a share
    assert r.exit_code == 1 and "keep_weight" in r.output and len(r.output.strip().splitlines()) == 1


def test_the_val_choice_of_keep_weight_prefers_the_papers_rule_on_ties(world):
    """best_keep_rule: a weight that adds nothing on val loses to w = 0; one that helps wins."""
    import numpy as np

    from deflate.answering.engine import Answers
    from deflate.model.questions import Question
    from deflate.stages.evaluate import best_keep_rule
    records = load_split(world / "processed", "val")[:6]
    qs, values, right = [], [], []
    for i, r in enumerate(records):
        for lab in r.labels:
            qs.append(Question(i, lab["attribute"]))
            values.append(lab["value"])
            right.append(True)
            qs.append(Question(i, lab["attribute"] + "x"))  # an attribute the product lacks
            values.append("wrong")
            right.append(False)
    right = np.array(right)
    probs = np.full(len(qs), 0.6, np.float32)  # D cannot tell them apart
    glp = np.where(right, -0.05, -3.0).astype(np.float32)  # the generator can
    ans = Answers(qs, values, probs, [], glp, probs)
    w, _, by = best_keep_rule(ans, records, "|", "ave", [0.0, 0.5])
    assert w == 0.5 and by["0.5"] == 100.0 and by["0.0"] < 100.0
    flat = Answers(qs, values, probs, [], np.zeros(len(qs), np.float32), probs)
    assert best_keep_rule(flat, records, "|", "ave", [0.0, 0.5])[0] == 0.0


def test_a_threshold_given_in_params_keeps_by_the_first_keep_weight(world, trained, tmp_path):
    """eval.threshold a number: no val choice; the first of eval.keep_weights goes with it."""
    from deflate.stages import evaluate
    run, _ = trained
    p = tiny_params(**{"eval.threshold": 0.3, "eval.keep_weights": [0.5, 0.0], "tracking.enabled": False})
    m = evaluate.run(p, world / "processed", world / "tokens", run / "gen", run / "disc", tmp_path / "m.json",
                     tmp_path / "pred.jsonl", tmp_path / "bundle")
    assert m["threshold"] == 0.3 and m["keep_weight"] == 0.5 and "keep_rule_val_f1" not in m
    bundle = json.loads((tmp_path / "bundle" / "bundle.json").read_text())
    assert bundle["decisions"]["keep_weight"] == 0.5 and bundle["decisions"]["threshold"] == 0.3


def test_answering_a_chunk_of_questions_at_a_time_gives_the_one_pass_answers(world, trained, monkeypatch):
    """engine.answer tokenises and answers ANSWER_CHUNK questions at a time (flat memory on a whole
    catalogue); the values, claims, scores and keep decisions are those of a single pass."""
    import numpy as np

    from deflate.answering import engine as eng
    from deflate.data.splits import load_data
    from deflate.model.questions import all_questions
    run, _ = trained
    engine = eng.Deflate.load(run / "bundle").with_decisions(keep_weight=0.5, threshold=0.0)
    data = load_data(world / "processed", world / "tokens", "test")
    qs = all_questions(data.records, {"attributes": engine.attributes})
    batcher = engine.batcher(data.image, data.has_image)
    whole = engine.answer(data.records, qs, batcher, progress=False)
    monkeypatch.setattr(eng, "ANSWER_CHUNK", 7)
    parts = engine.answer(data.records, qs, batcher, progress=False)
    assert len(qs) > 7 and parts.questions == whole.questions and parts.kept == whole.kept
    assert parts.values == whole.values and any(whole.kept) and whole.gen_logprobs is not None
    for name in ("probs", "gen_logprobs", "scores"):
        np.testing.assert_allclose(getattr(parts, name), getattr(whole, name), rtol=0, atol=1e-5)
    assert engine.answer(data.records, [], batcher, progress=False).values == []


def test_absent_as_none_teaches_deflate_none_and_harvests_named_values(world, tmp_path, monkeypatch):
    """generator.absent_as_none: DEFLATE's generator trains on absent attributes answered "None" as
    d-'s does (more examples), and harvesting asks it with "None" refused (every negative names a value)."""
    from deflate.answering.engine import Deflate
    monkeypatch.chdir(tmp_path)
    proc, tok = world / "processed", world / "tokens"
    asked = []
    generate = Deflate.generate
    monkeypatch.setattr(Deflate, "generate", lambda self, *a, **kw: asked.append(kw.get("none", True))
                        or generate(self, *a, **kw))
    plain = tiny_params(**{"tracking.enabled": False, "generator.none_per_product": 3})
    learned = tiny_params(**{"tracking.enabled": False, "generator.none_per_product": 3,
                             "generator.absent_as_none": True})
    assert not train_generator.absent_as_none(plain) and train_generator.absent_as_none(learned)
    d_minus = tiny_params(**{"model.use_discriminator": False})
    assert train_generator.absent_as_none(d_minus)
    n_plain = train_generator.run(plain, proc, tok, tmp_path / "g0", tmp_path / "c0")["examples"]
    n_none = train_generator.run(learned, proc, tok, tmp_path / "g1", tmp_path / "c1")["examples"]
    train = load_split(proc, "train")
    assert n_none == n_plain + 3 * len(train)  # every synthetic product lacks at least 3 attributes
    harvest_negatives.run(plain, proc, tok, tmp_path / "g1", tmp_path / "n0")
    assert asked and all(asked)  # off: harvesting decodes as answering does
    asked.clear()
    harvest_negatives.run(learned, proc, tok, tmp_path / "g1", tmp_path / "n1")
    assert asked and not any(asked)
    negs = [json.loads(x) for x in (tmp_path / "n1" / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    assert negs and all(n["value"] and n["value"] != "None" for n in negs)


def test_shared_generator_is_trained_once_and_copied_where_its_key_matches(world, tmp_path, monkeypatch):
    """generator.shared_from: d- and DEFLATE with absent_as_none train the same generator, so the
    shared_generator stage trains it once and each copies it, byte for byte what d- trains itself;
    a system that would train another generator (other targets) trains its own."""
    import copy
    monkeypatch.chdir(tmp_path)
    proc, tok = world / "processed", world / "tokens"
    p = tiny_params(**{"tracking.enabled": False, "generator.absent_as_none": True})
    train_generator.run_shared(p, proc, tok, tmp_path / "shared", tmp_path / "c0")
    assert json.loads((tmp_path / "shared" / "shared.json").read_text())["key"]

    def system(use_disc: bool, absent_as_none: bool = True, shared: bool = True) -> dict:
        q = copy.deepcopy(p)
        q["model"]["use_discriminator"], q["generator"]["absent_as_none"] = use_disc, absent_as_none
        q["generator"]["shared_from"] = str(tmp_path / "shared") if shared else ""
        return q

    train_generator.run(system(False, shared=False), proc, tok, tmp_path / "own", tmp_path / "c1")  # d- alone
    monkeypatch.setattr(train_generator, "train_and_save", lambda *a, **k: pytest.fail("trained again"))
    for use_disc in (False, True):
        assert train_generator.run(system(use_disc), proc, tok, tmp_path / f"copy{use_disc}", tmp_path / "c2")["shared_from"]
    own = sorted(f.relative_to(tmp_path / "own") for f in (tmp_path / "own").rglob("*") if f.is_file())
    copied = sorted(f.relative_to(tmp_path / "copyFalse") for f in (tmp_path / "copyFalse").rglob("*") if f.is_file())
    assert own == copied and "shared.json" not in map(str, own)
    for f in own:
        assert (tmp_path / "own" / f).read_bytes() == (tmp_path / "copyFalse" / f).read_bytes(), f
    assert json.loads((tmp_path / "copyTrue" / "deflate.json").read_text())["use_discriminator"] is True
    with pytest.raises(pytest.fail.Exception, match="trained again"):  # the paper's DEFLATE: values only
        train_generator.run(system(True, absent_as_none=False), proc, tok, tmp_path / "plain", tmp_path / "c3")


def test_learned_keep_decision_is_fitted_on_val_and_carried_by_the_bundle(world, trained, tmp_path, monkeypatch):
    """eval.keep_decision learned: a logistic regression over the engine's outputs and the offer, fitted
    on val with its threshold, goes into the bundle; the loaded bundle keeps exactly the answers whose
    P(right) under it reaches the threshold, and names the features it reads. A val whose answers are
    all wrong (the tiny model's) cannot fit it: the keep score decides, and the metrics say why."""
    import numpy as np

    from deflate.answering import keep_model
    from deflate.answering.engine import Deflate, answered
    from deflate.data.splits import load_data
    from deflate.model.questions import all_questions
    run, _ = trained
    p = tiny_params(**{"eval.keep_decision": "learned", "tracking.enabled": False})
    stage = lambda: evaluate.run(p, world / "processed", world / "tokens", run / "gen", run / "disc",  # noqa: E731
                                 tmp_path / "m.json", tmp_path / "pred.jsonl", tmp_path / "bundle")
    unfit = stage()
    assert unfit["keep_decision"].startswith("score: val's") and "keep_model" not in unfit
    assert "keep_model" not in json.loads((tmp_path / "bundle" / "bundle.json").read_text())["decisions"]

    class Anything:  # the tiny model is never right: plant "right" on some (product, attribute) pairs
        def __contains__(self, v):
            return True
    monkeypatch.setattr(evaluate, "right_answers",
                        lambda r, a, sep: Anything() if (len(r.name) + len(a)) % 2 else set())
    m = stage()
    saved = json.loads((tmp_path / "bundle" / "bundle.json").read_text())["decisions"]["keep_model"]
    assert saved["features"] == list(keep_model.FEATURES) and set(m["keep_model"]) == set(keep_model.FEATURES)
    assert m["keep_decision"] == "learned"
    assert len(saved["coef"]) == len(saved["mean"]) == len(saved["scale"]) == len(keep_model.FEATURES)
    engine = Deflate.load(tmp_path / "bundle")
    d = engine.decisions
    assert d.keep_model is not None and d.threshold == m["threshold"]
    data = load_data(world / "processed", world / "tokens", "test")
    qs = all_questions(data.records, {"attributes": engine.attributes})
    ans = engine.answer(data.records, qs, engine.batcher(data.image, data.has_image), progress=False)
    expect = d.keep_model.probability(keep_model.features(ans, data.records))
    np.testing.assert_allclose(ans.scores, expect, rtol=0, atol=1e-12)
    assert np.ptp(expect) > 0  # the model reads its features: answers get different P(right)
    assert ans.kept == [answered(v) and s >= d.threshold for v, s in zip(ans.values, expect)]
    # the test split's kept answers are the predictions the stage wrote
    lines = [json.loads(x) for x in (tmp_path / "pred.jsonl").read_text(encoding="utf-8").splitlines()]
    assert sum(len(x["predictions"]) for x in lines) == sum(ans.kept)
    # deflate predict answers with it too: each kept value's score is its P(right), at least the threshold
    from typer.testing import CliRunner

    from deflate.cli import app
    rows = [{"id": r.id, "name": r.name, "description": r.description} for r in data.records]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    r = CliRunner().invoke(app, ["predict", "--model", str(tmp_path / "bundle"), "--input", str(tmp_path / "in.jsonl"),
                                 "--output", str(tmp_path / "o.jsonl"), "--threshold", "0.0"])
    assert r.exit_code == 0 and "learned keep decision" in r.output, r.output
    got = [p["score"] for x in (tmp_path / "o.jsonl").read_text().splitlines() for p in json.loads(x)["predictions"]]
    assert got and all(0 <= g <= 1 for g in got) and len(set(got)) > 1
