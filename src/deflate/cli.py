"""The ``deflate`` command line. Each pipeline step is also a DVC stage; these commands let a
user run one step by hand on other paths. ``deflate COMMAND --help`` explains each."""
from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(help="DEFLATE: multi-modal generative-discriminative attribute value extraction.\n\n"
                       "The full pipeline runs with `dvc repro`; these commands run single steps.",
                  no_args_is_help=True, add_completion=False)


@app.command()
def synth(out: Path = typer.Option(Path("data/raw/synth"), help="Output folder (desire/ and mepave/ inside)."),
          n_products: int = typer.Option(2000, help="Number of gourmet products."),
          mepave_rows: int = typer.Option(1500, help="Rows of the MEPAVE-shaped explicit-only variant."),
          seed: int = typer.Option(42, help="Seed: same seed, byte-identical files."),
          image_size: int = typer.Option(128, help="Side of the rendered product pictures in pixels.")):
    """Generate the deterministic DESIRE-shaped default dataset (raw TSV + JPEGs + value sources)."""
    from .synth import write_desire, write_mepave

    stats = write_desire(out / "desire", n_products, seed, image_size=image_size)
    write_mepave(out / "mepave", mepave_rows, seed)
    typer.echo(json.dumps(stats, ensure_ascii=False, indent=1))


@app.command()
def ingest(fmt: str = typer.Option("desire", "--format", help="desire | mepave | implicitave"),
           path: Path = typer.Option(..., help="Raw data folder."),
           out: Path = typer.Option(Path("data/processed"), help="Where the parquet tables and schema go."),
           rejects: Path = typer.Option(Path("data/rejects"), help="Where rejected rows are reported (JSONL)."),
           max_reject_fraction: float = typer.Option(0.05, help="Fail when more rows than this are rejected.")):
    """Validate raw rows into normalised tables; bad rows go to the rejects folder with a reason."""
    from .data import ingest as run

    try:
        report = run(fmt, path, out, rejects, max_reject_fraction)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        typer.secho(f"error: {e}", fg="red", err=True)
        raise typer.Exit(1)
    typer.echo(json.dumps(report, ensure_ascii=False, indent=1))


def _load_predictor(model: str, discriminator: Path, threshold: float | None, batch_size: int,
                    lexical: Path | None = None):
    """A Predictor from a model folder, or from an MLflow model URI (runs:/..., models:/...) whose
    saved settings (threshold, mode, alpha, fused weights, lexical scorer) come along. Returns
    (predictor, settings)."""
    import os

    from .predict import Predictor

    decode = {"num_beams": 1, "max_new_tokens": 12, "batch_size": batch_size}
    if ":/" in model:
        os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{Path('mlflow.db').resolve()}")
        import mlflow

        try:
            wrapped = mlflow.pyfunc.load_model(model).unwrap_python_model()
        except Exception as e:
            typer.secho(f"error: cannot load MLflow model {model}: {str(e)[:300]}", fg="red", err=True)
            raise typer.Exit(1)
        pred = wrapped.predictor
        pred.decode = decode
        if lexical is not None:
            pred.attach_lexical(lexical)
        if threshold is not None:
            pred.threshold = threshold
        return pred, {"mode": wrapped.mode, "alpha": wrapped.alpha, "weights": getattr(wrapped, "weights", None)}
    folder = Path(model)
    if not (folder / "model.safetensors").is_file():
        typer.secho(f"error: no trained model in {folder}; run `dvc repro` first", fg="red", err=True)
        raise typer.Exit(1)
    if threshold is None:
        saved = Path("metrics/deflate.json")
        threshold = json.loads(saved.read_text())["threshold"] if saved.is_file() else 0.5
    disc = discriminator if (discriminator / "model.safetensors").is_file() else None
    return Predictor(folder, disc, threshold, decode=decode, lexical_dir=lexical), {}


def _fused_weights(given: str | None, saved=None) -> tuple[tuple[float, float, float], str]:
    """--weights "g,d,l", else the ones an MLflow model carries, else the ones picked on validation by
    evaluate_candidates (metrics/*.json)."""
    if given:
        try:
            w = tuple(float(x) for x in given.split(","))
        except ValueError:
            w = ()
        if len(w) != 3 or min(w) < 0 or sum(w) <= 0:
            raise ValueError(f"--weights must be three non-negative numbers 'generator,discriminator,lexical', "
                             f"not {given!r}")
        return w, "--weights"
    if saved:
        return tuple(saved), "the MLflow model"
    for f in sorted(Path("metrics").glob("*.json")):
        try:
            fw = json.loads(f.read_text(encoding="utf-8")).get("fused_weights") or {}
        except (ValueError, AttributeError):
            continue
        if set(fw) == {"generator", "discriminator", "lexical"}:
            return (fw["generator"], fw["discriminator"], fw["lexical"]), str(f)
    raise ValueError("mode 'fused' needs --weights (no metrics/*.json with fused_weights here)")


