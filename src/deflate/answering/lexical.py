"""A lexical candidate scorer (beyond the paper): per attribute, TF-IDF over word 1-2-grams and
character 2-5-grams of "name | description", then a logistic regression over the attribute's
values. It is the strong shallow reference on ImplicitAVE (a generative model that does not beat
it is not yet useful there) and a third score for closed-vocabulary re-ranking
(:mod:`deflate.answering.scores`).

Saved without pickle: vocabularies and classes as JSON, idf and weights as safetensors; loading
rebuilds the scikit-learn objects from those arrays.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from tqdm import tqdm

from deflate.infra.bundle import BundleError, LexicalMeta, read_record
from deflate.infra.files import write_json

FILES = ("lexical.json", "lexical.safetensors")
FLOOR = 1e-6  # probability of a candidate the classifier never saw as a label


def lexical_text(name: str, description: str = "") -> str:
    return f"{name} | {description}" if description else name


def lexical_examples(records) -> dict[str, list[tuple[str, str]]]:
    """Training pairs per attribute: ("name | description", gold value)."""
    out: dict[str, list[tuple[str, str]]] = {}
    for r in records:
        for lab in r.labels:
            out.setdefault(lab["attribute"], []).append((lexical_text(r.name, r.description), lab["value"]))
    return out


def _vectorizers(max_features: int | None, vocab: tuple[dict, dict] | None = None):
    # one-character tokens count here: "3/4" sleeves, "2 pack"
    word = dict(ngram_range=(1, 2), sublinear_tf=True, max_features=max_features, token_pattern=r"(?u)\b\w+\b")
    char = dict(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, max_features=max_features,
                min_df=1 if vocab else 2)
    if vocab:
        word["vocabulary"], char["vocabulary"] = vocab
    return TfidfVectorizer(**word), TfidfVectorizer(**char)


class AttributeModel:
    """Vectorizers and classifier of one attribute."""

    def __init__(self, word: TfidfVectorizer | None, char: TfidfVectorizer | None,
                 clf: LogisticRegression | None, classes: list[str]):
        self.word, self.char, self.clf, self.classes = word, char, clf, classes

    def features(self, texts: list[str]):
        from scipy.sparse import hstack

        return hstack([self.word.transform(texts), self.char.transform(texts)]).tocsr()

    def proba(self, texts: list[str]) -> np.ndarray:
        if self.clf is None:  # one value seen in training: it is certain
            return np.ones((len(texts), 1))
        return self.clf.predict_proba(self.features(texts))


def check_lexical_arrays(path: Path, i: int, a: dict, arrays: dict) -> None:
    """One attribute's arrays agree with its vocabularies and classes (else predict_proba fails late)."""
    words, chars = a.get("word") or [], a.get("char") or []
    shapes = {f"{i}.word_idf": (len(words),), f"{i}.char_idf": (len(chars),),
              f"{i}.coef": (1 if len(a["classes"]) == 2 else len(a["classes"]), len(words) + len(chars)),
              f"{i}.intercept": (1 if len(a["classes"]) == 2 else len(a["classes"]),)}
    for k, shape in shapes.items():
        if k not in arrays or tuple(arrays[k].shape) != shape or not np.isfinite(arrays[k]).all():
            raise BundleError(f"{path}: {k} is missing, not finite, or not of shape {shape}")


