"""DVC stage: the generator's answers for attributes a product lacks become negatives."""
from pathlib import Path

from deflate.config import load_params, stage_timer
from deflate.stages import harvest_negatives

with stage_timer("harvest_negatives"):
    print(harvest_negatives.run(load_params(), Path("data/processed"), Path("data/tokens"), Path("models/generator"),
                            Path("data/negatives")))
