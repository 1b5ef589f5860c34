"""DVC stage: train the Mul-T5 generator (QA over text + image tokens)."""
from pathlib import Path

from deflate.infra import distributed
from deflate.infra.config import stage_params
from deflate.infra.runtime import stage_timer
from deflate.stages import train_generator

p = stage_params()
distributed.relaunch(p["distributed"])  # accelerate launch when distributed.processes > 1
with stage_timer("train_generator"):
    print(train_generator.run(p, Path("data/processed"), Path("data/tokens"), Path("models/generator"),
                          Path("models/checkpoints/generator")))
