"""Hardening II (#34), one test per class of hostile input, on one tiny trained bundle:

rows (any JSON value, any code point) never cost the good rows; a bundle is verified (every file's
SHA-256), confined (no path, symlink or file outside it is ever opened) and schema-checked; params
are checked before a stage starts; faults (disk full, signals) end in one line and leave the
previous output and its ``.done.json`` together."""
import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from test_pipeline import build_world, run_all, tiny_params
from typer.testing import CliRunner

from deflate.answering import keep_model
from deflate.answering.engine import Deflate
from deflate.answering.predict_rows import json_line
from deflate.answering.pyfunc import frame_rows, to_frame
from deflate.cli import app
from deflate.infra.bundle import BUNDLE_FILE, BundleError, read_bundle, sha256

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                          HealthCheck.function_scoped_fixture])
GOOD = [{"id": "g0", "name": "外婆家香辣牛肉零食"}, {"id": "g1", "name": "白毫银针茶饮", "description": "冰镇"}]
OPENED: list[str] = []
WATCHING = [False]


def _audit(event, args):
    if WATCHING[0] and event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
        OPENED.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)  # records only while a test watches


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    root = tmp_path_factory.mktemp("hard")
    world = build_world(root / "world", 1)
    p = tiny_params()
    p["tracking"]["enabled"] = False
    run_all(p, world, root / "run")
    return root / "run" / "bundle"


@pytest.fixture(scope="module")
def engine(bundle):
    return Deflate.load(bundle)


def answers(results):
    return [(r["id"], r["predictions"]) for r in results]


@pytest.fixture(scope="module")
def baseline(engine):
    return answers(engine.answer_rows([dict(g) for g in GOOD], progress=False))


# --- 1. rows ------------------------------------------------------------------------------------------
ANY_CHAR = st.characters(min_codepoint=0, max_codepoint=0x10FFFF, categories=None, codec=None)
ANY_TEXT = st.text(ANY_CHAR, max_size=30) | st.sampled_from(["\ud800", "a\udfffb", "\x00", "x\x00.jpg", "true"])
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | ANY_TEXT,
                    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(ANY_TEXT, kids, max_size=4),
                    max_leaves=12)
FIELDS = ("id", "name", "description", "category", "image", "image_b64", "attributes")


@SETTINGS
@given(bad=st.dictionaries(st.sampled_from(FIELDS) | ANY_TEXT, JSON, max_size=6))
def test_any_row_gets_a_result_and_never_costs_the_good_rows(engine, baseline, bad):
    rows = [dict(GOOD[0]), bad, dict(GOOD[1])]
    res = engine.answer_rows(rows, None, progress=False)
    assert len(res) == 3 and answers([res[0], res[2]]) == baseline
    for r in res:
        json_line(r).encode("utf-8")  # valid UTF-8 always
        assert json.loads(json_line(r))["id"] == r["id"]


@SETTINGS
@given(text=st.text(ANY_CHAR, min_size=1, max_size=40), field=st.sampled_from(["id", "name", "description",
                                                                              "image", "attributes"]))
def test_any_code_point_in_any_field(engine, baseline, text, field):
    row = {"id": "x", "name": "红烧牛肉", field: [text] if field == "attributes" else text}
    res = engine.answer_rows([dict(GOOD[0]), row, dict(GOOD[1])], None, progress=False)
    assert answers([res[0], res[2]]) == baseline
    if any(0xD800 <= ord(c) <= 0xDFFF for c in text) and field != "attributes":
        assert any("not valid Unicode" in e for e in res[1]["errors"])
    json_line(res[1]).encode("utf-8")


def test_lone_surrogates_and_nul_through_deflate_predict(bundle, baseline, tmp_path):
    bad = ['{"id": "a", "name": "\\ud800牛肉"}', '{"id": "\\udfff", "name": "牛肉"}',
           '{"id": "c", "name": "牛肉", "attributes": ["\\ud800"]}', '{"id": "d", "name": "牛肉", "image": "a\\u0000.jpg"}',
           '{"id": true, "name": "牛肉"}', '{"id": false, "name": "牛肉"}']
    lines = [json.dumps(GOOD[0], ensure_ascii=False)] + bad + [json.dumps(GOOD[1], ensure_ascii=False)]
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    r = CliRunner().invoke(app, ["predict", "--model", str(bundle), "--input", str(tmp_path / "in.jsonl"),
                                 "--output", str(tmp_path / "out.jsonl")])
    assert r.exit_code == 0, r.output
    raw = (tmp_path / "out.jsonl").read_bytes()
    out = [json.loads(x) for x in raw.decode("utf-8").splitlines()]  # strict UTF-8
    assert len(out) == 8 and answers([out[0], out[-1]]) == baseline
    for o in out[1:-1]:
        assert o["errors"] and not o["predictions"], o
    assert "not valid Unicode" in out[1]["errors"][0] and "NUL" in " ".join(out[4]["errors"])
    assert "string or an integer" in out[5]["errors"][0] and "string or an integer" in out[6]["errors"][0]


