"""Adapters on the real public data in ../shared (skipped when it is absent)."""
from deflate.data.adapters import ingest
from deflate.data.records import load_split


def test_mepave_sample(shared_data, tmp_path):
    report = ingest("mepave", shared_data / "mepave_sample", tmp_path / "p", tmp_path / "r", 0.0)
    assert {s: v["kept"] for s, v in report["splits"].items()} == {"train": 50, "val": 20, "test": 20}
    recs = load_split(tmp_path / "p", "train")
    assert all(lab["value"] in r.name for r in recs for lab in r.labels)


def test_implicitave(shared_data, tmp_path):
    report = ingest("implicitave", shared_data / "implicitave", tmp_path / "p", tmp_path / "r", 0.0)
    assert report["splits"]["test"]["kept"] == 534
    assert report["splits"]["train"]["kept"] > 50_000
    test = load_split(tmp_path / "p", "test")
    assert sum(bool(r.image) for r in test) == 534


def test_predict_reads_the_implicitave_eval_folder(shared_data):
    from deflate.answering.predict_rows import read_implicitave

    rows, pictures = read_implicitave(shared_data / "implicitave" / "eval_visible")
    rows = list(rows)  # read as consumed
    assert len(rows) == 534 and not [r for r in rows if "_error" in r]
    assert pictures == shared_data / "implicitave" / "eval_visible" / "images"
    assert all(r["gold"] and r["description"] and len(r["attributes"]) == 1 and (pictures / r["image"]).is_file() for r in rows)
    assert {r["domain"] for r in rows} == {"Clothing", "Food", "Footwear", "Home", "Jewlery_and_General_Apparel"}
