"""DVC stage (one per item of the `system` foreach): train and score one compared system on one
dataset.  Usage: python stages/system.py SYSTEM TABLES_DIR TOKENS_DIR NAME"""
import sys
from pathlib import Path

from deflate.infra import distributed
from deflate.infra.config import stage_params
from deflate.infra.files import write_json
from deflate.infra.runtime import stage_timer
from deflate.stages.system import run_system

system, processed, tokens, name = sys.argv[1:5]
p = stage_params()
distributed.relaunch(p["distributed"])  # accelerate launch when distributed.processes > 1
with stage_timer(f"system@{name}"):
    m = run_system(system, p, Path(processed), Path(tokens), Path("models/systems") / name,
                   dataset=name.rsplit("-", 1)[-1])
if distributed.is_main():
    write_json(Path("metrics/systems") / f"{name}.json", m, ensure_ascii=False, indent=1, sort_keys=True)
    print(f"[system] {name}: AVE F1 {m['ave']['f1']}, AP F1 {m['ap']['f1']}")
