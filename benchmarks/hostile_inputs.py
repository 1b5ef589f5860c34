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

    python benchmarks/hostile_inputs.py [--work DIR]      # ~2 minutes on 2 cores
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
        expect_error = name not in ("16-bit PNG",)
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
    print("| " + " | ".join(rows[0]) + " |\n|---|---|---|")
    for r in rows[1:]:
        print("| " + " | ".join(str(x).replace("|", "/") for x in r) + " |")
    print(f"\n{len(rows) - 1 - bad} clean, {bad} not clean (model and files in {work})")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
