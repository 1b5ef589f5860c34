"""DVC stage: the MEPAVE-shaped synthetic variant -> tables (Table 3 and Figure 3 run on it)."""
import json
from pathlib import Path

from deflate.data.adapters import ingest
from deflate.infra.config import stage_params
from deflate.infra.runtime import stage_timer

p = stage_params()
with stage_timer("ingest_mepave"):
    report = ingest("mepave", Path("data/raw/synth/mepave"), Path("data/mepave/processed"),
                    Path("data/mepave/rejects"), p["data"]["max_reject_fraction"], language="zh", seed=p["seed"])
print(json.dumps(report, ensure_ascii=False))