def test_a_repeated_attribute_is_asked_once(engine):
    attr = engine.attributes[0]
    t = time.perf_counter()
    many = engine.answer_rows([{"id": "a", "name": "红烧牛肉", "attributes": [attr] * 10_000}], progress=False)
    dt = time.perf_counter() - t
    once = engine.answer_rows([{"id": "a", "name": "红烧牛肉", "attributes": [attr]}], progress=False)
    assert answers(many) == answers(once) and dt < 5


# The audit's named lines (once benchmarks/hostile_inputs.py): each between good rows, through
# `deflate predict` with a picture folder. Clean: exit 0, one output line per row in order, an error
# on the bad row, the good rows answered as without it, nothing opened outside the folder.
def named_lines(pics: Path, outside: Path) -> dict[str, str]:
    png16 = pics / "sixteen.png"
    Image.fromarray((np.arange(32 * 32).reshape(32, 32) * 60).astype(np.uint16)).save(png16)
    row = lambda **kw: json.dumps({"id": "x", "name": "红烧牛肉", **kw}, ensure_ascii=False)  # noqa: E731
    return {
        "JSON nested 200k deep": "[" * 200_000 + "]" * 200_000,
        "image 123": row(image=123), "image a list": row(image=["a.jpg"]),
        "absolute path outside": row(image=str(outside / "secret.jpg")), "'..' out of the folder": row(image="../secret.jpg"),
        "symlink out of the folder": row(image="link.jpg"), "/etc/shadow": row(image="/etc/shadow"),
        "missing file outside": row(image="/nonexistent/x.jpg"), "16-bit PNG": row(image=png16.name),
        "duplicate id": json.dumps({"id": "g0", "name": "重复"}, ensure_ascii=False), "not UTF-8": "\udcff\udcfe",
        "bad base64 picture": row(image_b64="%%%"), "line over 1 MiB": json.dumps({"id": "x", "name": "x" * (1 << 20)}),
        "id 2**70": json.dumps({"id": 2 ** 70, "name": "红烧牛肉"}), "id 1.5": json.dumps({"id": 1.5, "name": "牛肉"}),
        "id an object": json.dumps({"id": {"a": 1}, "name": "牛肉"}), "name a number": json.dumps({"id": "x", "name": 7}),
        "description an object": row(description={"a": 1}), "attributes a string of JSON": row(attributes="[\"主料\"]"),
        "attributes nested lists": row(attributes=[["主料"]]), "attributes of numbers": row(attributes=[1, 2]),
        "image_b64 a list": row(image_b64=["AAAA"]), "a forged _error key": row(_error=["x", {"a": 1}]),
        "a forged _line key": row(_line={"a": [1]}), "JSON array row": "[1, 2, 3]", "JSON string row": '"just a string"',
        "NaN literal": '{"id": "x", "name": NaN}', "empty object": "{}",
    }


ANSWERED = ("16-bit PNG", "a forged _error key", "a forged _line key")  # a usable picture; "_" keys are dropped


@pytest.fixture(scope="module")
def folder(bundle, tmp_path_factory):
    """A picture folder (a good picture, a symlink out of it), a folder outside, good rows and their answers."""
    work = tmp_path_factory.mktemp("named")
    pics, outside = work / "pics", work / "outside"
    pics.mkdir()
    outside.mkdir()
    picture = next((bundle.parents[1] / "world" / "raw" / "images").glob("*.jpg"))
    shutil.copy(picture, pics / "good.jpg")
    shutil.copy(picture, outside / "secret.jpg")
    (pics / "link.jpg").symlink_to(outside / "secret.jpg")
    good = [json.dumps({"id": "g0", "name": "外婆家香辣牛肉零食", "image": "good.jpg"}, ensure_ascii=False),
            json.dumps({"id": "g1", "name": "白毫银针茶饮", "description": "冰镇"}, ensure_ascii=False),
            json.dumps({"id": "g2", "name": "红烧牛肉", "image_b64": base64.b64encode(picture.read_bytes()).decode()})]
    (work / "base.jsonl").write_text("\n".join(good) + "\n", encoding="utf-8")
    assert predict(bundle, work / "base.jsonl", work / "base.out.jsonl", pics).exit_code == 0
    base = [json.loads(x) for x in (work / "base.out.jsonl").read_text(encoding="utf-8").splitlines()]
    return work, pics, outside, good, answers(base)