@app.command()
def predict(model: str = typer.Option("models/generator", help="Trained generator folder, or an MLflow model URI "
                                      "(runs:/<run>/deflate, models:/<id>) logged by the evaluate or "
                                      "evaluate_candidates stage."),
            discriminator: Path = typer.Option(Path("models/discriminator"), help="Trained discriminator folder "
                                               "(ignored for an MLflow URI, which carries its own)."),
            input: Path = typer.Option(..., "--input", help="Products: .jsonl (one object per line) or .tsv with a "
                                       "header; with --format implicitave, an ImplicitAVE .tsv or folder of them."),
            output: Path = typer.Option(..., help="Where to write one JSON line per input row."),
            fmt: str = typer.Option("products", "--format", help="products | implicitave (rows carry gold values; "
                                    "an accuracy JSON is written too)."),
            images: Path = typer.Option(None, help="Folder the rows' image paths are relative to (implicitave: "
                                        "default the images/ folder beside the texts)."),
            mode: str = typer.Option(None, help="free (generated text) | constrained (best of the attribute's "
                                     "known values) | rerank (known values re-scored with the discriminator) | "
                                     "fused (generator + discriminator + lexical scorer). "
                                     "Default: free, or constrained for implicitave."),
            alpha: float = typer.Option(None, help="rerank: weight of the generator against the discriminator."),
            lexical: Path = typer.Option(None, help="fused: the lexical scorer folder (default: the MLflow "
                                         "model's own, or lexical/ beside the generator folder)."),
            weights: str = typer.Option(None, help="fused: 'generator,discriminator,lexical' weights (default: the "
                                        "MLflow model's, else the ones picked on validation, from metrics/*.json)."),
            threshold: float = typer.Option(None, help="Discriminator threshold; default: the one chosen on "
                                                       "validation (metrics/deflate.json), else 0.5."),
            metrics: Path = typer.Option(None, help="Accuracy JSON for rows with gold values (default: next to "
                                         "--output, *.accuracy.json)."),
            batch_size: int = typer.Option(256, help="Questions per batch.")):
    """Predict attribute values for new products (fields: id, name, [description], [image], [attributes]).

    Rows with bad fields get an error record and no predictions; every other row is predicted.
    """
    import time

    from .predict import MODES, accuracy, read_implicitave, read_rows

    if fmt not in ("products", "implicitave"):
        typer.secho(f"error: --format must be products or implicitave, not {fmt!r}", fg="red", err=True)
        raise typer.Exit(1)
    if not input.exists() or (fmt == "products" and not input.is_file()):
        typer.secho(f"error: input {input} not found", fg="red", err=True)
        raise typer.Exit(1)
    if mode is not None and mode not in MODES:
        typer.secho(f"error: --mode must be one of {', '.join(MODES)}", fg="red", err=True)
        raise typer.Exit(1)
    try:
        pred, saved = _load_predictor(model, discriminator, threshold, batch_size, lexical)
    except FileNotFoundError as e:
        typer.secho(f"error: {e}", fg="red", err=True)
        raise typer.Exit(1)
    mode = mode or saved.get("mode") or ("constrained" if fmt == "implicitave" else "free")
    alpha = alpha if alpha is not None else saved.get("alpha", 0.5)
    fused = (1 / 3, 1 / 3, 1 / 3)
    if mode == "fused":
        try:
            if pred.lexical is None:  # a model folder: the scorer sits beside it
                pred.attach_lexical(Path(model).parent / "lexical")
            fused, source = _fused_weights(weights, saved.get("weights"))
        except (ValueError, FileNotFoundError) as e:
            typer.secho(f"error: {e}", fg="red", err=True)
            raise typer.Exit(1)
        typer.echo(f"fused weights generator/discriminator/lexical {fused} ({source})")
    if fmt == "implicitave":
        try:
            rows, pictures = read_implicitave(input)
        except FileNotFoundError as e:
            typer.secho(f"error: {e}", fg="red", err=True)
            raise typer.Exit(1)
        images = images or pictures
    else:
        rows = read_rows(input)
    t = time.perf_counter()
    try:
        results = pred.predict(rows, images, mode=mode, alpha=alpha, keep_all=fmt == "implicitave", weights=fused)
    except ValueError as e:
        typer.secho(f"error: {e}", fg="red", err=True)
        raise typer.Exit(1)
    dt = time.perf_counter() - t
    output.parent.mkdir(parents=True, exist_ok=True)
    with open(output, "w", encoding="utf-8") as f:
        for r, row in zip(results, rows):
            if "gold" in row:
                r["gold"] = row["gold"]
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    bad = sum(bool(r["errors"]) and not r["predictions"] for r in results)
    rule = "every asked attribute answered" if fmt == "implicitave" else f"threshold {pred.threshold:.3f}"
    typer.echo(f"{len(results)} rows, {bad} with errors only, {sum(len(r['predictions']) for r in results)} "
               f"values kept (mode {mode}, {rule}), {dt:.1f}s -> {output}")
    if any(r.get("gold") is not None for r in rows):
        acc = accuracy(results, rows)
        acc["mode"], acc["model"] = mode, str(model)
        metrics = metrics or output.with_suffix(".accuracy.json")
        metrics.write_text(json.dumps(acc, ensure_ascii=False, indent=1, sort_keys=True))
        typer.echo(f"accuracy: exact {acc['overall']['exact']}%, lenient {acc['overall']['lenient']}% "
                   f"on {acc['overall']['n']} rows -> {metrics}")


@app.command()
def show(metrics: Path = typer.Argument(Path("metrics/deflate.json"), help="A metrics JSON written by evaluate.")):
    """Print a metrics JSON as a Markdown table (P / R / F1 per metric and per value source)."""
    if not metrics.is_file():
        typer.secho(f"error: {metrics} not found; run `dvc repro` first", fg="red", err=True)
        raise typer.Exit(1)
    m = json.loads(metrics.read_text(encoding="utf-8"))
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
           digits: int = typer.Option(2, help="Decimals.")):
    """Print every paper table as Markdown, our numbers beside the paper's published ones.

    Ours come from the generated default data, not from DESIRE/MEPAVE (not public)."""
    from .tables import load_tables, markdown

    tables = load_tables(metrics)
    if not tables:
        typer.secho(f"error: no table JSON in {metrics}; run `dvc repro` first", fg="red", err=True)
        raise typer.Exit(1)
    typer.echo(markdown(tables, digits))


if __name__ == "__main__":
    app()
