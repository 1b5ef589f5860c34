"""DVC stage: the generator's answers for attributes a product lacks become negatives."""
from pathlib import Path

from deflate.infra import distributed
from deflate.infra.config import stage_params
from deflate.infra.runtime import stage_timer
from deflate.stages import harvest_negatives

p = stage_params()
distributed.relaunch(p["distributed"])  # accelerate launch when distributed.processes > 1
with stage_timer("harvest_negatives"):
    print(harvest_negatives.run(p, Path("data/processed"), Path("data/tokens"), Path("models/generator"),
                            Path("data/negatives")))
