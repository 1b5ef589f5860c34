"""DVC stage: Tables 2-5 and Figure 3 (JSON, CSV + PNG plot, Markdown report) from every system's metrics."""
from pathlib import Path

from deflate.infra.config import stage_params
from deflate.infra.runtime import stage_timer
from deflate.reports.paper_tables import build

p = stage_params()
t = p["tables"]
with stage_timer("tables"):
    build(Path("metrics"), {"generator": Path("models/generator"), "discriminator": Path("models/discriminator"),
                            "patches": Path("models/systems/patches-desire")},
          p["seed"], t["digits"], t["plot_metric"], seed_spread=Path("benchmarks/results/seed_spread.json"))
print(Path("metrics/report.md").read_text(encoding="utf-8"))
