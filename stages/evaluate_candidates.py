"""DVC stage (real-data pipelines): closed-vocabulary accuracy — free decoding, the generator's
best candidate, candidates re-ranked by the discriminator, and (in pipelines with a ``lexical`` section) the
lexical scorer alone and fused with both; the val-chosen decisions become the bundle models/deflate."""
from pathlib import Path

from deflate.infra import distributed
from deflate.infra.config import stage_params
from deflate.infra.runtime import stage_timer
from deflate.stages import evaluate_candidates

p = stage_params()
distributed.relaunch(p["distributed"])  # accelerate launch when distributed.processes > 1
name = p["eval"]["metrics_name"]
with stage_timer("evaluate_candidates"):
    evaluate_candidates.run(p, Path("data/processed"), Path("data/tokens"), Path("models/generator"),
                            Path("models/discriminator"), Path(f"metrics/{name}.json"),
                            Path(f"metrics/{name}_per_attribute.json"), Path("models/deflate"),
                            Path("models/lexical") if "lexical" in p else None)
