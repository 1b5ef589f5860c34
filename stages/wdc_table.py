"""DVC stage (pipelines/wdc_pave): every system's val and test predictions -> metrics/wdc_pave.json
(the dataset authors' scoring and the paper's, with bootstrap intervals) and report_wdc_pave.md."""
from pathlib import Path

from deflate.config import stage_params, stage_timer
from deflate.files import write_text
from deflate.wdc_table import build, markdown

with stage_timer("wdc_table"):
    t = build(stage_params(), Path("data/processed"), Path("models/systems"), Path("metrics"),
              Path("metrics/wdc_pave.json"))
write_text(Path("metrics/report_wdc_pave.md"), markdown(t))
print(markdown(t))
