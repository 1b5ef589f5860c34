"""Development runs on WDC-PAVE that never touch its evaluation data: one system trained on train,
selected and scored on val (the test split is replaced by val), with the dataset authors' rule.

    python benchmarks/wdc_dev.py SYSTEM [-S key.path=value ...] [--work DIR] [--generator-from RUN]

SYSTEM is deflate, d_minus or a baseline (bilstm_crf, mjave, jgave, dictionary). Params start from
pipelines/wdc_pave/params.yaml. Prints val P/R/F1 (authors' rule, with the bootstrap interval),
AP/AVE F1 and the wall time, under the pipeline's kernels (runs before 2026-12-05 06:00 UTC used the
machine's native ones); appends one JSON line to DIR/results.jsonl.

``--generator-from RUN`` (d- beside a DEFLATE run with ``generator.absent_as_none``): the system
copies RUN/generator instead of training its own, as the pipeline's ``shared_generator`` stage lets
it. The two are trained from the same examples, seed and code (their bytes matched in the pipeline);
the caller vouches that the -S settings are the same, since no key is checked here.
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import yaml

from deflate.data.adapters import ingest
from deflate.data.records import load_split
from deflate.evaluation import prediction_files
from deflate.evaluation import wdc_pave_rule as pave_scoring
from deflate.infra import kernels
from deflate.infra.config import load_params
from deflate.model.tokenizer import NONE_VALUE
from deflate.stages.system import run_system

ROOT = Path(__file__).resolve().parents[1]
PIPE = ROOT / "pipelines" / "wdc_pave"


def params_with(sets: list[str]) -> dict:
    """pipelines/wdc_pave/params.yaml with ``key.path=value`` overrides (YAML values), tracking off."""
    p = load_params(PIPE / "params.yaml")
    for s in sets:
        key, _, val = s.partition("=")
        *head, last = key.split(".")
        node = p
        for k in head:
            node = node[k]
        node[last] = yaml.safe_load(val)
    p["tracking"]["enabled"] = False
    for k in ("copy_warmup_from", "shared_from"):  # the pipeline's shared folders (used only where they match)
        if p["generator"].get(k):
            p["generator"][k] = str(PIPE / p["generator"][k])
    if p["model"].get("encoder_states") and not Path(p["model"]["encoder_states"]).is_absolute():  # the checkpoint stage's copy
        p["model"]["encoder_states"] = str(PIPE / p["model"]["encoder_states"])
    tagger = p.get("baselines", {}).get("tagger", {})
    if tagger.get("pretrained_path") and not Path(tagger["pretrained_path"]).is_absolute():  # the checkpoint stage's copy
        tagger["pretrained_path"] = str(PIPE / tagger["pretrained_path"])
    return p


def dev_folder(p: dict, work: Path) -> Path:
    """``work/processed`` (the data as the pipeline ingests it) and ``work/dev``: its train and val,
    with val also as test, so nothing run on it ever reads eval_visible."""
    full = work / "processed"
    if not (full / "schema.json").exists():
        ingest("wdc_pave", (PIPE / p["data"]["path"]).resolve(), full, work / "rejects", 0.01, seed=p["seed"],
               val_fraction=p["data"]["val_fraction"])
    dev = work / "dev"
    if not (dev / "schema.json").exists():
        dev.mkdir(parents=True, exist_ok=True)
        for f in ("train.parquet", "val.parquet", "schema.json"):
            shutil.copy(full / f, dev / f)
        shutil.copy(full / "val.parquet", dev / "test.parquet")
    return dev


def val_score(dev: Path, predictions: Path) -> dict:
    """The authors' rule on a dev folder's test split (which is val) for a predictions file."""
    schema = json.loads((dev / "schema.json").read_text())
    return pave_scoring.score(load_split(dev, "test"), prediction_files.read(predictions), schema["category_attributes"])


def kept_predictions(records, questions, values, kept) -> dict:
    """``{(offer id, attribute): [value]}`` of the answers kept (a ``None`` or empty answer never is)."""
    return {(records[q.row].id, q.attribute): [v] for q, v, k in zip(questions, values, kept)
            if k and v and v != NONE_VALUE}


def authors_f1(records, pred: dict, categories: dict) -> float:
    """The dataset authors' micro F1 (deflate.pave_scoring) of predictions over ``records``."""
    return float(pave_scoring.rule_prf(pave_scoring.count(records, pred, categories).counts.sum(0))["f1"])


def record(work: Path, file: str, res: dict) -> None:
    """Print one result and append it to ``work/file`` (one JSON line per run)."""
    print(json.dumps(res))
    with open(work / file, "a") as f:
        f.write(json.dumps(res) + "\n")


def dev_run(ap: argparse.ArgumentParser) -> tuple[argparse.Namespace, dict]:
    """The dev scripts' shared options (-S, --work, --name) parsed, the params built from them, and
    the pipeline's kernels pinned, so a dev run's numbers are the pipeline's (this may restart)."""
    ap.add_argument("-S", dest="sets", action="append", default=[], help="key.path=value (YAML value)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/wdc_dev"))
    ap.add_argument("--name", default="")
    args = ap.parse_args()
    p = params_with(args.sets)
    kernels.pin(p["repro"]["kernels"], p["repro"]["num_threads"])
    return args, p


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("system")
    ap.add_argument("--generator-from", type=Path, default=None, help="a DEFLATE dev run whose generator this "
                    "system copies instead of training one (same -S settings; see above)")
    args, p = dev_run(ap)
    if args.generator_from:
        from deflate.stages import train_generator

        src = args.generator_from / "generator"
        if not (src / "model.safetensors").is_file():
            raise SystemExit(f"{src} holds no trained generator")

        def copy_generator(folder, key, out, use_discriminator):  # the shared copy, without the key check
            from deflate.infra.files import read_json
            from deflate.model.mul_t5 import META, write_meta

            shutil.copytree(src, out, dirs_exist_ok=True)
            write_meta(out, {**read_json(out / META), "use_discriminator": use_discriminator})  # as use_shared does
            print(f"[wdc_dev] generator copied from {src}")
            return True
        train_generator.use_shared = copy_generator
        p["generator"]["shared_from"] = str(src)
    work = args.work
    dev = dev_folder(p, work)
    name = args.name or "_".join([args.system, *[s.replace("/", "_") for s in args.sets]])[:120]
    out = work / "runs" / name
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    m = run_system(args.system, p, dev, work / "no_tokens", out, "wdc_pave")
    seconds = round(time.perf_counter() - t0, 1)
    s = val_score(dev, out / "predictions" / "test.jsonl")
    res = {"name": name, "system": args.system, "sets": args.sets,
           **({"generator_from": str(args.generator_from)} if args.generator_from else {}), "val_f1": s["f1"], "val_p": s["p"],
           "val_r": s["r"], "val_f1_ci95": s["f1_ci95"], "val_f1_ci": s["case_insensitive"]["f1"],
           "counts": s["counts"], "ap_f1": m["ap"]["f1"], "ave_f1": m["ave"]["f1"], "seconds": seconds,
           "kernels": kernels.describe()["kernels"]}
    record(work, "results.jsonl", res)


if __name__ == "__main__":
    main()
