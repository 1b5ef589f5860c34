import json
from pathlib import Path

from typer.testing import CliRunner

from deflate.cli import app

runner = CliRunner()


def test_help_lists_every_command():
    r = runner.invoke(app, ["--help"])
    assert r.exit_code == 0
    for cmd in ("synth", "ingest", "predict", "show"):
        assert cmd in r.output
    r = runner.invoke(app, ["predict", "--help"])
    assert r.exit_code == 0 and "error record" in r.output


def test_synth_then_ingest(tmp_path):
    r = runner.invoke(app, ["synth", "--out", str(tmp_path / "raw"), "--n-products", "30", "--mepave-rows", "20",
                            "--image-size", "32"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output[r.output.index("{"):])["products"] == 30
    r = runner.invoke(app, ["ingest", "--path", str(tmp_path / "raw" / "desire"), "--out", str(tmp_path / "p"),
                            "--rejects", str(tmp_path / "rej")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "p" / "train.parquet").exists()


def test_errors_are_one_line_and_non_zero(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default --out is data/processed under the working directory
    kept = tmp_path / "data" / "processed" / "train.parquet"
    kept.parent.mkdir(parents=True)
    kept.write_bytes(b"earlier tables")
    r = runner.invoke(app, ["ingest", "--format", "nope", "--path", str(tmp_path)])
    assert r.exit_code == 1 and "unknown data.format" in r.output
    assert kept.read_bytes() == b"earlier tables"  # a mistyped format touches nothing
    r = runner.invoke(app, ["show", str(tmp_path / "missing.json")])
    assert r.exit_code == 1 and "not found" in r.output
    r = runner.invoke(app, ["predict", "--input", str(tmp_path / "none.jsonl"), "--output", str(tmp_path / "o")])
    assert r.exit_code == 1 and "not found" in r.output


def test_show_prints_a_table(tmp_path):
    prf = {"p": 50.0, "r": 25.0, "f1": 33.33}
    m = {"ap": prf, "ave": prf, "ave_fuzzy": prf, "eav_only": {"ave": prf, "ave_fuzzy": prf},
         "by_source": {"image_only": prf}, "majority_baseline": {"ave": prf}}
    (tmp_path / "m.json").write_text(json.dumps(m))
    r = runner.invoke(app, ["show", str(tmp_path / "m.json")])
    assert r.exit_code == 0 and "| AVE image_only | 50.00 | 25.00 | 33.33 |" in r.output


def test_predict_refuses_a_bad_output_before_any_compute(tmp_path):
    rows = tmp_path / "in.jsonl"
    rows.write_text('{"id": "a", "name": "x"}\n')
    for out, why in ((rows, "is the input file"), (tmp_path, "is a folder"), (Path("/proc/x/o.jsonl"), "cannot write")):
        r = CliRunner().invoke(app, ["predict", "--model", str(tmp_path / "no_bundle"), "--input", str(rows),
                                     "--output", str(out)])
        assert r.exit_code == 1 and why in r.output, r.output  # refused before the (missing) model is loaded
    assert rows.read_text() == '{"id": "a", "name": "x"}\n'


def test_predict_refuses_unknown_kernels_before_any_compute(tmp_path):
    rows = tmp_path / "in.jsonl"
    rows.write_text('{"id": "a", "name": "x"}\n')
    r = CliRunner().invoke(app, ["predict", "--model", str(tmp_path / "no_bundle"), "--input", str(rows),
                                 "--output", str(tmp_path / "o.jsonl"), "--kernels", "fastest"])
    assert r.exit_code == 1 and "--kernels must be bundle, native, avx2, compatible" in r.output, r.output


def test_predict_refuses_a_bundle_recording_bad_threads_in_one_line(tmp_path):
    rows = tmp_path / "in.jsonl"
    rows.write_text('{"id": "a", "name": "x"}\n')
    (tmp_path / "b" / "generator").mkdir(parents=True)
    (tmp_path / "b" / "generator" / "deflate.json").write_text(
        '{"kernels": {"kernels": "compatible", "threads": "many"}}')
    r = CliRunner().invoke(app, ["predict", "--model", str(tmp_path / "b"), "--input", str(rows),
                                 "--output", str(tmp_path / "o.jsonl")])
    assert r.exit_code == 1 and "threads must be a positive integer" in r.output, r.output
    assert "Traceback" not in r.output and not (tmp_path / "o.jsonl").exists()


def test_hostile_rows_become_row_errors(tmp_path):
    from deflate.answering.predict_rows import MAX_LINE, read_rows, validate
    path = tmp_path / "in.jsonl"
    lines = [b'{"id": "a", "name": "ok"}', b"[" * 200_000 + b"]" * 200_000, b'{"id": "b", "name": "n", "image": 123}',
             b'{"id": "c", "name": "n", "image": ["a.jpg"]}', b'{"id": "d", "name": "' + b"x" * (MAX_LINE + 10) + b'"}',
             b'{"id": "e", "name": "last"}']
    path.write_bytes(b"\n".join(lines) + b"\n")
    rows = read_rows(path)
    assert [r["_line"] for r in rows] == [1, 2, 3, 4, 5, 6]
    checked = [validate(r, {"a"}) for r in rows]
    assert [p is not None for p, _ in checked] == [True, False, False, False, False, True]
    assert "nested too deeply" in checked[1][1][0] and "image must be a path" in checked[2][1][0]
    assert "image must be a path" in checked[3][1][0] and "longer than" in checked[4][1][0]


def test_an_interrupted_write_leaves_the_previous_file_whole(tmp_path):
    from deflate.infra.files import atomic_writer
    out = tmp_path / "pred.jsonl"
    out.write_text("previous run\n")
    try:
        with atomic_writer(out) as f:
            f.write('{"id": "a"}\n')
            raise KeyboardInterrupt("killed mid-write")
    except KeyboardInterrupt:
        pass
    assert out.read_text() == "previous run\n" and [p.name for p in tmp_path.iterdir()] == ["pred.jsonl"]
    with atomic_writer(out) as f:
        f.write("new\n")
    assert out.read_text() == "new\n"
