#!/usr/bin/env bash
# One prepared session on a lent GPU machine (the `device` tool; 15 minutes of device time, not every session):
#   1. fine-tune DAMDNet for MINUTES on the photo cache with face profiling (configs/train_gpu.yaml), checkpoint and
#      log to $OUT/train (last.pth, best.pth, log.csv; the optimizer state stays behind);
#   2. bench/gpu_check.py: CUDA/CPU agreement and faces/s at batch 1..1024, to $OUT/gpu_check.md.
# Training goes first so that a failing check cannot cost the run; each part has its own time limit.
# Needs: the photo cache at $PHOTOCACHE, the human-fit cache at $HUMANCACHE and assets at $DAMDNET_ASSETS:
# bench/gpu_prepare.sh stages them in the checkout.
#   OUT=/tmp/out PHOTOCACHE=.carry/photocache HUMANCACHE=.carry/humancache DAMDNET_ASSETS=shared/assets bash bench/gpu_session.sh 6
set -uo pipefail
cd "$(dirname "$0")/.."
MINUTES="${1:-6}"
OUT="${OUT:-/tmp/gpu_session}"
PHOTOCACHE="${PHOTOCACHE:-$HOME/.cache/damdnet/photocache}"
HUMANCACHE="${HUMANCACHE:-$HOME/.cache/damdnet/humancache}"
export DAMDNET_ASSETS="${DAMDNET_ASSETS:-$PWD/shared/assets}"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD"
PY="${PYTHON:-python3}"
mkdir -p "$OUT/train"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; nproc; "$PY" -c "import torch, cv2, numba, numpy; print('torch', torch.__version__, 'cv2', cv2.__version__, 'numba', numba.__version__, 'numpy', numpy.__version__)"; } 2>&1 | tee "$OUT/machine.txt"
sed -e "s#^    - ~/.cache/damdnet/photocache #    - $PHOTOCACHE #" -e "s#^    - ~/.cache/damdnet/humancache #    - $HUMANCACHE #" \
    -e "s#^schedule_minutes: .*#schedule_minutes: $MINUTES#" configs/train_gpu.yaml > "$OUT/train/config.yaml"
timeout $(( ${MINUTES%.*} * 60 + 150 )) "$PY" -m model.train --config "$OUT/train/config.yaml" --out "$OUT/train" \
    --minutes "$MINUTES" --no-progress 2>&1 | grep --line-buffered -v Warning | tee "$OUT/train/train.txt"
rm -f "$OUT/train/last.optim.pth"
[ -n "${SKIP_CHECK:-}" ] && exit 0
timeout 170 "$PY" bench/gpu_check.py --seconds 0.5 2>&1 | tee "$OUT/gpu_check.md"
