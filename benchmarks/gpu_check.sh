#!/usr/bin/env bash
# The GPU tests and figures of the speed targets in one run (spec 9), about 10 minutes on an H200:
#   bash benchmarks/gpu_check.sh
# 1. The paper model at 240x320 with 8 source views on CUDA: the benchmark's CUDA defaults (bf16
#    autocast, compiled heads, chunks sized to the free memory, N = 4 and 128 with and without
#    the scene-encoding cache, the paper training config's throughput: 1024 rays per step, AMP),
#    then N = 4 with eager heads in bf16 and fp32, with CUDA graphs, with the gathering and the
#    cost volumes compiled too, and with the spec's 4096-ray chunks. One JSON record per run under benchmarks/.
# 2. The quickstart trained on the GPU, then evaluated with each speed option against the fp32
#    path without the encoding cache (metrics.json under outputs/gpu_check/), and renders a
#    48-frame fly-through of it with render.py.
# Every step runs even if one before it failed; the script's status is that of the last failure.
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
run() { "$@" || { status=$?; echo "gpu_check: failed ($status): $*" >&2; }; }

# The CUDA tests first: compiled heads, TF32, sampling and training gradients against the CPU.
# On an H100 pytest once hung at interpreter exit after printing its summary (the tests took
# about a minute): hence the limit; read the summary above a timeout (status 124).
run timeout 300 python -m pytest -q -m gpu

paper=(model=gsnerf width=320 height=240 views=8 device=cuda threads=0 chunk_samples=0 repeats=10 budget_s=20)
run python scripts/benchmark.py "${paper[@]}" chunk_rays=0 precision=bf16 "samples=[4,128]" \
    compile=default train_rays=1024 train_views=8 train_steps=20
run python scripts/benchmark.py "${paper[@]}" chunk_rays=0 precision=bf16 "samples=[4]" compile=none \
    train_steps=0
run python scripts/benchmark.py "${paper[@]}" chunk_rays=0 precision=fp32 "samples=[4]" compile=none \
    train_steps=0
run python scripts/benchmark.py "${paper[@]}" chunk_rays=0 precision=bf16 "samples=[4]" \
    compile=reduce-overhead warmup=3 train_steps=0
run python scripts/benchmark.py "${paper[@]}" chunk_rays=0 precision=bf16 "samples=[4]" \
    compile=default "compile_parts=[heads,gather,cost_volumes]" train_steps=0
run python scripts/benchmark.py "${paper[@]}" chunk_rays=4096 precision=bf16 "samples=[4]" \
    train_steps=0

runs=outputs/gpu_check
run python train.py train.device=cuda hydra.run.dir="$runs/train"
checkpoint="$runs/train/checkpoints/last.pt"
quick=(eval.save_images=false train.device=cuda "ckpt=$checkpoint")
run python eval.py "${quick[@]}" eval.precision=fp32 eval.scene_cache_size=0 hydra.run.dir="$runs/fp32"
run python eval.py "${quick[@]}" eval.precision=bf16 hydra.run.dir="$runs/bf16"
run python eval.py "${quick[@]}" eval.precision=fp32 eval.compile=default hydra.run.dir="$runs/compiled"
run python eval.py "${quick[@]}" eval.precision=fp32 model.sampler.num_samples=128 \
    hydra.run.dir="$runs/n128"
run python render.py train.device=cuda "ckpt=$checkpoint" scene=scene0016_00 render.frames=48 \
    hydra.run.dir="$runs/render"
exit $status