class LexicalScorer:
    def __init__(self, models: dict[str, AttributeModel], config: dict):
        self.models, self.config = models, config

    @classmethod
    def fit(cls, examples: dict[str, list[tuple[str, str]]], max_features: int | None = 5000, C: float = 10.0,
            progress: bool = True) -> "LexicalScorer":
        """examples: attribute -> [(text, value)]."""
        models = {}
        for attr in tqdm(sorted(examples), desc="lexical", unit="attribute", disable=not progress):
            texts, values = zip(*examples[attr])
            classes = sorted(set(values))
            models[attr] = AttributeModel(None, None, None, classes)
            if len(classes) > 1:
                word, char = _vectorizers(max_features)
                word.fit(texts)
                char.fit(texts)
                m = models[attr] = AttributeModel(word, char, None, classes)
                m.clf = LogisticRegression(C=C, max_iter=2000).fit(m.features(list(texts)), list(values))
        return cls(models, {"max_features": max_features, "C": C})

    def logprobs(self, texts: list[str], attr: str, options: list[str]) -> np.ndarray:
        """[len(texts), len(options)] log-probabilities of each option (floored for unseen ones);
        an attribute never seen in training scores every option alike."""
        m = self.models.get(attr)
        if m is None or not texts:
            return np.zeros((len(texts), len(options)), dtype=np.float32)
        p = m.proba(list(texts))
        col = {c: i for i, c in enumerate(m.classes)}
        out = np.full((len(texts), len(options)), FLOOR)
        for j, o in enumerate(options):
            if o in col:
                out[:, j] = p[:, col[o]] + FLOOR
        return np.log(out).astype(np.float32)

    def question_logprobs(self, records, questions: list, candidates: dict[str, list[str]]) -> list[np.ndarray]:
        """Per :class:`deflate.model.questions.Question`: :meth:`logprobs` of the attribute's candidates
        for that record's "name | description", one classifier call per attribute."""
        out = [np.zeros(0, np.float32)] * len(questions)
        by_attr: dict[str, list[int]] = {}
        for k, q in enumerate(questions):
            by_attr.setdefault(q.attribute, []).append(k)
        for a, ks in by_attr.items():
            texts = [lexical_text(records[questions[k].row].name, records[questions[k].row].description) for k in ks]
            for k, row in zip(ks, self.logprobs(texts, a, candidates.get(a, []))):
                out[k] = row
        return out

    def save(self, path: Path) -> None:
        from safetensors.numpy import save_file

        path.mkdir(parents=True, exist_ok=True)
        meta, arrays = {"config": self.config, "attributes": []}, {}
        for i, (attr, m) in enumerate(sorted(self.models.items())):
            meta["attributes"].append({"name": attr, "classes": m.classes})
            if m.clf is not None:
                vocab = [sorted(v.vocabulary_, key=v.vocabulary_.get) for v in (m.word, m.char)]
                meta["attributes"][-1].update(word=vocab[0], char=vocab[1])
                arrays[f"{i}.word_idf"], arrays[f"{i}.char_idf"] = m.word.idf_, m.char.idf_
                arrays[f"{i}.coef"], arrays[f"{i}.intercept"] = m.clf.coef_, m.clf.intercept_
        write_json(path / FILES[0], meta, ensure_ascii=False)
        # weights in float32 halve the file; idf stays float64 so features match fit time exactly
        save_file({k: np.ascontiguousarray(v, dtype=np.float32 if k.endswith("coef") else np.float64)
                   for k, v in arrays.items()}, str(path / FILES[1]))

    @classmethod
    def load(cls, path: Path) -> "LexicalScorer":
        from safetensors.numpy import load_file

        meta = read_record(path / FILES[0], LexicalMeta).model_dump()
        try:
            arrays = load_file(str(path / FILES[1]))
        except Exception as e:
            raise BundleError(f"{path / FILES[1]} is not a readable safetensors file ({str(e)[:120]})") from None
        models = {}
        for i, a in enumerate(meta["attributes"]):
            word = char = clf = None
            if f"{i}.coef" in arrays:
                check_lexical_arrays(path / FILES[1], i, a, arrays)
                word, char = _vectorizers(None, ({t: j for j, t in enumerate(a["word"])},
                                                 {t: j for j, t in enumerate(a["char"])}))
                word.idf_, char.idf_ = arrays[f"{i}.word_idf"], arrays[f"{i}.char_idf"]
                clf = LogisticRegression()
                clf.coef_, clf.intercept_ = arrays[f"{i}.coef"], arrays[f"{i}.intercept"]
                clf.classes_ = np.array(a["classes"], dtype=object)
            models[a["name"]] = AttributeModel(word, char, clf, a["classes"])
        return cls(models, meta["config"])
