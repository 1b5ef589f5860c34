"""The WDC-PAVE table: every system as a row, scored on eval_visible by the dataset authors' rule
(with a case-insensitive variant and per-category F1) and by the paper's AP / AVE / fuzzy AVE,
each F1 with a seeded 95% bootstrap interval over offers, val F1 beside it, and the share of gold
values each system could see at all (its input window)."""
from __future__ import annotations

from pathlib import Path

from deflate.data.records import Record, load_split
from deflate.data.splits import load_schema
from deflate.evaluation import prediction_files
from deflate.evaluation import wdc_pave_rule as pave_scoring
from deflate.evaluation.intervals import beyond, bootstrap_f1
from deflate.evaluation.metrics import evaluate as compute_metrics
from deflate.evaluation.metrics import gold_from_records
from deflate.infra.files import write_json, write_text
from deflate.infra.runtime import read_cost

SYSTEMS = ("deflate", "d_minus", "bilstm_crf", "mjave", "jgave", "dictionary")
NAMES = {"deflate": "DEFLATE", "d_minus": "d−", "bilstm_crf": "BiLSTM-CRF", "mjave": "M-JAVE (text only)",
         "jgave": "JG-AVE", "dictionary": "dictionary (reference)"}


def _visible(lab: dict, window: str) -> bool:
    return any(g in window for g in lab.get("gold") or [lab["value"]])


def score_offers(records: list[Record], pred: dict, category_attributes: dict, n_boot: int, seed: int,
                 withheld: set | frozenset = frozenset()) -> dict:
    """The authors' rule (with its interval, per category, case-insensitive) and the paper's
    AP / AVE / fuzzy F1 with theirs, for one system's answers to ``records`` (``withheld``: pairs
    present without a value, which count for AP only; the authors' rule sees them as n/a)."""
    gold, texts = gold_from_records(records)
    m = compute_metrics(gold, pred, texts, withheld)
    ci = bootstrap_f1(records, pred, n_boot, seed, withheld=withheld)
    return {"authors_rule": pave_scoring.score(records, pred, category_attributes, n_boot, seed),
            **{k: {**m[k], "f1_ci95": ci[k]} for k in ("ap", "ave", "ave_fuzzy")}}


def window_share(system: str, run_dir: Path, records: list[Record], p: dict) -> float:
    """Percent of gold (offer, attribute) values with at least one spelling inside the system's input."""
    from deflate.model.tokenizer import QuestionBuilder, load_tokenizer

    if system in ("deflate", "d_minus", "jgave"):
        tok_dir = run_dir / ("generator" if system != "jgave" else "model") / "tokenizer"
        qb = QuestionBuilder(load_tokenizer(tok_dir), "en", p["text"]["max_len"], p["text"]["max_value_len"])
        if system == "jgave":
            from deflate.baselines.systems import jg_example

            window = lambda r: qb.decode(jg_example(qb, r).ids)  # noqa: E731
        else:
            window = lambda r: qb.decode(qb.question(r.name, r.description, ""))  # noqa: E731
    elif system in ("bilstm_crf", "mjave"):
        window = lambda r: r.text[: p["baselines"]["tagger"]["max_chars"]]  # noqa: E731
    else:
        window = lambda r: f"{r.name} {r.description}"  # noqa: E731
    hits = total = 0
    for r in records:
        w = window(r)
        for lab in r.labels:
            hits += _visible(lab, w)
            total += 1
    return round(100 * hits / max(total, 1), 2)


def val_columns(val: list[Record], pred: dict, withheld: set, cats: dict, gold_texts: tuple) -> dict:
    """One system's val columns: the authors' F1 and the AP F1 on val (``gold_texts``:
    :func:`gold_from_records` of ``val``, computed once for every system)."""
    gold, texts = gold_texts
    return {"val_f1": pave_scoring.score(val, pred, cats, 0)["f1"],
            "val_ap_f1": compute_metrics(gold, pred, texts, withheld)["ap"]["f1"]}


