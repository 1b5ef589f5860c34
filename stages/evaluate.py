"""DVC stage: answer every (test product, attribute), filter with the discriminator, score."""
import json
from pathlib import Path

from deflate.config import load_params, stage_timer
from deflate.pipeline import evaluate

p = load_params()
name = p["eval"].get("metrics_name", "deflate")
with stage_timer("evaluate"):
    m = evaluate(p, Path("data/processed"), Path("data/tokens"), Path("models/generator"),
                 Path("models/discriminator"), Path(f"metrics/{name}.json"), Path("data/predictions/test.jsonl"))
print(json.dumps({k: m[k] for k in ("ap", "ave", "by_source", "threshold", "majority_baseline")}, ensure_ascii=False))
