#!/usr/bin/env bash
# The GPU run, ready to go: what only a GPU can show, in one command that a lent H100 or H200 finishes in about
# 8 minutes (no network; torch 2.11 and transformers 5.17 as installed there).
#
#   bash scripts/gpu-check.sh [OUT_DIR]        # default: measurements/
#
# 1. eager: `tokenbench bench` on the three 7B configurations (LLaVA-1.5-7B, LLaVA-NeXT-7B, Qwen2.5-VL-7B; random
#    weights built from the shipped configs, bfloat16, the whole depth), full and alvts, fastv, pdrop, visionzip,
#    cdpruner at keep 64/128/192, 5 interleaved rounds after 2 warm-up, 8 tokens decoded: every row has the measured
#    and FLOPs-predicted prefill speed-up, the kernels and host syncs of the prefill, peak memory;
# 2. compiled: the same on LLaVA-1.5-7B with `--compile` (inductor, CUDA graphs) for full, alvts and fastv at keep 64
#    (each new shape costs a compilation of tens of seconds, so the compiled sweep is the headline cell only);
# 3. the CUDA-marked tests (tests/gpu).
# Each step writes its file even when a later one fails; the files carry their provenance (GPU, driver, versions,
# commit). Packages: everything tokenbench's bench needs is in the GPU image (click, tabulate, safetensors, pillow,
# tqdm, matplotlib, pytest, pytest-benchmark, hypothesis); fvcore, datasets and pycocoevalcap are imported only by
# commands this script does not run, so no wheel has to be carried.
set -uo pipefail
out="${1:-measurements}"
mkdir -p "$out"
stamp="$(date -u +%Y%m%d)"
gpu="$(python3 -c 'import torch; print(torch.cuda.get_device_name(0).split()[-1].lower() if torch.cuda.is_available() else "none")' 2>/dev/null || echo none)"
if [ "$gpu" = "none" ]; then echo "gpu-check: no CUDA device here; this script is for a GPU machine" >&2; exit 2; fi
python3 -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1 || python3 -m pip install -q --no-deps -e . || exit 3
export PYTHONUNBUFFERED=1 TOKENBENCH_CACHE="${TOKENBENCH_CACHE:-/tmp/tokenbench-cache}"
status=0
methods="fastv pdrop visionzip cdpruner alvts"
models="-M llava-1.5-7b -M llava-next-7b -M qwen2.5-vl-7b"
echo "== 1/3 eager bench ($gpu)"
timeout 330 tokenbench bench $methods $models --device cuda --dtype bfloat16 --keep 64,128,192 --repeats 5 --warmup 2 \
  --json "$out/gpu-$gpu-$stamp-eager.json" || status=1
echo "== 2/3 compiled bench ($gpu)"
timeout 150 tokenbench bench alvts fastv -M llava-1.5-7b --device cuda --dtype bfloat16 --keep 64 --repeats 5 \
  --warmup 2 --compile --json "$out/gpu-$gpu-$stamp-compiled.json" || status=1
echo "== 3/3 CUDA tests"
timeout 120 python3 -m pytest -q -m gpu tests/gpu -p no:cacheprovider 2>&1 | tee "$out/gpu-$gpu-$stamp-tests.txt" || status=1
exit $status