def build(p: dict, processed: Path, systems_dir: Path, metrics_dir: Path, out: Path, report: Path | None = None) -> dict:
    """The table as JSON at ``out`` (and as Markdown at ``report``, when given)."""
    schema = load_schema(processed)
    cats = schema["category_attributes"]
    val, test = load_split(processed, "val"), load_split(processed, "test")
    n_boot = p["eval"]["n_boot"]
    val_gold = gold_from_records(val)
    rows = {}
    for s in SYSTEMS:
        run = systems_dir / f"{s}-wdc_pave"
        pred_test, held_test = prediction_files.read_with_withheld(run / "predictions" / "test.jsonl")
        pred_val, held_val = prediction_files.read_with_withheld(run / "predictions" / "val.jsonl")
        scored = score_offers(test, pred_test, cats, n_boot, p["seed"], held_test)
        authors = scored["authors_rule"]
        on_val = val_columns(val, pred_val, held_val, cats, val_gold)
        rows[s] = {
            "f1": authors["f1"], "p": authors["p"], "r": authors["r"], "f1_ci95": authors["f1_ci95"],
            "val_f1": on_val["val_f1"],
            "f1_case_insensitive": authors["case_insensitive"]["f1"], "counts": authors["counts"],
            "per_category_f1": {c: v["f1"] for c, v in authors["per_category"].items()},
            **{f"{k}_f1": scored[k]["f1"] for k in ("ap", "ave", "ave_fuzzy")},
            **{f"{k}_f1_ci95": scored[k]["f1_ci95"] for k in ("ap", "ave", "ave_fuzzy")},
            "val_ap_f1": on_val["val_ap_f1"],
            "gold_in_window": window_share(s, run, test, p)}
    d, dm = rows["deflate"], rows["d_minus"]
    table = {"rows": rows, "checks": {
        "deflate_f1_at_least_70": d["f1"] >= 70,
        "deflate_above_d_minus_f1": d["f1"] > dm["f1"],
        "deflate_above_d_minus_f1_beyond_intervals": beyond(d["f1_ci95"], dm["f1_ci95"]),
        "deflate_above_d_minus_ap_f1": d["ap_f1"] > dm["ap_f1"]},
        "meta": {"dataset": "wdc_pave eval_visible (one third of the official test set)", "offers": len(test),
                 "val_offers": len(val), "seed": p["seed"], "bootstrap_resamples": n_boot,
                 "scoring": "f1/p/r: the dataset authors' rule (VC = prediction equals a gold spelling after "
                            "stripping whitespace); ap/ave/ave_fuzzy: the paper's metrics against the training "
                            "target spelling"}}
    write_json(out, table, ensure_ascii=False, indent=1)
    # measured, so apart: the quality file's bytes match across runs and machines, these do not
    write_json(out.with_name(out.stem + "_efficiency.json"),
               {"rows": {s: read_cost(Path("models/systems") / f"{s}-wdc_pave") for s in rows},
                # trained once for the systems that copy it (generator.shared_from): not in their rows
                "shared_generator": read_cost(Path("models/shared_generator")),
                "note": "seconds and peak resident memory of each system's stage on the machine that ran it; "
                        "shared_generator: the stage that trains the generator DEFLATE and d- copy, once"},
               indent=1, sort_keys=True)
    if report is not None:
        write_text(report, markdown(table))
    return table


def markdown(t: dict) -> str:
    out = ["### WDC-PAVE — attribute prediction and extraction on real offers (eval_visible)", "",
           f"_{t['meta']['offers']} offers; F1 by the dataset authors' rule with its 95% bootstrap interval; "
           "val F1 beside it; AP/AVE by the paper's metrics_", "",
           "| system | F1 (authors) | 95% CI | val F1 | F1 (case-insens.) | AP F1 | AVE F1 | gold in window % |",
           "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for s, r in t["rows"].items():
        out.append(f"| {NAMES.get(s, s)} | {r['f1']:.2f} | {r['f1_ci95'][0]:.1f}–{r['f1_ci95'][1]:.1f} | "
                   f"{r['val_f1']:.2f} | {r['f1_case_insensitive']:.2f} | {r['ap_f1']:.2f} | {r['ave_f1']:.2f} | "
                   f"{r['gold_in_window']:.1f} |")
    out += ["", "Checks: " + ", ".join(f"{k} = {v}" for k, v in t["checks"].items()), ""]
    return "\n".join(out)
