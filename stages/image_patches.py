"""DVC stage: continuous patch features of every picture (Table 5's 'full visual information' arm:
raw RGB patches, or a local ViT's patch embeddings when image.vit_path is set)."""
from pathlib import Path

from deflate.config import stage_params, stage_timer
from deflate.data import SPLITS, load_split
from deflate.image_tokenizers import run_stage

p = stage_params()
with stage_timer("image_patches"):
    records = {s: load_split(Path("data/processed"), s) for s in SPLITS}
    run_stage(records, {**p["image"], "tokenizer": "patches"}, Path("data/tokens_patches"), p["seed"])
