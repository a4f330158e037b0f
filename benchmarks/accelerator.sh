#!/usr/bin/env bash
# One command for a few minutes on one GPU or TPU (at most 8 on one H100), from the repository root:
#
#   bash benchmarks/accelerator.sh              # installs the jax plugin, tests, benchmarks
#   bash benchmarks/accelerator.sh --smoke      # every step at tiny sizes, on any CPU, no install
#
# 1. installs the accelerator plugin matching requirements.txt's jax (from the package index only):
#    jax[cuda13]==<version> where nvidia-smi answers, jax[tpu]==<version> on a TPU VM;
# 2. prints the devices;
# 3. runs the tests marked `accelerator` (golden fixtures against timm / the official ToMe / NumPy)
#    with JAX_DEFAULT_MATMUL_PRECISION=highest (--smoke: only collects them);
# 4. runs benchmarks/accelerator.py: attention path (cuDNN or XLA with the size bias), ViT-B/16 and
#    ViT-L/16 bf16 forward at batch 256 for r=0/8/16, the MAE ViT-B train step at r=0/16, ViT-L@512
#    at r=0/40; writes $OUT/accelerator.json and $OUT/accelerator.md (OUT: --out DIR, default
#    benchmarks/results).
# PYTHON names the interpreter (default: python3 of the active environment).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
SMOKE=""
OUT=benchmarks/results
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) SMOKE="--smoke" ;;
    --out) OUT="$2"; shift ;;
    *) echo "usage: bash benchmarks/accelerator.sh [--smoke] [--out DIR]" >&2; exit 2 ;;
  esac
  shift
done
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
start=$SECONDS

JAX_VERSION=$(sed -n 's/^jax==\([0-9.]*\).*/\1/p' requirements.txt)
if [ -z "$SMOKE" ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    nvidia-smi -L
    "$PYTHON" -m pip install -q "jax[cuda13]==$JAX_VERSION"
  elif ls /dev/accel* >/dev/null 2>&1 || ls /dev/vfio/[0-9]* >/dev/null 2>&1; then
    "$PYTHON" -m pip install -q "jax[tpu]==$JAX_VERSION"
  else
    echo "no GPU (nvidia-smi) or TPU (/dev/accel*, /dev/vfio) found: running on $("$PYTHON" -c 'import jax; print(jax.default_backend())')" >&2
  fi
fi
"$PYTHON" -c "import jax; print('jax', jax.__version__, '| backend', jax.default_backend(), '|', jax.devices())"

echo "== tests marked accelerator (JAX_DEFAULT_MATMUL_PRECISION=highest) =="
if [ -z "$SMOKE" ]; then
  JAX_DEFAULT_MATMUL_PRECISION=highest "$PYTHON" -m pytest -q -m accelerator tests
else
  JAX_DEFAULT_MATMUL_PRECISION=highest "$PYTHON" -m pytest -q --collect-only -m accelerator tests | tail -1
fi

echo "== benchmarks =="
"$PYTHON" benchmarks/accelerator.py $SMOKE --json "$OUT/accelerator.json" --md "$OUT/accelerator.md"
echo "accelerator.sh done in $((SECONDS - start)) s"
