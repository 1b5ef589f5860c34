#!/usr/bin/env bash
# The GPU check of issue #18: at most ~8 minutes on one H100-class GPU (the project never needs one).
#   1. the device: name, CUDA, bf16 support and a bf16 matrix product against fp32;
#   2. training throughput and peak memory of a T5-base-size generator from scratch (gpu_throughput.py);
#   3. the default pipeline's main chain (synth -> ... -> evaluate) on the GPU, stage by stage;
#   4. distributed inference: the evaluate stage again with distributed.processes=2 (two processes
#      sharing the GPU through gloo; one per GPU, NCCL, where there are several), byte-compared with 1;
#   5. DDP training of the tests' tiny generator on 2 processes vs 1, and its answers (ddp_check.py).
# Usage: bash benchmarks/gpu_check.sh [RESULTS_DIR]      (default: $OUT, else benchmarks/results/gpu_check)
#   Writes seven files there: device.json, throughput.json, pipeline.json (seconds per stage, process
#   start included), deflate_f1.json, distributed_inference.json, ddp.json and logs.txt.
#   GPU_CHECK_SMOKE=1: a small default dataset and 1 epoch (checks this script on a CPU machine).
# Runs in a temporary copy of src/, stages/ and params.yaml; plain python3 with the project's
# requirements (MLflow is switched off; dvc is not needed).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RES=${1:-${OUT:-$ROOT/benchmarks/results/gpu_check}}
PY=${PYTHON:-python3}
mkdir -p "$RES"
RES=$(cd "$RES" && pwd)
WORK=$(mktemp -d)
cp -r "$ROOT/src" "$ROOT/stages" "$ROOT/params.yaml" "$WORK/"
cd "$WORK" || exit 1
# Packages the GPU image lacks (pydantic, pytorch-crf on the 2026 H100/H200 images) travel as wheels in
# .whl/ (see docs/performance.md, "The GPU check"): installed into a private folder, never over the image.
SITE=
if ls "$ROOT"/.whl/*.whl >/dev/null 2>&1; then
  SITE=$WORK/site
  $PY -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$ROOT"/.whl/*.whl || exit 1
fi
export PYTHONPATH=$WORK/src${SITE:+:$SITE} PYTHONUNBUFFERED=1
T0=$(date +%s)
say() { echo "[gpu_check +$(( $(date +%s) - T0 ))s] $*"; }
if ! $PY -c "import pydantic, torchcrf, transformers, yaml, PIL" 2>"$RES/missing.txt"; then
  say "missing package: $(tail -1 "$RES/missing.txt"); put its wheel in .whl/ (pip download --no-deps) and rerun"
  exit 2
fi
rm -f "$RES/missing.txt"

set_params() {  # set_params key=value ...: edit this copy's params.yaml
  $PY - "$@" <<'PYEOF'
import sys, yaml
p = yaml.safe_load(open("params.yaml"))
for kv in sys.argv[1:]:
    key, value = kv.split("=", 1)
    *path, last = key.split(".")
    d = p
    for k in path:
        d = d[k]
    d[last] = yaml.safe_load(value)
yaml.safe_dump(p, open("params.yaml", "w"), sort_keys=False)
PYEOF
}
set_params tracking.enabled=false model.device=auto
[ "${GPU_CHECK_SMOKE:-0}" = 1 ] && set_params synth.n_products=160 generator.epochs=1 discriminator.epochs=1

say "1. device"
$PY - "$RES/device.json" <<'PYEOF'
import json, sys, torch
r = {"torch": torch.__version__, "cuda": torch.cuda.is_available()}
if r["cuda"]:
    r.update(gpu=torch.cuda.get_device_name(), cuda_version=torch.version.cuda, bf16=torch.cuda.is_bf16_supported(),
             memory_gib=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1))
    a, b = torch.randn(2048, 2048, device="cuda"), torch.randn(2048, 2048, device="cuda")
    ref = a @ b
    with torch.autocast("cuda", dtype=torch.bfloat16):
        low = a @ b
    r["bf16_matmul_dtype"] = str(low.dtype)
    r["bf16_matmul_rel_error"] = round(float((low.float() - ref).norm() / ref.norm()), 5)
print(json.dumps(r))
json.dump(r, open(sys.argv[1], "w"), indent=1)
PYEOF

say "2. T5-base-size throughput"
if [ "${GPU_CHECK_SMOKE:-0}" = 1 ]; then TINY=--tiny; else TINY=; fi
timeout 240 $PY "$ROOT/benchmarks/gpu_throughput.py" --out "$RES/throughput.json" $TINY || say "throughput FAILED ($?)"

say "3. default main chain"
echo '{' > "$RES/pipeline.json"
for stage in synth ingest image_tokens train_generator harvest_negatives train_discriminator evaluate; do
  s=$(date +%s%N)
  echo "=== $stage" >> "$RES/logs.txt"
  timeout 300 $PY "stages/$stage.py" >> "$RES/logs.txt" 2>&1
  rc=$?
  ms=$(( ($(date +%s%N) - s) / 1000000 ))
  say "$stage rc=$rc ${ms}ms"
  echo "\"$stage\": {\"rc\": $rc, \"ms\": $ms}," >> "$RES/pipeline.json"
  [ $rc = 0 ] || break
done
$PY -c "import json; m=json.load(open('metrics/deflate.json')); print(json.dumps({k: m[k]['f1'] for k in ('ave','ap')}))" \
  > "$RES/deflate_f1.json" 2>/dev/null && cat "$RES/deflate_f1.json"
echo "\"done\": true}" >> "$RES/pipeline.json"

say "4. distributed inference (evaluate, 2 processes vs 1)"
mkdir -p one && cp -r data/predictions metrics/deflate.json one/ 2>/dev/null
set_params distributed.processes=2
echo "=== evaluate, 2 processes" >> "$RES/logs.txt"
timeout 240 $PY stages/evaluate.py >> "$RES/logs.txt" 2>&1
rc=$?
same=true
for f in predictions/test.jsonl predictions/val.jsonl; do cmp -s "one/$f" "data/$f" || same=false; done
cmp -s one/deflate.json metrics/deflate.json || same=false
echo "{\"rc\": $rc, \"byte_identical\": $same}" | tee "$RES/distributed_inference.json"

say "5. DDP training and answering on the tiny world: 2 processes vs 1 on this device"
timeout 200 $PY "$ROOT/benchmarks/ddp_check.py" --device "$($PY -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')" \
  --out "$RES/ddp.json" >> "$RES/logs.txt" 2>&1 && cat "$RES/ddp.json" || say "ddp_check FAILED"
say "done"
