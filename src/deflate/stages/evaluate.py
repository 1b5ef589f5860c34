"""Stage 4: answer every (test product, attribute), keep what the discriminator accepts, score
(paper §5.1 metrics). The threshold, and the generator's weight in the keep score
(``eval.keep_weights``; 0 is the paper's rule), are chosen on validation, and so, with
``eval.presence: discriminator``, is the discriminator's own threshold for whether a product has an
attribute (attribute prediction apart from the kept values), and with ``eval.keep_decision: learned``
the keep model that replaces the keep score (``answering.keep_model``); they and the trained parts go into the
bundle (``models/deflate``) that ``deflate predict`` and the MLflow model answer from."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from deflate.answering import keep_model
from deflate.answering.engine import Answers, Deflate, keep, keep_scores, presence
from deflate.data.records import Record, load_split
from deflate.data.splits import Split, load_data, right_answers
from deflate.evaluation import prediction_files
from deflate.evaluation.intervals import bootstrap_f1
from deflate.evaluation.metrics import evaluate as compute_metrics
from deflate.evaluation.metrics import gold_from_records, majority_baseline, prf
from deflate.infra import distributed as dist
from deflate.infra import kernels
from deflate.infra.bundle import Decisions, KeepModel, write_bundle
from deflate.infra.config import Params
from deflate.infra.files import write_json, write_jsonl
from deflate.infra.runtime import record_model_uri
from deflate.model.questions import all_questions
from deflate.model.tokenizer import answered
from deflate.stages.context import StageContext

FREE = Decisions(mode="free", threshold=0.5, keep_all=False, alpha=1.0, weights=(1.0, 0.0, 0.0))


def run(p: Params, processed: Path, tokens_dir: Path, gen_dir: Path, disc_dir: Path, metrics_path: Path,
        predictions_path: Path, bundle_dir: Path) -> dict:
    ctx = StageContext.open(p, "evaluate", processed)
    use_disc = p["model"]["use_discriminator"]
    claim_bs = p["discriminator"]["eval_batch_size"]
    engine = Deflate(gen_dir, discriminator=disc_dir if use_disc else None, lexical=None, decisions=FREE,
                     decode=p["decode"], claim_batch_size=claim_bs, device=ctx.device)
    val, test = load_data(processed, tokens_dir, "val"), load_data(processed, tokens_dir, "test")
    weights = [float(w) for w in p["eval"]["keep_weights"]]
    auto = use_disc and p["eval"]["threshold"] == "auto"
    if use_disc and not auto:  # given in params: the first weight with it
        engine.with_decisions(threshold=float(p["eval"]["threshold"]), keep_weight=weights[0])
    # val predictions are written too (reported beside test)
    learned = auto and p["eval"]["keep_decision"] == "learned"
    val_ans = answer_split(engine, val, ctx.schema, "val", gen_logprobs=auto and (any(weights) or learned))
    by_weight: dict = {}
    if auto:  # chosen on validation, never on test
        weight, thr, by_weight = best_keep_rule(val_ans, val.records, engine.sep, p["eval"]["threshold_metric"],
                                                weights)
        engine.with_decisions(threshold=thr, keep_weight=weight)
        val_ans = val_ans.at_weight(weight)  # re-ranked beams: the answers under the chosen weight
        val_ans.scores = keep_scores(val_ans.probs, val_ans.gen_logprobs, weight)
        if learned:  # the keep model and its threshold, on val too
            fitted, why = learned_keep_rule(val_ans, val.records, engine.sep, p["eval"]["threshold_metric"], p["seed"])
            if fitted is None:  # said, recorded in the metrics, and the keep score decides
                print(f"[evaluate] eval.keep_decision learned: {why}; the keep score decides instead", flush=True)
            else:
                model, thr = fitted
                engine.with_decisions(threshold=thr, keep_model=model)
                val_ans.scores = keep_model.scores(model, val_ans, val.records)
    thr, weight = engine.decisions.threshold, engine.decisions.keep_weight
    val_pred = select(val_ans, val.records, thr, engine.sep)
    val_withheld = None
    if use_disc and p["eval"]["presence"] == "discriminator":  # its own threshold, chosen on validation
        engine.with_decisions(presence_threshold=best_presence_threshold(val_ans, val.records, val_pred))
        val_withheld = withheld_pairs(val_ans, val.records, val_pred, engine.decisions.presence_threshold)
    ans = answer_split(engine, test, ctx.schema, "test")
    pred = select(ans, test.records, thr, engine.sep)
    withheld = None if val_withheld is None else withheld_pairs(ans, test.records, pred,
                                                                 engine.decisions.presence_threshold)
    gold, texts = gold_from_records(test.records)
    scored_withheld = withheld or frozenset()  # no presence decision: nothing withheld
    metrics = compute_metrics(gold, pred, texts, scored_withheld)
    metrics["intervals"] = bootstrap_f1(test.records, pred, p["eval"]["n_boot"], p["seed"], withheld=scored_withheld)
    train_records = load_split(processed, "train")
    metrics["threshold"] = round(thr, 4)
    metrics["keep_weight"] = weight
    if learned:  # what decided, and the learned keep decision's standardised weights
        km = engine.decisions.keep_model
        metrics["keep_decision"] = "learned" if km is not None else f"score: {why}"
        if km is not None:
            metrics["keep_model"] = {n: round(c, 4) for n, c in zip(km.features, km.coef)}
    if withheld is not None:
        metrics["presence_threshold"] = round(engine.decisions.presence_threshold, 4)
    if by_weight:  # each weight's best val F1 (threshold_metric), the evidence behind the choice
        metrics["keep_rule_val_f1"] = by_weight
    metrics["majority_baseline"] = {k: majority_baseline(train_records, test.records)[k] for k in ("ave",)}
    metrics["meta"] = {"dataset": ctx.schema["format"], "language": ctx.schema["language"],
                       "test_products": len(test.records), "train_products": len(train_records),
                       "attributes": len(ctx.schema["attributes"]), "seed": p["seed"],
                       "use_image": engine.meta["use_image"], "use_discriminator": use_disc,
                       "generator_params": engine.meta["params"],
                       "constrained_decoding": bool(p["decode"]["constrain_to_vocab"]),
                       "kernels": kernels.describe()}
    if not dist.is_main():  # the main process writes; the others wait until it has
        dist.barrier()
        return metrics
    write_json(metrics_path, metrics, ensure_ascii=False, indent=1, sort_keys=True)
    write_predictions(predictions_path, test.records, ans, pred, withheld)
    prediction_files.write(predictions_path.with_name("val.jsonl"), val.records, val_pred, val_withheld)
    write_bundle(bundle_dir, engine.decisions, p["decode"], claim_bs, gen_dir, disc_dir if use_disc else None)
    # the bundle as an MLflow pyfunc (`mlflow models predict`, `deflate predict --model <uri>`)
    tracker = ctx.tracker()
    tracker.metrics({f"test_{k}_f1": metrics[k]["f1"] for k in ("ap", "ave", "ave_fuzzy")}, step=0)
    uri = tracker.log_pyfunc(bundle_dir)
    tracker.close()
    if uri:
        record_model_uri(bundle_dir, uri)
    dist.barrier()
    return metrics


def answer_split(engine: Deflate, data: Split, schema: dict, name: str, gen_logprobs: bool = False) -> Answers:
    """Every attribute (of its category) asked of every product of a split."""
    return engine.answer(data.records, all_questions(data.records, schema),
                         engine.batcher(data.image, data.has_image), name, gen_logprobs=gen_logprobs)


def select(ans: Answers, records: list[Record], threshold: float, sep: str,
           scores: np.ndarray | None = None) -> dict:
    """Kept predictions ``{(product id, attribute): [values]}`` under the keep rule at ``threshold``
    (on ``scores``, by default the answers' own keep scores)."""
    scores = ans.scores if scores is None else scores
    pred: dict = {}
    for k, (q, v) in enumerate(zip(ans.questions, ans.values)):
        if keep(v, None if scores is None else scores[k], threshold):
            pred[(records[q.row].id, q.attribute)] = [x for x in v.split(sep) if x]
    return pred


def best_threshold(ans: Answers, records: list[Record], sep: str, metric: str, scores: np.ndarray,
                   among: np.ndarray | None = None) -> tuple[float, float]:
    """The keep threshold on ``scores`` with the best validation F1 (``metric``: ave | ap) over the
    percentiles of ``scores[among]`` (default: all) and 0.5, ties closest to 0.5; and that F1."""
    gold, texts = gold_from_records(records)
    pool = scores if among is None else scores[among]
    grid = sorted(set(np.round(np.quantile(pool, np.linspace(0, 1, 101)), 4).tolist()) | {0.5})
    f1 = {t: compute_metrics(gold, select(ans, records, t, sep, scores), texts)[metric]["f1"] for t in grid}
    t = max(grid, key=lambda t: (f1[t], -abs(t - 0.5)))
    return float(t), f1[t]


def best_keep_rule(ans: Answers, records: list[Record], sep: str, metric: str,
                   weights: list[float]) -> tuple[float, float, dict]:
    """The generator weight and threshold with the best validation F1 (``metric``: ave | ap): per
    weight, the :func:`best_threshold` of its keep scores (with re-ranked beams, on the answers that
    weight picks). Ties go to the smaller weight (the paper's rule first). Also each weight's best F1."""
    rules = []
    for w in weights:
        at_w = ans.at_weight(w)
        t, f1 = best_threshold(at_w, records, sep, metric, keep_scores(at_w.probs, at_w.gen_logprobs, w))
        rules.append((f1, w, t))
    _, w, t = max(rules, key=lambda r: (r[0], -r[1]))
    return float(w), float(t), {str(w): f1 for f1, w, _ in rules}


def learned_keep_rule(ans: Answers, records: list[Record], sep: str, metric: str,
                      seed: int) -> tuple[tuple[KeepModel, float] | None, str]:
    """The learned keep decision (``eval.keep_decision: learned``): a keep model fitted on the answered
    val questions (target: the answer is one of the gold spellings), and the :func:`best_threshold` on
    its P(right) over the answered questions' percentiles.
    None, with the reason, when val's answers are all right or all wrong (a model barely trained):
    nothing to fit."""
    x = keep_model.features(ans, records)
    has = np.array([answered(v) for v in ans.values])
    right = np.array([answered(v) and v in right_answers(records[q.row], q.attribute, sep)
                      for q, v in zip(ans.questions, ans.values)])
    if len(set(right[has].tolist())) < 2:
        return None, (f"val's {int(has.sum())} answers are all {'right' if right[has].all() else 'wrong'}, "
                      "so there is no keep model to fit")
    model = keep_model.fit(x[has], right[has], seed)
    t, _ = best_threshold(ans, records, sep, metric, model.probability(x), has)
    return (model, t), "fitted"


def withheld_pairs(ans: Answers, records: list[Record], pred: dict, presence_threshold: float) -> set:
    """(product id, attribute) pairs present by the presence decision whose value ``pred`` does not keep."""
    present = presence(ans.values, ans.probs, [False] * len(ans.values), presence_threshold)
    return {key for q, yes in zip(ans.questions, present)
            if yes and (key := (records[q.row].id, q.attribute)) not in pred}


def best_presence_threshold(ans: Answers, records: list[Record], pred: dict) -> float:
    """The discriminator threshold of the presence decision with the best validation AP F1, over
    the percentiles of the answered claims' D and 0.5 (ties: closest to 0.5), the kept values
    ``pred`` being present whatever it is. The keep threshold is chosen for values; this one for
    whether the product has the attribute, which a doubtful value does not settle."""
    gold = set(gold_from_records(records)[0])
    kept = set(pred)
    has_value = np.array([answered(v) for v in ans.values])
    probs = np.asarray(ans.probs, dtype=np.float64)
    grid = {0.5}
    if has_value.any():
        grid |= set(np.round(np.quantile(probs[has_value], np.linspace(0, 1, 101)), 4).tolist())

    def ap_f1(t: float) -> float:
        present = kept | withheld_pairs(ans, records, pred, t)
        return prf(len(gold & present), len(present), len(gold), rounded=False)["f1"]

    return float(max(sorted(grid), key=lambda t: (ap_f1(t), -abs(t - 0.5))))


def write_predictions(path: Path, records: list[Record], ans: Answers, pred: dict, withheld: set | None = None) -> None:
    """One line per product: kept predictions with scores, plus every generated candidate; with a
    presence decision, the attributes present whose value was withheld, with their claim's D."""
    per: dict[int, list] = {}
    for k, (q, v) in enumerate(zip(ans.questions, ans.values)):
        s = None if ans.scores is None else round(float(ans.scores[k]), 4)
        d = None if ans.probs is None else round(float(ans.probs[k]), 4)
        per.setdefault(q.row, []).append((q.attribute, v, s, d))

    def rows():  # written as made
        for i, r in enumerate(records):
            kept = [{"attribute": a, "value": v, "score": s} for a, v, s, _ in per.get(i, []) if (r.id, a) in pred]
            cands = [{"attribute": a, "value": v, "score": s} for a, v, s, _ in per.get(i, [])]
            held = {} if withheld is None else {"withheld": [{"attribute": a, "value": v, "presence": d}
                                                             for a, v, _, d in per.get(i, []) if (r.id, a) in withheld]}
            yield {"id": r.id, "predictions": kept, "candidates": cands, "errors": [], "gold": r.labels, **held}

    write_jsonl(path, rows())
