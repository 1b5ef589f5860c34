"""DVC stage (pipelines/wdc_pave): every system's val and test predictions -> metrics/wdc_pave.json
(the dataset authors' scoring and the paper's, with bootstrap intervals) and report_wdc_pave.md."""
from pathlib import Path

from deflate.infra.config import stage_params
from deflate.infra.runtime import stage_timer
from deflate.reports.wdc_table import build

with stage_timer("wdc_table"):
    build(stage_params(), Path("data/processed"), Path("models/systems"), Path("metrics"), Path("metrics/wdc_pave.json"),
          report=Path("metrics/report_wdc_pave.md"))
print(Path("metrics/report_wdc_pave.md").read_text(encoding="utf-8"))