def predict(bundle: Path, rows: Path, out: Path, images: Path):
    return CliRunner().invoke(app, ["predict", "--model", str(bundle), "--input", str(rows), "--output", str(out),
                                    "--images", str(images)])


NAMED = ("JSON nested 200k deep", "image 123", "image a list", "absolute path outside", "'..' out of the folder",
         "symlink out of the folder", "/etc/shadow", "missing file outside", "16-bit PNG", "duplicate id", "not UTF-8",
         "bad base64 picture", "line over 1 MiB", "id 2**70", "id 1.5", "id an object", "name a number",
         "description an object", "attributes a string of JSON", "attributes nested lists", "attributes of numbers",
         "image_b64 a list", "a forged _error key", "a forged _line key", "JSON array row", "JSON string row",
         "NaN literal", "empty object")


@pytest.mark.parametrize("name", NAMED)
def test_a_named_hostile_line_costs_nothing_else(bundle, folder, name):
    work, pics, outside, good, base = folder
    lines = named_lines(pics, outside)
    assert set(lines) == set(NAMED)
    line = lines[name]
    (work / "in.jsonl").write_bytes(("\n".join(good[:2] + [line] + good[2:]) + "\n").encode("utf-8", "surrogateescape"))
    OPENED.clear()
    WATCHING[0] = True
    try:
        r = predict(bundle, work / "in.jsonl", work / "out.jsonl", pics)
    finally:
        WATCHING[0] = False
    assert r.exit_code == 0, r.output
    out = [json.loads(x) for x in (work / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(out) == 4 and answers(out[:2] + out[3:]) == base
    assert bool(out[2]["errors"]) is (name not in ANSWERED), out[2]
    assert [f for f in OPENED if outside in Path(f).parents or f.startswith(("/etc/", "/nonexistent"))] == []


@pytest.mark.parametrize("target", ["input", "folder", "/proc/x/o.jsonl"])
def test_a_bad_output_path_is_refused_before_any_work(bundle, folder, target):
    work, pics, *_ = folder
    before = (work / "base.jsonl").read_bytes()
    out = {"input": work / "base.jsonl", "folder": work}.get(target, Path(target))
    r = predict(bundle, work / "base.jsonl", out, pics)
    assert r.exit_code == 1 and (work / "base.jsonl").read_bytes() == before and "Traceback" not in r.output


def test_the_pyfunc_answers_bad_cells_row_by_row(engine):
    frame = pd.DataFrame([{"id": "a", "name": "红烧牛肉", "image": 123}, {"id": "b", "name": "红烧牛肉", "image": "/etc/shadow"},
                          {"id": "c", "name": "红烧牛肉", "attributes": 7}, {"id": "d", "name": "红烧牛肉"}])
    OPENED.clear()
    WATCHING[0] = True
    try:
        res = engine.answer_rows(frame_rows(frame), None, progress=False)
    finally:
        WATCHING[0] = False
    assert [bool(r["errors"]) for r in res] == [True, True, True, False] and "/etc/shadow" not in OPENED
    assert len(to_frame(res)) >= 4


# --- 2. the bundle ------------------------------------------------------------------------------------
def copy(bundle: Path, to: Path) -> Path:
    shutil.copytree(bundle, to)
    return to


def rehash(b: Path, rel: str) -> None:
    """What a hostile author does: change a file and write its new SHA-256 into bundle.json."""
    spec = json.loads((b / BUNDLE_FILE).read_text())
    spec["files"][rel] = sha256(b / rel)
    (b / BUNDLE_FILE).write_text(json.dumps(spec))


def edit_spec(b: Path, change) -> None:
    spec = json.loads((b / BUNDLE_FILE).read_text())
    change(spec)
    (b / BUNDLE_FILE).write_text(json.dumps(spec) if not isinstance(spec, str) else spec)


TAMPER = {
    "4 KB flipped in the weights": (lambda b: flip(b / "generator" / "model.safetensors"), "generator/model.safetensors"),
    "truncated weights": (lambda b: truncate(b / "discriminator" / "model.safetensors"), "discriminator/model.safetensors"),
    "a deleted file": (lambda b: (b / "generator" / "tokenizer" / "tokenizer.json").unlink(), "tokenizer.json"),
    "an unlisted file": (lambda b: (b / "generator" / "extra.json").write_text("{}"), "generator/extra.json"),
    "a symlinked part": (lambda b: relink(b, "discriminator"), "symlink"),
    "a symlinked file": (lambda b: relink(b, "generator/config.json"), "symlink"),
    "format 1": (lambda b: edit_spec(b, lambda s: s.update(format=1)), "format-1"),
    "no manifest": (lambda b: edit_spec(b, lambda s: s.pop("files")), "files"),
    "a '..' name": (lambda b: edit_spec(b, lambda s: s["files"].update({"../x": "0" * 64})), "not a plain relative"),
    "an absolute name": (lambda b: edit_spec(b, lambda s: s["files"].update({"/etc/passwd": "0" * 64})),
                         "not a plain relative"),
    "threshold a string": (lambda b: edit_spec(b, lambda s: s["decisions"].update(threshold="0.5")), "threshold"),
    "threshold a list": (lambda b: edit_spec(b, lambda s: s["decisions"].update(threshold=[0.5])), "threshold"),
    "threshold NaN": (lambda b: (b / BUNDLE_FILE).write_text((b / BUNDLE_FILE).read_text().replace(
        '"threshold": ', '"threshold": NaN, "x": ', 1)), "threshold"),
    "negative claim_batch_size": (lambda b: edit_spec(b, lambda s: s.update(claim_batch_size=-1)), "claim_batch_size"),
    "string batch size": (lambda b: edit_spec(b, lambda s: s["decode"].update(batch_size="64")), "decode.batch_size"),
    "an unknown mode": (lambda b: edit_spec(b, lambda s: s["decisions"].update(mode="magic")), "decisions.mode"),
    "an unknown key": (lambda b: edit_spec(b, lambda s: s.update(extra=1)), "extra"),
    "malformed bundle.json": (lambda b: (b / BUNDLE_FILE).write_text('{"format": 2, '), "not valid JSON"),
    "deeply nested bundle.json": (lambda b: (b / BUNDLE_FILE).write_text("[" * 100_000 + "]" * 100_000),
                                  "nested"),
    "deeply nested config.json, rehashed": (lambda b: (write(b / "generator" / "config.json", "[" * 100_000 + "]" * 100_000),
                                                       rehash(b, "generator/config.json")), "nested"),
    "malformed deflate.json, rehashed": (lambda b: (write(b / "generator" / "deflate.json", "{"),
                                                    rehash(b, "generator/deflate.json")), "not valid JSON"),
    "vocab_size a string, rehashed": (lambda b: (edit_json(b / "generator" / "config.json", vocab_size="9"),
                                                 rehash(b, "generator/config.json")), "vocab_size"),
    "a tokenizer with remote code, rehashed": (
        lambda b: (edit_json(b / "generator" / "tokenizer" / "tokenizer_config.json", auto_map={"x": "y"}),
                   rehash(b, "generator/tokenizer/tokenizer_config.json")), "auto_map"),
    "max_len negative, rehashed": (lambda b: (edit_json(b / "generator" / "deflate.json", max_len=-1),
                                              rehash(b, "generator/deflate.json")), "max_len"),
    "a keep model reading other features": (lambda b: edit_spec(b, lambda s: s["decisions"].update(
        keep_model=keep_model_spec(features=["log D"] * N_KEEP))), "keep model reads the features"),
    "a keep model with a zero scale": (lambda b: edit_spec(b, lambda s: s["decisions"].update(
        keep_model=keep_model_spec(scale=[0.0] * N_KEEP))), "scale"),
    "a keep model one weight short": (lambda b: edit_spec(b, lambda s: s["decisions"].update(
        keep_model=keep_model_spec(coef=[0.0] * (N_KEEP - 1)))), "one entry per feature"),
    "a keep model with a string weight": (lambda b: edit_spec(b, lambda s: s["decisions"].update(
        keep_model=keep_model_spec(intercept="1"))), "keep_model.intercept"),
}
N_KEEP = len(keep_model.FEATURES)


def keep_model_spec(**changes) -> dict:
    """A well-formed learned keep decision for bundle.json, with ``changes``."""
    return {"features": list(keep_model.FEATURES), "mean": [0.0] * N_KEEP, "scale": [1.0] * N_KEEP,
            "coef": [0.0] * N_KEEP, "intercept": 0.0, **changes}


def write(path: Path, text: str) -> None:
    path.write_text(text)


def edit_json(path: Path, **changes) -> None:
    obj = json.loads(path.read_text())
    obj.update(changes)
    path.write_text(json.dumps(obj))


def flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 4096] = bytes(255 - x for x in data[mid:mid + 4096])
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])


