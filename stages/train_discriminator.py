"""DVC stage: train the discriminator on true pairs and harvested negatives."""
from pathlib import Path

from deflate.infra import distributed
from deflate.infra.config import stage_params
from deflate.infra.runtime import stage_timer
from deflate.stages import train_discriminator

p = stage_params()
distributed.relaunch(p["distributed"])  # accelerate launch when distributed.processes > 1
with stage_timer("train_discriminator"):
    print(train_discriminator.run(p, Path("data/processed"), Path("data/tokens"), Path("models/generator"),
                              Path("data/negatives"), Path("models/discriminator"),
                              Path("models/checkpoints/discriminator")))
