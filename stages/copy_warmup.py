"""DVC stage: the generator's copy warm-up, once for the systems that train it from scratch.
Usage: python stages/copy_warmup.py TABLES_DIR OUT_DIR"""
import sys
from pathlib import Path

from deflate.infra.config import stage_params
from deflate.infra.runtime import stage_timer
from deflate.stages import copy_warmup

processed, out = sys.argv[1:3]
with stage_timer("copy_warmup"):
    print(copy_warmup.run(stage_params(), Path(processed), Path(out)))