def relink(b: Path, rel: str) -> None:
    """Move ``rel`` out of the bundle ``b`` and leave a symlink to it."""
    away = b.parent / f"away-{rel.replace('/', '-')}"
    shutil.move(b / rel, away)
    (b / rel).symlink_to(away)


@pytest.mark.parametrize("case", sorted(TAMPER))
def test_a_damaged_or_hostile_bundle_is_refused_naming_what(bundle, tmp_path, case):
    b = copy(bundle, tmp_path / "b")
    damage, says = TAMPER[case]
    damage(b)
    with pytest.raises(BundleError, match=None) as e:
        Deflate.load(b)
    assert says in str(e.value), str(e.value)
    rows = tmp_path / "in.jsonl"
    rows.write_text(json.dumps(GOOD[0], ensure_ascii=False) + "\n", encoding="utf-8")
    r = CliRunner().invoke(app, ["predict", "--model", str(b), "--input", str(rows), "--output", str(tmp_path / "o")])
    assert r.exit_code == 1 and r.output.startswith("error: ") and "Traceback" not in r.output, r.output
    assert not (tmp_path / "o").exists()


def test_a_bundle_never_opens_a_file_outside_it(bundle, tmp_path):
    """A hostile author points the image tokenizer at a sentinel outside and rehashes: refused, and
    the sentinel is never opened; nor is anything outside the bundle opened by a clean load."""
    sentinel = tmp_path / "sentinel.pkl"
    sentinel.write_bytes(b"must stay unread")
    for key, tokenizer in (("dalle_encoder_path", "dalle"), ("vit_path", "patches")):
        for where in (str(sentinel), f"../../{sentinel.name}", "generator/../../x"):
            b = tmp_path / f"b-{key}-{abs(hash(where))}"
            copy(bundle, b)
            spec = json.loads((b / "generator" / "image.json").read_text())
            spec["cfg"].update({key: where, "tokenizer": tokenizer})
            spec["meta"]["tokenizer"] = tokenizer
            (b / "generator" / "image.json").write_text(json.dumps(spec))
            rehash(b, "generator/image.json")
            OPENED.clear()
            WATCHING[0] = True
            try:
                with pytest.raises(BundleError, match=key):
                    Deflate.load(b).image_tok
            finally:
                WATCHING[0] = False
            assert not any(Path(f).name == sentinel.name for f in OPENED), OPENED
    OPENED.clear()
    WATCHING[0] = True
    try:
        e = Deflate.load(bundle)
        e.image_tok
        e.answer_rows([dict(GOOD[0])], progress=False)
    finally:
        WATCHING[0] = False
    root = bundle.resolve()
    outside = {f for f in OPENED if Path(f).is_absolute() and not Path(f).resolve().is_relative_to(root)
               and not f.startswith((sys.prefix, sys.base_prefix, "/proc", "/sys", "/dev", "/usr", "/etc/ld"))
               and "site-packages" not in f and "__pycache__" not in f and not f.endswith(".py")}
    assert not outside, sorted(outside)[:5]


