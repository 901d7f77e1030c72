#!/usr/bin/env bash
# The GPU check (issue 15), for a CUDA machine, in under 8 minutes: the CUDA tests
# (tests/test_cuda.py: share, Adam step, fold, export, save/load, bf16 autocast, torch.compile),
# then benchmarks/bench_gpu.py (bf16 step-time ratios on resnet50 and vit_b_16 at 1/10/100%, and
# the peak memory of an fp32 Adam step on vit_b_16 and vit_l_16 at 10% and 1%), which writes
# benchmarks/results/gpu.md and RESULTS.md's GPU section.
#
#   bash benchmarks/gpu_check.sh
#
# With $OUT set (this workplace's device tool copies $OUT back), the logs, gpu.json, gpu.md and
# the updated RESULTS.md are copied there too; back on the development machine, copy gpu.md to
# benchmarks/results/ and run `python benchmarks/bench_gpu.py --publish`.
# Through the device tool: run(command="bash benchmarks/gpu_check.sh", timeout_s=540).
#
# It installs nothing when the machine has what it needs (the GPU machines here have torch, a
# CUDA build, and no registry): ssnfx runs from this tree through PYTHONPATH. Their torch may
# differ from the README's pin; the version is written beside the figures.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
PY=${PYTHON:-python3}
LOGS=${OUT:-$(mktemp -d)}
mkdir -p "$LOGS"
start=$SECONDS
log() { echo "[gpu_check +$((SECONDS - start))s] $*"; }

if ! "$PY" -c "import torch, torchvision" 2>/dev/null; then
  log "torch is missing: installing the README's pins"
  timeout 240 "$PY" -m pip install -q torch==2.14.1 torchvision==0.29.1
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PY" -c "import networkx, sklearn, tqdm, pytest, hypothesis" 2>/dev/null; then
  log "ssnfx's dependencies are missing: pip install -e '.[test]'"
  timeout 120 "$PY" -m pip install -q -e '.[test]'
fi

nvidia-smi 2>&1 | tee "$LOGS/nvidia-smi.txt" || true
"$PY" - <<'EOF'
import sys, torch, torchvision
if not torch.cuda.is_available():
    sys.exit(f"error: torch {torch.__version__} sees no CUDA GPU; gpu_check.sh needs one")
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), torchvision "
      f"{torchvision.__version__}, {torch.cuda.get_device_name()}", flush=True)
EOF

# Each step has its own limit (200 s + 260 s, with set-up well under 8 minutes); a failing test
# does not stop the benchmark, so that one run on a scarce GPU brings back both.
log "tests: pytest -m cuda tests/test_cuda.py"
set +e
timeout 200 "$PY" -m pytest -m cuda tests/test_cuda.py -q -ra --durations=5 2>&1 \
  | tee "$LOGS/pytest.log"
tests=${PIPESTATUS[0]}
log "benchmark: benchmarks/bench_gpu.py"
timeout 260 "$PY" benchmarks/bench_gpu.py --json "$LOGS/gpu.json" 2>&1 | tee "$LOGS/bench.log"
bench=${PIPESTATUS[0]}
set -e

if [ "$bench" -eq 0 ] && [ -n "${OUT:-}" ]; then
  cp benchmarks/results/gpu.md benchmarks/RESULTS.md "$OUT/"
fi
log "done: tests exit $tests, benchmark exit $bench (124: timed out); logs in $LOGS"
[ "$tests" -eq 0 ] && [ "$bench" -eq 0 ]
