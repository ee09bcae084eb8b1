#!/usr/bin/env bash
# The GPU session's one prepared script: probe checks on CUDA, then the match benchmark
# (ViT-B/16, batch 256) eager and compiled. Usage on the device machine: bash benchmarks/gpu_run.sh
set -u
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__)"
OUTDIR=${OUT:-/tmp}
timeout 90 python3 benchmarks/gpu_checks.py 2>&1 | grep -v Warning | tee "$OUTDIR/gpu_checks.json"
timeout 150 python3 benchmarks/bench_match.py --model vit_base_patch16_224 --batch 256 --pairs 512 --ref-pairs 4 --steps 100 2>&1 | grep -v Warning | tee "$OUTDIR/bench_eager.txt"
timeout 200 python3 benchmarks/bench_match.py --model vit_base_patch16_224 --batch 256 --pairs 512 --ref-pairs 4 --steps 100 --compile 2>&1 | grep -v Warning | tee "$OUTDIR/bench_compiled.txt"
