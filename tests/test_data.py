import json
import os

import pytest
from PIL import Image

from deflate.data.adapters import (
    DesireAdapter,
    MepaveAdapter,
    ingest,
    parse_attributes,
    parse_pic_tokens,
)
from deflate.data.records import Record, RowError, load_split
from deflate.data.synth import DESIRE_COLUMNS


def desire_line(name="红烧牛肉", sku="P1", image="", tokens="", attribute="{'主料': '牛肉'}", desc=""):
    cols = [name, sku, "S1", "食品", "美食", "菜肴", "9.9", image, "菜肴", desc, tokens, attribute]
    return "\t".join(cols)


def write_desire_dir(root, train_lines, other_lines=None):
    root.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val", "test"):
        lines = train_lines if split == "train" else (other_lines or [desire_line(sku=f"{split}1")])
        (root / f"{split}.tsv").write_text("\t".join(DESIRE_COLUMNS) + "\n" + "\n".join(lines) + "\n", encoding="utf-8")


def test_literal_parsers_accept_good_and_refuse_code():
    assert parse_attributes("{'主料': '牛肉', '辅料': ['葱', '姜']}") == {"主料": ["牛肉"], "辅料": ["葱", "姜"]}
    assert parse_pic_tokens(str(list(range(4))), 4, 8192) == [0, 1, 2, 3]
    assert parse_pic_tokens("", 4, 8192) is None
    for bad in ["__import__('os').system('touch /tmp/pwned')", "{'a': __import__('os')}", "{1: 'x'}", "[1, 2]"]:
        with pytest.raises(RowError):
            parse_attributes(bad)
    for bad, why in [("[1, 2, 3]", "expected 4"), ("[0, 1, 2, 8192]", "out of range"),
                     ("[0, 1, 2, 3.5]", "not a list of ints"), ("[0, 1, 2, True]", "not a list of ints"),
                     ("open('x')", "not a plain literal"), ("[" * 150000 + "]" * 150000, "too long"), ("[" * 5000 + "]" * 5000, "not a")]:
        with pytest.raises(RowError, match=why):
            parse_pic_tokens(bad, 4, 8192)


