"""DVC stage: every product image -> discrete tokens (or patch features), once."""
from pathlib import Path

from deflate.data.image_tokens import tokenize_processed
from deflate.infra.config import stage_params
from deflate.infra.runtime import stage_timer

p = stage_params()
with stage_timer("image_tokens"):
    tokenize_processed(Path("data/processed"), p["image"], Path("data/tokens"), p["seed"])