def test_write_bundle_copies_an_external_image_file_in(bundle, tmp_path):
    """A model whose image tokenizer names a file outside: the bundle carries a copy, named relatively."""
    from deflate.infra.bundle import write_bundle
    gen = tmp_path / "gen"
    shutil.copytree(bundle / "generator", gen)
    ext = tmp_path / "ext" / "encoder.safetensors"
    ext.parent.mkdir()
    ext.write_bytes(b"weights")
    spec = json.loads((gen / "image.json").read_text())
    spec["cfg"]["dalle_encoder_path"] = str(ext)
    (gen / "image.json").write_text(json.dumps(spec))
    spec_b = read_bundle(bundle)
    b = write_bundle(tmp_path / "b", spec_b["decisions"], spec_b["decode"], spec_b["claim_batch_size"], gen)
    saved = json.loads((b / "generator" / "image.json").read_text())["cfg"]["dalle_encoder_path"]
    assert saved == "image_files/dalle_encoder.safetensors" and (b / "generator" / saved).read_bytes() == b"weights"
    assert f"generator/{saved}" in json.loads((b / BUNDLE_FILE).read_text())["files"]
    read_bundle(b)


BUNDLE_VALUES = st.one_of(JSON, st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**30, 10**30))


@SETTINGS
@given(section=st.sampled_from(["decisions", "decode", None]), key=st.sampled_from(
    ["mode", "threshold", "keep_all", "alpha", "weights", "keep_weight", "keep_model", "batch_size", "max_new_tokens", "num_beams",
     "constrain_to_vocab", "claim_batch_size", "parts", "format"]), value=BUNDLE_VALUES)