def test_hostile_raw_file_rejects_bad_rows_and_keeps_good(tmp_path):
    root = tmp_path / "raw"
    (root / "images").mkdir(parents=True)
    Image.new("RGB", (32, 32), (200, 10, 10)).save(root / "images" / "ok.jpg")
    (root / "images" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    good_tokens = str([5] * 1024)
    pwn = tmp_path / "pwned"
    lines = [
        desire_line(sku="G1", image="images/ok.jpg", tokens=good_tokens),                    # good
        desire_line(sku="G2", attribute="{'辣度': '微辣'}", desc="香辣可口"),                 # good, no image
        desire_line(sku="B1", attribute=f"__import__('os').system('touch {pwn}')"),         # code payload
        desire_line(sku="B2", tokens=str([1] * 1000)),                                       # truncated tokens
        desire_line(sku="B3", tokens=str([9000] * 1024)),                                    # ids >= 8192
        "只有\t三\t列",                                                                       # wrong column count
        desire_line(sku="B5", image="images/broken.jpg"),                                    # unreadable image
        desire_line(sku="B6", image="images/missing.jpg"),                                   # missing image
        desire_line(sku="B7", image="../../etc/passwd"),                                     # path escape
        desire_line(sku="G1"),                                                               # duplicate id
        desire_line(name="", sku="B9"),                                                      # empty name
    ]
    write_desire_dir(root, lines)
    with open(root / "train.tsv", "ab") as f:
        f.write(b"\xff\xfe bad utf8\t" * 11 + b"x\n")                                      # non-UTF-8
    out, rej = tmp_path / "proc", tmp_path / "rej"
    report = ingest("desire", root, out, rej, max_reject_fraction=0.95)
    assert not pwn.exists()
    kept = load_split(out, "train")
    assert [r.id for r in kept] == ["G1", "G2"]
    assert kept[0].pic_tokens == [5] * 1024 and kept[0].image.endswith("ok.jpg")
    assert kept[1].labels == [{"attribute": "辣度", "value": "微辣", "source": "implicit"}]
    rejects = [json.loads(x) for x in (rej / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    reasons = " | ".join(r["reason"] for r in rejects)
    assert len(rejects) == 10 and report["splits"]["train"]["rejected"] == 10
    for expected in ["attribute: not a plain literal", "1000 tokens, expected 1024", "out of range", "3 columns",
                     "unreadable image", "image not found", "outside the data directory", "duplicate id G1",
                     "empty name", "not valid UTF-8"]:
        assert expected in reasons
    assert all(r["row"] != 0 and r["reason"] for r in rejects)


def test_too_many_rejects_fail_the_stage(tmp_path):
    root = tmp_path / "raw"
    write_desire_dir(root, [desire_line(sku="G1"), desire_line(sku="B1", attribute="nope(")])
    with pytest.raises(RuntimeError, match="max_reject_fraction"):
        ingest("desire", root, tmp_path / "p", tmp_path / "r", max_reject_fraction=0.2)
    assert (tmp_path / "r" / "train.jsonl").read_text(encoding="utf-8").count("\n") == 1


def test_sources_side_file_and_schema(tmp_path):
    root = tmp_path / "raw"
    write_desire_dir(root, [desire_line(sku="A", attribute="{'主料': '牛肉', '冷热': '热食'}")])
    (root / "sources.jsonl").write_text(json.dumps({"id": "A", "attribute": "冷热", "value": "热食",
                                                    "source": "image_only"}) + "\n", encoding="utf-8")
    ingest("desire", root, tmp_path / "p", tmp_path / "r", 0.0)
    (rec,) = load_split(tmp_path / "p", "train")
    assert {(lab["attribute"], lab["source"]) for lab in rec.labels} == {("主料", "explicit"), ("冷热", "image_only")}
    schema = json.loads((tmp_path / "p" / "schema.json").read_text(encoding="utf-8"))
    assert schema["language"] == "zh" and set(schema["attributes"]) == {"主料", "冷热"}


def test_sources_index_is_on_disk_and_the_later_line_wins(tmp_path, monkeypatch):
    from deflate.data import adapters

    monkeypatch.setattr(adapters.SourceIndex, "BATCH", 2)  # duplicates across insert batches too
    lines = [{"id": "A", "attribute": "冷热", "value": "热食", "source": "explicit"},
             {"id": "B", "attribute": "主料", "value": "牛肉", "source": "explicit"},
             {"id": "A", "attribute": "冷热", "value": "热食", "source": "image_only"}]
    (tmp_path / "sources.jsonl").write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines) + "\n",
                                            encoding="utf-8")
    idx = adapters.SourceIndex(tmp_path / "sources.jsonl")
    assert idx.get(("A", "冷热", "热食"), "?") == "image_only" and idx.get(("B", "主料", "牛肉"), "?") == "explicit"
    assert idx.get(("B", "主料", "猪肉"), "text_implied") == "text_implied"  # not listed: the caller's default
    assert os.path.getsize(os.path.join(idx._tmp.name, "sources.sqlite")) > 0  # held on disk, not in a dict


def test_mepave_adapter(tmp_path):
    rows = ["c_1\ts_1\t爱华仕搭扣单肩包\t爱华仕<闭合方式>搭扣</闭合方式>单肩包",
            "c_2\ts_2\t真皮包\t<材质>真皮</材质>鞋",            # labelled text disagrees with text
            "c_3\ts_3\t只有三列"]
    for name in ("x.train", "x.valid", "x.test"):
        (tmp_path / name).write_text("\n".join(rows) + "\n", encoding="utf-8")
    items = list(MepaveAdapter(tmp_path).read("val"))
    recs = [i for i in items if isinstance(i, Record)]
    assert len(recs) == 1 and recs[0].labels == [{"attribute": "闭合方式", "value": "搭扣", "source": "explicit"}]
    assert sorted(i.row for i in items if not isinstance(i, Record)) == [2, 3]


def test_implicitave_adapter_merges_rows_and_guards_images(tmp_path):
    hdr = "id\timages\tcategory\ttexts\tattribute_names\tattribute_values"
    for split, d in [("train", "train"), ("val", "val"), ("test", "eval_visible/texts")]:
        (tmp_path / d).mkdir(parents=True)
        (tmp_path / d / "Food.tsv").write_text("\n".join([
            hdr, f"{split}A\t{split}A.jpg\tTea\t[Title] Lipton Iced Tea\tForm\tBags/Packets",
            f"{split}A\t{split}A.jpg\tTea\t[Title] Lipton Iced Tea\tContainer\tBox",
            f"{split}A\t{split}A.jpg\tTea\t[Title] Lipton Iced Tea\tContainer\tTin"]) + "\n", encoding="utf-8")
    (tmp_path / "eval_visible/images").mkdir()
    Image.new("L", (20, 20)).save(tmp_path / "eval_visible/images/testA.jpg")
    (tmp_path / "options_Food.json").write_text(json.dumps({"Form": ["Bags/Packets", "Rub"]}))
    report = ingest("implicitave", tmp_path, tmp_path / "p", tmp_path / "r", 0.5)
    assert report["splits"]["train"] == {"kept": 1, "rejected": 1, "reasons": {"Food.tsv": 1}}
    (test,) = load_split(tmp_path / "p", "test")
    assert test.name == "Lipton Iced Tea" and test.description == "Tea" and test.image.endswith("testA.jpg")
    assert len(test.labels) == 2
    schema = json.loads((tmp_path / "p" / "schema.json").read_text())
    assert schema["language"] == "en" and schema["candidates"]["Form"] == ["Bags/Packets", "Rub"]


def test_desire_adapter_reads_synthetic_default(tmp_path):
    from deflate.data.synth import write_desire
    write_desire(tmp_path, 30, seed=1, progress=False)
    recs = [r for r in DesireAdapter(tmp_path).read("train")]
    assert recs and all(isinstance(r, Record) and r.image and r.labels for r in recs)
    assert {lab["source"] for r in recs for lab in r.labels} <= {"explicit", "text_implied", "image_only"}


def test_tables_do_not_depend_on_where_the_repo_lives(tmp_path, monkeypatch):
    from deflate.data.synth import write_desire
    write_desire(tmp_path / "raw", 20, seed=1, image_size=16, progress=False)
    monkeypatch.chdir(tmp_path)
    ingest("desire", "raw", tmp_path / "p", tmp_path / "r", 0.0)
    recs = load_split(tmp_path / "p", "train")
    assert recs and all(r.image.startswith("raw/images/") for r in recs)


def test_ingest_papercuts_line_numbers_empty_split_side_file_and_no_stale_tables(tmp_path):
    root = tmp_path / "raw"
    write_desire_dir(root, [desire_line(sku="A"), desire_line(sku="B"), desire_line(sku="A", name="又一个")])
    ingest("desire", root, tmp_path / "p", tmp_path / "r", 0.5)
    (dup,) = [json.loads(x) for x in (tmp_path / "r" / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    assert dup["reason"] == "duplicate id A" and dup["row"] == 4  # the raw file's line (header = line 1)
    # a side file's bad line names the file and the line, whatever is wrong with it
    for bad, why in (("{not json", "bad JSON"), (json.dumps({"id": "A"}), "a line needs id, attribute, value and source")):
        (root / "sources.jsonl").write_text(json.dumps({"id": "B", "attribute": "主料", "value": "牛肉",
                                                        "source": "explicit"}) + "\n" + bad + "\n", encoding="utf-8")
        with pytest.raises(ValueError, match=r"sources\.jsonl:2: " + why):
            ingest("desire", root, tmp_path / "p", tmp_path / "r", 0.5)
    # the failed runs left no tables of the earlier good run behind
    assert not list((tmp_path / "p").glob("*.parquet")) and not (tmp_path / "p" / "schema.json").exists()
    (root / "sources.jsonl").unlink()
    (root / "val.tsv").write_text("\t".join(DESIRE_COLUMNS) + "\n", encoding="utf-8")  # header only
    with pytest.raises(ValueError, match="the val split has no usable rows"):
        ingest("desire", root, tmp_path / "p", tmp_path / "r", 0.5)


def test_tables_are_written_and_read_a_row_group_at_a_time(tmp_path, monkeypatch):
    import pandas as pd
    import pyarrow.parquet as pq

    from deflate.data import records

    recs = [Record(f"p{i}", f"名{i}", "描述" * (i % 3), "菜肴", "", [1, 2] if i % 2 else None,
                   [{"attribute": "主料", "value": "牛肉", "source": "explicit"}] * (i % 2)) for i in range(7)]
    # up to a row group: the bytes of DataFrame.to_parquet, as the tables were written before streaming
    assert records.write_records(tmp_path / "small.parquet", iter(recs)) == 7
    records.records_to_frame(recs).to_parquet(tmp_path / "whole.parquet", index=False)
    assert (tmp_path / "small.parquet").read_bytes() == (tmp_path / "whole.parquet").read_bytes()
    # more rows than a row group: written in groups, pulled from the iterator as they go
    monkeypatch.setattr(records, "ROW_GROUP", 3)
    pulled = []

    def rows():
        for r in recs:
            pulled.append(r.id)
            yield r

    assert records.write_records(tmp_path / "split" / "train.parquet", rows()) == 7
    assert pq.ParquetFile(tmp_path / "split" / "train.parquet").metadata.num_row_groups == 3
    assert records.load_split(tmp_path / "split", "train") == recs == list(records.iter_records(tmp_path / "split", "train"))
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "split" / "train.parquet"), records.records_to_frame(recs))
    only = list(records.iter_records(tmp_path / "split", "train", columns=["id", "image"]))
    assert [r.id for r in only] == [r.id for r in recs] and all(r.labels == [] and r.name == "" for r in only)
    # a writer that fails leaves nothing at the path
    with pytest.raises(RuntimeError):
        records.write_records(tmp_path / "broken.parquet", (r if r.id != "p5" else _raise() for r in recs))
    assert not (tmp_path / "broken.parquet").exists() and not list(tmp_path.glob(".broken*"))


def _raise():
    raise RuntimeError("a row could not be made")


def test_jsonl_lines_end_at_newline_only(tmp_path):
    from deflate.infra.files import iter_jsonl, read_jsonl, write_jsonl

    rows = [{"v": "a\u2028b"}, {"v": "c\rd"}, {"v": "末"}]
    write_jsonl(tmp_path / "x.jsonl", (r for r in rows))
    assert read_jsonl(tmp_path / "x.jsonl") == rows == list(iter_jsonl(tmp_path / "x.jsonl"))
