"""DVC stage (one per system): Figure 3's points, the system trained on nested fractions of the
MEPAVE-shaped training products.  Usage: python stages/learning_curve.py SYSTEM"""
import sys
from pathlib import Path

from deflate.infra import distributed
from deflate.infra.config import stage_params
from deflate.infra.files import write_json
from deflate.infra.runtime import stage_timer
from deflate.stages.system import learning_curve

system = sys.argv[1]
p = stage_params()
distributed.relaunch(p["distributed"])  # accelerate launch when distributed.processes > 1
with stage_timer(f"learning_curve@{system}"):
    points = learning_curve(system, p, Path("data/mepave/processed"), Path("data/mepave"),
                            Path("models/learning_curve") / system, p["experiments"]["fig3_proportions"], "mepave")
if distributed.is_main():
    write_json(Path("metrics/fig3") / f"{system}.json", points, indent=1, sort_keys=True)
