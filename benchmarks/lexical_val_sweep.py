"""Variants of the lexical scorer (deflate.lexical), scored on ImplicitAVE **val** only — the
selection evidence behind params.yaml's `lexical` section and behind the claim that this shallow
model is saturated (eval_visible is never read here).

    python benchmarks/lexical_val_sweep.py                       # every variant below
    python benchmarks/lexical_val_sweep.py '{"name": "C30", "C": 30}'

Needs `dvc repro pipelines/implicitave/dvc.yaml` to have written the processed tables. Prints one
JSON line per variant: val accuracy (all 13,723 val pairs), val macro recall over values (a
label-shift diagnostic), seconds. Measured 2026-11-26 on the 2-core CPU:
base 0.7916 / 0.7166; class_weight balanced 0.7887 / 0.7350; C=3 0.7889; C=30 0.7914;
word 1-3-grams 0.7888; char 1-6-grams 0.7911; "a value written in the title is never the answer"
(ImplicitAVE's definition of implicit) 0.7912. None beats the base on val.
"""
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy.sparse import hstack
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from deflate.data import load_split
from deflate.lexical import lexical_examples

PROCESSED = Path(__file__).resolve().parents[1] / "pipelines/implicitave/data/processed"
VARIANTS = ['{"name": "base"}', '{"name": "balanced", "cw": "balanced"}', '{"name": "C3", "C": 3.0}',
            '{"name": "C30", "C": 30.0}', '{"name": "w13", "word_ng": [1, 3]}',
            '{"name": "char_16", "char_ng": [1, 6]}', '{"name": "excl", "excl": true}']


def run(train, val, name, word_ng=(1, 2), char_ng=(2, 5), C=10.0, cw=None, mf=20000, excl=False):
    t0, hits, n, recall = time.time(), 0, 0, []
    for a in sorted(train):
        if not val.get(a):
            continue
        X, y = zip(*train[a])
        Xv, yv = zip(*val[a])
        classes = sorted(set(y))
        if len(classes) == 1:
            pred = [classes[0]] * len(Xv)
        else:
            w = TfidfVectorizer(ngram_range=tuple(word_ng), sublinear_tf=True, max_features=mf,
                                token_pattern=r"(?u)\b\w+\b").fit(X)
            c = TfidfVectorizer(analyzer="char_wb", ngram_range=tuple(char_ng), sublinear_tf=True, max_features=mf,
                                min_df=2).fit(X)
            feats = lambda t: hstack([w.transform(t), c.transform(t)]).tocsr()  # noqa: E731
            clf = LogisticRegression(C=C, max_iter=2000, class_weight=cw).fit(feats(list(X)), list(y))
            P = clf.predict_proba(feats(list(Xv)))
            if excl:  # rule out values the title states: ImplicitAVE rows are implicit by definition
                for i, t in enumerate(Xv):
                    title = t.split(" | ")[0].lower()
                    P[i, [o.lower() in title for o in clf.classes_]] = -1
            pred = clf.classes_[P.argmax(1)]
        ok = [p == t for p, t in zip(pred, yv)]
        hits, n = hits + sum(ok), n + len(ok)
        recall += [np.mean([o for o, t in zip(ok, yv) if t == v]) for v in set(yv)]
    print(json.dumps({"name": name, "val_acc": round(hits / n, 4), "val_macro_recall": round(float(np.mean(recall)), 4),
                      "seconds": round(time.time() - t0)}), flush=True)


if __name__ == "__main__":
    if not (PROCESSED / "train.parquet").is_file():
        sys.exit(f"no processed ImplicitAVE tables in {PROCESSED}; run dvc repro pipelines/implicitave/dvc.yaml")
    train, val = (lexical_examples(load_split(PROCESSED, s)) for s in ("train", "val"))
    for spec in sys.argv[1:] or VARIANTS:
        run(train, val, **json.loads(spec))
