#!/usr/bin/env bash
# GPU check for a lent machine (run from the repository root; ~2-4 minutes):
#   bash bench/gpu_check.sh            CUDA agreement with the CPU + faces/s at batch 1..1024 (markdown tables)
#   bash bench/gpu_check.sh --dry-run  the same logic on the CPU (no GPU needed)
# Python: $PYTHON, else the carried venv (.venv or /work/venv), else python3; a venv is created in .venv only when
# no Python with torch is found (needs a package index; lent machines have no network, so carry a venv instead).
set -euo pipefail
cd "$(dirname "$0")/.."
export DAMDNET_ASSETS="${DAMDNET_ASSETS:-$(cd .. && pwd)/shared/assets}"
[ -d "$DAMDNET_ASSETS" ] || export DAMDNET_ASSETS="$PWD/shared/assets"
PY="${PYTHON:-}"
for cand in .venv/bin/python /work/venv/bin/python python3; do
  [ -n "$PY" ] && break
  if command -v "$cand" >/dev/null 2>&1 && "$cand" -c "import torch" 2>/dev/null; then PY="$cand"; fi
done
if [ -z "$PY" ]; then
  python3 -m venv .venv && .venv/bin/pip install -q -r requirements.txt && PY=.venv/bin/python
fi
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda available:', torch.cuda.is_available())"
if command -v nvidia-smi >/dev/null 2>&1; then nvidia-smi --query-gpu=name,memory.total --format=csv,noheader; fi
exec timeout 290 "$PY" bench/gpu_check.py "$@"
