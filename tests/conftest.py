import os
from pathlib import Path

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared/data is absent")
    return SHARED


def tiny_model(**over) -> dict:
    """The ``model`` params of a tiny from-scratch generator (every option off), with ``over`` on top."""
    return {"d_model": 16, "d_ff": 32, "d_kv": 8, "num_heads": 2, "num_layers": 1, "num_decoder_layers": 1,
            "dropout": 0.0, "pretrained_path": "", "copy": False, "token_shapes": False, "question": "attribute", **over}


def gen_meta(**over) -> dict:
    """A complete ``generator/deflate.json`` (what load_generator's schema asks) for hand-built models."""
    return {"image_vocab": 0, "feature_dim": 0, "attributes": ["a"], "candidates": {}, "value_sep": "、",
            "language": "en", "max_len": 16, "max_value_len": 4, "use_image": False, "use_discriminator": True,
            "params": 0, "device": "cpu", **over}
