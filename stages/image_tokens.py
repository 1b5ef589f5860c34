"""DVC stage: every product image -> discrete tokens (or patch features), once."""
from pathlib import Path

from deflate.config import stage_params, stage_timer
from deflate.data import SPLITS, load_split
from deflate.image_tokenizers import run_stage

p = stage_params()
with stage_timer("image_tokens"):
    records = {s: load_split(Path("data/processed"), s) for s in SPLITS}
    run_stage(records, p["image"], Path("data/tokens"), p["seed"])
