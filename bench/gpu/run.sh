#!/usr/bin/env bash
# The GPU session in one command (issue 20), run by the device tool from the repo root after
# bench/gpu/site.sh and bench/gpu/prepare.py have filled .gpu/:
#   the GPU tests; bench/train_throughput.py eager (with the batch sweep) and compiled; a short
#   diffusion run through the CLI on the real-footage faces snapshot, with its sample grid.
# Every step has its own time limit and runs even if one before it failed; figures and logs land
# in $OUT (at most 8 files come back). `--tiny` runs the same steps on a CPU in a few minutes.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/s2d-gpu-out}; mkdir -p "$OUT"
PY=${PY:-python3}
TINY=0; [[ ${1:-} == --tiny ]] && TINY=1
exec > >(tee -a "$OUT/log.txt") 2>&1
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! $PY -c "import ray, duckdb, diffusers, pydantic" 2>/dev/null; then  # the GPU machine: carried packages
  mkdir -p /tmp/site && tar -xJf .gpu/site.tar.xz -C /tmp/site || exit 1
  export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
step() { local name=$1 limit=$2; shift 2; echo; echo "=== $name ($(date -u +%T), limit ${limit}s)"; local t=$SECONDS
  timeout -s INT -k 20 "$limit" "$@"; local rc=$?; echo "=== $name: rc $rc in $((SECONDS - t)) s"; }

nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"
$PY -c "import sys, torch, ray, duckdb, diffusers, pydantic; print(sys.version.split()[0], 'torch', torch.__version__,
'cuda', torch.cuda.is_available(), 'ray', ray.__version__, 'duckdb', duckdb.__version__, 'diffusers', diffusers.__version__)" || exit 1

export S2D_TEST_TRAINING_ROOT=$PWD/.gpu/train-root/data
step "GPU tests" 100 $PY -m pytest tests/training/test_gpu.py -m gpu -p no:cacheprovider -q -rA

bench=(bench/train_throughput.py --footage .gpu/carphone.mp4)
(( TINY )) && bench+=(--cpu-small --steps 4 --warmup 2 --batch 8 --rows 64 --log-every 2)
step "throughput, eager + batch sweep" 140 $PY "${bench[@]}" --sweep --json "$OUT/eager.json"

faces=(-c .gpu/faces/stream2dataset.yaml --snapshot faces-v1 --run gpu-faces)
if (( TINY )); then faces+=(--steps 4 --batch-size 4 --set diffusion.base_channels=16 --set diffusion.resolution=32
  --set diffusion.channel_mults=[1,2] --set diffusion.attention_levels=[1] --set checkpoint_every=4 --set sample_every=4)
else faces+=(--gpus-per-worker 1 --steps 800 --batch-size 128 --set warmup_steps=100 --set log_every=50
  --set checkpoint_every=800 --set sample_every=400); fi
step "diffusion run on faces-v1" 100 $PY -m stream2dataset train diffusion "${faces[@]}"
run=.gpu/faces/data/runs/gpu-faces
cp "$run/metrics.csv" "$OUT/faces_metrics.csv"; cp "$(ls "$run"/samples/*.png | tail -1)" "$OUT/faces_samples.png"

(( TINY )) || step "throughput, torch.compile" 110 $PY "${bench[@]}" --compile --json "$OUT/compiled.json"
echo "=== done $(date -u +%T)"
