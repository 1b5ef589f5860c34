"""DVC stage: answer every (test product, attribute), filter with the discriminator, score; the
val-chosen threshold and the trained parts become the bundle models/deflate."""
import json
from pathlib import Path

from deflate.infra import distributed
from deflate.infra.config import stage_params
from deflate.infra.runtime import stage_timer
from deflate.stages import evaluate

p = stage_params()
distributed.relaunch(p["distributed"])  # accelerate launch when distributed.processes > 1
with stage_timer("evaluate"):
    m = evaluate.run(p, Path("data/processed"), Path("data/tokens"), Path("models/generator"),
                     Path("models/discriminator"), Path(f"metrics/{p['eval']['metrics_name']}.json"),
                     Path("data/predictions/test.jsonl"), Path("models/deflate"))
if distributed.is_main():
    print(json.dumps({k: m[k] for k in ("ap", "ave", "by_source", "threshold", "majority_baseline")}, ensure_ascii=False))
