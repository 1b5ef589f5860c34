"""DVC stage: raw input (data.format at data.path) -> validated tables, rejects and schema."""
from pathlib import Path

from deflate.data.adapters import ingest
from deflate.infra.config import stage_params
from deflate.infra.files import write_json
from deflate.infra.runtime import stage_timer

p = stage_params()
d = p["data"]
with stage_timer("ingest"):
    report = ingest(d["format"], d["path"], Path("data/processed"), Path("data/rejects"), d["max_reject_fraction"],
                    language=d["language"], seed=p["seed"], pic_token_len=d["pic_token_len"],
                    pic_token_vocab=d["pic_token_vocab"], val_fraction=d["val_fraction"])
write_json(Path("metrics/ingest.json"), report, ensure_ascii=False, indent=1, sort_keys=True)
