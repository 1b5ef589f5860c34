"""DVC stage: generate the default DESIRE-shaped dataset (and its MEPAVE-shaped twin)."""
from pathlib import Path

from deflate.data.synth import write_synth
from deflate.infra.config import stage_params
from deflate.infra.runtime import stage_timer

p = stage_params()
s = p["synth"]
with stage_timer("synth"):
    stats = write_synth(Path("data/raw/synth"), s["n_products"], s["mepave_rows"], p["seed"], s["long_desc_fraction"],
                        s["label_noise"], s["image_size"])
print(f"[synth] {stats['products']} products, value sources {stats['source_share']}")
