"""DVC stage: the generator that several systems train the same way, trained once (see
deflate.stages.train_generator.run_shared). Usage: python stages/shared_generator.py TABLES_DIR TOKENS_DIR OUT_DIR"""
import sys
from pathlib import Path

from deflate.infra import distributed
from deflate.infra.config import stage_params
from deflate.infra.runtime import stage_timer
from deflate.stages import train_generator

processed, tokens, out = sys.argv[1:4]
p = stage_params()
distributed.relaunch(p["distributed"])  # accelerate launch when distributed.processes > 1
with stage_timer("shared_generator"):
    print(train_generator.run_shared(p, Path(processed), Path(tokens), Path(out), Path(out).parent / "checkpoints"
                                     / "shared_generator"))