def test_any_bundle_field_value_loads_or_is_one_bundle_error(bundle, tmp_path_factory, section, key, value):
    b = copy(bundle, tmp_path_factory.mktemp("fuzz") / "b")
    spec = json.loads((b / BUNDLE_FILE).read_text())
    (spec[section] if section else spec)[key] = value
    (b / BUNDLE_FILE).write_text(json.dumps(spec))
    try:
        read_bundle(b)
    except BundleError as e:
        assert str(e)


def test_predict_overrides_are_checked(bundle, tmp_path):
    rows = tmp_path / "in.jsonl"
    rows.write_text(json.dumps(GOOD[0], ensure_ascii=False) + "\n", encoding="utf-8")
    for opt, value in (("--threshold", "nan"), ("--threshold", "2"), ("--alpha", "inf"), ("--keep-weight", "1"),
                       ("--weights", "1,nan,0"), ("--batch-size", "0"), ("--batch-size", "abc")):
        r = CliRunner().invoke(app, ["predict", "--model", str(bundle), "--input", str(rows), "--output",
                                     str(tmp_path / "o.jsonl"), opt, value])
        assert r.exit_code in (1, 2) and "Traceback" not in r.output and "rror" in r.output, (opt, value, r.output)


# --- 3. params ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("key,value,says", [
    ("generator.epochs", -1, "generator.epochs"), ("synth.n_products", "abc", "synth.n_products"),
    ("synth.n_products", -1, "synth.n_products"), ("eval.threshold", float("nan"), "eval.threshold"),
    ("image.tokenizer", "vq", "image.tokenizer"), ("decode.numbeams", 2, "decode.numbeams"),
    ("model.use_image", "yes", "model.use_image"), ("distributed.mixed_precision", "fp8", "mixed_precision"),
    ("eval.keep_weights", [1.5], "keep_weights"), ("eval.keep_decision", "magic", "eval.keep_decision"),
    ("data.val_fraction", 1.0, "data.val_fraction")])
def test_every_bad_param_is_named(tmp_path, key, value, says):
    import yaml

    from deflate.infra.config import load_params
    from deflate.infra.params_schema import ParamsError
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    sec, k = key.split(".")
    raw[sec][k] = value
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, allow_unicode=True))
    with pytest.raises(ParamsError, match=says.replace(".", r"\.")):
        load_params(tmp_path / "params.yaml")


@pytest.mark.parametrize("pipeline", [".", "pipelines/wdc_pave", "pipelines/implicitave", "pipelines/mepave"])
def test_every_committed_params_file_passes_the_schema(pipeline):
    from deflate.infra.config import load_params
    load_params(ROOT / pipeline / "params.yaml")


