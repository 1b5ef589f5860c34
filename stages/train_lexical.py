"""DVC stage (real-data pipelines): fit the lexical candidate scorer (TF-IDF + logistic regression
per attribute) used as a reference and as a third re-ranking score."""
from pathlib import Path

from deflate.infra.config import stage_params
from deflate.infra.runtime import stage_timer
from deflate.stages import train_lexical

with stage_timer("train_lexical"):
    train_lexical.run(stage_params(), Path("data/processed"), Path("models/lexical"))
