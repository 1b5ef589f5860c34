"""DVC stage (one per system): Figure 3's points, the system trained on nested fractions of the
MEPAVE-shaped training products.  Usage: python stages/learning_curve.py SYSTEM"""
import json
import sys
from pathlib import Path

from deflate.config import load_params, stage_timer
from deflate.experiments import learning_curve

system = sys.argv[1]
p = load_params()
with stage_timer(f"learning_curve@{system}"):
    points = learning_curve(system, p, Path("data/mepave/processed"), Path("data/mepave"),
                            Path("models/learning_curve") / system, p["experiments"]["fig3_proportions"], "mepave")
out = Path("metrics/fig3") / f"{system}.json"
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text(json.dumps(points, indent=1, sort_keys=True))