def stage(script: str, cwd: Path, params: dict) -> subprocess.CompletedProcess:
    import yaml
    (cwd / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, str(ROOT / "stages" / script)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_a_stage_ends_on_bad_input_in_one_line(tmp_path):
    import yaml
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    (tmp_path / "plain").write_text("x")
    wide = tmp_path / "wide"
    wide.mkdir()
    for split in ("train", "val", "test"):
        (wide / f"{split}.tsv").write_text("\t".join(["c"] * 5000) + "\n" + "\t".join(["v"] * 5000) + "\n")
    cases = {"missing folder": (dict(raw, data={**raw["data"], "path": str(tmp_path / "nope")}), "not a directory"),
             "a plain file": (dict(raw, data={**raw["data"], "path": str(tmp_path / "plain")}), "not a directory"),
             "5,000 columns": (dict(raw, data={**raw["data"], "path": str(wide)}), "rows"),
             "bad param": (dict(raw, data={**raw["data"], "val_fraction": "x"}), "data.val_fraction")}
    for name, (params, says) in cases.items():
        r = stage("ingest.py", tmp_path, params)
        assert r.returncode == 1, (name, r.stderr[-500:])
        assert "Traceback" not in r.stderr and r.stderr.strip().count("\n") == 0, (name, r.stderr[-500:])
        assert r.stderr.startswith("error: ") and says in r.stderr, (name, r.stderr)
    r = stage("synth.py", tmp_path, dict(raw, synth={**raw["synth"], "n_products": -1}))
    assert r.returncode == 1 and "synth.n_products" in r.stderr and "Traceback" not in r.stderr
    r = CliRunner().invoke(app, ["synth", "--out", str(tmp_path / "s"), "--n-products", "-1"])
    assert r.exit_code == 2 and not (tmp_path / "s").exists()


# --- 4. faults ----------------------------------------------------------------------------------------
def previous(tmp_path: Path, bundle: Path) -> tuple[Path, bytes, bytes]:
    rows = tmp_path / "in.jsonl"
    rows.write_text("".join(json.dumps(g, ensure_ascii=False) + "\n" for g in GOOD), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    r = CliRunner().invoke(app, ["predict", "--model", str(bundle), "--input", str(rows), "--output", str(out)])
    assert r.exit_code == 0, r.output
    done = out.with_name(out.name + ".done.json")
    assert json.loads(done.read_text())["sha256"] == sha256(out)  # the sidecar names what it describes
    return rows, out.read_bytes(), done.read_bytes()


def left_over(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_disk_full_is_one_line_and_keeps_the_previous_output(bundle, tmp_path, monkeypatch):
    import errno

    import deflate.infra.files as files
    rows, before, side = previous(tmp_path, bundle)

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(files.os, "fsync", full)
    out = tmp_path / "out.jsonl"
    r = CliRunner().invoke(app, ["predict", "--model", str(bundle), "--input", str(rows), "--output", str(out)])
    assert r.exit_code == 1 and r.output.strip().splitlines()[-1] == "error: No space left on device", r.output
    assert "Traceback" not in r.output
    assert out.read_bytes() == before and out.with_name("out.jsonl.done.json").read_bytes() == side
    assert left_over(tmp_path) == []


def test_a_kill_after_the_rename_never_leaves_the_old_sidecar(bundle, tmp_path, monkeypatch):
    import deflate.infra.files as files
    rows, before, side = previous(tmp_path, bundle)
    real = files.write_json

    def killed(path, obj, **kw):
        if str(path).endswith(".done.json"):
            raise SystemExit(137)  # as if SIGKILLed between the output's rename and the new sidecar
        return real(path, obj, **kw)
    monkeypatch.setattr(files, "write_json", killed)
    r = CliRunner().invoke(app, ["predict", "--model", str(bundle), "--input", str(rows), "--output",
                                 str(tmp_path / "out.jsonl")])
    assert r.exit_code == 137, r.output
    assert not (tmp_path / "out.jsonl.done.json").exists()  # new output, no sidecar: incomplete by the rule
    assert left_over(tmp_path) == []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_mid_write_is_one_line_and_leaves_no_temp_file(bundle, tmp_path, sig):
    rows, before, side = previous(tmp_path, bundle)
    big = tmp_path / "big.jsonl"
    big.write_text("".join(json.dumps(dict(GOOD[i % 2], id=f"r{i}"), ensure_ascii=False) + "\n"
                           for i in range(3000)), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    child = subprocess.Popen([sys.executable, "-m", "deflate.cli", "predict", "--model", str(bundle), "--input",
                              str(big), "--output", str(out), "--chunk-rows", "200"],
                             env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    t = time.time()
    while not list(tmp_path.glob(".out.jsonl.*.tmp")) and child.poll() is None and time.time() - t < 120:
        time.sleep(0.01)
    time.sleep(0.5)
    assert child.poll() is None, child.communicate()
    child.send_signal(sig)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 128 + sig, err[-800:]
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("error: stopped by"), err[-800:]
    assert out.read_bytes() == before and out.with_name("out.jsonl.done.json").read_bytes() == side
    assert left_over(tmp_path) == []


def test_seen_questions_on_disk_check_like_a_dict():
    """deflate predict's record of asked questions (SQLite, flat memory on a million lines) reports the
    same duplicates as a dict across chunks: same id (1 and "1" are one id) and attributes in any order."""
    from deflate.answering.predict_rows import checked_rows
    from deflate.cli import SeenQuestions

    rows = [{"_line": n + 1, **r} for n, r in enumerate([
        {"id": "a", "name": "x", "attributes": ["B", "C"]}, {"id": "a", "name": "x", "attributes": ["C", "B"]},
        {"id": 1, "name": "x", "attributes": ["B"]}, {"id": "1", "name": "x", "attributes": ["B"]},
        {"id": "a", "name": "x", "attributes": ["B"]}, {"id": 1, "name": "y", "attributes": ["B"]}])]
    known = {"B", "C"}
    as_dict, on_disk = {}, SeenQuestions()
    try:
        want = [e for chunk in (rows[:3], rows[3:]) for _, e in checked_rows(chunk, known, None, as_dict)]
        got = [e for chunk in (rows[:3], rows[3:]) for _, e in checked_rows(chunk, known, None, on_disk)]
    finally:
        on_disk.close()
    assert got == want
    assert [bool(e) for e in got] == [False, True, False, True, False, True]
    assert "duplicate of line 1" in got[1][0] and all("duplicate of line 3" in got[k][0] for k in (3, 5))


def test_pruned_answering_reports_exactly_what_every_question_does(bundle):
    """deflate predict skips generating the questions whose claim's D alone rules out keeping and
    presence (Deflate.live): the rows it reports are the same, with some questions pruned and some not."""
    import numpy as np

    engine = Deflate.load(bundle)
    assert not engine.claim_value  # the default discriminator reads no value: D comes before the answer
    rows = [dict(GOOD[i % 2], id=f"p{i}", description=f"{i} 号") for i in range(24)]
    checked = engine.answer_rows(rows, None, progress=False)  # D of every question, through the same path
    from deflate.answering.engine import keep_scores
    from deflate.answering.predict_rows import checked_rows
    from deflate.data.records import Record
    from deflate.model.questions import Question
    products = [p for p, _ in checked_rows(rows, set(engine.attributes))]
    records = [Record(p["id"], p["name"], p["description"], p["category"]) for p in products]
    questions = [Question(j, a) for j, p in enumerate(products) for a in p["attributes"]]
    probs = engine.claim_probs(engine.batcher(None, None), engine.claims(records, questions, [""] * len(questions)),
                               progress=False)
    # a tiny model's D spans a few hundredths and its P_gen is small: the generator's weight stays small
    for weight, presence in ((0.0, None), (0.001, None), (0.001, float(np.quantile(probs, 0.25)))):
        engine.with_decisions(mode="free", keep_all=False, keep_weight=weight, presence_threshold=presence,
                              threshold=float(np.median(keep_scores(probs, np.zeros(len(probs)), weight))))
        live = engine.live(probs)
        assert 0 < live.sum() < len(live)
        outs = {}
        for prune in (False, True):
            engine.prune = prune
            outs[prune] = engine.answer_rows(rows, None, progress=False)
        assert outs[True] == outs[False]
        assert any(r["predictions"] for r in outs[True])  # some values kept: the comparison is not of empty rows
        assert presence is None or any(r["withheld"] for r in outs[True])
    assert checked  # answered under the bundle's own decisions too


def test_predict_prune_option_keeps_the_same_values(bundle, tmp_path):
    """deflate predict --prune is wired (off by default) and gives the same kept values (the engine test above
    is the one that prunes part of the questions)."""
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps(dict(GOOD[i % 2], id=f"p{i}"), ensure_ascii=False) + "\n"
                            for i in range(30)), encoding="utf-8")
    got = {}
    for extra in ([], ["--prune"]):
        out = tmp_path / f"out{len(extra)}.jsonl"
        r = CliRunner().invoke(app, ["predict", "--model", str(bundle), "--input", str(rows), "--output", str(out),
                                     "--threshold", "0.5", *extra])
        assert r.exit_code == 0, r.output
        got[bool(extra)] = [[(p["attribute"], p["value"]) for p in json.loads(x)["predictions"]]
                            for x in out.read_text(encoding="utf-8").splitlines()]
    assert got[True] == got[False] and len(got[True]) == 30
