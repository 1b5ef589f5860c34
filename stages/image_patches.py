"""DVC stage: continuous patch features of every picture (Table 5's 'full visual information' arm:
raw RGB patches, or a local ViT's patch embeddings when image.vit_path is set)."""
from pathlib import Path

from deflate.data.image_tokens import tokenize_processed
from deflate.infra.config import stage_params
from deflate.infra.runtime import stage_timer

p = stage_params()
with stage_timer("image_patches"):
    tokenize_processed(Path("data/processed"), {**p["image"], "tokenizer": "patches"}, Path("data/tokens_patches"),
                       p["seed"])
