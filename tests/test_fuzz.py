"""Property-based fuzzing of every reader of outside data: any input gives rows or reasons, never
an exception. Example counts keep the whole file to a few seconds."""
import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deflate.answering.predict_rows import read_rows, validate
from deflate.data.adapters import (
    DESIRE_NCOLS,
    DesireAdapter,
    ImplicitAveAdapter,
    MepaveAdapter,
    WdcPaveAdapter,
    parse_attributes,
    parse_literal,
    parse_pic_tokens,
)
from deflate.data.records import Record, Reject, RowError

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# text that looks like the data: separators, brackets, quotes, JSON and literal syntax, CJK, bad bytes
PIECES = st.sampled_from(["\t", "\n", "\r", "{", "}", "[", "]", "(", ")", ":", ",", "'", '"', "\\", "|", "id", "name",
                          "image", "attributes", "123", "-1", "1e999", "None", "null", "true", "红烧", "牛肉", "..",
                          "/etc/passwd", "\x00", "\ufffd", " ", "[Title]", "images/x.jpg"])
TEXT = st.lists(st.one_of(PIECES, st.text(max_size=8)), max_size=40).map("".join)
RAW = st.one_of(st.binary(max_size=400), TEXT.map(lambda t: t.encode("utf-8", "surrogatepass")))


def write(tmp: Path, name: str, data: bytes) -> Path:
    path = tmp / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@FAST
@given(data=RAW, suffix=st.sampled_from([".jsonl", ".tsv"]))
def test_predict_rows_never_raise(data, suffix):
    with tempfile.TemporaryDirectory() as d:
        rows = read_rows(write(Path(d), "in" + suffix, data))
    assert all(isinstance(r, dict) and isinstance(r["_line"], int) for r in rows)
    for r in rows:
        product, errors = validate(r, {"主料", "辣度"})
        assert (product is None) == bool(errors)
        if product is not None:
            assert isinstance(product["name"], str) and set(product["attributes"]) <= {"主料", "辣度"}


@FAST
@given(obj=st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10)),
                        lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                st.dictionaries(st.sampled_from(["id", "name", "description", "image",
                                                                                 "image_b64", "attributes", "x"]),
                                                                inner, max_size=6)),
                        max_leaves=20))
def test_validate_takes_any_json_value(obj):
    row = dict(obj) if isinstance(obj, dict) else {"id": obj, "name": obj, "image": obj, "attributes": obj}
    product, errors = validate(row, {"主料"})
    assert (product is None) == bool(errors) and all(isinstance(e, str) for e in errors)


@FAST
@given(text=TEXT)
def test_label_literals_parse_or_give_a_reason(text):
    for parse in (lambda t: parse_literal(t, "x"), parse_attributes, lambda t: parse_pic_tokens(t, 4, 16)):
        try:
            parse(text)
        except RowError as e:
            assert str(e)


LINE = st.lists(st.one_of(PIECES, st.text(max_size=6)), max_size=DESIRE_NCOLS + 2).map("\t".join)


@FAST
@given(lines=st.lists(LINE, max_size=6))
def test_every_ingest_adapter_gives_rows_or_rejects(lines):
    body = ("\n".join(lines) + "\n").encode("utf-8", "surrogatepass")
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        head = "\t".join(f"c{i}" for i in range(DESIRE_NCOLS)) + "\n"
        write(root / "desire", "train.tsv", head.encode() + body)
        write(root / "mepave", "train.txt", body)
        write(root / "implicitave", "train/Food.tsv", b"id\timages\tcategory\ttexts\tattribute_names\t"
                                                      b"attribute_values\n" + body)
        write(root / "wdc", "descriptions.csv", b"Category;Attribute\nC;A\n")
        write(root / "wdc", "eval_visible.jsonl", body)
        for adapter in (DesireAdapter(root / "desire"), MepaveAdapter(root / "mepave"),
                        ImplicitAveAdapter(root / "implicitave"), WdcPaveAdapter(root / "wdc")):
            for item in adapter.read("test" if isinstance(adapter, WdcPaveAdapter) else "train"):
                assert isinstance(item, (Record, Reject))



JSON = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8)),
                    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6), kids, max_size=3),
                    max_leaves=8)
OFFER = st.fixed_dictionaries({}, optional={
    "id": st.one_of(st.integers(), st.text(max_size=4), JSON), "cluster_id": JSON,
    "category": st.sampled_from(["C", "D", ""]) | JSON, "input_title": st.text(max_size=8) | JSON,
    "input_description": st.text(max_size=8) | JSON,
    "target_scores": st.dictionaries(st.sampled_from(["A", "B"]), st.dictionaries(
        st.sampled_from(["n/a", "x", " ", "y"]), JSON, max_size=2) | JSON, max_size=2) | JSON})


@FAST
@given(rows=st.lists(OFFER, max_size=5))
def test_wdc_pave_rows_of_any_shape_give_records_or_rejects(rows):
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        write(root, "descriptions.csv", b"Category;Attribute\nC;A\nC;B\n")
        write(root, "eval_visible.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode())
        out = list(WdcPaveAdapter(root).read("test"))
        assert len(out) == len(rows) and all(isinstance(x, (Record, Reject)) for x in out)
        for rec in (x for x in out if isinstance(x, Record)):
            assert all(lab["value"] in lab["gold"] for lab in rec.labels)
