#!/usr/bin/env bash
# GPU runs of issue 4 on a 2-GPU host (device kind nvidia-h100-x2), from the repo root:
#   1. benchmarks.perf.train on GPU 0 (throughput table) while the 1-GPU ZeRO-3 run of the
#      shape3b-zero3 preset trains on GPU 1;
#   2. the same preset over 2 GPUs (same global batch): loss curves compared in
#      benchmarks/results/sft_zero3_3b.md.
# Wheels the device lacks (transformers 5.19, tyro, gymnasium, deepspeed, liger-kernel) are carried
# in build/whl. Results go to $OUT (default ./gpu_out).
set -u
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --target /tmp/site build/whl/*.whl
export PYTHONPATH=/tmp/site:$PWD VIGORL_CACHE=/tmp/vcache NCCL_NVLS_ENABLE=0
python3 -c "from vigorl_agents.models.load import resolve_model as r; r('shape-qwen2.5-vl-3b')"
nvidia-smi --query-gpu=name,memory.total --format=csv > "$OUT/gpus.csv"
STEPS=${STEPS:-6}
(CUDA_VISIBLE_DEVICES=1 timeout "${T1:-330}" torchrun --nproc_per_node 1 \
    --master_port 29611 -m experiments.sft shape3b-zero3 --name n1 --sft.max-steps "$STEPS" \
    > "$OUT/n1.log" 2>&1; echo "n1 rc=$?" >> "$OUT/n1.log") &
CUDA_VISIBLE_DEVICES=0 timeout "${TB:-330}" python3 -m benchmarks.perf.train --profile \
    --out "$OUT/train.md" > "$OUT/train.log" 2>&1
echo "train rc=$?" >> "$OUT/train.log"
wait
cp runs/sft/n1/metrics.jsonl "$OUT/n1_metrics.jsonl" 2>/dev/null
timeout "${T2:-240}" torchrun --nproc_per_node 2 --master_port 29612 -m experiments.sft \
    shape3b-zero3 --name n2 --sft.max-steps "$STEPS" > "$OUT/n2.log" 2>&1
echo "n2 rc=$?" >> "$OUT/n2.log"
cp runs/sft/n2/metrics.jsonl "$OUT/n2_metrics.jsonl" 2>/dev/null
tail -n 3 "$OUT"/*.log
