#!/usr/bin/env bash
# The GPU session's one prepared script: probe checks on CUDA, the lipschitz and perturb
# benchmarks batched across pairs (ViT-B/16, batch 256, against their one-pair baselines), then
# the match benchmark (ViT-B/16, batch 256) eager and compiled. About 13 minutes at most (the
# timeouts); drop the last line to stay under 10. Usage on the device machine: bash benchmarks/gpu_run.sh
set -u
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1
# -P: the benchmarks run as modules (-m) but the working folder is not put first on sys.path, so
# an installed wheel (above) is the `sweep` they import; benchmarks and tests.support come from $PWD
PY="python3 -P"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__)"
OUTDIR=${OUT:-/tmp}
timeout 90 $PY -m benchmarks.gpu_checks 2>&1 | grep -v Warning | tee "$OUTDIR/gpu_checks.json"
timeout 150 $PY -m benchmarks.bench_lipschitz --model vit_base_patch16_224 --batch 256 --pairs 64 --ref-pairs 4 --iters 20 --null-pairs 2 2>&1 | grep -v Warning | tee "$OUTDIR/bench_lipschitz.txt"
timeout 120 $PY -m benchmarks.bench_perturb --model vit_base_patch16_224 --batch 256 --pairs 128 --ref-pairs 8 --steps 20 --draws 8 2>&1 | grep -v Warning | tee "$OUTDIR/bench_perturb.txt"
timeout 150 $PY -m benchmarks.bench_match --model vit_base_patch16_224 --batch 256 --pairs 512 --ref-pairs 4 --steps 100 2>&1 | grep -v Warning | tee "$OUTDIR/bench_eager.txt"
timeout 200 $PY -m benchmarks.bench_match --model vit_base_patch16_224 --batch 256 --pairs 512 --ref-pairs 4 --steps 100 --compile 2>&1 | grep -v Warning | tee "$OUTDIR/bench_compiled.txt"
