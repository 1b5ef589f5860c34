import hashlib
import json

import numpy as np

from deflate.data.synth import (
    ATTRIBUTES,
    CUES,
    PALETTE,
    SPICE_COUNT,
    TYPES,
    make_mepave_row,
    make_product,
    render_image,
    write_desire,
    write_mepave,
)


def _digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_same_seed_gives_byte_identical_files(tmp_path):
    for run in ("a", "b"):
        write_desire(tmp_path / run / "desire", 40, seed=3, progress=False)
        write_mepave(tmp_path / run / "mepave", 30, seed=3)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    write_desire(tmp_path / "c" / "desire", 40, seed=4, progress=False)
    assert _digest(tmp_path / "a" / "desire") != _digest(tmp_path / "c" / "desire")


def test_scaling_up_keeps_earlier_products():
    assert make_product(5, 1, 0.25, 0.03) == make_product(5, 1, 0.25, 0.03)


def test_source_labels_are_true_to_the_text():
    seen = set()
    for i in range(600):
        p = make_product(i, 0, 0.25, 0.0)  # no label noise: gold == what is shown
        text = p.name + p.description
        assert set(p.values) <= set(TYPES[p.type])
        for a, v in p.values.items():
            src = p.sources[a]
            seen.add(src)
            if src == "explicit":
                assert v in text
            else:
                assert v not in text, (p, a)
            if src == "text_implied" and a in CUES:
                assert any(c in text for c in CUES[a][v]), (p, a)
    assert seen == {"explicit", "text_implied", "image_only"}


def test_image_shows_image_only_values():
    """Chili count and colour in the top band follow the spice level, whatever the text says."""
    for i in range(200):
        p = make_product(i, 0, 0.25, 0.0)
        if "辣度" not in p.values:
            continue
        img = np.asarray(render_image(p, 0)).astype(int)
        top = img[:25]
        n = SPICE_COUNT[p.values["辣度"]]
        if n:
            target = np.array(PALETTE[p.values["辣度"]])
            close = (np.abs(top - target).sum(-1) < 45).sum()
            assert close > 40 * n, (p.id, p.values["辣度"], close)


def test_stats_and_splits(tmp_path):
    stats = write_desire(tmp_path, 200, seed=0, progress=False)
    assert sum(stats["by_split"].values()) == 200
    assert stats["by_split"]["train"] > stats["by_split"]["test"] > 0
    assert set(stats["attribute_counts"]) <= set(ATTRIBUTES)
    ids = {}
    for split in ("train", "val", "test"):
        lines = (tmp_path / f"{split}.tsv").read_text(encoding="utf-8").splitlines()
        assert all(len(line.split("\t")) == 12 for line in lines)
        ids[split] = {line.split("\t")[1] for line in lines[1:]}
    assert not (ids["train"] & ids["test"]) and not (ids["train"] & ids["val"])
    src = [json.loads(x) for x in (tmp_path / "sources.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(src) == sum(stats["attribute_counts"].values())


def test_mepave_rows_wrap_every_value():
    for i in range(50):
        cid, sid, text, labelled = make_mepave_row(i, 0)
        assert "<" in labelled and cid.startswith("c_") and sid == f"s_{i}"
        assert "<" not in text
