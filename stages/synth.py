"""DVC stage: generate the default DESIRE-shaped dataset (and its MEPAVE-shaped twin)."""
from pathlib import Path

from deflate.config import stage_params, stage_timer
from deflate.synth import write_desire, write_mepave

p = stage_params()
s = p["synth"]
with stage_timer("synth"):
    stats = write_desire(Path("data/raw/synth/desire"), s["n_products"], p["seed"], s["long_desc_fraction"],
                         s["label_noise"], s["image_size"])
    write_mepave(Path("data/raw/synth/mepave"), s["mepave_rows"], p["seed"])
print(f"[synth] {stats['products']} products, value sources {stats['source_share']}")
