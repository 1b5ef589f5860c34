"""DVC stage: train the discriminator on true pairs and harvested negatives."""
from pathlib import Path

from deflate.config import load_params, stage_timer
from deflate.stages import train_discriminator

with stage_timer("train_discriminator"):
    print(train_discriminator.run(load_params(), Path("data/processed"), Path("data/tokens"), Path("models/generator"),
                              Path("data/negatives"), Path("models/discriminator"),
                              Path("models/checkpoints/discriminator")))
