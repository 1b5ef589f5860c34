"""Hostile input against `deflate predict` and the MLflow pyfunc, on a tiny model trained here.

Each case is one bad row placed between good rows. It is clean when: the run exits 0; there is one
output line per input row, in order; the bad row carries an error; the good rows' answers equal a
run without the bad row; and no file outside the allowed folder was opened (an audit hook on
``open`` watches). Prints a Markdown table ``case | outcome | verdict`` and exits 1 on any
verdict other than clean.

Kills and tampering too: a SIGKILL while `deflate predict` writes (the previous output and its
`.done.json` must survive whole), a SIGKILL at a random moment of training (the restarted run must
end at the uninterrupted run's weights), and checkpoints torn, mixed or garbled by hand (set aside,
training restarts, same weights).

Hardening II (#34) adds: rows with any JSON value or code point in each field; a row repeating one
attribute 10,000 times; damaged and hostile bundles (flipped, truncated, deleted, unlisted and
symlinked files; external paths rehashed into the manifest; every bundle.json field out of type or
range; 50 MB of nesting), each refused in one line with no output and no file outside opened; bad
params for stages and bad data paths; a full disk and a read-only folder (a 64 KiB tmpfs, where
this machine may mount one), SIGTERM and SIGINT mid-write, bad --threshold/--alpha/--weights/
--batch-size overrides. Results: benchmarks/results/hostile_inputs.md.

    python benchmarks/hostile_inputs.py [--work DIR]      # ~4 minutes on 2 cores
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

OPENED: list[str] = []


def audit(event, args):
    if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
        OPENED.append(os.fsdecode(args[0]))


def tiny_params():
    from deflate.config import load_params

    p = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    p["image"].update(grid=4, vocab_size=16, resize=16, batch_size=16, num_threads=1, tokenizer="visual_words")
    p["model"].update(d_model=16, d_ff=32, d_kv=8, num_heads=2, num_layers=1, num_decoder_layers=1, num_threads=1,
                      use_image=True, use_discriminator=True, pretrained_path="", tokenizer_path="", device="cpu")
    p["generator"].update(epochs=1, batch_size=16, val_max=40)
    p["discriminator"].update(epochs=1, batch_size=16)
    p["decode"].update(max_new_tokens=4, batch_size=64, constrain_to_vocab=False)
    p["tracking"].update(enabled=False)
    return p


def train_tiny(work: Path) -> Path:
    """48 synthetic products, a 1-layer DEFLATE, its bundle: the model every case runs against."""
    from deflate.data import SPLITS, ingest, load_split
    from deflate.image_tokenizers import run_stage
    from deflate.stages import evaluate, harvest_negatives, train_discriminator, train_generator
    from deflate.synth import write_desire

    p = tiny_params()
    write_desire(work / "raw", 48, seed=1, image_size=32, progress=False)
    ingest("desire", work / "raw", work / "processed", work / "rejects", 0.0)
    run_stage({s: load_split(work / "processed", s) for s in SPLITS}, p["image"], work / "tokens", 0, progress=False)
    proc, tok = work / "processed", work / "tokens"
    train_generator.run(p, proc, tok, work / "gen", work / "ckg")
    harvest_negatives.run(p, proc, tok, work / "gen", work / "neg")
    train_discriminator.run(p, proc, tok, work / "gen", work / "neg", work / "disc", work / "ckd")
    evaluate.run(p, proc, tok, work / "gen", work / "disc", work / "m.json", work / "pred.jsonl", work / "bundle")
    return work / "bundle"


def cases(pics: Path, outside: Path) -> dict[str, str]:
    """name -> one raw input line."""
    deep = "[" * 200_000 + "]" * 200_000
    png16 = pics / "sixteen.png"
    Image.fromarray((np.arange(32 * 32).reshape(32, 32) * 60).astype(np.uint16)).save(png16)
    return {
        "JSON nested 200k deep": deep,
        '"image": 123': json.dumps({"id": "x", "name": "红烧牛肉", "image": 123}, ensure_ascii=False),
        '"image": ["a.jpg"]': json.dumps({"id": "x", "name": "红烧牛肉", "image": ["a.jpg"]}, ensure_ascii=False),
        "absolute path outside": json.dumps({"id": "x", "name": "红烧牛肉", "image": str(outside / "secret.jpg")},
                                            ensure_ascii=False),
        "'..' out of the folder": json.dumps({"id": "x", "name": "红烧牛肉", "image": "../secret.jpg"},
                                             ensure_ascii=False),
        "symlink out of the folder": json.dumps({"id": "x", "name": "红烧牛肉", "image": "link.jpg"},
                                                ensure_ascii=False),
        "/etc/shadow": json.dumps({"id": "x", "name": "红烧牛肉", "image": "/etc/shadow"}, ensure_ascii=False),
        "missing file outside": json.dumps({"id": "x", "name": "红烧牛肉", "image": "/nonexistent/x.jpg"},
                                           ensure_ascii=False),
        "16-bit PNG": json.dumps({"id": "x", "name": "红烧牛肉", "image": png16.name}, ensure_ascii=False),
        "duplicate id": json.dumps({"id": "g0", "name": "重复"}, ensure_ascii=False),
        "not UTF-8": "\udcff\udcfe",
        "bad base64 picture": json.dumps({"id": "x", "name": "红烧牛肉", "image_b64": "%%%"}, ensure_ascii=False),
        "line over 1 MiB": json.dumps({"id": "x", "name": "x" * (1 << 20)}),
        # Hardening II (#34): any JSON value, any code point, in every field
        **{f"lone surrogate in {k}": '{"id": "x", "name": "红烧牛肉", "%s": %s}' % (k, v) for k, v in (
            ("name", '"\\ud800牛肉"'), ("description", '"\\udfff"'), ("id", '"\\ud800"'), ("category", '"\\ud800"'),
            ("image", '"\\ud800.jpg"'), ("attributes", '["\\ud800"]'))},
        "NUL in the image path": json.dumps({"id": "x", "name": "红烧牛肉", "image": "good.jpg\x00.png"}),
        "id true": json.dumps({"id": True, "name": "红烧牛肉"}),
        "id false": json.dumps({"id": False, "name": "红烧牛肉"}),
        "id 2**70": json.dumps({"id": 2 ** 70, "name": "红烧牛肉"}),
        "id 1.5": json.dumps({"id": 1.5, "name": "红烧牛肉"}),
        "id an object": json.dumps({"id": {"a": 1}, "name": "红烧牛肉"}),
        "name a number": json.dumps({"id": "x", "name": 7}),
        "name a list": json.dumps({"id": "x", "name": ["红烧牛肉"]}),
        "description an object": json.dumps({"id": "x", "name": "红烧牛肉", "description": {"a": 1}}),
        "category a list": json.dumps({"id": "x", "name": "红烧牛肉", "category": ["a"]}),
        "attributes a string of JSON": json.dumps({"id": "x", "name": "红烧牛肉", "attributes": "[\"主料\"]"}),
        "attributes nested lists": json.dumps({"id": "x", "name": "红烧牛肉", "attributes": [["主料"]]}),
        "attributes of numbers": json.dumps({"id": "x", "name": "红烧牛肉", "attributes": [1, 2]}),
        "image_b64 a list": json.dumps({"id": "x", "name": "红烧牛肉", "image_b64": ["AAAA"]}),
        "a forged _error key": json.dumps({"id": "x", "name": "红烧牛肉", "_error": ["\ud800", {"a": 1}]}),
        "a forged _line key": json.dumps({"id": "x", "name": "红烧牛肉", "_line": {"a": [1]}}),
        "JSON array row": "[1, 2, 3]",
        "JSON string row": '"just a string"',
        "NaN literal": '{"id": "x", "name": NaN}',
        "empty object": "{}",
    }


def predict_cli(bundle: Path, rows_path: Path, out: Path, images: Path) -> tuple[int, str]:
    from typer.testing import CliRunner

    from deflate.cli import app

    r = CliRunner().invoke(app, ["predict", "--model", str(bundle), "--input", str(rows_path), "--output", str(out),
                                 "--images", str(images)])
    return r.exit_code, r.output


def answers(lines: list[dict], skip: int | None = None) -> list:
    return [(x["id"], x["predictions"]) for k, x in enumerate(lines) if k != skip]


def train_generator_child(work: Path, out: Path, ckpt: Path, epochs: int) -> None:
    """The generator of ``train_tiny`` with more epochs, in this process (the kill cases' child)."""
    from deflate.stages import train_generator

    p = tiny_params()
    p["generator"].update(epochs=epochs)
    train_generator.run(p, work / "processed", work / "tokens", out, ckpt)


def spawn(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    return subprocess.Popen([sys.executable, __file__, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def same_weights(a: Path, b: Path) -> bool:
    import torch
    from safetensors.torch import load_file

    x, y = load_file(str(a)), load_file(str(b))
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def kill_cases(work: Path, bundle: Path, base_in: Path, pics: Path) -> list[tuple[str, str, str]]:
    """SIGKILLs and hand-made damage; each row is (case, outcome, verdict)."""
    rows = []
    epochs = 6
    ref = spawn("--child-train", str(work), str(work / "k_ref"), str(work / "k_ref_ckpt"), str(epochs))
    ref_out, ref_err = ref.communicate()
    assert ref.returncode == 0, ref_err[-2000:]
    ref_w = work / "k_ref" / "model.safetensors"
    # 1. a kill at whatever moment training has reached once its first epoch is checkpointed
    ckpt, out = work / "k_ckpt", work / "k_gen"
    shutil.rmtree(ckpt, ignore_errors=True)
    child = spawn("--child-train", str(work), str(out), str(ckpt), str(epochs))
    while not (ckpt / "manifest.json").exists() and child.poll() is None:
        time.sleep(0.005)
    child.send_signal(signal.SIGKILL)
    child.communicate()
    at = json.loads((ckpt / "manifest.json").read_text())["epoch"] if (ckpt / "manifest.json").exists() else 0
    again = spawn("--child-train", str(work), str(out), str(ckpt), str(epochs))
    a_out, a_err = again.communicate()
    ok = again.returncode == 0 and same_weights(ref_w, out / "model.safetensors")
    rows.append(("SIGKILL during training, restarted", f"killed with {at}/{epochs} epochs checkpointed; "
                 f"{'resumed' if 'resuming' in a_out else 'from scratch'}; final weights equal: {ok}",
                 "clean" if ok else "NOT CLEAN"))
    # 2. checkpoints damaged by hand: torn weights, a file from another state, a garbled manifest
    for name, damage in (("torn checkpoint weights (truncated)", "truncate"),
                         ("checkpoint weights from another state", "swap"),
                         ("garbled checkpoint manifest", "manifest")):
        shutil.rmtree(ckpt, ignore_errors=True)
        shutil.copytree(work / "k_ref_ckpt", ckpt)
        m = json.loads((ckpt / "manifest.json").read_text())
        m_file = ckpt / m["files"]["model"]
        if damage == "truncate":
            m_file.write_bytes(m_file.read_bytes()[: m_file.stat().st_size // 2])
        elif damage == "swap":
            m_file.write_bytes((ckpt / m["files"]["best"]).read_bytes() if m["files"]["best"] != m["files"]["model"]
                               else b"x" + m_file.read_bytes()[1:])
        else:
            (ckpt / "manifest.json").write_text('{"format": 1, "epoch": ')
        for old in work.glob("k_ckpt.set-aside-*"):
            shutil.rmtree(old)
        run = spawn("--child-train", str(work), str(out), str(ckpt), str(epochs))
        r_out, r_err = run.communicate()
        aside = sorted(p.name for p in work.glob("k_ckpt.set-aside-*"))
        ok = run.returncode == 0 and aside == ["k_ckpt.set-aside-1"] and same_weights(ref_w, out / "model.safetensors")
        why = next((x for x in r_err.splitlines() if "set aside" in x), "no report")
        rows.append((name, why.split("] ", 1)[-1][:90], "clean" if ok else f"NOT CLEAN (rc {run.returncode}, {aside})"))
    # 3. a kill while deflate predict writes: the previous output and its sidecar stay whole
    big = work / "big.jsonl"
    line = json.loads(base_in.read_text(encoding="utf-8").splitlines()[1])
    big.write_text("".join(json.dumps(dict(line, id=f"r{i}"), ensure_ascii=False) + "\n" for i in range(4000)),
                   encoding="utf-8")
    target = work / "kill.out.jsonl"
    rc, _ = predict_cli(bundle, base_in, target, pics)
    before, side = target.read_bytes(), target.with_name(target.name + ".done.json").read_bytes()
    child = subprocess.Popen([sys.executable, "-m", "deflate.cli", "predict", "--model", str(bundle), "--input",
                              str(big), "--output", str(target), "--images", str(pics), "--chunk-rows", "500"],
                             env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    while not list(work.glob(".kill.out.jsonl.*.tmp")) and child.poll() is None:
        time.sleep(0.005)
    time.sleep(1.0)  # well inside the writing of the first chunks
    killed = child.poll() is None
    child.send_signal(signal.SIGKILL)
    child.communicate()
    ok = (rc == 0 and killed and target.read_bytes() == before
          and target.with_name(target.name + ".done.json").read_bytes() == side)
    rows.append(("SIGKILL while deflate predict writes 4000 rows",
                 f"previous output and .done.json intact: {ok}; partial temp file left: "
                 f"{len(list(work.glob('.kill.out.jsonl.*.tmp')))}", "clean" if ok else "NOT CLEAN"))
    return rows


def one_line_refusal(code: int, output: str) -> str:
    """'' when a command refused in one line with exit 1, else what is wrong."""
    lines = [x for x in output.strip().splitlines() if x.strip()]
    if code != 1:
        return f"exit {code}"
    if "Traceback" in output:
        return "traceback"
    if not lines or not lines[-1].startswith("error: "):
        return "no one-line error"
    return ""


def cost_cases(work: Path, bundle: Path) -> list[tuple[str, str, str]]:
    """One row repeating a known attribute 10,000 times is asked once (the audit: 97 s)."""
    from deflate.engine import Deflate
    engine = Deflate.load(bundle)
    attr = engine.attributes[0]
    t = time.perf_counter()
    many = engine.answer_rows([{"id": "a", "name": "红烧牛肉", "attributes": [attr] * 10_000}], progress=False)
    dt = time.perf_counter() - t
    once = engine.answer_rows([{"id": "a", "name": "红烧牛肉", "attributes": [attr]}], progress=False)
    ok = many[0]["predictions"] == once[0]["predictions"] and dt < 5
    return [("one row repeating an attribute 10,000 times", f"{dt:.2f}s, same answer as asking once: "
             f"{many[0]['predictions'] == once[0]['predictions']}", "clean" if ok else "NOT CLEAN")]


def _rehash(b: Path, rel: str) -> None:
    from deflate.bundle import sha256
    spec = json.loads((b / "bundle.json").read_text())
    spec["files"][rel] = sha256(b / rel)
    (b / "bundle.json").write_text(json.dumps(spec))


def _spec(b: Path, change) -> None:
    spec = json.loads((b / "bundle.json").read_text())
    change(spec)
    (b / "bundle.json").write_text(json.dumps(spec))


def _json_edit(b: Path, rel: str, change) -> None:
    obj = json.loads((b / rel).read_text())
    change(obj)
    (b / rel).write_text(json.dumps(obj))
    _rehash(b, rel)


def _image_path(b: Path, key: str, tokenizer: str, where: str) -> None:
    def change(spec):
        spec["cfg"].update({key: where, "tokenizer": tokenizer})
        spec["meta"]["tokenizer"] = tokenizer
    _json_edit(b, "generator/image.json", change)


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 4096] = bytes(255 - x for x in data[mid:mid + 4096])
    path.write_bytes(bytes(data))


def _relink(b: Path, rel: str) -> None:
    away = b.parent / f"{b.name}-away-{rel.replace('/', '-')}"
    shutil.move(b / rel, away)
    (b / rel).symlink_to(away)


def bundle_cases(work: Path, bundle: Path, base_in: Path) -> list[tuple[str, str, str]]:
    """Damaged and hostile bundles: each refused in one line before any answer, nothing written,
    and no file outside the bundle opened (a sentinel beside it must stay unread)."""
    sentinel = work / "sentinel.bin"
    sentinel.write_bytes(b"must stay unread")
    weights, disc = "generator/model.safetensors", "discriminator/model.safetensors"
    tamper = {
        "4 KB flipped in the weights": lambda b: _flip(b / weights),
        "truncated weights": lambda b: (b / disc).write_bytes((b / disc).read_bytes()[:1000]),
        "truncated weights, rehashed": lambda b: ((b / disc).write_bytes((b / disc).read_bytes()[:1000]),
                                                  _rehash(b, disc)),
        "weights of another shape, rehashed": lambda b: (shutil.copy(b / disc, b / weights), _rehash(b, weights)),
        "a deleted tokenizer file": lambda b: (b / "generator/tokenizer/tokenizer.json").unlink(),
        "an unlisted extra file": lambda b: (b / "generator/extra.json").write_text("{}"),
        "a part folder symlinked out": lambda b: _relink(b, "discriminator"),
        "a file symlinked out": lambda b: _relink(b, "generator/config.json"),
        "dalle_encoder_path = sentinel, rehashed": lambda b: _image_path(b, "dalle_encoder_path", "dalle", str(sentinel)),
        "dalle_encoder_path = /etc/passwd, rehashed": lambda b: _image_path(b, "dalle_encoder_path", "dalle",
                                                                            "/etc/passwd"),
        "vit_path = '../..', rehashed": lambda b: _image_path(b, "vit_path", "patches", "../../" + sentinel.name),
        "manifest names '../sentinel.bin'": lambda b: _spec(b, lambda s: s["files"].update({"../sentinel.bin": "0" * 64})),
        "manifest names an absolute path": lambda b: _spec(b, lambda s: s["files"].update({str(sentinel): "0" * 64})),
        "format 1 (no checksums)": lambda b: _spec(b, lambda s: (s.update(format=1), s.pop("files"))),
        "threshold a string": lambda b: _spec(b, lambda s: s["decisions"].update(threshold="0.5")),
        "threshold a list": lambda b: _spec(b, lambda s: s["decisions"].update(threshold=[0.5])),
        "threshold NaN": lambda b: (b / "bundle.json").write_text(json.dumps(json.loads((b / "bundle.json").read_text()))
                                                                   .replace('"threshold": ', '"threshold": NaN, "t": ')),
        "threshold 7": lambda b: _spec(b, lambda s: s["decisions"].update(threshold=7)),
        "negative claim_batch_size": lambda b: _spec(b, lambda s: s.update(claim_batch_size=-1)),
        "string batch size": lambda b: _spec(b, lambda s: s["decode"].update(batch_size="64")),
        "num_beams 10**9": lambda b: _spec(b, lambda s: s["decode"].update(num_beams=10 ** 9)),
        "an unknown mode": lambda b: _spec(b, lambda s: s["decisions"].update(mode="magic")),
        "weights all zero": lambda b: _spec(b, lambda s: s["decisions"].update(weights=[0, 0, 0])),
        "a part named twice": lambda b: _spec(b, lambda s: s.update(parts=["generator", "generator"])),
        "an unknown part": lambda b: _spec(b, lambda s: s.update(parts=["generator", "other"])),
        "malformed bundle.json": lambda b: (b / "bundle.json").write_text('{"format": 2,'),
        "bundle.json a list": lambda b: (b / "bundle.json").write_text("[]"),
        "bundle.json 50 MB nested": lambda b: (b / "bundle.json").write_text("[" * (25 << 20) + "]" * (25 << 20)),
        "config.json nested, rehashed": lambda b: ((b / "generator/config.json").write_text("[" * 100_000 + "]" * 100_000),
                                                   _rehash(b, "generator/config.json")),
        "config.json vocab_size a string, rehashed": lambda b: _json_edit(b, "generator/config.json",
                                                                          lambda c: c.update(vocab_size="9")),
        "config.json d_model 10**9, rehashed": lambda b: _json_edit(b, "generator/config.json",
                                                                    lambda c: c.update(d_model=10 ** 9)),
        "deflate.json max_len -1, rehashed": lambda b: _json_edit(b, "generator/deflate.json",
                                                                  lambda c: c.update(max_len=-1)),
        "deflate.json attributes missing, rehashed": lambda b: _json_edit(b, "generator/deflate.json",
                                                                          lambda c: c.pop("attributes")),
        "tokenizer with remote code, rehashed": lambda b: _json_edit(b, "generator/tokenizer/tokenizer_config.json",
                                                                     lambda c: c.update(auto_map={"x": "y"})),
        "image.json grid a float, rehashed": lambda b: _json_edit(b, "generator/image.json",
                                                                  lambda c: c["cfg"].update(grid=4.5)),
        "codebook deleted": lambda b: (b / "generator/codebook.safetensors").unlink(),
    }
    rows = []
    for name, damage in tamper.items():
        b = work / "tampered"
        shutil.rmtree(b, ignore_errors=True)
        for old in work.glob("tampered-away-*"):
            shutil.rmtree(old) if old.is_dir() else old.unlink()
        shutil.copytree(bundle, b)
        damage(b)
        out = work / "tampered.out.jsonl"
        out.unlink(missing_ok=True)
        OPENED.clear()
        code, output = predict_cli(b, base_in, out, work / "pics")
        why = one_line_refusal(code, output)
        opened = [f for f in OPENED if Path(f).name in (sentinel.name, "passwd")]
        if out.exists():
            why = why or "wrote an output"
        if opened:
            why = f"opened {opened[0]}"
        last = output.strip().splitlines()[-1][:90] if output.strip() else "-"
        rows.append((f"bundle: {name}", last.replace(str(work), "…"), "clean" if not why else f"NOT CLEAN: {why}"))
    return rows


def _stage(script: str, cwd: Path, params: dict) -> tuple[int, str]:
    import yaml
    (cwd / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    r = subprocess.run([sys.executable, str(Path(__file__).resolve().parents[1] / "stages" / script)], cwd=cwd,
                       env=env, capture_output=True, text=True, timeout=600)
    return r.returncode, r.stdout + r.stderr


def param_cases(work: Path) -> list[tuple[str, str, str]]:
    """Bad params and data paths: each stage ends in one line, exit 1, before any work."""
    import yaml
    from typer.testing import CliRunner

    from deflate.cli import app
    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    cwd = work / "stage"
    cwd.mkdir(exist_ok=True)
    (work / "plain.txt").write_text("x")
    wide = work / "wide"
    wide.mkdir(exist_ok=True)
    for split in ("train", "val", "test"):
        (wide / f"{split}.tsv").write_text("\t".join(["c"] * 5000) + "\n" + "\t".join(["v"] * 5000) + "\n")

    def with_(section, **kv):
        return {**raw, section: {**raw[section], **kv}}
    cases = {
        "ingest: data.path a missing folder": ("ingest.py", with_("data", path=str(work / "nope"))),
        "ingest: data.path a plain file": ("ingest.py", with_("data", path=str(work / "plain.txt"))),
        "ingest: a 5,000-column TSV": ("ingest.py", with_("data", path=str(wide))),
        "ingest: data.format unknown": ("ingest.py", with_("data", format="csv")),
        "synth: synth.n_products -1": ("synth.py", with_("synth", n_products=-1)),
        "synth: synth.n_products abc": ("synth.py", with_("synth", n_products="abc")),
        "train_generator: generator.epochs 0": ("train_generator.py", with_("generator", epochs=0)),
        "train_generator: model.dropout 1.5": ("train_generator.py", with_("model", dropout=1.5)),
        "train_generator: a mistyped key": ("train_generator.py", with_("generator", epoch=3)),
        "evaluate: eval.threshold NaN": ("evaluate.py", with_("eval", threshold=float("nan"))),
        "evaluate: eval.keep_weights [1.5]": ("evaluate.py", with_("eval", keep_weights=[1.5])),
        "image_tokens: image.tokenizer unknown": ("image_tokens.py", with_("image", tokenizer="vq")),
        "tables: tables.digits -3": ("tables.py", with_("tables", digits=-3)),
    }
    rows = []
    for name, (script, params) in cases.items():
        code, output = _stage(script, cwd, params)
        why = one_line_refusal(code, output)
        last = output.strip().splitlines()[-1][:90] if output.strip() else "-"
        rows.append((name, last.replace(str(work), "…"), "clean" if not why else f"NOT CLEAN: {why}"))
    r = CliRunner().invoke(app, ["synth", "--out", str(work / "s"), "--n-products", "-1"])
    ok = r.exit_code == 2 and not (work / "s").exists()
    rows.append(("deflate synth --n-products -1", r.output.strip().splitlines()[-1][:90],
                 "clean" if ok else f"NOT CLEAN: exit {r.exit_code}"))
    return rows


def fault_cases(work: Path, bundle: Path, base_in: Path, pics: Path) -> list[tuple[str, str, str]]:
    """A full disk (a 64 KiB tmpfs, where this machine may mount one), a read-only folder, SIGTERM
    and SIGINT mid-write, bad overrides: one line, no temp file, the previous output and its
    .done.json as they were."""
    rows = []
    big = work / "big.jsonl"
    line = json.loads(base_in.read_text(encoding="utf-8").splitlines()[1])
    big.write_text("".join(json.dumps(dict(line, id=f"r{i}"), ensure_ascii=False) + "\n" for i in range(3000)),
                   encoding="utf-8")
    mnt = work / "small_disk"
    mnt.mkdir(exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True).returncode == 0
    if mounted:
        try:
            target = mnt / "out.jsonl"
            rc, _ = predict_cli(bundle, base_in, target, pics)
            before = target.read_bytes(), target.with_name("out.jsonl.done.json").read_bytes()
            code, output = predict_cli(bundle, big, target, pics)
            why = one_line_refusal(code, output)
            left = [p.name for p in mnt.iterdir() if p.name.startswith(".")]
            same = (target.read_bytes(), target.with_name("out.jsonl.done.json").read_bytes()) == before
            why = why or ("temp file left" if left else "") or ("previous output changed" if not same else "")
            rows.append(("disk full while writing (64 KiB tmpfs)", output.strip().splitlines()[-1][:90],
                         "clean" if not why else f"NOT CLEAN: {why}"))
            subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
            code, output = predict_cli(bundle, base_in, target, pics)
            why = one_line_refusal(code, output)
            rows.append(("read-only output folder", output.strip().splitlines()[-1][:90],
                         "clean" if not why else f"NOT CLEAN: {why}"))
        finally:
            subprocess.run(["umount", str(mnt)])
    else:
        rows.append(("disk full while writing", "no tmpfs can be mounted here: not tried", "clean (not tried)"))
    target = work / "sig.out.jsonl"
    for sig in (signal.SIGTERM, signal.SIGINT):
        rc, _ = predict_cli(bundle, base_in, target, pics)
        before = target.read_bytes(), target.with_name(target.name + ".done.json").read_bytes()
        child = subprocess.Popen([sys.executable, "-m", "deflate.cli", "predict", "--model", str(bundle), "--input",
                                  str(big), "--output", str(target), "--images", str(pics), "--chunk-rows", "200"],
                                 env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")},
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        while not list(work.glob(".sig.out.jsonl.*.tmp")) and child.poll() is None:
            time.sleep(0.005)
        time.sleep(0.5)
        child.send_signal(sig)
        out, err = child.communicate()
        left = list(work.glob(".sig.out.jsonl.*"))
        same = (target.read_bytes(), target.with_name(target.name + ".done.json").read_bytes()) == before
        last = err.strip().splitlines()[-1] if err.strip() else "-"
        ok = (child.returncode == 128 + sig and "Traceback" not in err and last.startswith("error: ") and not left
              and same)
        rows.append((f"{signal.Signals(sig).name} while deflate predict writes", f"exit {child.returncode}; {last[:60]}; "
                     f"temp files left {len(left)}; previous output and .done.json intact: {same}",
                     "clean" if ok else "NOT CLEAN"))
    from typer.testing import CliRunner

    from deflate.cli import app
    for opt, value in (("--threshold", "nan"), ("--threshold", "2"), ("--alpha", "inf"), ("--keep-weight", "1"),
                       ("--weights", "1,nan,0"), ("--batch-size", "0"), ("--batch-size", "abc")):
        r = CliRunner().invoke(app, ["predict", "--model", str(bundle), "--input", str(base_in), "--output",
                                     str(work / "o.jsonl"), opt, value])
        ok = r.exit_code in (1, 2) and "Traceback" not in r.output
        rows.append((f"predict {opt} {value}", r.output.strip().splitlines()[-1][:90] if r.output.strip() else "-",
                     "clean" if ok else f"NOT CLEAN: exit {r.exit_code}"))
    return rows


def main():
    if sys.argv[1:2] == ["--child-train"]:
        return train_generator_child(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]), int(sys.argv[5]))
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="hostile_"))
    bundle = train_tiny(work)
    pics, outside = work / "pics", work / "outside"
    pics.mkdir(exist_ok=True)
    outside.mkdir(exist_ok=True)
    good_img = next((work / "raw" / "images").glob("*.jpg"))
    shutil.copy(good_img, pics / "good.jpg")
    shutil.copy(good_img, outside / "secret.jpg")
    if not (pics / "link.jpg").exists():
        (pics / "link.jpg").symlink_to(outside / "secret.jpg")
    good = [json.dumps({"id": "g0", "name": "外婆家香辣牛肉零食", "image": "good.jpg"}, ensure_ascii=False),
            json.dumps({"id": "g1", "name": "白毫银针茶饮", "description": "冰镇"}, ensure_ascii=False),
            json.dumps({"id": "g2", "name": "红烧牛肉", "image_b64": base64.b64encode(good_img.read_bytes()).decode()},
                       ensure_ascii=False)]
    base_in = work / "base.jsonl"
    base_in.write_text("\n".join(good) + "\n", encoding="utf-8")
    rc, out = predict_cli(bundle, base_in, work / "base.out.jsonl", pics)
    assert rc == 0, out
    base = [json.loads(x) for x in (work / "base.out.jsonl").read_text(encoding="utf-8").splitlines()]
    sys.addaudithook(audit)
    rows = [("case", "outcome", "verdict")]
    bad = 0
    for name, line in cases(pics, outside).items():
        path = work / "in.jsonl"
        raw = "\n".join(good[:2] + [line] + good[2:]) + "\n"
        path.write_bytes(raw.encode("utf-8", errors="surrogateescape"))
        OPENED.clear()
        rc, output = predict_cli(bundle, path, work / "out.jsonl", pics)
        lines = [json.loads(x) for x in (work / "out.jsonl").read_text(encoding="utf-8").splitlines()] if rc == 0 else []
        leaked = sorted({f for f in OPENED if Path(f).is_absolute() and outside in Path(f).parents
                         or f.startswith(("/etc/", "/nonexistent"))})
        err = lines[2]["errors"] if len(lines) == 4 else []
        expect_error = name not in ("16-bit PNG", "a forged _error key", "a forged _line key")  # "_" keys are dropped
        problems = []
        if rc != 0:
            problems.append(f"exit {rc}: {output.strip()[-120:]}")
        elif len(lines) != 4:
            problems.append(f"{len(lines)} output lines for 4 rows")
        else:
            if expect_error and not err:
                problems.append("no error on the bad row")
            if answers(lines, 2) != answers(base):
                problems.append("good rows answered differently")
        if leaked:
            problems.append(f"opened {leaked[0]}")
        outcome = "; ".join(err)[:90] if err else ("answered" if rc == 0 else "")
        if name == "16-bit PNG" and lines:
            outcome = f"answered, picture used: {not err}"
        rows.append((name, outcome or "-", "clean" if not problems else "NOT CLEAN: " + "; ".join(problems)))
        bad += bool(problems)
    # whole-run cases: a bad --output never costs the input or any compute
    for name, target in (("--output is the input", work / "base.jsonl"), ("--output is a folder", work),
                         ("--output unwritable (/proc/x/o.jsonl)", Path("/proc/x/o.jsonl"))):
        before = base_in.read_bytes()
        rc, output = predict_cli(bundle, base_in, target, pics)
        ok = rc == 1 and base_in.read_bytes() == before
        rows.append((name, output.strip().splitlines()[-1][:90] if output.strip() else "-",
                     "clean (refused before compute)" if ok else f"NOT CLEAN: exit {rc}"))
        bad += not ok
    # the pyfunc answers a DataFrame with bad cells row by row; no image folder unless DEFLATE_IMAGE_ROOT
    import pandas as pd

    from deflate.pyfunc import DeflateModel, _rows, to_frame
    model = DeflateModel()
    model.engine, model.images_root = __import__("deflate.engine", fromlist=["Deflate"]).Deflate.load(bundle), None
    frame = pd.DataFrame([{"id": "a", "name": "红烧牛肉", "image": 123}, {"id": "b", "name": "红烧牛肉", "image": "/etc/shadow"},
                          {"id": "c", "name": "红烧牛肉", "attributes": 7}, {"id": "d", "name": "红烧牛肉"}])
    OPENED.clear()
    try:
        res = model.engine.answer_rows(_rows(frame), None, progress=False)
        got = to_frame(res)
        errs = [r["errors"] for r in res]
        ok = (all(errs[:3]) and not errs[3] and "/etc/shadow" not in OPENED and len(res) == 4)
        rows.append(("pyfunc: bad cells (image 123, /etc/shadow, attributes 7)", f"{len(got)} output rows; "
                     + "; ".join(e[0][:40] for e in errs[:3] if e), "clean" if ok else "NOT CLEAN"))
    except Exception as e:
        ok = False
        rows.append(("pyfunc: bad cells", f"{type(e).__name__}: {e}"[:90], "NOT CLEAN"))
    bad += not ok
    kills = kill_cases(work, bundle, base_in, pics)
    rows += kills
    bad += sum(not v.startswith("clean") for _, _, v in kills)
    for section in (cost_cases(work, bundle), bundle_cases(work, bundle, base_in), param_cases(work),
                    fault_cases(work, bundle, base_in, pics)):
        rows += section
        bad += sum(not v.startswith("clean") for _, _, v in section)
    print("| " + " | ".join(rows[0]) + " |\n|---|---|---|")
    for r in rows[1:]:
        print("| " + " | ".join(str(x).replace("|", "/") for x in r) + " |")
    print(f"\n{len(rows) - 1 - bad} clean, {bad} not clean (model and files in {work})")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
