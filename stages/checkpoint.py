"""DVC stage: the pipeline's named pretrained checkpoint (params ``checkpoint``), every file checked
against its pinned SHA-256 and copied to OUT_DIR with its provenance (absent or altered: one line
naming the file and the install command).
Usage: python stages/checkpoint.py OUT_DIR"""
import sys
from pathlib import Path

from deflate.infra.config import stage_params
from deflate.infra.runtime import stage_timer
from deflate.model.pretrained import materialize

out = sys.argv[1]
p = stage_params()
with stage_timer("checkpoint"):
    print(materialize(p["checkpoint"], Path(out)))
