#!/usr/bin/env bash
# Stage what bench/gpu_session.sh needs on a lent GPU machine, inside the checkout (the device tool sends the
# checkout, a `shared/` folder in it, and the ignored paths named in `carry`; 64 MiB in all):
#   shared/assets/  the assets training and gpu_check read (~8 MB: 3DMM bases, whitening, mb05, AFLW2000 samples)
#   .carry/photocache/  the teacher-fitted photo cache (~35 MB; built here if missing, ~3 min on 2 idle cores)
#   .carry/humancache/  the human-fit cache of faces300w (~4 MB; built here if missing)
# Both are added to .git/info/exclude, so they are never committed. Then, with the device tool:
#   run(command="OUT=$OUT PHOTOCACHE=.carry/photocache HUMANCACHE=.carry/humancache DAMDNET_ASSETS=$PWD/shared/assets bash bench/gpu_session.sh 6",
#       carry=[".carry"], timeout_s=590)
# Remove them afterwards: rm -rf shared .carry
set -euo pipefail
cd "$(dirname "$0")/.."
SRC="${DAMDNET_ASSETS:-$(cd .. && pwd)/shared/assets}"
CACHE="${PHOTOCACHE:-$HOME/.cache/damdnet/photocache}"
HCACHE="${HUMANCACHE:-$HOME/.cache/damdnet/humancache}"
PY="${PYTHON:-python3}"
grep -qx '/shared/' .git/info/exclude 2>/dev/null || echo '/shared/' >> .git/info/exclude
grep -qx '/.carry/' .git/info/exclude 2>/dev/null || echo '/.carry/' >> .git/info/exclude
for f in cleardusk/3DDFA/train.configs/Model_PAF.pkl cleardusk/3DDFA/train.configs/keypoints_sim.npy \
         cleardusk/3DDFA/train.configs/param_whitening.pkl cleardusk/3DDFA/train.configs/u_exp.npy \
         cleardusk/3DDFA/train.configs/u_shp.npy cleardusk/3DDFA_V2/weights/mb05_120x120.pth \
         cleardusk/3DDFA_V2/configs/param_mean_std_62d_120x120.pkl cleardusk/3DDFA/visualize/tri.mat MANIFEST.md; do
  mkdir -p "shared/assets/$(dirname "$f")"
  cp "$SRC/$f" "shared/assets/$f"
done
mkdir -p shared/assets/cleardusk/3DDFA shared/assets/YadiraF/PRNet/TestImages
cp -r "$SRC/cleardusk/3DDFA/c++" shared/assets/cleardusk/3DDFA/
cp -r "$SRC/YadiraF/PRNet/TestImages/AFLW2000" shared/assets/YadiraF/PRNet/TestImages/
mkdir -p shared/assets/XgTu/2DASL/test_codes/test.data   # the validation set (~8 MB) that picks best.pth
cp -r "$SRC/XgTu/2DASL/test_codes/test.data/AFLW-2000-3D" shared/assets/XgTu/2DASL/test_codes/test.data/
if [ ! -f "$CACHE/index.npz" ]; then
  DAMDNET_ASSETS="$SRC" "$PY" -m model.data.cache build --photos "$SRC/faces" --out "$CACHE"
fi
if [ ! -f "$HCACHE/index.npz" ]; then
  DAMDNET_ASSETS="$SRC" "$PY" -m model.data.cache build-human --pts "$SRC/faces300w" --out "$HCACHE"
fi
mkdir -p .carry && rm -rf .carry/photocache .carry/humancache && cp -r "$CACHE" .carry/photocache && cp -r "$HCACHE" .carry/humancache
du -sh shared .carry
tracked=$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
echo "tracked files: $((tracked / 1048576)) MiB (all of it must stay under 64 MiB)"
